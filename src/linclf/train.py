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
a loader thread gathers and converts the next minibatch while the calling thread computes on the
current one, and the thin products are cut into blocks that BLAS multiplies without packing.
The loader only moves data, so `threads=1` (load, then compute) gives exactly the same numbers.
"""
import math
import os
import threading
import time
from dataclasses import dataclass, field
from functools import partial

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
        """Recompute the update's row factors after lr or the members change. A factor shared by
        every row is kept as a scalar: numpy multiplies by one about three times faster than by a
        broadcast column."""
        def factor(values):
            return values[0] if values.size and np.all(values == values[0]) else values[:, None]

        self.momentum_rows = factor(self.momentum)
        self.decay_rows = factor(self.lr * self.reg)

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
# blocks that fit: with the loader thread busy beside it, that made an epoch 1.3x faster here.
# Wider groups are left whole (their blocks measured slower than one call).
SMALL_PRODUCT = 1_000_000


def _thin(Wt):
    """Whether products with weights Wt (K*C, D) are cut into blocks of at least 32 rows."""
    return 32 * Wt.shape[0] * Wt.shape[1] <= SMALL_PRODUCT


def _blocks(length, size):
    """Cut range(length) into equal slices of at most `size` (at least 1) items."""
    count = max(1, math.ceil(length / max(1, size)))
    edges = [length * i // count for i in range(count + 1)]
    return [slice(start, stop) for start, stop in zip(edges, edges[1:])]


def _forward(A, Wt, out):
    """out (n, K*C) = A (n, D) @ Wt.T, in blocks of rows when Wt is thin."""
    if not _thin(Wt):
        np.matmul(A, Wt.T, out=out)
        return
    for block in _blocks(len(A), SMALL_PRODUCT // Wt.size):
        np.matmul(A[block], Wt.T, out=out[block])


def _backward(S, A, out):
    """out (K*C, D) = S.T @ A for S (n, K*C) and A (n, D), in blocks of columns when thin."""
    if not _thin(out):
        np.matmul(S.T, A, out=out)
        return
    for block in _blocks(A.shape[1], SMALL_PRODUCT // S.size):
        np.matmul(S.T, A[:, block], out=out[:, block])


class _Batch:
    """One minibatch, gathered and converted: inputs (n+1, D) float32 holds -offset in row 0 and
    the batch's rows in rows 1..n (see `train_group`); labels (n,)."""

    def __init__(self, rows, X, offset):
        D = X.shape[1]
        self.gathered = np.empty((rows, D), dtype=X.dtype)
        # rows padded past D: a row stride that is a multiple of 4 KiB slows BLAS down by cache conflicts
        self.padded = np.empty((rows + 1, D + 16), dtype=np.float32)
        self.padded[0, :D] = -offset
        self.inputs = self.padded[:1, :D]
        self.labels = np.empty(0, dtype=np.intp)

    def load(self, X, y, index):
        """Gather rows `index` of X (N, D) and their labels from y (N,)."""
        n = len(index)
        # mode="clip" lets numpy write straight into `out` ("raise" buffers it); index is in range
        np.take(X, index, axis=0, out=self.gathered[:n], mode="clip")
        self.fill(self.gathered[:n], y[index])

    def fill(self, rows, labels):
        """Convert rows (n, D) into the batch, with their labels (n,)."""
        n, D = rows.shape
        np.copyto(self.padded[1:n + 1, :D], rows, casting="unsafe")
        self.inputs = self.padded[:n + 1, :D]
        self.labels = labels


def _scores(raw, group, scale):
    """The scores (n, K*C), in place in raw[1:], from raw (n+1, K*C) = batch inputs @ Wt.T."""
    S = raw[1:]
    S += raw[0] + group.b / scale
    S *= scale
    return S


def _sgd_step(group, batch, scores, scale):
    """One momentum-SGD step of every member on one `_Batch`, in place; scores (rows+1, K*C) is
    scratch space. Returns each member's mean data loss (K,) and number of correct predictions (K,).

    The softmax works on the scores as one row of C classes per (example, member) pair; its row
    reductions are an argmax and a product with ones, which numpy runs several times faster than
    max() and sum() along a short axis.
    """
    Xa, yb = batch.inputs, batch.labels
    n, C, K = len(yb), group.num_classes, len(group.members)
    Sa = scores[:n + 1]
    _forward(Xa, group.Wt, Sa)
    S = _scores(Sa, group, scale)                  # (n, K*C)
    pairs = S.reshape(n * K, C)                    # one row per (example, member)
    rows = np.arange(n * K)
    labels = np.repeat(yb, K) if K > 1 else yb
    top = pairs.argmax(axis=1)
    pairs -= pairs[rows, top][:, None]             # shift every row by its maximum
    picked = pairs[rows, labels]                   # shifted score of the true class
    np.exp(pairs, out=pairs)
    sums = pairs @ np.ones((C, 1), dtype=np.float32)
    losses = (np.log(sums[:, 0]) - picked).reshape(n, K).sum(axis=0) / n
    correct = (top == labels).reshape(n, K).sum(axis=0)
    pairs /= sums                                  # probabilities
    pairs[rows, labels] -= 1.0                     # n * dLoss/dScores
    S *= group.lr * (scale / n)
    np.matmul(np.ones(n, dtype=np.float32), S, out=Sa[0])  # column sums
    _backward(Sa, Xa, group.gradient)              # lr * dW of the data term, transposed
    group.velocity_W *= group.momentum_rows
    group.velocity_W -= group.gradient
    np.multiply(group.Wt, group.decay_rows, out=group.gradient)
    group.velocity_W -= group.gradient             # - lr * reg * W
    group.Wt += group.velocity_W
    group.velocity_b *= group.momentum
    group.velocity_b -= Sa[0] / scale              # - lr * db
    group.b += group.velocity_b
    return losses, correct


