"""Runs on disk: run folders, model files, run ids, and the one ranking that decides "best".

A run folder holds
    weights.npz    the model (format v2): W (D, C), b (C,), class_names (C,), the input pipeline
                   (its spec as JSON and its fitted arrays "pipeline.<i>.<name>"), data_id, config
                   and metrics as JSON strings; loads with np.load(allow_pickle=False)  [status ok only]
    config.yaml    the resolved configuration
    metrics.json   status, train/val accuracy and loss, seconds, data id, split, per-epoch history
    loss.png       loss and accuracy per epoch
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
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from linclf import config as configuration
from linclf.features import pipeline as pipelines
from linclf.util.errors import LinclfError
from linclf.util.files import atomic_write, atomic_write_bytes
from linclf.data.sources import split_key
from linclf.training.loop import TRAINER_VERSION

FORMAT_V1 = "linclf-softmax-v1"
FORMAT = "linclf-softmax-v2"
WEIGHTS = "weights.npz"
METRICS = "metrics.json"
SWEEP_FILE = "sweep.json"
STATUSES = ("ok", "diverged")
METRIC_NAMES = ("val_accuracy", "train_accuracy")  # what "best" may maximize


def default_runs_dir():
    """The runs dir: $LINCLF_RUNS_DIR, else ./runs."""
    return Path(os.environ.get("LINCLF_RUNS_DIR") or "runs")


# -- run ids and run folders --------------------------------------------------------------------

def run_id(config, identity, axes=()):
    """A stable folder name: the grid values, then a hash of what defines the run.

    The hash covers the resolved configuration (keys added after the first release only when they
    differ from their default, so adding a key does not rename old runs), the data id, the
    pipeline's parameters and the trainer version. `identity` is jobs.identify's dict.
    """
    defining = {"config": configuration.identity(config), "data_id": identity["data_id"],
                "pipeline": pipelines.build(config, identity["kind"], identity["input_shape"]).params(),
                "trainer": TRAINER_VERSION}
    digest = hashlib.sha1(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:10]
    shown = "_".join(f"{key}={config[key]:g}" if isinstance(config[key], (int, float)) else f"{key}={config[key]}"
                     for key in axes)
    return f"{shown}_{digest}" if shown else digest


TRAINING_LOCK = ".training.lock"  # held in a run folder while `linclf train` trains into it
OWN_FILES = {TRAINING_LOCK, "config.yaml", WEIGHTS, "loss.png"}  # what a killed run may have left


def clean_abandoned(runs_dir, prefix="train", min_age_seconds=60):
    """Remove the run folders runs_dir/prefix-* that a killed `linclf train` left unfinished (no
    metrics.json, nobody holding their training lock, nothing in them but what training writes).
    Returns the folders removed."""
    from linclf.util import locks

    removed = []
    for folder in sorted(Path(runs_dir).glob(f"{prefix}-*")):
        if folder.is_symlink() or not folder.is_dir() or (folder / METRICS).exists():
            continue
        names = {p.name for p in folder.iterdir()}
        if not names <= OWN_FILES | {n for n in names if n.startswith(".") and n.endswith(".tmp")}:
            continue
        if TRAINING_LOCK not in names and time.time() - folder.stat().st_mtime < min_age_seconds:
            continue  # just reserved by a run that has not locked it yet
        try:
            with locks.hold(folder / TRAINING_LOCK, f"training in {folder}", wait=False):
                shutil.rmtree(folder)
        except LinclfError:
            continue  # a live run holds it
        removed.append(folder)
    return removed


def reserve_run_dir(runs_dir, prefix="train"):
    """Create and return a new, empty run folder runs_dir/prefix-YYYYmmdd-HHMMSS (-2, -3... when
    taken). Creating it is atomic, so two runs started in the same second get two folders."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
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
    """Reserve a run folder the user named (--out): create it, or accept it when empty."""
    run_dir = Path(run_dir)
    what = None
    if run_dir.is_symlink():
        what = "is a symbolic link"
    elif run_dir.exists() and not run_dir.is_dir():
        what = "is not a folder"  # a file, or a device such as /dev/null
    elif run_dir.exists() and any(run_dir.iterdir()):
        what = "already exists and is not empty"
    if what:
        raise LinclfError(f"output folder {run_dir} {what}; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


def save_run(run_dir, result, pipeline, class_names, data_id, replace=False, warn=None, classes=None):
    """Write a train.RunResult into run_dir (created if needed); returns run_dir. `classes` (C,) are
    the label values the model predicts (numbers or strings; default 0..C-1), class_names (C,)
    their names.

    Refuses a folder that already holds a finished run unless `replace`. The plot comes last and
    a failing plot loses nothing: the run is complete without it, and warn(line) says why it is
    missing.
    """
    run_dir = Path(run_dir)
    if (run_dir / METRICS).exists() and not replace:
        raise LinclfError(f"{run_dir} already holds a finished run; choose another folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = {**result.metrics(), "data_id": data_id, "split": split_key(result.config),
               "trainer_version": TRAINER_VERSION}
    atomic_write_bytes(run_dir / "config.yaml", yaml.safe_dump(result.config, sort_keys=False).encode())
    if result.status == "ok":
        spec, arrays = pipeline.to_arrays()
        atomic_write(run_dir / WEIGHTS, lambda stream: np.savez(
            stream, W=result.W, b=result.b, class_names=np.array(class_names), pipeline=np.array(spec),
            data_id=np.array(data_id), config=np.array(json.dumps(result.config)),
            metrics=np.array(json.dumps(metrics, default=_json_default)), format=np.array(FORMAT),
            classes=np.arange(len(class_names)) if classes is None else np.asarray(classes), **arrays))
    else:
        (run_dir / WEIGHTS).unlink(missing_ok=True)
    atomic_write_bytes(run_dir / METRICS, (json.dumps(metrics, indent=1, default=_json_default) + "\n").encode())
    if metrics["history"].get("epoch"):
        from linclf.evaluation import plots

        path = run_dir / "loss.png"
        plots.draw_or_warn(lambda: plots.plot_history(metrics["history"], path, title=run_dir.name), path, warn)
    return run_dir


class Checkpoint:
    """A training group's snapshot on disk (train.train_group's `checkpoint`), so that an
    interrupted group goes on from its last saved epoch. A hidden .npz file: arrays, and the facts
    as JSON. Saved at most every `every_seconds` (0: after every epoch). A snapshot that cannot be
    read, or that the trainer finds does not fit its group, is not used: the group starts over.
    `log(line)` is told at once whether the group resumes or starts over, and why; `note` keeps
    that line."""

    def __init__(self, path, every_seconds=5.0, log=None):
        self.path, self.every_seconds, self.log = Path(path), every_seconds, log
        self.saved_epoch, self.note = None, ""
        self._last = time.monotonic()

    def _say(self, line):
        self.note = line
        if self.log is not None:
            self.log(line)

    def load(self):
        if not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                facts = json.loads(str(archive["facts"]))
                arrays = {key[len("array."):]: archive[key] for key in archive.files if key.startswith("array.")}
            if not isinstance(facts, dict):
                raise ValueError("facts are not an object")
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
            self.refused(f"is damaged ({type(error).__name__})")
            return None
        return {"facts": facts, "arrays": arrays}

    def resumed(self, epoch):
        """The trainer goes on from the snapshot, after `epoch` epochs."""
        self.saved_epoch = epoch
        self._say(f"continuing from its checkpoint after epoch {epoch}")

    def refused(self, reason):
        """The snapshot is not used (reason: a few words); the group starts over."""
        self.saved_epoch = None
        self._say(f"its checkpoint {self.path} {reason}: started over")

    def save(self, snapshot, epoch):
        if time.monotonic() - self._last < self.every_seconds:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"array.{name}": value for name, value in snapshot["arrays"].items()}
        text = json.dumps(snapshot["facts"], default=_json_default)
        atomic_write(self.path, lambda stream: np.savez(stream, facts=np.array(text), **arrays))
        self.saved_epoch, self._last = epoch, time.monotonic()

    def remove(self):
        self.path.unlink(missing_ok=True)


