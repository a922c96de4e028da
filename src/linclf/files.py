"""Writing files so that nothing is ever left half-written: a temporary name, then a rename."""
import contextlib
import os
import shutil
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


@contextlib.contextmanager
def build_dir(target):
    """Yield an empty folder to fill; when the block succeeds it is renamed to target (an existing
    target is replaced), and when it fails it is deleted, so target is never left half-built."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(target.parent, target.name)
    try:
        yield staging
        if target.exists():
            old = staging_dir(target.parent, target.name + ".old")
            os.replace(target, old / target.name)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