class _Loader:
    """Runs one job at a time on a second thread: the training loop's next batch is gathered
    and converted there (numpy releases the GIL for both) while the loop computes."""

    def __init__(self):
        # plain locks as binary semaphores (released by the other thread): the cheapest handoff
        self._start, self._finished = threading.Lock(), threading.Lock()
        self._start.acquire()
        self._finished.acquire()
        self._job = None
        self._error = None
        self._thread = threading.Thread(target=self._serve, name="linclf-loader", daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            self._start.acquire()
            job = self._job
            if job is None:
                return
            try:
                job()
            except BaseException as error:  # raised in the training loop by wait()
                self._error = error
            self._finished.release()

    def submit(self, job):
        self._job = job
        self._start.release()

    def wait(self):
        """Block until the submitted job is done; raise its error, if any."""
        self._finished.acquire()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self):
        """Stop the thread, also when a submitted job was never waited for (the loop was interrupted)."""
        self._job = None
        if self._start.locked():  # else the thread has yet to take the last submit, and will find None
            self._start.release()
        self._thread.join()


class _InlineLoader:
    """_Loader's interface without a thread: each job runs when it is submitted."""

    def submit(self, job):
        job()

    def wait(self):
        pass

    def close(self):
        pass


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
        batch.fill(X[start:start + chunk], y[start:start + chunk])
        n = len(batch.labels)
        _forward(batch.inputs, group.Wt, raw[:n + 1])
        scores = _scores(raw[:n + 1], group, scale).reshape(n, K, C)
        scores -= scores.max(axis=2, keepdims=True)
        picked = scores[np.arange(n), :, batch.labels]
        loss += (np.log(np.exp(scores).sum(axis=2)) - picked).sum(axis=0)
        correct += (scores.argmax(axis=2) == batch.labels[:, None]).sum(axis=0)
    return loss / max(len(y), 1), correct / max(len(y), 1)


def default_threads():
    """2 (a loader thread beside the training loop) where this process may use two CPUs, else 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return 2 if cpus >= 2 else 1


def train_group(prepared, configs, num_classes=data.NUM_CLASSES, progress=False, desc="train", threads=None):
    """Train every configuration in `configs` (all sharing config.DATA_KEYS) on `prepared` data.

    Returns one RunResult per configuration, in order. `progress` shows a tqdm bar. `threads` is 2
    to load the next minibatch on a second thread while computing, 1 to do both in turn (default
    `default_threads()`); the results are identical.

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
    threads = default_threads() if threads is None else threads
    if threads not in (1, 2):
        raise ValueError(f"threads must be 1 or 2, got {threads}")
    loader = _Loader() if threads == 2 else _InlineLoader()
    try:
        return _train_group(prepared, configs, num_classes, progress, desc, loader)
    finally:
        loader.close()


def _train_group(prepared, configs, num_classes, progress, desc, loader):
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
    batches = [_Batch(batch_size, X, prepared.offset) for _ in range(2)]  # one computed on, one loading
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

    def load(order, step):
        """The job that loads batch `step` of the epoch's `order` into its buffer."""
        return partial(batches[step % 2].load, X, y, order[step * batch_size:(step + 1) * batch_size])

    for epoch in range(epochs):
        epoch_started = time.perf_counter()
        order = rng.permutation(N)
        epoch_loss = np.zeros(len(group.members))
        epoch_correct = np.zeros(len(group.members))
        loader.submit(load(order, 0))
        for step in range(steps_per_epoch):
            loader.wait()  # batch `step` is ready; the other buffer is free
            if not group.members:
                break
            if step + 1 < steps_per_epoch:
                loader.submit(load(order, step + 1))
            batch = batches[step % 2]
            if scores.shape[1] != len(group.Wt):  # a member was dropped
                scores = np.empty((batch_size + 1, len(group.Wt)), dtype=np.float32)
            losses, correct = _sgd_step(group, batch, scores, scale)
            n = len(batch.labels)
            epoch_correct += correct
            epoch_loss += losses * n
            for position, member in enumerate(group.members):
                histories[member]["step_loss"].append(round(float(losses[position]), 5))
            if not (losses <= DIVERGED_LOSS).all():  # catches NaN too
                bad = np.flatnonzero(~(losses <= DIVERGED_LOSS))
                keep = np.ones(len(losses), dtype=bool)
                keep[bad] = False
                stop(list(bad), epoch, step, losses)
                epoch_loss, epoch_correct = epoch_loss[keep], epoch_correct[keep]
            bar.update(1)
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
            history["train_loss"].append(round(float(epoch_loss[position] / N + penalty[position]), 6))
            history["train_accuracy"].append(round(float(epoch_correct[position] / N), 6))
            history["val_loss"].append(round(float(val_loss[position]), 6))
            history["val_accuracy"].append(round(float(val_accuracy[position]), 6))
            history["epoch_seconds"].append(round(epoch_seconds / K_now, 4))
        best = int(np.argmax(val_accuracy))
        bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{epoch_loss[best] / N + penalty[best]:.3f}",
                        lr=f"{lr_now[best]:.2g}", val=f"{val_accuracy[best]:.3f}")
        group.lr *= group.lr_decay
        group.refresh()
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


def train(prepared, config, num_classes=data.NUM_CLASSES, progress=False, desc="train", threads=None):
    """Train one configuration; returns its RunResult."""
    return train_group(prepared, [config], num_classes, progress, desc, threads)[0]
