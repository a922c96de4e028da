"""Run folders: their ids, reserving and cleaning them, and writing and reading a run's files
(README "Files": weights.npz (modelfile.py, status ok only), config.yaml, metrics.json, loss.png).

Each file is written under a temporary name and renamed; metrics.json is written after the weights,
so a folder with a readable metrics.json is a finished run. A `train` run folder is reserved
(created) when training starts, so two runs never share one.
"""
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import yaml

from linclf.data.sources import split_key
from linclf.experiments import modelfile
from linclf.experiments.grids import value_text
from linclf.experiments.modelfile import WEIGHTS
from linclf.features import pipeline
from linclf.training.loop import TRAINER_VERSION
from linclf.util import locks
from linclf.util.errors import LinclfError, short_repr
from linclf.util.files import atomic_write_bytes, folder_problem, json_ready, make_folders, read_text

# The files of a run folder (WEIGHTS: modelfile.WEIGHTS)
CONFIG, METRICS, LOSS_PLOT = "config.yaml", "metrics.json", "loss.png"
STATUSES = ("ok", "diverged")
TRAINING_LOCK = ".training.lock"  # held in a run folder while `linclf train` trains into it
OWN_FILES = {TRAINING_LOCK, CONFIG, WEIGHTS, LOSS_PLOT}  # what a killed run may have left


def default_runs_dir():
    """The runs dir: $LINCLF_RUNS_DIR, else ./runs."""
    return Path(os.environ.get("LINCLF_RUNS_DIR") or "runs")


def run_id(config, identity, axes=()):
    """A stable folder name: the grid values, then a hash of the whole resolved configuration, the
    data id, the pipeline's parameters and the trainer version. `identity` is jobs.identify's dict."""
    defining = {"config": dict(config), "data_id": identity["data_id"],
                "pipeline": pipeline.build(config, identity["kind"], identity["input_shape"]).params(),
                "trainer": TRAINER_VERSION}
    digest = hashlib.sha1(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:10]
    shown = shown_axes(config, axes)
    return f"{shown}_{digest}" if shown else digest


def shown_axes(config, axes):
    """The grid values of a configuration as they start its run id: "lr=0.001_reg=0.0001". Within
    one sweep they tell runs apart, so ties in the ranking are broken by them (SoftmaxSweep too)."""
    return "_".join(f"{key}={value_text(config[key])}" for key in axes)


def clean_abandoned(runs_dir, prefix="train", min_age_seconds=60):
    """Remove the run folders runs_dir/prefix-* that a killed `linclf train` left unfinished (no
    metrics.json, nobody holding their training lock, nothing in them but what training writes).
    Returns the folders removed."""
    return [folder for folder in sorted(Path(runs_dir).glob(f"{prefix}-*")) if _remove_abandoned(folder, min_age_seconds)]


def _remove_abandoned(folder, min_age_seconds=60, locked_only=False):
    """Remove `folder` if a killed `linclf train` left it unfinished (see clean_abandoned); with
    `locked_only`, only when its training lock file shows that `linclf train` made it (a folder the
    user named may hold a config.yaml of the user's). Returns whether it did."""
    if folder.is_symlink() or not folder.is_dir() or (folder / METRICS).exists():
        return False
    names = {p.name for p in folder.iterdir()}
    if not names <= OWN_FILES | {n for n in names if n.startswith(".") and n.endswith(".tmp")}:
        return False
    if TRAINING_LOCK not in names and (locked_only or time.time() - folder.stat().st_mtime < min_age_seconds):
        return False  # not shown to be train's, or just reserved by a run that has not locked it yet
    try:
        with locks.hold(folder / TRAINING_LOCK, f"training in {folder}", wait=False):
            shutil.rmtree(folder)
    except LinclfError:
        return False  # a live run holds it
    return True


