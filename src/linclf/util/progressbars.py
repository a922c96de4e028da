"""Progress that shows wherever the output goes: a tqdm bar at a terminal, else a plain line now and
then ("sweep: 40% (120/300 step) 12 s elapsed, ~18 s left"), so `make run > log` is not silent. tqdm's
monitor thread is never started (tqdm.monitor_interval = 0): the trainer forks a loader process, and
forking a process that runs threads is unsafe."""
import sys
import time

from tqdm import tqdm

tqdm.monitor_interval = 0


class Bar:
    """Counts progress towards total (None = unknown) in unit; see bar()."""

    def __init__(self, total, desc, unit, enabled, log_every_seconds, stream, initial, leave):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.enabled, self.log_every_seconds, self.stream = enabled, log_every_seconds, stream
        self.postfix = {}
        self._start = self._last = time.monotonic()
        self._initial = self._shown = initial
        self._tqdm = None
        if enabled and _isatty(stream):
            scaled = unit == "B"
            self._tqdm = tqdm(total=total, desc=desc, unit=unit, initial=initial, file=stream, leave=leave,
                              unit_scale=scaled, unit_divisor=1024 if scaled else 1000)

    def update(self, n=1):
        """n more units done."""
        self.n += n
        if self._tqdm is not None:
            self._tqdm.update(n)
        elif self.enabled and time.monotonic() - self._last >= self.log_every_seconds:
            self._line()

    def set_postfix(self, **values):
        """Values shown after the count (loss=0.31, say)."""
        self.postfix = values
        if self._tqdm is not None:
            self._tqdm.set_postfix(**values)

    def close(self):
        """Close the bar; without a terminal, print the last line when something was not shown yet."""
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
        elif self.enabled and self.n != self._shown:
            self._line()
        self.enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *error):
        self.close()

    def _line(self):
        now = time.monotonic()
        elapsed = now - self._start
        if self.unit == "B":
            done, unit = f"{self.n / 2**20:.1f}", "MiB"
            whole = f"{self.total / 2**20:.1f}" if self.total else None
        else:
            done, unit, whole = f"{self.n:g}", self.unit, (f"{self.total:g}" if self.total else None)
        if whole:
            text = f"{self.desc}: {100 * self.n / self.total:.0f}% ({done}/{whole} {unit}) {elapsed:.0f} s elapsed"
            rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0
            if rate > 0 and self.n < self.total:
                text += f", ~{(self.total - self.n) / rate:.0f} s left"
        else:
            text = f"{self.desc}: {done} {unit}, {elapsed:.0f} s elapsed"
        if self.postfix:
            text += ", " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in self.postfix.items())
        print(text, file=self.stream, flush=True)
        self._last, self._shown = now, self.n


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def bar(total, desc, unit="it", enabled=True, log_every_seconds=10, stream=None, initial=0, leave=False):
    """A progress bar: tqdm when stream (default sys.stderr) is a terminal; otherwise one plain line at
    most every log_every_seconds and one at the end; nothing at all when not enabled. Use as a context
    manager, or call close(). unit "B" counts bytes (shown in KiB/MiB)."""
    return Bar(total, desc, unit, enabled, log_every_seconds, sys.stderr if stream is None else stream,
               initial, leave)


def factory(desc, unit):
    """bar() with desc and unit fixed, for code that knows the total only later:
    factory(desc, unit)(total) (loop.train_group makes its bar after forking its loader), or
    factory(desc, unit)(total, other_unit) where the caller counts something else (solver lbfgs: runs)."""
    return lambda total, counted=unit: bar(total, desc, counted)
