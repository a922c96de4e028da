"""One linclf process at a time on a shared folder (two `linclf download` into one data dir, say). An
advisory lock (flock, through the filelock library) on a small lock file: the operating system releases
it when its holder exits, kill -9 included, so a crashed holder never leaves a stale lock."""
import contextlib
import os
import stat

import filelock

from linclf.util.errors import LinclfError
from linclf.util.files import lstat_mode


def _holds_the_file_at(lock, path):
    """Whether the acquired filelock `lock` holds the file now at path (not one deleted meanwhile)."""
    descriptor = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    return descriptor is None or os.path.samestat(os.fstat(descriptor), here)


@contextlib.contextmanager
def hold(path, what, wait=True, timeout=None, log=print):
    """Hold the lock on the file at path for the duration of the block. `what` says what the holder does
    ("building the CIFAR-10 cache in data", say) for the messages. wait=True: when another process holds
    it, log that we wait for it, then wait (at most timeout seconds when given, else as long as it
    takes). wait=False: raise a one-line LinclfError at once. A symbolic link or anything but a regular
    file at path is refused, never opened. A holder may delete the lock file before it lets go: a waiter
    then finds it locked a deleted file, and locks the one now at path instead."""
    mode = lstat_mode(path)
    if mode is not None and not stat.S_ISREG(mode):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        raise LinclfError(f"refusing to use the lock file {path}: it is {kind}; remove it")
    lock, waited = filelock.FileLock(str(path)), False
    while True:
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            busy = f"another linclf process is {what} (lock file {path})"
            if not wait:
                raise LinclfError(f"{busy}; wait for it to finish") from None
            if not waited:
                log(f"waiting for another linclf process that is {what} (lock file {path})")
                waited = True
            try:
                lock.acquire(timeout=-1 if timeout is None else timeout)
            except filelock.Timeout:
                raise LinclfError(f"{busy}; gave up after waiting {timeout:g} s") from None
        if _holds_the_file_at(lock, path):
            break
        lock.release()
    try:
        yield
    finally:
        lock.release()