# -- reading runs back: nothing is trusted ------------------------------------------------------

def _number_or_none(value):
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))


def check_metrics(metrics, where):
    """Refuse a metrics object of the wrong shape; returns it."""
    if not isinstance(metrics, dict):
        raise LinclfError(f"{where}: expected a JSON object, got {type(metrics).__name__}")
    if metrics.get("status") not in STATUSES:
        raise LinclfError(f"{where}: status must be one of {', '.join(STATUSES)}, got {configuration.shown(metrics.get('status'))}")
    for key in ("train_accuracy", "val_accuracy", "final_loss", "val_loss", "seconds"):
        if not _number_or_none(metrics.get(key)):
            raise LinclfError(f"{where}: {key} must be a finite number or null, got {configuration.shown(metrics.get(key))}")
        if metrics.get(key) is not None and not 0 <= metrics[key] <= (1 if key.endswith("accuracy") else math.inf):
            raise LinclfError(f"{where}: {key} must be {'in [0, 1]' if key.endswith('accuracy') else '>= 0'}, "
                              f"got {metrics[key]}")
    for key in ("data_id",):
        if key in metrics and not isinstance(metrics[key], str):
            raise LinclfError(f"{where}: {key} must be a string")
    if "split" in metrics and not isinstance(metrics["split"], dict):
        raise LinclfError(f"{where}: split must be an object")
    if not isinstance(metrics.get("history", {}), dict):
        raise LinclfError(f"{where}: history must be an object")
    return metrics


