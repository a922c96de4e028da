"""Minibatch SGD with momentum for softmax classifiers, several configurations at once.

`train_group` trains K configurations that share the data-shaping keys (config.DATA_KEYS) on one
shuffled minibatch stream: each batch is gathered once and multiplied once by the wide matrix
W_all (D, K*C), and every configuration keeps its own lr, reg, momentum and lr decay. Because every
column of W_all is updated only from its own columns, each member follows exactly the path it would
follow alone (`train` is `train_group` with K = 1), up to float32 rounding.

The update, per member, with dW and db the gradients of `model.softmax_loss`:

    v_W = momentum * v_W - lr * dW;   W += v_W        (likewise for b)
    lr  = lr * lr_decay after every epoch

Divergence: a member whose minibatch loss becomes NaN/inf or exceeds DIVERGED_LOSS is stopped
with status "diverged", its weights discarded; the other members carry on undisturbed.

Speed (see `train_group` and scripts/bench_train.py): the data set is never converted as a whole;
a loader process gathers and converts the next minibatch while the training loop computes on the
current one, and the thin products are cut into blocks that BLAS multiplies without packing.
The loader only moves data, so `prefetch=False` (load, then compute) gives exactly the same numbers.
"""
import functools
import math
import mmap
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from linclf import data, preprocess
from linclf.config import DATA_KEYS

DIVERGED_LOSS = 20 * math.log(data.NUM_CLASSES)  # nats: 20 times the loss of a uniform guess


@dataclass
class Prepared:
    """Training and validation inputs, kept raw; the model's input is (X - offset) * scale.

    X_train (N, D) and X_val (M, D) are uint8 pixels (or float32 features) in memory; offset (D,)
    float32 and scale (a float) are the standardization fitted on the training split, which the
    trainer folds into its matrix products instead of converting the data (see `train_group`).
    """
    X_train: np.ndarray
    y_train: np.ndarray   # (N,) int
    X_val: np.ndarray
    y_val: np.ndarray     # (M,) int
    offset: np.ndarray    # (D,) float32
    scale: float
    preprocessing: dict   # {"mean": (D,), "std": ()}, saved with the model


def prepare(dataset, val_size, train_size=0):
    """Split the dataset and fit the preprocessing on the training split (see preprocess.py)."""
    train_images, train_labels = data.split(dataset, "train", val_size, train_size)
    val_images, val_labels = data.split(dataset, "val", val_size, train_size)
    preprocessing = preprocess.fit(train_images)
    # np.array copies out of the memory-mapped cache: gathering batches from file-backed pages is
    # twice as slow once the kernel has reclaimed them (ascontiguousarray would keep the memmap)
    return Prepared(np.array(preprocess.flatten(train_images)), np.asarray(train_labels, dtype=np.intp),
                    np.array(preprocess.flatten(val_images)), np.asarray(val_labels, dtype=np.intp),
                    preprocessing["mean"], float(1.0 / preprocessing["std"]), preprocessing)


def prepare_for(dataset, config):
    """`prepare` with the split a configuration asks for (its val_size and train_size)."""
    return prepare(dataset, config["val_size"], config["train_size"])


@dataclass
class RunResult:
    """What one configuration's training produced."""
    config: dict
    status: str                      # "ok" or "diverged"
    W: np.ndarray | None             # (D, C) float32, None when diverged
    b: np.ndarray | None             # (C,) float32
    message: str = ""
    history: dict = field(default_factory=dict)  # per-epoch lists, and "step_loss"
    seconds: float = 0.0             # wall time of the group / K: the run's share

    def metrics(self):
        """The JSON-ready summary saved as metrics.json."""
        history = self.history

        def last(key):
            return history[key][-1] if history.get(key) else None

        return {"status": self.status, "message": self.message,
                "train_accuracy": history.get("final_train_accuracy"),
                "val_accuracy": last("val_accuracy"), "final_loss": last("train_loss"),
                "val_loss": last("val_loss"), "seconds": round(self.seconds, 3), "history": history}


