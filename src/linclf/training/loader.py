"""Minibatch buffers, and the loader that fills the next one while the trainer computes.

The loader only moves data, so loading beside the training loop (a forked process) or in turn
(`InlineLoader`) gives exactly the same numbers.
"""
import math
import mmap
import multiprocessing
import os
import signal
import time

import numpy as np

from linclf.util import float16

POLL_SECONDS = 0.002  # how long the loader process polls for its next job before it sleeps


def shared(shape, dtype):
    """A zeroed array in anonymous shared memory: a process forked after this call sees the same
    bytes (a plain numpy array would be copied on write)."""
    count = math.prod(shape)
    buffer = mmap.mmap(-1, max(1, count * np.dtype(dtype).itemsize))
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)


class Batch:
    """The buffer of one minibatch of at most `rows` rows of X (N, D): `inputs(n)` (n+1, D) float32
    is the product operand of kernels.softmax_gradient, with `scale` its scalar scale.

    With a scalar `scale`, row 0 holds -offset and rows 1..n the raw rows (the standardization is
    folded into the products, see kernels.py). With a per-feature scale (D,), rows 1..n hold the
    standardized rows (x - offset) * scale, row 0 is zero and `scale` is 1.
    `allocate(shape, dtype)` makes the buffer (np.empty, or `shared` when another process fills it).
    """

    def __init__(self, rows, X, offset, scale, allocate=np.empty):
        self.D = X.shape[1]
        self.gathered = np.empty((rows, self.D), dtype=X.dtype)
        if X.dtype == np.float16:
            float16.to_float32(X[:1])  # compiled here, before a loader process forks
        # rows padded past D: a row stride that is a multiple of 4 KiB slows BLAS down by cache conflicts
        self.padded = allocate((rows + 1, self.D + 16), np.float32)
        if np.ndim(scale) == 0:
            self.scale, self.offset, self.feature_scale = np.float32(scale), None, None
            self.padded[0, :self.D] = -np.asarray(offset, dtype=np.float32)
        else:
            self.scale, self.offset = np.float32(1.0), np.asarray(offset, dtype=np.float32)
            self.feature_scale = np.asarray(scale, dtype=np.float32)
            self.padded[0, :self.D] = 0.0

    def load(self, X, index):
        """Gather rows `index` of X (N, D) and convert them into the batch."""
        n = len(index)
        # mode="clip" lets numpy write straight into `out` ("raise" buffers it); index is in range
        np.take(X, index, axis=0, out=self.gathered[:n], mode="clip")
        self.fill(self.gathered[:n])

    def fill(self, rows):
        """Convert rows (n, D) into the batch."""
        out = self.padded[1:len(rows) + 1, :self.D]
        if rows.dtype == np.float16:  # numpy's cast is 3x slower (util/float16.py)
            rows = float16.to_float32(rows, out)
        if self.feature_scale is None:
            if rows is not out:
                np.copyto(out, rows, casting="unsafe")
        else:
            np.subtract(rows, self.offset, out=out, casting="unsafe")
            out *= self.feature_scale

    def inputs(self, n):
        """The (n+1, D) product operand of a batch of n rows."""
        return self.padded[:n + 1, :self.D]


class InlineLoader:
    """Runs each load job `load(buffer, start, end)` when it is submitted."""

    def __init__(self, load):
        self.submit = load

    def wait(self):
        pass

    def close(self):
        pass


class ProcessLoader:
    """Runs load jobs `load(buffer, start, end)` one at a time in a forked process, while the
    caller computes. The process sees the batch buffers and the epoch's order through shared memory
    made before the fork, and has an interpreter of its own: a thread would hold up the training
    loop at every GIL handoff (about 15 ms an epoch here). Make it before any other thread starts
    (a progress bar's monitor, say): forking a process that runs threads is unsafe.

    Between jobs the process polls for the next one for `poll_seconds` before it sleeps: releasing a
    semaphore that a process sleeps on costs the training loop a system call (about 10 us a step).
    Poll only while the training loop leaves the second CPU idle: wide products use two BLAS threads.
    """

    def __init__(self, load, poll_seconds=0.0):
        context = multiprocessing.get_context("fork")
        self._job = shared((3,), np.int64)            # buffer, start, end; buffer -1: exit
        self._failure = shared((1024,), np.uint8)     # a failed job's message, NUL-terminated
        self._start, self._finished = context.Semaphore(0), context.Semaphore(0)
        self._poll_seconds = poll_seconds
        self._process = context.Process(target=self._serve, args=(load, os.getpid()), name="linclf-loader",
                                        daemon=True)
        # Ctrl-C is the training loop's to handle: the process starts with SIGINT blocked, then ignores it
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self._process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _serve(self, load, parent):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        while self._next_job(parent):
            buffer, start, end = (int(value) for value in self._job)
            if buffer < 0:
                return
            try:
                load(buffer, start, end)
            except BaseException as error:  # raised in the training loop by wait()
                message = f"{type(error).__name__}: {error}".encode()[:len(self._failure) - 1]
                self._failure[:len(message) + 1] = np.frombuffer(message + b"\0", np.uint8)
            self._finished.release()

    def _next_job(self, parent):
        """Wait for the next job, polling first; False when the training process is gone."""
        deadline = time.perf_counter() + self._poll_seconds
        while time.perf_counter() < deadline:
            if self._start.acquire(False):
                return True
        while not self._start.acquire(timeout=1.0):
            if os.getppid() != parent:
                return False
        return True

    def submit(self, buffer, start, end):
        job = self._job
        job[0], job[1], job[2] = buffer, start, end
        self._start.release()

    def wait(self):
        """Block until the submitted job is done; raise its error, if any."""
        while not self._finished.acquire(timeout=1.0):
            if not self._process.is_alive():
                raise RuntimeError(f"the loader process ended unexpectedly (exit code {self._process.exitcode})")
        if self._failure[0]:
            message = bytes(self._failure).split(b"\0")[0].decode(errors="replace")
            self._failure[0] = 0
            raise RuntimeError(f"loading a minibatch failed: {message}")

    def close(self):
        """Stop the process, also when a submitted job was never waited for (the loop was interrupted)."""
        self._job[0] = -1
        self._start.release()
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def can_prefetch():
    """Whether a loader process can run beside the training loop: fork exists, this process may have
    children (a daemonic one, like a multiprocessing pool worker, may not) and may use two CPUs."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return (cpus >= 2 and "fork" in multiprocessing.get_all_start_methods()
            and not multiprocessing.current_process().daemon)