def reserve_run_dir(runs_dir, prefix="train"):
    """Create and return a new, empty run folder runs_dir/prefix-YYYYmmdd-HHMMSS (-2, -3... when
    taken). Creating it is atomic, so two runs started in the same second get two folders."""
    runs_dir = make_folders(runs_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for counter in range(1, 10_000):
        folder = runs_dir / (f"{prefix}-{stamp}" if counter == 1 else f"{prefix}-{stamp}-{counter}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise LinclfError(f"cannot find a free run folder name under {runs_dir}")


def reserve_out(run_dir):
    """Reserve a run folder the user named (--out): create it, or accept it when empty (or when
    all it holds is what a killed `linclf train` left there, which is removed)."""
    run_dir = Path(run_dir)
    _remove_abandoned(run_dir, locked_only=True)
    what = folder_problem(run_dir)
    if what is None and run_dir.exists() and any(run_dir.iterdir()):
        what = "already exists and is not empty"
    if what:
        raise LinclfError(f"output folder {run_dir} {what}; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def save_run(run_dir, result, pipe, class_names, data_id, replace=False, warn=None, classes=None,
             feature_names=None):
    """Write a loop.RunResult into run_dir (created if needed); returns run_dir. classes,
    class_names and feature_names: as modelfile.write_model. Refuses a folder that already holds a
    finished run unless `replace`. The plot comes last and a failing plot loses nothing: the run is
    complete without it, and warn(line) says why it is missing.
    """
    run_dir = Path(run_dir)
    if (run_dir / METRICS).exists() and not replace:
        raise LinclfError(f"{run_dir} already holds a finished run; choose another folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = {**result.metrics(), "data_id": data_id, "split": split_key(result.config),
               "trainer_version": TRAINER_VERSION}
    atomic_write_bytes(run_dir / CONFIG, yaml.safe_dump(result.config, sort_keys=False).encode())
    if result.status == "ok":
        modelfile.write_model(run_dir / WEIGHTS, result.W, result.b, pipe, class_names, data_id, result.config,
                              metrics, classes, feature_names)
    else:
        (run_dir / WEIGHTS).unlink(missing_ok=True)
    atomic_write_bytes(run_dir / METRICS, (json.dumps(metrics, indent=1, default=json_ready) + "\n").encode())
    if metrics["history"].get("epoch") or metrics["history"].get("objective"):
        from linclf.evaluation import plots

        path = run_dir / LOSS_PLOT
        plots.draw_or_warn(lambda: plots.plot_history(metrics["history"], path, title=run_dir.name), path, warn)
    return run_dir


def _number_or_none(value):
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))


def check_metrics(metrics, where):
    """Refuse a metrics object of the wrong shape; returns it."""
    if not isinstance(metrics, dict):
        raise LinclfError(f"{where}: expected a JSON object, got {type(metrics).__name__}")
    if metrics.get("status") not in STATUSES:
        raise LinclfError(f"{where}: status must be one of {', '.join(STATUSES)}, got {short_repr(metrics.get('status'))}")
    for key in ("train_accuracy", "val_accuracy", "final_loss", "val_loss", "seconds"):
        if not _number_or_none(metrics.get(key)):
            raise LinclfError(f"{where}: {key} must be a finite number or null, got {short_repr(metrics.get(key))}")
        if metrics.get(key) is not None and not 0 <= metrics[key] <= (1 if key.endswith("accuracy") else math.inf):
            raise LinclfError(f"{where}: {key} must be {'in [0, 1]' if key.endswith('accuracy') else '>= 0'}, "
                              f"got {metrics[key]}")
    for key, kind, what in (("data_id", str, "a string"), ("split", dict, "an object"), ("history", dict, "an object")):
        if key in metrics and not isinstance(metrics[key], kind):
            raise LinclfError(f"{where}: {key} must be {what}")
    return metrics


def read_metrics(run_dir):
    """metrics.json of a run folder: a dict, None when there is none; LinclfError when damaged."""
    path = Path(run_dir) / METRICS
    try:
        text = read_text(path)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise LinclfError(f"{path}: cannot be read ({error})") from None
    try:
        metrics = json.loads(text)
    except ValueError as error:
        raise LinclfError(f"{path}: not valid JSON ({error}); delete the run folder to train it again") from None
    return check_metrics(metrics, str(path))
