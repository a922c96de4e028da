"""The training loop: minibatch SGD for softmax classifiers, several configurations at once.

`train_group` trains K configurations that share config.DATA_KEYS on one shuffled minibatch stream
(each epoch visits every training row once, in a fresh order): each batch is gathered once and
multiplied once by the wide W_all (D, K*C), and every configuration keeps its own lr, reg, momentum,
lr decay and init scale. Every column of W_all is updated only from its own columns, so each member
follows the path it would alone (`train`: K = 1), up to float32 rounding. The update rule is in
update.py, the fused step and blocked products in kernels.py, the minibatch buffers and loader
process in loader.py, the snapshot a group saves after an epoch in snapshot.py.

Divergence: a member whose minibatch loss becomes NaN/inf or exceeds diverged_loss(C) is stopped
with status "diverged", its weights discarded; the other members carry on undisturbed.
"""
import math
import time
from dataclasses import dataclass, field

import numpy as np

from linclf.config import DATA_KEYS
from linclf.training import kernels, loader, snapshot
from linclf.training.update import GroupState
from linclf.util import interrupts
from linclf.util.errors import LinclfError

# What training produces from a given configuration and data, as a number: part of every run id
# (runfolders.run_id) and metrics.json, so a change to the trainer's results (a new number) trains
# a grid again instead of finding runs the old trainer made.
TRAINER_VERSION = 2


def diverged_loss(num_classes):
    """The loss (nats) above which a run is stopped: 20 times that of a uniform guess."""
    return 20 * math.log(max(num_classes, 2))


@dataclass
class Prepared:
    """Training and validation inputs, kept raw; the model's input is (X - offset) * scale.

    X_train (N, D) and X_val (M, D) are in memory: uint8 pixels or float features. offset (D,)
    float32 and scale (a float, or (D,) per feature) are the standardization the pipeline fitted on
    the training split, which the trainer applies batch by batch (see loader.Batch). With
    `precondition` on, jobs.prepare hands over standardized, preconditioned rows instead (float16
    for cached features), with offset 0 and scale 1.
    """
    X_train: np.ndarray
    y_train: np.ndarray   # (N,) intp, 0..C-1
    X_val: np.ndarray
    y_val: np.ndarray     # (M,) intp
    offset: np.ndarray    # (D,) float32
    scale: object         # float, or (D,) float32
    num_classes: int = 10


@dataclass
class RunResult:
    """What one configuration's training produced."""
    config: dict
    status: str                      # "ok" or "diverged"
    W: np.ndarray | None             # (D, C) float32, None when diverged
    b: np.ndarray | None             # (C,) float32
    message: str = ""
    history: dict = field(default_factory=dict)  # sgd: per-epoch lists and "step_loss"; lbfgs: solve.py's
    seconds: float = 0.0             # wall time of the group / K: the run's share
    converged: bool | None = None    # lbfgs: whether the gradient test passed; None for sgd (a schedule)
    n_iter: int = 0                  # lbfgs iterations, or sgd epochs, run

    def metrics(self):
        """The JSON-ready summary saved as metrics.json."""
        def last(key):
            return self.history[key][-1] if self.history.get(key) else None

        return {"status": self.status, "message": self.message,
                "train_accuracy": self.history.get("final_train_accuracy"),
                "val_accuracy": last("val_accuracy"), "final_loss": last("train_loss"),
                "val_loss": last("val_loss"), "converged": self.converged, "n_iter": self.n_iter,
                "seconds": round(self.seconds, 3), "history": self.history}


def _rounded(value):
    """A float for the history, rounded to 6 digits; None for NaN (no validation rows)."""
    return None if np.isnan(value) else round(float(value), 6)


def _check(prepared, configs):
    if any(cfg.get(key) != configs[0].get(key) for cfg in configs for key in DATA_KEYS):
        raise ValueError(f"configurations trained together must share {DATA_KEYS}")
    if len(prepared.y_train) == 0:
        raise LinclfError("the training split must hold at least one example")