class _Group:
    """The stacked parameters of the members still training, and their hyper-parameters.

    Weights are stored transposed, Wt (K*C, D): member k owns rows k*C .. k*C+C-1, so per-member
    factors (lr, reg, momentum) broadcast along contiguous rows of length D.
    """

    def __init__(self, configs, init, num_classes):
        self.members = list(range(len(configs)))
        self.num_classes = num_classes

        def per_row(key):
            return np.repeat(np.array([c[key] for c in configs], dtype=np.float32), num_classes)

        self.lr = per_row("lr")
        self.reg = per_row("reg")
        self.momentum = per_row("momentum")
        self.lr_decay = per_row("lr_decay")
        # C order matters: the update mixes Wt with the gradient, and mixed layouts run 5x slower
        self.Wt = np.ascontiguousarray(np.concatenate([np.float32(c["init_scale"]) * init.T for c in configs]))
        self.b = np.zeros(len(self.Wt), dtype=np.float32)
        self.velocity_W = np.zeros_like(self.Wt)
        self.velocity_b = np.zeros_like(self.b)
        self.gradient = np.empty_like(self.Wt)
        self.refresh()

    def refresh(self):
        """Recompute the update's factors after lr or the members change. A factor shared by every
        row is kept as a scalar: numpy multiplies by one about three times faster than by a vector."""
        def uniform(values):
            return values.size > 0 and bool(np.all(values == values[0]))

        def per_member(values):  # multiplies the (K, C, D) view of Wt: twice as fast as a (K*C, 1) column
            return values[0] if uniform(values) else values[::self.num_classes].reshape(-1, 1, 1)

        self.lr_columns = self.lr[0] if uniform(self.lr) else self.lr  # multiplies scores (n, K*C)
        self.momentum_factor = per_member(self.momentum)
        self.decay_factor = per_member(self.lr * self.reg)

    def drop(self, positions):
        """Remove the members at these positions (indices into self.members)."""
        C = self.num_classes
        keep = [p for p in range(len(self.members)) if p not in positions]
        rows = np.concatenate([np.arange(p * C, (p + 1) * C) for p in keep]) if keep else np.arange(0)
        for name in ("lr", "reg", "momentum", "lr_decay", "b", "velocity_b", "Wt", "velocity_W"):
            setattr(self, name, np.ascontiguousarray(getattr(self, name)[rows]))
        self.gradient = np.empty_like(self.Wt)
        self.members = [self.members[p] for p in keep]
        self.refresh()


def _per_member(values, K, C):
    """Sum (K*C,) per-column values into (K,) per-member values."""
    return values.reshape(K, C).sum(axis=1)


# OpenBLAS's AVX-512 kernels (in numpy's wheels on such CPUs) multiply without packing the operands
# when rows * columns * depth <= 1e6. A single run's thin products (K*C = 10 columns) are cut into
# blocks that fit: with the loader process busy beside it, that made an epoch 1.3x faster here.
# Wider groups are left whole (their blocks measured slower than one call).
SMALL_PRODUCT = 1_000_000
POLL_SECONDS = 0.002  # how long the loader process polls for its next job before it sleeps


def _thin(Wt):
    """Whether products with weights Wt (K*C, D) are cut into blocks of at least 32 rows."""
    return 32 * Wt.shape[0] * Wt.shape[1] <= SMALL_PRODUCT


