import io
import re
import threading

import pytest

from linclf.util import progressbars


def test_without_a_terminal_it_prints_plain_lines(monkeypatch):
    stream = io.StringIO()
    with progressbars.bar(300, "sweep", unit="step", log_every_seconds=0, stream=stream) as bar:
        bar.update(120)
        bar.set_postfix(loss=0.31234)
        bar.update(180)
    lines = stream.getvalue().splitlines()
    assert re.fullmatch(r"sweep: 40% \(120/300 step\) \d+ s elapsed, ~\d+ s left", lines[0])
    assert re.fullmatch(r"sweep: 100% \(300/300 step\) \d+ s elapsed, loss=0.3123", lines[1])
    assert len(lines) == 2  # nothing new to say at close


def test_lines_are_spaced_out_and_the_last_one_comes_at_close():
    stream = io.StringIO()
    bar = progressbars.bar(2**21, "cifar-10-python.tar.gz", unit="B", log_every_seconds=3600, stream=stream)
    for _ in range(8):
        bar.update(2**18)
    assert stream.getvalue() == ""
    bar.close()
    assert re.fullmatch(r"cifar-10-python.tar.gz: 100% \(2.0/2.0 MiB\) \d+ s elapsed\n", stream.getvalue())


@pytest.mark.parametrize("enabled", [False, True])
def test_unknown_total_and_disabled(enabled):
    stream = io.StringIO()
    with progressbars.bar(None, "groups", unit="group", enabled=enabled, log_every_seconds=0, stream=stream) as bar:
        bar.update(3)
    assert stream.getvalue() == ("groups: 3 group, 0 s elapsed\n" if enabled else "")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_at_a_terminal_it_is_a_tqdm_bar_without_a_monitor_thread():
    stream = Terminal()
    before = set(threading.enumerate())
    with progressbars.bar(10, "train", unit="step", stream=stream) as bar:
        bar.update(5)
        assert bar._tqdm is not None
        assert set(threading.enumerate()) == before  # no TMonitor: the trainer forks afterwards
        assert bar._tqdm.n == 5 and progressbars.tqdm.monitor is None
    assert stream.getvalue().startswith("\rtrain:   0%")
