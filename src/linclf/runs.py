"""Run directories: what `train` and `sweep` write, and how `eval` and `visualize` read it back.

A run directory holds
    weights.npz    W (D, C), b (C,), mean (D,), std (), class_names (C,), config and metrics as
                   JSON strings, format; loads with np.load(allow_pickle=False)  [only when status ok]
    config.yaml    the resolved configuration
    metrics.json   status, train/val accuracy, final loss, seconds, per-epoch history
    loss.png       loss and accuracy per epoch
Every file is written to a temporary name and renamed, and a new run directory is assembled under
a temporary name and renamed into place, so a run directory that exists is complete.
"""
import json
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from linclf import data, plots, train
from linclf.files import build_dir
from linclf.errors import LinclfError

FORMAT = "linclf-softmax-v1"
WEIGHTS = "weights.npz"
METRICS = "metrics.json"


def default_runs_dir():
    """The runs dir: $LINCLF_RUNS_DIR, else ./runs."""
    return Path(os.environ.get("LINCLF_RUNS_DIR") or "runs")


def new_run_name(runs_dir, prefix="train"):
    """A fresh folder name under runs_dir: prefix-YYYYmmdd-HHMMSS (with -2, -3... if taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name, counter = f"{prefix}-{stamp}", 2
    while (Path(runs_dir) / name).exists():
        name, counter = f"{prefix}-{stamp}-{counter}", counter + 1
    return Path(runs_dir) / name


def check_new_run_dir(run_dir):
    """Refuse to write over an existing, non-empty run directory."""
    run_dir = Path(run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise LinclfError(f"output folder {run_dir} already exists and is not empty; choose another --out")


def save_run(run_dir, result, preprocessing, class_names):
    """Write a RunResult into run_dir (which must not hold anything yet); returns run_dir."""
    run_dir = Path(run_dir)
    check_new_run_dir(run_dir)
    metrics = result.metrics()
    with build_dir(run_dir) as staging:
        (staging / "config.yaml").write_text(yaml.safe_dump(result.config, sort_keys=False))
        (staging / METRICS).write_text(json.dumps(metrics, indent=1) + "\n")
        if result.status == "ok":
            with open(staging / WEIGHTS, "wb") as stream:
                np.savez(stream, W=result.W, b=result.b, mean=preprocessing["mean"],
                         std=np.float32(preprocessing["std"]), class_names=np.array(class_names),
                         config=np.array(json.dumps(result.config)), metrics=np.array(json.dumps(metrics)),
                         format=np.array(FORMAT))
        if metrics["history"].get("epoch"):
            plots.plot_history(metrics["history"], staging / "loss.png", title=run_dir.name)
    return run_dir


@dataclass
class Model:
    """A trained classifier read from weights.npz."""
    W: np.ndarray            # (D, C) float32
    b: np.ndarray            # (C,) float32
    preprocessing: dict      # {"mean": (D,), "std": ()}
    class_names: list
    config: dict
    metrics: dict
    path: Path


def load_model(path):
    """Read weights.npz; anything else gets a one-line LinclfError saying what was expected."""
    path = Path(path)
    expected = f"expected a {WEIGHTS} written by 'linclf train' or 'linclf sweep'"
    if path.is_dir():
        if not (path / WEIGHTS).is_file():
            raise LinclfError(f"{path} holds no {WEIGHTS}; {expected}")
        path = path / WEIGHTS
    if not path.is_file():
        raise LinclfError(f"weights file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        raise LinclfError(f"{path} is not a weights file; {expected}") from None
    if not isinstance(arrays, dict) or str(arrays.get("format", "")) != FORMAT:
        raise LinclfError(f"{path} is not a linclf weights file; {expected}")
    W, b, mean = arrays["W"], arrays["b"], arrays["mean"]
    if W.ndim != 2 or b.shape != (W.shape[1],) or mean.shape != (W.shape[0],):
        raise LinclfError(f"{path} is damaged: W {W.shape}, b {b.shape}, mean {mean.shape} do not fit")
    return Model(W, b, {"mean": mean, "std": arrays["std"]}, [str(n) for n in arrays["class_names"]],
                 json.loads(str(arrays["config"])), json.loads(str(arrays["metrics"])), path)


def read_metrics(run_dir):
    """metrics.json of a finished run, or None."""
    try:
        return json.loads((Path(run_dir) / METRICS).read_text())
    except (OSError, ValueError):
        return None


def find_best(runs_dir, sweep=None, metric="val_accuracy"):
    """The finished, non-diverged run with the highest metric under runs_dir (or runs_dir/sweep).

    Returns (run_dir, metrics). Ties go to the first path in sorted order.
    """
    root = Path(runs_dir) / sweep if sweep else Path(runs_dir)
    if not root.is_dir():
        what = f"sweep '{sweep}' in {runs_dir}" if sweep else f"runs dir {root}"
        raise LinclfError(f"no {what}; run 'linclf train' or 'linclf sweep' first")
    best = None
    for metrics_file in sorted(root.rglob(METRICS)):
        run_dir = metrics_file.parent
        metrics = read_metrics(run_dir)
        if not metrics or metrics.get("status") != "ok" or not (run_dir / WEIGHTS).is_file():
            continue
        value = metrics.get(metric)
        if value is not None and (best is None or value > best[1][metric]):
            best = (run_dir, metrics)
    if best is None:
        raise LinclfError(f"no finished run with {metric} under {root}; run 'linclf train' or 'linclf sweep' first")
    return best


def fit_and_save(config, data_dir, run_dir, progress=False):
    """The `train` command's work: load data, train one configuration, save the run directory."""
    check_new_run_dir(run_dir)
    dataset = data.load_cache(data_dir)
    prepared = train.prepare_for(dataset, config)
    result = train.train(prepared, config, num_classes=len(dataset.class_names), progress=progress,
                         desc=Path(run_dir).name)
    save_run(run_dir, result, prepared.preprocessing, dataset.class_names)
    return result
