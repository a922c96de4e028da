"""The training loop: minibatch SGD for softmax classifiers, several configurations at once.

`train_group` trains K configurations that share the data-shaping keys (config.DATA_KEYS) on one
shuffled minibatch stream: each batch is gathered once and multiplied once by the wide matrix
W_all (D, K*C), and every configuration keeps its own lr, reg, momentum, lr decay and init scale.
Because every column of W_all is updated only from its own columns, each member follows exactly
the path it would follow alone (`train` is `train_group` with K = 1), up to float32 rounding.

Where the parts live: the update rule (momentum, L2, lr schedule) in update.py; the fused
forward/softmax/backward step and the blocked products in kernels.py (which also says how they
relate to the reference maths of softmax.py); the minibatch buffers and the loader process in
loader.py. Each epoch visits every training row once, in a fresh random order.

Divergence: a member whose minibatch loss becomes NaN/inf or exceeds DIVERGED_LOSS is stopped
with status "diverged", its weights discarded; the other members carry on undisturbed.
"""
import math
import time
from dataclasses import dataclass, field

import numpy as np

from linclf.training import kernels
from linclf.training import loader
from linclf.training import softmax
from linclf.config import DATA_KEYS
from linclf.util.errors import LinclfError
from linclf.training.update import GroupState

TRAINER_VERSION = 2  # part of every run id: bump it when a change alters what training produces


def diverged_loss(num_classes):
    """The loss (nats) above which a run is stopped: 20 times that of a uniform guess."""
    return 20 * math.log(max(num_classes, 2))