def read_metrics(run_dir):
    """metrics.json of a run folder: a dict, None when there is none; LinclfError when damaged."""
    path = Path(run_dir) / METRICS
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise LinclfError(f"{path}: cannot be read ({error})") from None
    try:
        metrics = json.loads(text)
    except ValueError as error:
        raise LinclfError(f"{path}: not valid JSON ({error}); delete the run folder to train it again") from None
    return check_metrics(metrics, str(path))


@dataclass
class Model:
    """A trained classifier read from weights.npz."""
    W: np.ndarray            # (D, C) float32
    b: np.ndarray            # (C,) float32
    pipeline: object         # pipeline.Pipeline: raw inputs -> X (N, D)
    class_names: list
    config: dict
    metrics: dict
    data_id: str
    path: Path | None
    classes: np.ndarray | None = None  # (C,) label values predicted (numbers or strings); None: 0..C-1


def _json_object(arrays, key, where):
    try:
        value = json.loads(str(arrays[key]))
    except KeyError:
        raise LinclfError(f"{where} is damaged: no '{key}' entry; train the model again") from None
    except ValueError:
        raise LinclfError(f"{where} is damaged: '{key}' is not valid JSON; train the model again") from None
    if not isinstance(value, dict):
        raise LinclfError(f"{where} is damaged: '{key}' is not a JSON object; train the model again")
    return value


def _check_pipeline(pipe, path):
    """Refuse a stored pipeline whose parts do not chain: raw inputs of input_shape (images or
    features) -> at most one feature step (k-means: 32x32x3 images -> F features) -> the
    standardization of D values (D = F, or the values of one input)."""
    def damaged(what):
        return LinclfError(f"{path} is damaged: {what}; train the model again")

    shape = "x".join(map(str, pipe.input_shape))
    if pipe.input_kind not in ("images", "features"):
        kind = configuration.shown(pipe.input_kind)
        raise damaged(f"its pipeline's input_kind must be images or features, got {kind}")
    if not pipe.input_shape or min(pipe.input_shape) < 1:
        raise damaged(f"its pipeline's input_shape {pipe.input_shape} is empty")
    if len(pipe.feature_steps) > 1 or any(isinstance(step, pipelines.Standardize) for step in pipe.feature_steps):
        raise damaged("damaged pipeline description (one feature step at most, then one standardization)")
    if pipe.feature_steps:
        step = pipe.feature_steps[0]
        if pipe.input_kind != "images" or pipe.input_shape != (32, 32, 3):
            raise damaged(f"its {step.name} step takes 32x32x3 images, its inputs are {shape} {pipe.input_kind}")
        width, what = step.dim, f"its {step.name} step gives {step.dim} features"
    else:
        width = math.prod(pipe.input_shape)
        what = f"its inputs ({shape}) hold {width} values"
    if pipe.scaler.dim != width:
        raise damaged(f"{what}, its {pipe.scaler.name} step standardizes {pipe.scaler.dim}")


SPLIT_KEYS = ("val_size", "train_size", "val_split")  # what eval needs of a model's config (val_split: tail)


def _check_config(config, path):
    """The stored config, its split keys (SPLIT_KEYS) checked as config.validate checks flags."""
    missing = [key for key in SPLIT_KEYS[:2] if key not in config]
    if missing:
        raise LinclfError(f"{path} is damaged: its config lacks {', '.join(missing)}; train the model again")
    try:
        split = configuration.validate({key: config[key] for key in SPLIT_KEYS if key in config},
                                       source=f"{path} is damaged: config")
    except LinclfError as error:
        raise LinclfError(f"{error}; train the model again") from None
    return {**config, **split}


