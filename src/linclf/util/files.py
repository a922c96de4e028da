"""Files written whole (a temporary name, then a rename), never through a planted symbolic link nor
into a special file (a FIFO, a device); files read only when regular (open_regular, read_bytes,
read_text, is_regular), so that a FIFO where linclf expects its own file is one line naming it,
never a hang. New files (O_CREAT | O_EXCL | O_NOFOLLOW) get mode 0o666 and new folders 0o777, each
under a random name: the kernel applies the umask, so the process umask is never read or changed.
"""
import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import stat
from pathlib import Path

from linclf.util.errors import LinclfError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def _kind(mode):
    """A few words for a file type that linclf refuses to write into."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "a special file (FIFO, socket or device)"


def lstat_mode(path):
    """path's st_mode (of a symbolic link itself, never what it points to), None when nothing is there."""
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return None


def _unwritable(path, mode):
    return LinclfError(f"refusing to write {path}: it is {_kind(mode)}; remove it or choose another folder")


def check_writable_target(path):
    """Raise a LinclfError when path exists and is a directory or a special file; a symbolic link is
    fine here, because a rename onto it replaces the link itself and never writes through it."""
    mode = lstat_mode(path)
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise _unwritable(path, mode)


def folder_problem(path, links=False):
    """Why path cannot be a folder linclf keeps files in, or None (missing, or a folder): "is a
    symbolic link", or with `links` (a link to a folder is fine) "is a symbolic link that leads to
    no folder"; "is not a folder" for a file or device."""
    if not os.path.lexists(path) or (Path(path).is_dir() and (links or not os.path.islink(path))):
        return None
    if os.path.islink(path):
        return "is a symbolic link that leads to no folder" if links else "is a symbolic link"
    return "is not a folder"


def make_folders(path):
    """Create folder path and its missing parents (as mkdir -p), after checking each: a part that
    exists as a file, or as a symbolic link that leads to no folder, is a LinclfError naming it
    (mkdir's own error says only "File exists")."""
    path = Path(path)
    for part in (path, *path.parents):
        what = folder_problem(part, links=True)
        if what:
            raise LinclfError(f"cannot make the folder {path}: {part} {what}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_regular(path):
    """Raise a LinclfError naming path unless it is missing or a regular file (never a link)."""
    mode = lstat_mode(path)
    if mode is not None and not stat.S_ISREG(mode):
        raise _unwritable(path, mode)


def _not_regular(path, mode):
    return LinclfError(f"cannot read {path}: it is {_kind(mode)}, not a regular file; remove or replace it")


def check_readable(path):
    """Return path when it is a regular file (a symbolic link to one is fine); FileNotFoundError
    when nothing is there, a LinclfError naming it when it is a directory or a special file (a FIFO
    would block the reader forever)."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode)
    return path


def is_regular(path):
    """Whether path is a regular file: False when nothing is there (or a link to nothing), a
    LinclfError naming it when it is something else -- never a silent "not found"."""
    try:
        check_readable(path)
    except FileNotFoundError:
        return False
    return True


def _open_checked(path, flags, refused, how):
    """path opened with flags as a binary stream (`how`: "rb", "ab"), checked on the open descriptor:
    refused(path, mode) is raised unless it is a regular file. O_NONBLOCK: a FIFO put there after
    any earlier check never blocks the open."""
    descriptor = os.open(path, flags | _NONBLOCK, 0o666)
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise refused(path, mode)
        os.set_blocking(descriptor, True)
    except BaseException:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, how)


def open_regular(path):
    """Open path for reading (binary) if it is a regular file; FileNotFoundError when it is missing,
    a LinclfError naming it otherwise."""
    return _open_checked(path, os.O_RDONLY, _not_regular, "rb")


def read_bytes(path):
    """The bytes of the regular file at path (see open_regular)."""
    with open_regular(path) as stream:
        return stream.read()


def read_text(path):
    """The UTF-8 text of the regular file at path (see open_regular); UnicodeDecodeError otherwise."""
    return read_bytes(path).decode("utf-8")


def file_hash(path, algorithm="sha256"):
    """The hex digest of the regular file at path (see open_regular)."""
    with open_regular(path) as stream:
        return hashlib.file_digest(stream, algorithm).hexdigest()


def open_new(path):
    """Create path (which must not exist) for writing; returns a binary stream. Never follows a
    symbolic link: an existing name, a planted link included, raises FileExistsError."""
    descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | _NOFOLLOW, 0o666)
    return os.fdopen(descriptor, "wb")


def open_for_append(path):
    """Open path for appending (created when missing); returns a binary stream positioned at its end. A
    symbolic link, a directory or a special file at path is refused with a LinclfError naming it, and
    nothing is written through it."""
    check_regular(path)
    try:
        return _open_checked(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND | _NOFOLLOW, _unwritable, "ab")
    except OSError as error:
        if error.errno == errno.ELOOP:  # a link swapped in after the check
            raise _unwritable(path, stat.S_IFLNK)
        raise


def atomic_write(path, write):
    """Call write(binary_stream) on a new temporary file beside path, then rename it to path. The file
    gets mode 0o666 less the umask. An existing symbolic link at path is replaced (not written through);
    a directory or special file at path is refused with a LinclfError."""
    path = Path(path)
    check_writable_target(path)
    for _ in range(100):
        temporary = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            stream = open_new(temporary)
            break
        except FileExistsError:
            continue
        except OSError as error:  # name the user's file, not the temporary one
            raise LinclfError(f"cannot write {path}: {error.strerror or error}") from None
    else:  # pragma: no cover - 100 collisions of 48 random bits
        raise LinclfError(f"cannot create a temporary file beside {path}")
    try:
        with stream:
            write(stream)
        check_writable_target(path)
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and not isinstance(error, BrokenPipeError):
            raise LinclfError(f"cannot write {path}: {error.strerror or error}") from None
        raise


def atomic_write_bytes(path, payload):
    atomic_write(path, lambda stream: stream.write(payload))


def staging_dir(parent, name):
    """A new, empty folder parent/.<name>.tmp-<random> (mode 0o777 less the umask) to assemble
    parent/name in before renaming it into place."""
    for _ in range(100):
        folder = Path(parent) / f".{name}.tmp-{secrets.token_hex(6)}"
        try:
            os.mkdir(folder, 0o777)
            return folder
        except FileExistsError:
            continue
    raise LinclfError(f"cannot create a temporary folder in {parent}")  # pragma: no cover


@contextlib.contextmanager
def build_dir(target):
    """Yield an empty folder to fill; when the block succeeds it is renamed to target (an existing
    target is replaced), and when it fails it is deleted, so target is never left half-built. A symbolic
    link at target is replaced by the folder (nothing is written through it); a file or special file at
    target is refused with a LinclfError."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = lstat_mode(target)
    if mode is not None and not (stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
        raise LinclfError(f"refusing to replace {target}: it is {_kind(mode)}, not a folder; remove it")
    staging = staging_dir(target.parent, target.name)
    try:
        yield staging
        if os.path.lexists(target):
            old = staging_dir(target.parent, target.name + ".old")
            os.replace(target, old / target.name)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def json_ready(value):
    """json.dumps's `default`: numpy scalars as Python numbers (anything else is not JSON)."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")