class _Group:
    """A group in training: its members' state, histories and sums, and the minibatch buffers.

    Each step's (rows, losses (K,), correct (K,)) waits in `pending` until `flush` moves it into the
    histories and the epoch's sums: once an epoch, and before members are dropped (numpy work on
    (K,) arrays every step cost 1-2% of the epoch)."""

    def __init__(self, prepared, configs, state, batches, order):
        self.prepared, self.configs, self.state = prepared, configs, state
        self.batches, self.order = batches, order
        self.limit = diverged_loss(prepared.num_classes)
        self.histories = [{key: [] for key in snapshot.HISTORY_KEYS} for _ in configs]
        self.stopped = {}  # configuration index -> why it stopped (diverged)
        self.pending = []
        self.epoch_loss, self.epoch_correct = np.zeros(len(configs)), np.zeros(len(configs))  # by configuration

    def load(self, buffer, start, end):
        """The load job: rows order[start:end] of X into batches[buffer] (run by the loader)."""
        self.batches[buffer].load(self.prepared.X_train, self.order[start:end])

    def step(self, rows, losses, correct, epoch, step):
        """Record one step; members whose loss is NaN/inf or above the limit are stopped."""
        self.pending.append((rows, losses, correct))
        bad = [position for position, loss in enumerate(losses.tolist()) if not loss <= self.limit]
        if bad:  # NaN counts too: it is not <= anything
            self.flush()
            for position in bad:
                self.stopped[self.state.members[position]] = (
                    f"diverged at epoch {epoch + 1}, step {step + 1}: minibatch loss {losses[position]:.4g} "
                    f"(limit {self.limit:.3g}); try a smaller lr")
            self.state.drop(bad)

    def flush(self):
        if not self.pending:
            return
        members = self.state.members
        rows = np.array([step[0] for step in self.pending])
        losses = np.array([step[1] for step in self.pending])          # (steps, K)
        self.epoch_loss[members] += rows @ losses
        self.epoch_correct[members] += np.array([step[2] for step in self.pending]).sum(axis=0)
        for position, member in enumerate(members):
            self.histories[member]["step_loss"] += [round(loss, 5) for loss in losses[:, position].tolist()]
        self.pending.clear()

    def end_epoch(self, epoch, seconds, bar):
        """Measure the live members on the validation rows and add the epoch to their histories."""
        prepared, state, N = self.prepared, self.state, len(self.prepared.y_train)
        penalty = state.penalty()
        if len(prepared.y_val):
            val_loss, val_accuracy = kernels.evaluate_members(state, prepared.X_val, prepared.y_val, prepared.offset,
                                                              prepared.scale)
        else:  # val_size 0: no validation rows, no validation metrics
            val_loss = val_accuracy = np.full(len(state.members), np.nan)
        lr_now = state.lr[::state.num_classes]
        for position, member in enumerate(state.members):
            history = self.histories[member]
            history["epoch"].append(epoch + 1)
            history["lr"].append(float(lr_now[position]))
            history["train_loss"].append(round(float(self.epoch_loss[member] / N + penalty[position]), 6))
            history["train_accuracy"].append(round(float(self.epoch_correct[member] / N), 6))
            history["val_loss"].append(_rounded(val_loss[position]))
            history["val_accuracy"].append(_rounded(val_accuracy[position]))
            history["epoch_seconds"].append(round(seconds / len(state.members), 4))
        if bar is not None:
            best = int(np.nanargmax(val_accuracy)) if len(prepared.y_val) else 0
            loss = self.epoch_loss[state.members[best]] / N + penalty[best]
            bar.set_postfix(epoch=f"{epoch + 1}/{self.configs[0]['epochs']}", loss=f"{loss:.3f}",
                            lr=f"{lr_now[best]:.2g}", val=f"{val_accuracy[best]:.3f}")
        state.end_epoch()

    def results(self, seconds):
        """One RunResult per configuration, in order, each with `seconds`, the group's time / K."""
        state, prepared, results = self.state, self.prepared, [None] * len(self.configs)
        if state.members:
            _, train_accuracy = kernels.evaluate_members(state, prepared.X_train, prepared.y_train, prepared.offset,
                                                         prepared.scale)
            for position, member in enumerate(state.members):
                self.histories[member]["final_train_accuracy"] = round(float(train_accuracy[position]), 6)
                W, b = state.weights(position)
                results[member] = RunResult(self.configs[member], "ok", W, b, "", self.histories[member])
        for member, message in self.stopped.items():
            results[member] = RunResult(self.configs[member], "diverged", None, None, message, self.histories[member])
        for result, history in zip(results, self.histories):
            result.seconds, result.n_iter = seconds, len(history["epoch"])
        return results


