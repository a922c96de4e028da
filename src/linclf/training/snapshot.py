"""A training group's snapshot: what loop.train_group saves after an epoch, and the checks that a
saved one fits the group before it is resumed.

A snapshot is {"facts": JSON-ready dict, "arrays": {name: float32 array}}; checkpoints.Checkpoint
writes it to disk. Every field is checked (`misfit`) before anything is restored, so a damaged or
hand-edited snapshot makes the group start over instead of giving a wrong run.
"""
import math
from types import SimpleNamespace

import numpy as np

from linclf.training.kernels import evaluate_members
from linclf.training.update import PARAMETERS
from linclf.util.errors import short_repr

# a member's history: per-epoch lists, and the loss of every step ("step_loss")
HISTORY_KEYS = ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds",
                "step_loss")

ARRAYS = ("Wt", "b", "velocity_W", "velocity_b", "lr", "reg", "momentum", "lr_decay")


def take(configs, state, rng, epochs_done, histories, stopped, seconds):
    """Everything a group needs to go on after `epochs_done` epochs: arrays, and JSON-ready facts."""
    facts = {"configs": configs, "epochs_done": epochs_done, "members": state.members,
             "rng": rng.bit_generator.state, "histories": histories,
             "stopped": {str(k): v for k, v in stopped.items()}, "seconds": seconds}
    return {"facts": facts, "arrays": {name: getattr(state, name) for name in ARRAYS}}


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


def misfit(snapshot, configs, state, rng, prepared, steps_per_epoch):
    """Why a snapshot cannot resume this group, in a few words, or None when every field fits, down
    to the random generator's state after epochs_done epochs and the weights giving each live
    member's last validation loss and accuracy again. Changes nothing."""
    facts, arrays = snapshot.get("facts"), snapshot.get("arrays")
    if not isinstance(facts, dict) or not isinstance(arrays, dict):
        return "it holds no facts or arrays"
    if facts.get("configs") != configs:
        return "it was saved for other configurations"
    K, C, D = len(configs), state.num_classes, state.Wt.shape[1]
    epochs, done = configs[0]["epochs"], facts.get("epochs_done")
    if not _integer(done) or not 1 <= done <= epochs:
        return f"epochs_done must be an integer in 1..{epochs}, got {short_repr(done)}"
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
        return f"seconds must be a number >= 0, got {short_repr(seconds)}"
    rows = len(members) * C
    for name in ARRAYS:
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


def restore(snapshot, configs, state, rng, histories, stopped, prepared, steps_per_epoch):
    """Put a group back where a snapshot left it; returns (next epoch, seconds spent before, None),
    or (None, None, why not) -- changing nothing -- when the snapshot does not fit the group
    (misfit checks every field first)."""
    problem = misfit(snapshot, configs, state, rng, prepared, steps_per_epoch)
    if problem is not None:
        return None, None, problem
    facts, arrays = snapshot["facts"], snapshot["arrays"]
    rng.bit_generator.state = facts["rng"]
    state.members = list(facts["members"])
    for name in ARRAYS:
        setattr(state, name, np.array(arrays[name], dtype=np.float32, order="C"))
    state.gradient = np.empty_like(state.Wt)
    state.refresh()
    for history, saved in zip(histories, facts["histories"]):
        history.update({key: list(values) for key, values in saved.items()})
    stopped.update({int(k): v for k, v in facts["stopped"].items()})
    return facts["epochs_done"], float(facts["seconds"]), None
