import os
import subprocess
import sys
import threading

import pytest

from linclf.util import locks
from linclf.util.errors import LinclfError


def test_a_held_lock_is_refused_without_waiting(tmp_path):
    with locks.hold(tmp_path / ".x.lock", "testing", log=None):
        with pytest.raises(LinclfError, match=r"another linclf process is testing \(lock file .*\.x\.lock\); "
                                              r"wait for it to finish$"):
            with locks.hold(tmp_path / ".x.lock", "testing", wait=False):
                pass
    with locks.hold(tmp_path / ".x.lock", "testing", wait=False):  # free again once released
        pass


def test_waiting_says_so_and_then_gets_the_lock(tmp_path):
    path, messages, order = tmp_path / ".x.lock", [], []

    def second():
        with locks.hold(path, "busy", log=messages.append):
            order.append("second")

    with locks.hold(path, "busy"):
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.3)
        assert thread.is_alive() and order == []  # still waiting
        order.append("first")
    thread.join(10)
    assert order == ["first", "second"]
    assert messages == [f"waiting for another linclf process that is busy (lock file {path})"]


def test_waiting_can_time_out(tmp_path):
    with locks.hold(tmp_path / ".x.lock", "busy"):
        with pytest.raises(LinclfError, match=r"another linclf process is busy .*; gave up after waiting 0.1 s"):
            with locks.hold(tmp_path / ".x.lock", "busy", timeout=0.1, log=lambda message: None):
                pass


def test_a_crashed_holder_leaves_no_stale_lock(tmp_path):
    path = tmp_path / ".x.lock"
    code = (f"import os, sys; sys.path.insert(0, {os.path.abspath('src')!r}); from linclf.util import locks\n"
            f"with locks.hold({str(path)!r}, 'x'): os._exit(9)\n")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9  # died holding the lock
    with locks.hold(path, "testing", wait=False):
        pass


@pytest.mark.parametrize("plant", [lambda path, victim: path.symlink_to(victim), lambda path, victim: os.mkfifo(path)])
def test_a_planted_lock_file_is_refused(tmp_path, plant):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    plant(tmp_path / ".x.lock", victim)
    with pytest.raises(LinclfError, match=r"refusing to use the lock file .*\.x\.lock: it is"):
        with locks.hold(tmp_path / ".x.lock", "testing"):
            pass
    assert victim.read_bytes() == b"precious"


def test_a_lock_file_deleted_by_its_holder_is_never_held_twice(tmp_path):
    """The holder deletes the file and lets go while another waits: the waiter must lock the file
    now at the path (the one a third process would lock), not the deleted one."""
    path, held = tmp_path / ".x.lock", []

    def waiter():
        with locks.hold(path, "busy", log=lambda message: None):
            held.append(os.path.exists(path))
            with pytest.raises(LinclfError, match="another linclf process is busy"):
                with locks.hold(path, "busy", wait=False):
                    pass
            held.append("alone")

    with locks.hold(path, "busy"):
        thread = threading.Thread(target=waiter)
        thread.start()
        thread.join(0.3)
        path.unlink()
    thread.join(10)
    assert held == [True, "alone"]
