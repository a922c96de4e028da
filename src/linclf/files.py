"""Writing files so that nothing is ever left half-written: a temporary name, then a rename."""
import os
import tempfile
from pathlib import Path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Call write(binary_stream) on a temporary file beside path, then rename it to path."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path, payload):
    atomic_write(path, lambda stream: stream.write(payload))


def staging_dir(parent, name):
    """A new, empty folder beside parent/name to assemble it in before renaming it into place."""
    folder = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent))
    os.chmod(folder, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
    return folder