def train_group(prepared, configs, progress=None, prefetch=None, checkpoint=None):
    """Train every configuration in `configs` (all sharing config.DATA_KEYS) on `prepared` data.

    Returns one RunResult per configuration, in order. `progress(total)`, when given, makes a
    progress bar (update(n), set_postfix(**values), close()) for `total` steps, after the loader
    process is forked. `prefetch` True loads the next minibatch in a second process while computing
    on the current one, False loads and computes in turn; the results are identical. The default
    prefetches when `loader.can_prefetch()` and the products are thin (kernels.thin): wider products
    run on two BLAS threads, which a loader process would only get in the way of.

    `checkpoint` (checkpoints.Checkpoint: load, save, resumed, refused): training resumes from the
    snapshot load() returns once snapshot.misfit finds it fits this group (resumed(epoch) is called
    before the first step; else refused(reason), and the group starts over), and offers one to
    save(snapshot, epoch) after every epoch: an interrupted group continues bit-identically.
    """
    _check(prepared, configs)
    first = configs[0]
    X, y = prepared.X_train, prepared.y_train
    N, D = X.shape
    K, C = len(configs), prepared.num_classes
    epochs, batch_size = first["epochs"], min(first["batch_size"], N)
    rng = np.random.default_rng(first["seed"])
    state = GroupState(configs, rng.standard_normal((D, C)).astype(np.float32), C)

    steps_per_epoch = math.ceil(N / batch_size)
    if prefetch is None:
        prefetch = kernels.thin(state.Wt) and loader.can_prefetch()
    # a loader process fills the batches in the order of the epoch, so both live in shared memory
    allocate = loader.shared if prefetch else np.empty
    batches = [loader.Batch(batch_size, X, prepared.offset, prepared.scale, allocate) for _ in range(2)]
    scale = batches[0].scale
    group = _Group(prepared, configs, state, batches, allocate((N,), np.intp))
    work = np.empty((batch_size + 1, K * C), dtype=np.float32)
    first_epoch, earlier_seconds = 0, 0.0
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        resumed, seconds, problem = snapshot.restore(saved, configs, state, rng, group.histories, group.stopped,
                                                     prepared, steps_per_epoch)
        if problem is None:
            first_epoch, earlier_seconds = resumed, seconds
            checkpoint.resumed(first_epoch)
        else:
            checkpoint.refused(f"does not fit this group ({problem})")
    started = time.perf_counter()

    # the loader is forked before anything (a progress bar's monitor thread) starts a thread
    feeder = loader.InlineLoader(group.load)
    if prefetch:
        try:
            feeder = loader.ProcessLoader(group.load, loader.POLL_SECONDS if kernels.thin(state.Wt) else 0.0)
        except OSError:  # no process to be had (a limit on processes, say): load in turn
            pass
    bar = progress((epochs - first_epoch) * steps_per_epoch) if progress is not None else None
    try:
        for epoch in range(first_epoch, epochs):
            epoch_started = time.perf_counter()
            group.order[:] = rng.permutation(N)
            epoch_labels = y[group.order]
            group.epoch_loss[:] = group.epoch_correct[:] = 0
            feeder.submit(0, 0, batch_size)
            for step in range(steps_per_epoch):
                feeder.wait()  # batch `step` is ready; the other buffer is free
                interrupts.check()  # a safe point: a signal noted while watching stops here
                if not state.members:
                    break
                if step + 1 < steps_per_epoch:
                    feeder.submit((step + 1) % 2, (step + 1) * batch_size, (step + 2) * batch_size)
                labels = epoch_labels[step * batch_size:(step + 1) * batch_size]
                if work.shape[1] != len(state.Wt):  # a member was dropped
                    work = np.empty((batch_size + 1, len(state.Wt)), dtype=np.float32)
                losses, correct = kernels.softmax_gradient(state, batches[step % 2].inputs(len(labels)), labels,
                                                           work, scale)
                state.apply(work[0] / scale)
                group.step(len(labels), losses, correct, epoch, step)
                if bar is not None:
                    bar.update(1)
            group.flush()
            if not state.members:
                break
            group.end_epoch(epoch, time.perf_counter() - epoch_started, bar)
            if checkpoint is not None:
                checkpoint.save(snapshot.take(configs, state, rng, epoch + 1, group.histories, group.stopped,
                                              earlier_seconds + time.perf_counter() - started), epoch + 1)
    finally:
        feeder.close()
        if bar is not None:
            bar.close()
    return group.results((earlier_seconds + time.perf_counter() - started) / K)


def train(prepared, config, progress=None, prefetch=None):
    """Train one configuration; returns its RunResult."""
    return train_group(prepared, [config], progress, prefetch)[0]
