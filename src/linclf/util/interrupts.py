"""Ctrl-C (SIGINT) and `kill` (SIGTERM) during a sweep: never lost, never in the middle of a save. While
`watching()`, a signal is noted by a handler. Outside `held()` sections it is also raised at once as
KeyboardInterrupt, so that steps without safe points (a feature build, a wait on Dask) stay
interruptible; inside one (writing a group's runs, a checkpoint) it waits until the section ends, so
what is saved is whole. A noted signal stays noted until `watching()` ends: one raised where Python
swallows exceptions (a __del__ or weakref callback prints "Exception ignored") is raised again at the
next `check()`, a safe point of the training loops."""
import contextlib
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_noted = []       # the signals received while watching
_holding = [0]    # depth of held() sections


def _raise():
    raise KeyboardInterrupt("Terminated." if _noted[-1] == signal.SIGTERM else "")


def _note(signum, frame):
    _noted.append(signum)
    if not _holding[0]:
        _raise()


def check():
    """A safe point: raise KeyboardInterrupt when a signal was received (and not yet handled)."""
    if _noted and not _holding[0]:
        _raise()


@contextlib.contextmanager
def watching():
    """Note SIGINT and SIGTERM (as the module says) until the block ends; the main thread only
    (elsewhere signals cannot be handled and the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, _note) for number in SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _noted.clear()


@contextlib.contextmanager
def held():
    """A block a signal never cuts in two: one received inside is raised when it ends."""
    _holding[0] += 1
    try:
        yield
    finally:
        _holding[0] -= 1
    check()