def load_model(path):
    """Read weights.npz (format v2, or v1); anything else or anything damaged gets a one-line
    LinclfError saying what is wrong."""
    path = Path(path)
    expected = f"expected a {WEIGHTS} written by 'linclf train' or 'linclf sweep'"
    if path.is_dir():
        if not (path / WEIGHTS).is_file():
            try:
                metrics = read_metrics(path)
            except LinclfError:
                metrics = None
            if metrics and metrics["status"] == "diverged":
                raise LinclfError(f"{path}: this run diverged ({metrics.get('message') or 'no weights'}); "
                                  f"it has no weights")
            raise LinclfError(f"{path} holds no {WEIGHTS}; {expected}")
        path = path / WEIGHTS
    if not path.is_file():
        raise LinclfError(f"weights file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError):
        raise LinclfError(f"{path} is not a weights file or is damaged; {expected}") from None
    version = str(arrays.get("format", ""))
    if version not in (FORMAT, FORMAT_V1):
        raise LinclfError(f"{path} is not a linclf weights file; {expected}")
    for key in ("W", "b", "class_names"):
        if key not in arrays:
            raise LinclfError(f"{path} is damaged: no '{key}' entry; train the model again")
    W, b = arrays["W"], arrays["b"]
    if W.ndim != 2 or W.dtype.kind != "f" or b.shape != (W.shape[1],) or b.dtype.kind != "f":
        raise LinclfError(f"{path} is damaged: W {W.shape} {W.dtype} and b {b.shape} {b.dtype} do not fit")
    if not (np.all(np.isfinite(W)) and np.all(np.isfinite(b))):
        raise LinclfError(f"{path} is damaged: W or b holds NaN or infinite values; train the model again")
    names = arrays["class_names"]
    if names.shape != (W.shape[1],) or names.dtype.kind not in "US":
        raise LinclfError(f"{path} is damaged: class_names {names.shape} do not fit W {W.shape}")
    if version == FORMAT_V1:
        for key in ("mean", "std"):
            if key not in arrays:
                raise LinclfError(f"{path} is damaged: no '{key}' entry; train the model again")
        pipe = pipelines.pixels(arrays["mean"], arrays["std"]) if np.ndim(arrays["std"]) == 0 else None
        if pipe is None:
            raise LinclfError(f"{path} is damaged: std must be one number")
        pipe.scaler.check(str(path))
        data_id = "unknown"
    else:
        if "pipeline" not in arrays:
            raise LinclfError(f"{path} is damaged: no 'pipeline' entry; train the model again")
        pipe = pipelines.Pipeline.from_arrays(str(arrays["pipeline"]), arrays, str(path))
        data_id = str(arrays.get("data_id", "unknown"))
    if pipe.scaler.dim != W.shape[0]:
        raise LinclfError(f"{path} is damaged: the pipeline gives {pipe.scaler.dim} inputs, W takes {W.shape[0]}")
    _check_pipeline(pipe, path)
    config = _check_config(_json_object(arrays, "config", path), path)
    metrics = _json_object(arrays, "metrics", path)
    classes = arrays.get("classes", np.arange(W.shape[1]))
    if classes.shape != (W.shape[1],) or classes.dtype.kind not in "iuUSb" or len(set(classes.tolist())) != len(classes):
        raise LinclfError(f"{path} is damaged: classes {classes.shape} of {classes.dtype} do not fit W {W.shape}")
    return Model(W.astype(np.float32, copy=False), b.astype(np.float32, copy=False), pipe,
                 [str(n) for n in names], config, metrics, data_id, path, classes)


# -- the one ranking ----------------------------------------------------------------------------

def rank_key(row, metric):
    """Sort key of a run: finished runs first, then the higher metric, then the lower validation
    loss, then the run id (alphabetical) -- a total order, so every place that asks gets the same
    "best": the sweep table, results.csv and `eval --best`."""
    value, loss = row.get(metric), row.get("val_loss")
    ok = row.get("status") == "ok" and _number_or_none(value) and value is not None
    return (not ok, -value if ok else 0.0, loss if ok and _number_or_none(loss) and loss is not None else math.inf,
            str(row.get("run_id", "")))


def rank(rows, metric):
    """Rows (dicts with status, the metric, val_loss, run_id) sorted best first."""
    return sorted(rows, key=lambda row: rank_key(row, metric))


# -- sweeps' records and finding the best run ---------------------------------------------------

def write_sweep_record(folder, record):
    """sweep.json: the sweep's name, metric, data id and its current run ids (grid order)."""
    atomic_write_bytes(Path(folder) / SWEEP_FILE, (json.dumps(record, indent=1) + "\n").encode())


def read_sweep_record(folder):
    """sweep.json of a sweep folder, or None (a sweep made by linclf 0.1); LinclfError when damaged."""
    path = Path(folder) / SWEEP_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise LinclfError(f"{path}: damaged ({type(error).__name__}); run the sweep again to rewrite it") from None
    def plain_name(name):
        return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name

    if (not isinstance(record, dict) or not isinstance(record.get("runs"), list)
            or not all(plain_name(r) for r in record["runs"]) or record.get("metric") not in METRIC_NAMES):
        raise LinclfError(f"{path}: damaged (expected a metric of {', '.join(METRIC_NAMES)} and a list of run "
                          f"folder names); run the sweep again to rewrite it")
    return record


def _run_folders(root):
    """Every run folder (one holding metrics.json) under root; hidden folders (staging, temporary)
    are never entered. Yields (run_dir, sweep record of its parent or None)."""
    for current, folders, files in os.walk(root):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        here = Path(current)
        if METRICS in files and here != Path(root):
            folders[:] = []
            yield here
        elif METRICS in files:
            yield here


def _status(run_dir):
    try:
        metrics = read_metrics(run_dir)
    except LinclfError:
        return None
    return metrics and metrics["status"]


def _candidate(run_dir, root, notes):
    try:
        metrics = read_metrics(run_dir)
    except LinclfError as error:
        notes.append(f"skipped a damaged run: {error}")
        return None
    if not metrics or metrics["status"] != "ok" or not (run_dir / WEIGHTS).is_file():
        return None
    name = run_dir.relative_to(root).as_posix() if run_dir != root else run_dir.name
    return {**metrics, "run_id": name, "run_dir": run_dir}


def val_rows_key(split):
    """What fixes a run's validation rows, from its metrics' split: the data's val_size last rows
    ("tail") or a seeded sample of them ("random"); train_size never changes them."""
    split = split or {}
    return {"val_size": split.get("val_size"), "val_split": split.get("val_split", "tail")}


def input_shape(run_dir):
    """The shape of one raw input the run's model takes ((32, 32, 3) images, (D,) features), read
    from its weights file's pipeline description; None when it cannot be read."""
    try:
        with np.load(Path(run_dir) / WEIGHTS, allow_pickle=False) as archive:
            if "pipeline" not in archive.files:
                return (32, 32, 3) if str(archive["format"]) == FORMAT_V1 else None
            return tuple(int(v) for v in json.loads(str(archive["pipeline"]))["input_shape"])
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError):
        return None


