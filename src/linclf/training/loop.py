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
from types import SimpleNamespace

import numpy as np

from linclf.training import kernels
from linclf.training import loader
from linclf.training import softmax
from linclf.config import DATA_KEYS, shown
from linclf.util.errors import LinclfError
from linclf.training.update import PARAMETERS, GroupState

# What training produces from a given configuration and data, as a number: part of every run id
# (runfolders.run_id) and metrics.json, so a change to the trainer's results (a new number) trains
# a grid again instead of finding runs the old trainer made.
TRAINER_VERSION = 2
# a member's history: per-epoch lists, and the loss of every step ("step_loss")
HISTORY_KEYS = ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds",
                "step_loss")


def diverged_loss(num_classes):
    """The loss (nats) above which a run is stopped: 20 times that of a uniform guess."""
    return 20 * math.log(max(num_classes, 2))


@dataclass
class Prepared:
    """Training and validation inputs, kept raw; the model's input is (X - offset) * scale.

    X_train (N, D) and X_val (M, D) are in memory: uint8 pixels or float features. offset (D,)
    float32 and scale (a float, or (D,) per feature) are the standardization the pipeline fitted on
    the training split, which the trainer applies batch by batch (see loader.Batch). With
    `precondition` on, jobs.prepare hands over standardized, preconditioned rows instead (float16 for cached features),
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
    history: dict = field(default_factory=dict)  # sgd: per-epoch lists and "step_loss"; lbfgs: solve.py's
    seconds: float = 0.0             # wall time of the group / K: the run's share
    converged: bool | None = None    # lbfgs: whether the gradient test passed; None for sgd (a schedule)
    n_iter: int = 0                  # lbfgs iterations, or sgd epochs, run

    def metrics(self):
        """The JSON-ready summary saved as metrics.json."""
        history = self.history

        def last(key):
            return history[key][-1] if history.get(key) else None

        return {"status": self.status, "message": self.message,
                "train_accuracy": history.get("final_train_accuracy"),
                "val_accuracy": last("val_accuracy"), "final_loss": last("train_loss"),
                "val_loss": last("val_loss"), "converged": self.converged, "n_iter": self.n_iter,
                "seconds": round(self.seconds, 3), "history": history}


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

    `checkpoint`, when given, has load() -> snapshot or None, save(snapshot, epoch), resumed(epoch)
    and refused(reason) (see checkpoints.Checkpoint): training starts from a snapshot that load() returns,
    once every field of it is checked against this group (then resumed() is called, before the
    first step; else refused() says why, and the group starts over), and offers one to save()
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
    histories = [{key: [] for key in HISTORY_KEYS} for _ in configs]
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
    if snapshot is not None:
        resumed, seconds, problem = _restore(snapshot, configs, state, rng, histories, stopped, prepared,
                                             steps_per_epoch)
        if problem is None:
            first_epoch, earlier_seconds = resumed, seconds
            checkpoint.resumed(first_epoch)
        else:
            checkpoint.refused(f"does not fit this group ({problem})")
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
            results[member] = RunResult(configs[member], "ok", W, b, "", histories[member],
                                        n_iter=len(histories[member]["epoch"]))
    for member, message in stopped.items():
        results[member] = RunResult(configs[member], "diverged", None, None, message, histories[member],
                                    n_iter=len(histories[member]["epoch"]))
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


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _history_problem(history, done, steps, live):
    """Why a member's saved history is not that of a member still training after `done` epochs of
    `steps` steps (live), or of one stopped during an earlier epoch (not live); None when it fits."""
    if not isinstance(history, dict) or set(history) != set(HISTORY_KEYS):
        return f"its keys are not {', '.join(HISTORY_KEYS)}"
    if not all(isinstance(history[key], list) and all(_number(v) for v in history[key]) for key in HISTORY_KEYS):
        return "it holds something other than lists of numbers"
    reached = len(history["epoch"])
    if live and reached != done:
        return f"it holds {reached} epochs, epochs_done is {done}"
    if not live and reached >= done:
        return f"it holds {reached} epochs of a member stopped before epoch {done} ended"
    per_epoch = [key for key in HISTORY_KEYS if key != "step_loss"]
    if history["epoch"] != list(range(1, reached + 1)) or any(len(history[key]) != reached for key in per_epoch):
        return f"its per-epoch lists are not those of epochs 1..{reached}"
    if not all(math.isfinite(v) for key in per_epoch for v in history[key]):
        return "it holds values that are not finite"
    counted = len(history["step_loss"])
    if (counted != done * steps) if live else not reached * steps < counted <= (reached + 1) * steps:
        return f"it holds {counted} step losses after {reached} epochs of {steps} steps"
    return None


def _snapshot_problem(snapshot, configs, state, rng, prepared, steps_per_epoch):
    """Why a snapshot cannot resume this group, in a few words, or None when every field fits: the
    configurations; epochs_done in 1..epochs and equal to the live members' history lengths;
    members and stopped splitting 0..K-1; histories of the right lengths; the arrays float32, finite,
    of shape (rows, D) or (rows,) with rows = live members x C; the hyper-parameter arrays those of
    the configurations after epochs_done lr decays; the random generator's state the one reached
    after epochs_done epochs; and the weights giving each live member's last validation loss and
    accuracy again. Changes nothing."""
    facts, arrays = snapshot.get("facts"), snapshot.get("arrays")
    if not isinstance(facts, dict) or not isinstance(arrays, dict):
        return "it holds no facts or arrays"
    if facts.get("configs") != configs:
        return "it was saved for other configurations"
    K, C, D = len(configs), state.num_classes, state.Wt.shape[1]
    epochs, done = configs[0]["epochs"], facts.get("epochs_done")
    if not _integer(done) or not 1 <= done <= epochs:
        return f"epochs_done must be an integer in 1..{epochs}, got {shown(done)}"
    members, stopped = facts.get("members"), facts.get("stopped")
    if not isinstance(stopped, dict) or not all(isinstance(v, str) for v in stopped.values()):
        return "stopped must map member numbers to messages"
    numbered = [int(k) if isinstance(k, str) and k.isascii() and k.isdigit() else -1 for k in stopped]
    if (not isinstance(members, list) or not members or not all(_integer(m) for m in members)
            or members != sorted(set(members)) or sorted(members + numbered) != list(range(K))):
        return f"members and stopped must split the group's members 0..{K - 1} between them"
    histories = facts.get("histories")
    if not isinstance(histories, list) or len(histories) != K:
        return f"histories must be a list of {K} histories"
    for member, history in enumerate(histories):
        problem = _history_problem(history, done, steps_per_epoch, member in members)
        if problem is not None:
            return f"the history of member {member} does not fit: {problem}"
    seconds = facts.get("seconds")
    if not _number(seconds) or not 0 <= seconds < math.inf:
        return f"seconds must be a number >= 0, got {shown(seconds)}"
    rows = len(members) * C
    for name in SNAPSHOT_ARRAYS:
        value = arrays.get(name)
        shape = (rows, D) if name in ("Wt", "velocity_W") else (rows,)
        if not isinstance(value, np.ndarray) or value.dtype != np.float32:
            return f"{name} must be a float32 array"
        if value.shape != shape:
            return f"{name} has shape {value.shape}, the group needs {shape}"
        if not np.all(np.isfinite(value)):
            return f"{name} holds values that are not finite"
    rows_of = np.concatenate([np.arange(m * C, (m + 1) * C) for m in members])
    expected = {key: np.repeat(np.array([c[key] for c in configs], dtype=np.float32), C)[rows_of]
                for key in PARAMETERS}
    for _ in range(done):
        expected["lr"] *= expected["lr_decay"]  # as GroupState.end_epoch does
    for key in PARAMETERS:
        if not np.array_equal(arrays[key], expected[key]):
            return f"{key} does not match the configurations"
    generator = np.random.Generator(type(rng.bit_generator)())
    generator.bit_generator.state = rng.bit_generator.state
    for _ in range(done):
        generator.permutation(len(prepared.y_train))  # as each epoch does
    if facts.get("rng") != generator.bit_generator.state:
        return f"its random generator state is not the one after epoch {done}"
    weights = SimpleNamespace(members=members, num_classes=C, Wt=arrays["Wt"], b=arrays["b"])
    val_loss, val_accuracy = evaluate_members(weights, prepared.X_val, prepared.y_val, prepared.offset, prepared.scale)
    for position, member in enumerate(members):
        saved = histories[member]
        if not (math.isclose(val_loss[position], saved["val_loss"][-1], rel_tol=1e-4, abs_tol=1e-5)
                and math.isclose(val_accuracy[position], saved["val_accuracy"][-1], abs_tol=1e-5)):
            return (f"its weights give member {member} a validation loss of {val_loss[position]:.6g}, "
                    f"its history says {saved['val_loss'][-1]:.6g}")
    return None


def _restore(snapshot, configs, state, rng, histories, stopped, prepared, steps_per_epoch):
    """Put a group back where a snapshot left it; returns (next epoch, seconds spent before, None),
    or (None, None, why not) -- changing nothing -- when the snapshot does not fit the group
    (_snapshot_problem checks every field first)."""
    problem = _snapshot_problem(snapshot, configs, state, rng, prepared, steps_per_epoch)
    if problem is not None:
        return None, None, problem
    facts, arrays = snapshot["facts"], snapshot["arrays"]
    rng.bit_generator.state = facts["rng"]
    state.members = list(facts["members"])
    for name in SNAPSHOT_ARRAYS:
        setattr(state, name, np.array(arrays[name], dtype=np.float32, order="C"))
    state.gradient = np.empty_like(state.Wt)
    state.refresh()
    for history, saved in zip(histories, facts["histories"]):
        history.update({key: list(values) for key, values in saved.items()})
    stopped.update({int(k): v for k, v in facts["stopped"].items()})
    return facts["epochs_done"], float(facts["seconds"]), None


def train(prepared, config, progress=None, prefetch=None):
    """Train one configuration; returns its RunResult."""
    return train_group(prepared, [config], progress, prefetch)[0]
