"""The model file, weights.npz: writing it and reading it back, checked part by part.

The format (np.savez, loads with np.load(allow_pickle=False)): W (D, C) and b (C,) float32,
class_names (C,) and classes (C,) (the label values predicted; 0..C-1 for CIFAR-10 and array
files), the input pipeline (its spec as JSON in "pipeline" and its fitted arrays
"pipeline.<i>.<name>"), data_id, config and metrics as JSON strings, and format (FORMAT).
"""
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linclf.config import validate
from linclf.features.pipeline import Pipeline, Standardize
from linclf.util.errors import LinclfError, short_repr
from linclf.util.files import atomic_write, is_regular, json_ready, open_regular, read_text

FORMAT = "linclf-softmax-v2"
WEIGHTS = "weights.npz"


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
    feature_names: list | None = None  # (D,) the column names of the (N, D) rows it was fitted on, when they had names


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
        raise damaged(f"its pipeline's input_kind must be images or features, got {short_repr(pipe.input_kind)}")
    if not pipe.input_shape or min(pipe.input_shape) < 1:
        raise damaged(f"its pipeline's input_shape {pipe.input_shape} is empty")
    if len(pipe.feature_steps) > 1 or any(isinstance(step, Standardize) for step in pipe.feature_steps):
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
        split = validate({key: config[key] for key in SPLIT_KEYS if key in config}, source=f"{path} is damaged: config")
    except LinclfError as error:
        raise LinclfError(f"{error}; train the model again") from None
    return {**config, **split}


def load_model(path):
    """Read weights.npz; anything else or anything damaged gets a one-line
    LinclfError saying what is wrong."""
    path = Path(path)
    expected = f"expected a {WEIGHTS} written by 'linclf train' or 'linclf sweep'"
    if path.is_dir():
        if not is_regular(path / WEIGHTS):
            try:  # a diverged run's metrics.json says why (read loosely: only for the message)
                from linclf.experiments.runfolders import METRICS  # runfolders imports this module

                metrics = json.loads(read_text(path / METRICS))
            except (OSError, ValueError, LinclfError):
                metrics = None
            if isinstance(metrics, dict) and metrics.get("status") == "diverged":
                raise LinclfError(f"{path}: this run diverged ({metrics.get('message') or 'no weights'}); "
                                  f"it has no weights")
            raise LinclfError(f"{path} holds no {WEIGHTS}; {expected}")
        path = path / WEIGHTS
    if not is_regular(path):
        raise LinclfError(f"weights file not found: {path}")
    try:
        with open_regular(path) as stream, np.load(stream, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except LinclfError:  # not a regular file: said as such (LinclfError is a ValueError too)
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError):
        raise LinclfError(f"{path} is not a weights file or is damaged; {expected}") from None
    if str(arrays.get("format", "")) != FORMAT:
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
    if "pipeline" not in arrays:
        raise LinclfError(f"{path} is damaged: no 'pipeline' entry; train the model again")
    pipe = Pipeline.from_arrays(str(arrays["pipeline"]), arrays, str(path))
    if pipe.scaler.dim != W.shape[0]:
        raise LinclfError(f"{path} is damaged: the pipeline gives {pipe.scaler.dim} inputs, W takes {W.shape[0]}")
    _check_pipeline(pipe, path)
    config = _check_config(_json_object(arrays, "config", path), path)
    metrics = _json_object(arrays, "metrics", path)
    classes = arrays.get("classes", np.arange(W.shape[1]))
    if classes.shape != (W.shape[1],) or classes.dtype.kind not in "iuUSb" or len(set(classes.tolist())) != len(classes):
        raise LinclfError(f"{path} is damaged: classes {classes.shape} of {classes.dtype} do not fit W {W.shape}")
    feature_names = arrays.get("feature_names")
    if feature_names is not None and (feature_names.dtype.kind not in "US" or pipe.input_kind != "features"
                                      or feature_names.shape != pipe.input_shape):
        raise LinclfError(f"{path} is damaged: feature_names {feature_names.shape} of {feature_names.dtype} do not "
                          f"fit its inputs ({'x'.join(map(str, pipe.input_shape))} {pipe.input_kind})")
    return Model(W.astype(np.float32, copy=False), b.astype(np.float32, copy=False), pipe,
                 [str(n) for n in names], config, metrics, str(arrays.get("data_id", "unknown")), path, classes,
                 None if feature_names is None else [str(n) for n in feature_names])


def input_shape(run_dir):
    """The shape of one raw input the run's model takes ((32, 32, 3) images, (D,) features), read
    from its weights file's pipeline description; None when it cannot be read."""
    try:
        with open_regular(Path(run_dir) / WEIGHTS) as stream, np.load(stream, allow_pickle=False) as archive:
            return tuple(int(v) for v in json.loads(str(archive["pipeline"]))["input_shape"])
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError, LinclfError):
        return None


def write_model(path, W, b, pipeline, class_names, data_id, config, metrics, classes=None, feature_names=None):
    """Write the model file at path, atomically, in the format above; classes default to 0..C-1,
    feature_names (D,) are given when the input columns had names."""
    spec, arrays = pipeline.to_arrays()
    if feature_names is not None:
        arrays = {**arrays, "feature_names": np.asarray([str(n) for n in feature_names])}
    atomic_write(path, lambda stream: np.savez(
        stream, W=W, b=b, class_names=np.array(class_names), pipeline=np.array(spec), data_id=np.array(data_id),
        config=np.array(json.dumps(config)), metrics=np.array(json.dumps(metrics, default=json_ready)),
        format=np.array(FORMAT), classes=np.arange(len(class_names)) if classes is None else np.asarray(classes),
        **arrays))