def find_best(runs_dir, sweep=None, metric=None, data_id=None, inputs=None):
    """The best finished run (rank) under runs_dir. Returns (run_dir, metrics, notes), notes being
    lines that say what was skipped and why.

    With `sweep`: only that sweep's current runs (sweep.json), ranked by its metric unless `metric`
    is given. Without: every run under runs_dir except a sweep's runs that its latest grid dropped.
    Runs compete only when they are comparable: measured on the same data and the same validation
    rows (val_rows_key; train_size does not matter). Among comparable runs the metric decides,
    never how many runs there are. When runs of several such comparisons are there, the runs on
    `data_id` (the data the caller will use) are taken, then those validated on the most rows (the
    most trustworthy measure), then the comparison whose newest run is newest; the notes say what
    was skipped. With `inputs`, the shape of one input the caller will give ((32, 32, 3) images,
    (D,) features), only models taking such inputs compete.
    """
    root = Path(runs_dir) / sweep if sweep else Path(runs_dir)
    if not root.is_dir():
        what = f"sweep '{sweep}' in {runs_dir}" if sweep else f"runs dir {root}"
        raise LinclfError(f"no {what}; run 'linclf train' or 'linclf sweep' first")
    notes = []
    if sweep:
        record = read_sweep_record(root)
        metric = metric or (record["metric"] if record else "val_accuracy")
        if record is None:
            notes.append(f"{root} has no {SWEEP_FILE} (an older linclf made it): every run folder in it counts")
            folders = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        else:
            folders = [root / name for name in record["runs"]]
        entries = [e for e in (_candidate(p, Path(runs_dir), notes) for p in folders if (p / METRICS).is_file()) if e]
    else:
        metric = metric or "val_accuracy"
        entries, stale = [], 0
        records = {}
        for run_dir in _run_folders(root):
            parent = run_dir.parent
            if parent not in records:
                try:
                    records[parent] = read_sweep_record(parent)
                except LinclfError as error:
                    notes.append(str(error))
                    records[parent] = None
            if records[parent] is not None and run_dir.name not in records[parent]["runs"]:
                stale += 1
                continue
            entry = _candidate(run_dir, root, notes)
            if entry:
                entries.append(entry)
        if stale:
            notes.append(f"skipped {stale} runs that their sweep's latest grid no longer holds")
    if inputs is not None:
        inputs = tuple(inputs)
        fitting = [e for e in entries if input_shape(e["run_dir"]) == inputs]
        if len(fitting) < len(entries):
            notes.append(f"skipped {len(entries) - len(fitting)} runs whose models take other inputs than "
                         f"{'x'.join(map(str, inputs))}")
        entries = fitting
    if not sweep:
        entries = _one_comparison(entries, data_id, notes)
    if not entries:
        diverged = sum(1 for run_dir in _run_folders(root) if _status(run_dir) == "diverged")
        why = f"every run under {root} diverged ({diverged}); try a smaller lr" if diverged else \
            f"no finished run with {metric} under {root}; run 'linclf train' or 'linclf sweep' first"
        raise LinclfError("; ".join([why, *notes]))
    best = rank(entries, metric)[0]
    return best["run_dir"], {k: v for k, v in best.items() if k != "run_dir"}, notes