@functools.lru_cache(maxsize=64)  # the same few cuts every step; computing them cost 2% of a step
def _blocks(length, size):
    """Cut range(length) into equal slices of at most `size` (at least 1) items."""
    count = max(1, math.ceil(length / max(1, size)))
    edges = [length * i // count for i in range(count + 1)]
    return tuple(slice(start, stop) for start, stop in zip(edges, edges[1:]))


def _forward(A, Wt, out):
    """out (n, K*C) = A (n, D) @ Wt.T, in blocks of rows when Wt is thin."""
    W = Wt.T
    if not _thin(Wt):
        np.matmul(A, W, out=out)
        return
    for block in _blocks(len(A), SMALL_PRODUCT // Wt.size):
        np.matmul(A[block], W, out=out[block])


def _backward(S, A, out):
    """out (K*C, D) = S.T @ A for S (n, K*C) and A (n, D), in blocks of columns when thin."""
    St = S.T
    if not _thin(out):
        np.matmul(St, A, out=out)
        return
    for block in _blocks(A.shape[1], SMALL_PRODUCT // S.size):
        np.matmul(St, A[:, block], out=out[:, block])


def _shared(shape, dtype):
    """A zeroed array in anonymous shared memory: a process forked after this call sees the same
    bytes (a plain numpy array would be copied on write)."""
    count = math.prod(shape)
    buffer = mmap.mmap(-1, max(1, count * np.dtype(dtype).itemsize))
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)


@functools.lru_cache(maxsize=16)
def _ones(shape):
    """A read-only float32 array of ones, made once per shape."""
    ones = np.ones(shape, dtype=np.float32)
    ones.flags.writeable = False
    return ones


class _Batch:
    """The buffer of one minibatch of at most `rows` rows: `inputs(n)` (n+1, D) float32 holds -offset
    in row 0 and the batch's rows in rows 1..n (see `train_group`). `allocate(shape, dtype)` makes
    the buffer (np.empty, or `_shared` when another process fills it)."""

    def __init__(self, rows, X, offset, allocate=np.empty):
        self.D = X.shape[1]
        self.gathered = np.empty((rows, self.D), dtype=X.dtype)
        # rows padded past D: a row stride that is a multiple of 4 KiB slows BLAS down by cache conflicts
        self.padded = allocate((rows + 1, self.D + 16), np.float32)
        self.padded[0, :self.D] = -offset

    def load(self, X, index):
        """Gather rows `index` of X (N, D) and convert them into the batch."""
        n = len(index)
        # mode="clip" lets numpy write straight into `out` ("raise" buffers it); index is in range
        np.take(X, index, axis=0, out=self.gathered[:n], mode="clip")
        self.fill(self.gathered[:n])

    def fill(self, rows):
        """Convert rows (n, D) into the batch."""
        np.copyto(self.padded[1:len(rows) + 1, :self.D], rows, casting="unsafe")

    def inputs(self, n):
        """The (n+1, D) product operand of a batch of n rows."""
        return self.padded[:n + 1, :self.D]


def _scores(raw, group, scale):
    """The scores (n, K*C), in place in raw[1:], from raw (n+1, K*C) = batch inputs @ Wt.T."""
    S = raw[1:]
    S += raw[0] + group.b / scale
    S *= scale
    return S


def _sgd_step(group, Xa, yb, scores, scale):
    """One momentum-SGD step of every member on batch inputs Xa (n+1, D) (see `_Batch.inputs`) with
    labels yb (n,), in place; scores (at least n+1, K*C) is scratch space. Returns each member's mean
    data loss (K,) and number of correct predictions (K,).

    The softmax works on the scores as one row of C classes per (example, member) pair; its row
    reductions are an argmax and a product with ones, which numpy runs several times faster than
    max() and sum() along a short axis.
    """
    n, C, K = len(yb), group.num_classes, len(group.members)
    Sa = scores[:n + 1]
    _forward(Xa, group.Wt, Sa)
    S = _scores(Sa, group, scale)                  # (n, K*C)
    pairs = S.reshape(n * K, C)                    # one row per (example, member)
    flat = S.reshape(-1)                           # indexing the flat view is 4x faster than [rows, cols]
    starts = np.arange(0, n * K * C, C)            # flat index of each row's first class
    labels = np.repeat(yb, K) if K > 1 else yb
    true = starts + labels                         # flat index of each row's true class
    top = pairs.argmax(axis=1)
    pairs -= flat[starts + top][:, None]           # shift every row by its maximum
    picked = flat[true]                            # shifted score of the true class
    np.exp(pairs, out=pairs)
    sums = pairs @ _ones((C, 1))
    losses = (np.log(sums[:, 0]) - picked).reshape(n, K).sum(axis=0) / n
    correct = (top == labels).reshape(n, K).sum(axis=0)
    pairs /= sums                                  # probabilities
    flat[true] -= 1.0                              # n * dLoss/dScores
    S *= group.lr_columns * (scale / n)
    np.matmul(_ones((n,)), S, out=Sa[0])           # column sums
    _backward(Sa, Xa, group.gradient)              # lr * dW of the data term, transposed
    velocity, weights, gradient = (a.reshape(K, C, -1) for a in (group.velocity_W, group.Wt, group.gradient))
    velocity *= group.momentum_factor
    velocity -= gradient
    np.multiply(weights, group.decay_factor, out=gradient)
    velocity -= gradient                           # - lr * reg * W
    weights += velocity
    group.velocity_b *= group.momentum
    group.velocity_b -= Sa[0] / scale              # - lr * db
    group.b += group.velocity_b
    return losses, correct


class _InlineLoader:
    """Runs each load job `load(buffer, start, end)` when it is submitted."""

    def __init__(self, load):
        self._load = load

    def submit(self, buffer, start, end):
        self._load(buffer, start, end)

    def wait(self):
        pass

    def close(self):
        pass


class _ProcessLoader:
    """Runs load jobs `load(buffer, start, end)` one at a time in a forked process, while the
    caller computes. The process sees the batch buffers and the epoch's order through shared memory
    made before the fork, and has an interpreter of its own: a thread would hold up the training
    loop at every GIL handoff (about 15 ms an epoch here).

    Between jobs the process polls for the next one for `poll_seconds` before it sleeps: releasing a
    semaphore that a process sleeps on costs the training loop a system call (about 10 us a step).
    Poll only while the training loop leaves the second CPU idle: wide products use two BLAS threads.
    """

    def __init__(self, load, poll_seconds=0.0):
        context = multiprocessing.get_context("fork")
        self._job = _shared((3,), np.int64)            # buffer, start, end; buffer -1: exit
        self._failure = _shared((1024,), np.uint8)     # a failed job's message, NUL-terminated
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


def _evaluate(group, X, y, offset, scale, chunk=1024):
    """Per-member mean data loss (K,) and accuracy (K,) on inputs (X - offset) * scale, y (N,).

    Uses the same folded product as the training step (see `train_group`), chunk by chunk.
    """
    K, C = len(group.members), group.num_classes
    loss = np.zeros(K)
    correct = np.zeros(K)
    batch = _Batch(min(chunk, len(y)), X, offset)
    raw = np.empty((min(chunk, len(y)) + 1, len(group.Wt)), dtype=np.float32)
    for start in range(0, len(y), chunk):
        labels = y[start:start + chunk]
        n = len(labels)
        batch.fill(X[start:start + n])
        _forward(batch.inputs(n), group.Wt, raw[:n + 1])
        scores = _scores(raw[:n + 1], group, scale).reshape(n, K, C)
        scores -= scores.max(axis=2, keepdims=True)
        picked = scores[np.arange(n), :, labels]
        loss += (np.log(np.exp(scores).sum(axis=2)) - picked).sum(axis=0)
        correct += (scores.argmax(axis=2) == labels[:, None]).sum(axis=0)
    return loss / max(len(y), 1), correct / max(len(y), 1)


def can_prefetch():
    """Whether a loader process can run beside the training loop: fork exists, this process may have
    children (a daemonic one, like a multiprocessing pool worker, may not) and may use two CPUs."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return (cpus >= 2 and "fork" in multiprocessing.get_all_start_methods()
            and not multiprocessing.current_process().daemon)


def train_group(prepared, configs, num_classes=data.NUM_CLASSES, progress=False, desc="train", prefetch=None):
    """Train every configuration in `configs` (all sharing config.DATA_KEYS) on `prepared` data.

    Returns one RunResult per configuration, in order. `progress` shows a tqdm bar. `prefetch` True
    loads the next minibatch in a second process while computing on the current one, False loads
    and computes in turn; the results are identical. The default prefetches when `can_prefetch()`
    and the products are thin (see `_thin`): wider products run on two BLAS threads, which a loader
    process would only get in the way of.

    The hot loop never converts the data set: each batch of raw rows x (n, D) is gathered and cast
    into rows 1..n of a float32 buffer A whose row 0 holds -offset. With s the scale, A @ W has
    x @ W in rows 1..n and -offset @ W in row 0, so exactly (up to rounding)
        scores = (x - offset) s W + b     = s * (rows 1..n of A @ W + row 0 of A @ W) + b
        lr dW  = s (x - offset)^T dS lr   = A^T @ [colsum(D1); D1]   with D1 = dS * lr * s
    and standardization costs two tiny (n, K*C) operations instead of passes over the batch.
    """
    first = configs[0]
    for other in configs[1:]:
        if any(other[key] != first[key] for key in DATA_KEYS):
            raise ValueError(f"configurations trained together must share {DATA_KEYS}")
    if prefetch and "fork" not in multiprocessing.get_all_start_methods():
        raise ValueError("prefetch needs the 'fork' start method, which this platform lacks")
    return _train_group(prepared, configs, num_classes, progress, desc, prefetch)


def _train_group(prepared, configs, num_classes, progress, desc, prefetch):
    first = configs[0]
    X, y = prepared.X_train, prepared.y_train
    N, D = X.shape
    K, C = len(configs), num_classes
    scale = np.float32(prepared.scale)
    epochs, batch_size = first["epochs"], min(first["batch_size"], N)
    rng = np.random.default_rng(first["seed"])
    group = _Group(configs, rng.standard_normal((D, C)).astype(np.float32), C)

    steps_per_epoch = math.ceil(N / batch_size)
    histories = [{"epoch": [], "lr": [], "train_loss": [], "train_accuracy": [], "val_loss": [],
                  "val_accuracy": [], "epoch_seconds": [], "step_loss": []} for _ in configs]
    results = [None] * K
    if prefetch is None:
        prefetch = _thin(group.Wt) and can_prefetch()
    # a loader process fills the batches in the order of the epoch, so both live in shared memory
    allocate = _shared if prefetch else np.empty
    batches = [_Batch(batch_size, X, prepared.offset, allocate) for _ in range(2)]  # computed on, loading
    order = allocate((N,), np.intp)
    scores = np.empty((batch_size + 1, K * C), dtype=np.float32)
    started = time.perf_counter()
    bar = tqdm(total=epochs * steps_per_epoch, desc=desc, unit="step", disable=not progress, leave=False,
               dynamic_ncols=True)

    def stop(positions, epoch, step, losses):
        for position in positions:
            member = group.members[position]
            message = (f"diverged at epoch {epoch + 1}, step {step + 1}: minibatch loss {losses[position]:.4g} "
                       f"(limit {DIVERGED_LOSS:.3g}); try a smaller lr")
            results[member] = RunResult(configs[member], "diverged", None, None, message, histories[member])
        group.drop(positions)

    def load(buffer, start, end):
        """The load job: rows order[start:end] of X into batches[buffer] (run by the loader)."""
        batches[buffer].load(X, order[start:end])

    # per step since the last flush: (rows, each member's mean loss (K,), correct predictions (K,))
    pending = []
    epoch_loss, epoch_correct = np.zeros(K), np.zeros(K)  # indexed by configuration

    def flush():
        """Move the pending steps into the histories and the epoch's sums (once an epoch and before
        members are dropped: numpy work on (K,) arrays every step cost 1-2% of the epoch)."""
        if not pending:
            return
        rows = np.array([step[0] for step in pending])
        losses = np.array([step[1] for step in pending])          # (steps, K)
        epoch_loss[group.members] += rows @ losses
        epoch_correct[group.members] += np.array([step[2] for step in pending]).sum(axis=0)
        for position, member in enumerate(group.members):
            histories[member]["step_loss"] += [round(loss, 5) for loss in losses[:, position].tolist()]
        pending.clear()

    loader = _InlineLoader(load)
    if prefetch:
        try:
            loader = _ProcessLoader(load, POLL_SECONDS if _thin(group.Wt) else 0.0)
        except OSError:  # no process to be had (a limit on processes, say): load in turn
            pass
    try:
        for epoch in range(epochs):
            epoch_started = time.perf_counter()
            order[:] = rng.permutation(N)
            epoch_labels = y[order]
            epoch_loss[:] = epoch_correct[:] = 0
            loader.submit(0, 0, batch_size)
            for step in range(steps_per_epoch):
                loader.wait()  # batch `step` is ready; the other buffer is free
                if not group.members:
                    break
                if step + 1 < steps_per_epoch:
                    loader.submit((step + 1) % 2, (step + 1) * batch_size, (step + 2) * batch_size)
                labels = epoch_labels[step * batch_size:(step + 1) * batch_size]
                n = len(labels)
                if scores.shape[1] != len(group.Wt):  # a member was dropped
                    scores = np.empty((batch_size + 1, len(group.Wt)), dtype=np.float32)
                losses, correct = _sgd_step(group, batches[step % 2].inputs(n), labels, scores, scale)
                pending.append((n, losses, correct))
                bad = [position for position, loss in enumerate(losses.tolist()) if not loss <= DIVERGED_LOSS]
                if bad:  # NaN counts too: it is not <= anything
                    flush()
                    stop(bad, epoch, step, losses)
                bar.update(1)
            flush()
            if not group.members:
                break
            K_now = len(group.members)
            penalty = 0.5 * _per_member(np.einsum("kd,kd->k", group.Wt, group.Wt) * group.reg, K_now, C)
            val_loss, val_accuracy = _evaluate(group, prepared.X_val, prepared.y_val, prepared.offset, scale)
            lr_now = group.lr[::C]
            epoch_seconds = time.perf_counter() - epoch_started
            for position, member in enumerate(group.members):
                history = histories[member]
                history["epoch"].append(epoch + 1)
                history["lr"].append(float(lr_now[position]))
                history["train_loss"].append(round(float(epoch_loss[member] / N + penalty[position]), 6))
                history["train_accuracy"].append(round(float(epoch_correct[member] / N), 6))
                history["val_loss"].append(round(float(val_loss[position]), 6))
                history["val_accuracy"].append(round(float(val_accuracy[position]), 6))
                history["epoch_seconds"].append(round(epoch_seconds / K_now, 4))
            best = int(np.argmax(val_accuracy))
            loss = epoch_loss[group.members[best]] / N + penalty[best]
            bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{loss:.3f}",
                            lr=f"{lr_now[best]:.2g}", val=f"{val_accuracy[best]:.3f}")
            group.lr *= group.lr_decay
            group.refresh()
    finally:
        loader.close()
    bar.close()

    if group.members:
        _, train_accuracy = _evaluate(group, X, y, prepared.offset, scale)
        for position, member in enumerate(group.members):
            rows = slice(position * C, (position + 1) * C)
            histories[member]["final_train_accuracy"] = round(float(train_accuracy[position]), 6)
            results[member] = RunResult(configs[member], "ok", np.ascontiguousarray(group.Wt[rows].T),
                                        group.b[rows].copy(), "", histories[member])
    seconds = (time.perf_counter() - started) / K
    for result in results:
        result.seconds = seconds
    return results


def train(prepared, config, num_classes=data.NUM_CLASSES, progress=False, desc="train", prefetch=None):
    """Train one configuration; returns its RunResult."""
    return train_group(prepared, [config], num_classes, progress, desc, prefetch)[0]