@dataclass
class Prepared:
    """Training and validation inputs, kept raw; the model's input is (X - offset) * scale.

    X_train (N, D) and X_val (M, D) are in memory: uint8 pixels or float features. offset (D,)
    float32 and scale (a float, or (D,) per feature) are the standardization the pipeline fitted on
    the training split, which the trainer applies batch by batch (see loader.Batch). With
    `precondition` on, jobs.prepare hands over standardized, preconditioned float32 rows instead,
    with offset 0 and scale 1.
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


def _rounded(value):
    """A float for the history, rounded to 6 digits; None for NaN (no validation rows)."""
    return None if np.isnan(value) else round(float(value), 6)


def evaluate_members(state, X, y, offset, scale, chunk=1024):
    """Per-member mean data loss (K,) and accuracy (K,) on inputs (X - offset) * scale, y (N,)."""
    K = len(state.members)
    loss, correct = np.zeros(K), np.zeros(K)
    batch = loader.Batch(max(1, min(chunk, len(y))), X, offset, scale)
    for start, S in kernels.member_scores(state, batch, X, chunk):
        losses, right = softmax.loss_sums(S, y[start:start + len(S)])  # the one evaluation kernel
        loss += losses
        correct += right
    return loss / max(len(y), 1), correct / max(len(y), 1)


def _check(prepared, configs):
    first = configs[0]
    for other in configs[1:]:
        if any(other.get(key) != first.get(key) for key in DATA_KEYS):
            raise ValueError(f"configurations trained together must share {DATA_KEYS}")
    C = prepared.num_classes
    for name, labels in (("y_train", prepared.y_train), ("y_val", prepared.y_val)):
        if labels.size and (labels.min() < 0 or labels.max() >= C):
            raise LinclfError(f"{name}: labels must be in 0..{C - 1}, got values {labels.min()}..{labels.max()}")
    if len(prepared.y_train) == 0:
        raise LinclfError("the training split must hold at least one example")


def train_group(prepared, configs, progress=None, prefetch=None, checkpoint=None):
    """Train every configuration in `configs` (all sharing config.DATA_KEYS) on `prepared` data.

    Returns one RunResult per configuration, in order. `progress(total)`, when given, makes a
    progress bar (update(n), set_postfix(**values), close()) for `total` steps, after the loader
    process is forked. `prefetch` True loads
    the next minibatch in a second process while computing on the current one, False loads and
    computes in turn; the results are identical. The default prefetches when
    `loader.can_prefetch()` and the products are thin (kernels.thin): wider products run on two
    BLAS threads, which a loader process would only get in the way of.

    `checkpoint`, when given, has load() -> snapshot or None and save(snapshot, epoch) (see
    runs.Checkpoint): training starts from a snapshot that load() returns and offers one to save()
    after every epoch, so an interrupted group continues where it stopped, bit-identically.
    """
    _check(prepared, configs)
    first = configs[0]
    X, y = prepared.X_train, prepared.y_train
    N, D = X.shape
    K, C = len(configs), prepared.num_classes
    limit = diverged_loss(C)
    epochs, batch_size = first["epochs"], min(first["batch_size"], N)
    rng = np.random.default_rng(first["seed"])
    state = GroupState(configs, rng.standard_normal((D, C)).astype(np.float32), C)
    stopped = {}  # configuration index -> why it stopped (diverged)

    steps_per_epoch = math.ceil(N / batch_size)
    histories = [{"epoch": [], "lr": [], "train_loss": [], "train_accuracy": [], "val_loss": [],
                  "val_accuracy": [], "epoch_seconds": [], "step_loss": []} for _ in configs]
    results = [None] * K
    if prefetch is None:
        prefetch = kernels.thin(state.Wt) and loader.can_prefetch()
    # a loader process fills the batches in the order of the epoch, so both live in shared memory
    allocate = loader.shared if prefetch else np.empty
    batches = [loader.Batch(batch_size, X, prepared.offset, prepared.scale, allocate) for _ in range(2)]
    scale = batches[0].scale
    order = allocate((N,), np.intp)
    work = np.empty((batch_size + 1, K * C), dtype=np.float32)
    first_epoch, earlier_seconds = 0, 0.0
    snapshot = checkpoint.load() if checkpoint is not None else None
    restored = _restore(snapshot, configs, state, rng, histories, stopped) if snapshot is not None else None
    if restored is not None:
        first_epoch, earlier_seconds = restored
    elif snapshot is not None:
        checkpoint.note = "its checkpoint did not fit these configurations or held non-finite values: started over"
    started = time.perf_counter()

    def stop(positions, epoch, step, losses):
        for position in positions:
            member = state.members[position]
            message = (f"diverged at epoch {epoch + 1}, step {step + 1}: minibatch loss {losses[position]:.4g} "
                       f"(limit {limit:.3g}); try a smaller lr")
            stopped[member] = message
        state.drop(positions)

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
        epoch_loss[state.members] += rows @ losses
        epoch_correct[state.members] += np.array([step[2] for step in pending]).sum(axis=0)
        for position, member in enumerate(state.members):
            histories[member]["step_loss"] += [round(loss, 5) for loss in losses[:, position].tolist()]
        pending.clear()

    # the loader is forked before anything (a progress bar's monitor thread) starts a thread
    feeder = loader.InlineLoader(load)
    if prefetch:
        try:
            feeder = loader.ProcessLoader(load, loader.POLL_SECONDS if kernels.thin(state.Wt) else 0.0)
        except OSError:  # no process to be had (a limit on processes, say): load in turn
            pass
    bar = progress((epochs - first_epoch) * steps_per_epoch) if progress is not None else None
    try:
        for epoch in range(first_epoch, epochs):
            epoch_started = time.perf_counter()
            order[:] = rng.permutation(N)
            epoch_labels = y[order]
            epoch_loss[:] = epoch_correct[:] = 0
            feeder.submit(0, 0, batch_size)
            for step in range(steps_per_epoch):
                feeder.wait()  # batch `step` is ready; the other buffer is free
                if not state.members:
                    break
                if step + 1 < steps_per_epoch:
                    feeder.submit((step + 1) % 2, (step + 1) * batch_size, (step + 2) * batch_size)
                labels = epoch_labels[step * batch_size:(step + 1) * batch_size]
                n = len(labels)
                if work.shape[1] != len(state.Wt):  # a member was dropped
                    work = np.empty((batch_size + 1, len(state.Wt)), dtype=np.float32)
                losses, correct = kernels.softmax_gradient(state, batches[step % 2].inputs(n), labels, work, scale)
                state.apply(work[0] / scale)
                pending.append((n, losses, correct))
                bad = [position for position, loss in enumerate(losses.tolist()) if not loss <= limit]
                if bad:  # NaN counts too: it is not <= anything
                    flush()
                    stop(bad, epoch, step, losses)
                if bar is not None:
                    bar.update(1)
            flush()
            if not state.members:
                break
            penalty = state.penalty()
            if len(prepared.y_val):
                val_loss, val_accuracy = evaluate_members(state, prepared.X_val, prepared.y_val, prepared.offset,
                                                          prepared.scale)
            else:  # val_size 0: no validation rows, no validation metrics
                val_loss = val_accuracy = np.full(len(state.members), np.nan)
            lr_now = state.lr[::C]
            epoch_seconds = time.perf_counter() - epoch_started
            for position, member in enumerate(state.members):
                history = histories[member]
                history["epoch"].append(epoch + 1)
                history["lr"].append(float(lr_now[position]))
                history["train_loss"].append(round(float(epoch_loss[member] / N + penalty[position]), 6))
                history["train_accuracy"].append(round(float(epoch_correct[member] / N), 6))
                history["val_loss"].append(_rounded(val_loss[position]))
                history["val_accuracy"].append(_rounded(val_accuracy[position]))
                history["epoch_seconds"].append(round(epoch_seconds / len(state.members), 4))
            if bar is not None:
                best = int(np.nanargmax(val_accuracy)) if len(prepared.y_val) else 0
                loss = epoch_loss[state.members[best]] / N + penalty[best]
                bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{loss:.3f}",
                                lr=f"{lr_now[best]:.2g}", val=f"{val_accuracy[best]:.3f}")
            state.end_epoch()
            if checkpoint is not None:
                checkpoint.save(_snapshot(configs, state, rng, epoch + 1, histories, stopped,
                                          earlier_seconds + time.perf_counter() - started), epoch + 1)
    finally:
        feeder.close()
        if bar is not None:
            bar.close()

    if state.members:
        _, train_accuracy = evaluate_members(state, X, y, prepared.offset, prepared.scale)
        for position, member in enumerate(state.members):
            histories[member]["final_train_accuracy"] = round(float(train_accuracy[position]), 6)
            W, b = state.weights(position)
            results[member] = RunResult(configs[member], "ok", W, b, "", histories[member])
    for member, message in stopped.items():
        results[member] = RunResult(configs[member], "diverged", None, None, message, histories[member])
    seconds = (earlier_seconds + time.perf_counter() - started) / K
    for result in results:
        result.seconds = seconds
    return results


SNAPSHOT_ARRAYS = ("Wt", "b", "velocity_W", "velocity_b", "lr", "reg", "momentum", "lr_decay")


def _snapshot(configs, state, rng, epochs_done, histories, stopped, seconds):
    """Everything a group needs to go on after `epochs_done` epochs: arrays, and JSON-ready facts."""
    facts = {"configs": configs, "epochs_done": epochs_done, "members": state.members,
             "rng": rng.bit_generator.state, "histories": histories,
             "stopped": {str(k): v for k, v in stopped.items()}, "seconds": seconds}
    return {"facts": facts, "arrays": {name: getattr(state, name) for name in SNAPSHOT_ARRAYS}}


def _restore(snapshot, configs, state, rng, histories, stopped):
    """Put a group back where a snapshot left it; returns (next epoch, seconds spent before), or
    None, changing nothing, when the snapshot does not fit these configurations."""
    try:
        facts, arrays = snapshot["facts"], snapshot["arrays"]
        members = [int(m) for m in facts["members"]]
        rows = len(members) * state.num_classes
        restored = {name: np.array(arrays[name], dtype=np.float32) for name in SNAPSHOT_ARRAYS}
        fits = (facts["configs"] == configs and len(facts["histories"]) == len(configs)
                and all(len(restored[name]) == rows and np.all(np.isfinite(restored[name])) for name in SNAPSHOT_ARRAYS)
                and restored["Wt"].shape[1:] == state.Wt.shape[1:] and restored["velocity_W"].shape == restored["Wt"].shape
                and 0 < int(facts["epochs_done"]) <= configs[0]["epochs"])
        if not fits:
            return None
        rng_state = facts["rng"]
        seconds, epochs_done = float(facts["seconds"]), int(facts["epochs_done"])
        saved_stopped = {int(k): str(v) for k, v in facts["stopped"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    rng.bit_generator.state = rng_state
    state.members = members
    for name, value in restored.items():
        setattr(state, name, value)
    state.gradient = np.empty_like(state.Wt)
    state.refresh()
    for history, saved in zip(histories, facts["histories"]):
        history.update(saved)
    stopped.update(saved_stopped)
    return epochs_done, seconds


def train(prepared, config, progress=None, prefetch=None):
    """Train one configuration; returns its RunResult."""
    return train_group(prepared, [config], progress, prefetch)[0]