def _one_comparison(entries, data_id, notes):
    """Keep the runs measured on one data id and one set of validation rows (see find_best)."""
    def key(entry):
        return (entry.get("data_id", "unknown"), json.dumps(val_rows_key(entry.get("split")), sort_keys=True))

    groups = {}
    for entry in entries:
        groups.setdefault(key(entry), []).append(entry)
    if not groups:
        return []
    choices = [k for k in groups if data_id is None or k[0] == data_id] or list(groups)
    if data_id is not None and not any(k[0] == data_id for k in groups):
        notes.append(f"no run was trained on this data ({data_id}); comparing runs on other data")

    def trust(k):
        val_size = json.loads(k[1])["val_size"]
        newest = max(e["run_dir"].stat().st_mtime for e in groups[k])
        return (val_size if isinstance(val_size, int) else 0, newest)

    chosen = max(choices, key=trust)
    skipped = sum(len(v) for k, v in groups.items() if k != chosen)
    if skipped:
        notes.append(f"skipped {skipped} runs measured on other data or other validation rows "
                     f"(compared: data {chosen[0]}, validation rows {chosen[1]}; --sweep NAME picks within a sweep)")
    return groups[chosen]


def list_runs(runs_dir, sweep=None, metric=None):
    """Every run folder under runs_dir (or the current runs of one sweep), finished or diverged,
    ranked best first (rank). Returns (rows, notes); a row is the run's metrics without its history,
    plus run_id (its folder under runs_dir) and val_rows (val_rows_key). Damaged runs are skipped
    and said in notes."""
    root = Path(runs_dir) / sweep if sweep else Path(runs_dir)
    if not root.is_dir():
        what = f"sweep '{sweep}' in {runs_dir}" if sweep else f"runs dir {root}"
        raise LinclfError(f"no {what}; run 'linclf train' or 'linclf sweep' first")
    notes, rows, records = [], [], {}
    record = read_sweep_record(root) if sweep else None
    if sweep:
        metric = metric or (record["metric"] if record else "val_accuracy")
    metric = metric or "val_accuracy"
    for run_dir in _run_folders(root):
        parent = run_dir.parent
        if parent not in records:
            try:
                records[parent] = read_sweep_record(parent)
            except LinclfError as error:
                notes.append(str(error))
                records[parent] = None
        if records[parent] is not None and run_dir.name not in records[parent]["runs"]:
            continue  # its sweep's latest grid dropped it
        try:
            metrics = read_metrics(run_dir)
        except LinclfError as error:
            notes.append(f"skipped a damaged run: {error}")
            continue
        name = run_dir.relative_to(runs_dir).as_posix() if run_dir != Path(runs_dir) else run_dir.name
        rows.append({**{k: v for k, v in metrics.items() if k != "history"}, "run_id": name,
                     "val_rows": val_rows_key(metrics.get("split"))})
    return rank(rows, metric), notes
