"""Input pipelines: from a source's raw inputs to the classifier's input X (N, D) float32.

A pipeline is a list of steps fitted on the training split only; it is saved in the model file
(its spec as JSON, its fitted arrays), so training, `eval`, `predict` and `visualize` all go
through the same code. The last step is always a standardization x -> (x - offset) * scale, which
the trainer applies batch by batch instead of converting the data set (see kernels.py); the steps
before it (a learned feature map) turn raw inputs into features.

Steps:
  pixels       mean image subtracted, divided by one scalar: the std of all centred training
               pixels (the weight templates keep their colours). Inputs flattened (H, W, RGB).
  standardize  per feature: (x - mean) / std, a std of 0 counted as 1.
  kmeans       learned features of images (kmeans.py: the method; encoder.py), fitted on the
               training images. Followed by "standardize".
"""
import json

import numpy as np

from linclf.config import DEFAULTS, complete, feature_map, kmeans_params, kmeans_settings
from linclf.features import encoder, kmeans
from linclf.util import float16
from linclf.util.chunks import chunk_rows
from linclf.util.errors import LinclfError


def flatten(X):
    """(N, ...) -> (N, D) view or copy."""
    X = np.asarray(X)
    return X.reshape(X.shape[0], int(np.prod(X.shape[1:])))


def _moments(X):
    """Mean (D,) and variance (D,) in float64 of rows X (N, D), in chunks of at most
    util.chunks.CHUNK_BYTES of float64."""
    rows = chunk_rows(X.shape[1])
    total = np.zeros(X.shape[1])
    for start in range(0, len(X), rows):
        total += X[start:start + rows].sum(axis=0, dtype=np.float64)
    mean = total / max(len(X), 1)
    square = np.zeros(X.shape[1])
    for start in range(0, len(X), rows):
        centred = X[start:start + rows].astype(np.float64)
        centred -= mean
        square += np.einsum("nd,nd->d", centred, centred)
    return mean, square / max(len(X), 1)


class Standardize:
    """The last step: (x - offset) * scale, scale a scalar ("pixels") or per feature ("standardize")."""

    def __init__(self, name, arrays=None):
        self.name = name
        self.params = {}
        self.arrays = arrays or {}

    def fit(self, X):
        """Fit on training rows X (N, D) (uint8 or float). The mean is kept in float64 for float64
        rows: rows far from zero (1e6 + 1e-2 noise) differ from it by less than float32 resolves."""
        X = flatten(X)
        mean, variance = _moments(X)
        mean = mean.astype(np.float64 if X.dtype == np.float64 else np.float32)
        std = np.sqrt(variance.mean() if self.name == "pixels" else variance)
        self.arrays = {"mean": mean, "std": np.where(std > 0, std, 1.0).astype(np.float32)}
        return self

    def fold(self):
        """(offset (D,), scale): a float for "pixels", (D,) float32 for "standardize"."""
        std = self.arrays["std"]
        scale = float(1.0 / std) if np.ndim(std) == 0 else (1.0 / std).astype(np.float32)
        return self.arrays["mean"], scale

    def transform(self, X, out=None):
        """Rows X (N, D) -> (x - offset) * scale, chunk by chunk: a new (N, D) float32 array, or
        into `out` when given (float32, or float16 rounded once per value). Computed in float32,
        but float64 rows are centred in float64 and cast after: a cast first would round away what
        sets rows with a large offset apart."""
        X = flatten(X)
        out = np.empty(X.shape, dtype=np.float32) if out is None else out
        offset, scale = self.fold()
        scale = np.float32(scale) if np.ndim(scale) == 0 else scale
        wide = X.dtype == np.float64
        rows = chunk_rows(X.shape[1], 8 if wide else 4)
        for start in range(0, len(X), rows):
            target = out[start:start + rows]  # a float16 target gets a float32 block, rounded once
            if wide:
                block = X[start:start + rows] - offset  # float64, cast once below
            else:
                block = float16.to_float32(X[start:start + rows], target if out.dtype == np.float32 else None)
                block -= offset
            block *= scale
            if block is not target:
                target[...] = block
        return out

    def check(self, where):
        mean, std = self.arrays.get("mean"), self.arrays.get("std")
        if not isinstance(mean, np.ndarray) or mean.ndim != 1 or std is None:
            raise LinclfError(f"{where}: the {self.name} step lacks its mean or std arrays")
        std = np.asarray(std)
        if mean.dtype.kind != "f" or std.dtype.kind != "f":
            raise LinclfError(f"{where}: the {self.name} step's mean and std must be floating point")
        if std.shape != (() if self.name == "pixels" else mean.shape):
            raise LinclfError(f"{where}: the {self.name} step's std has shape {std.shape}, mean {mean.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise LinclfError(f"{where}: the {self.name} step holds non-finite values or a std that is not > 0")

    @property
    def dim(self):
        return len(self.arrays["mean"])


ALPHA_CHECK_IMAGES = 64  # training images encoded after fitting to check that the soft encoding's threshold lets some through


class KMeansFeatures:
    """A feature step: images (N, 32, 32, 3) uint8 -> (N, dim) float32 k-means features. params:
    config.kmeans_params of a configuration (its feature settings under shorter names); arrays: the
    fitted state of kmeans.fit."""
    ARRAYS = ("patch_mean", "whiten", "centroids")  # the fitted state
    OPTIONAL_ARRAYS = ("inertia",)                  # (iterations run,): k-means' history, for reading only

    def __init__(self, name="kmeans", arrays=None, params=None):
        self.name = name
        self.params = dict(params or {})
        self.arrays = arrays or {}

    @classmethod
    def from_config(cls, config):
        return cls(params=kmeans_params(config))

    def settings(self):
        """The configuration's feature settings the params stand for (config.kmeans_settings)."""
        return kmeans_settings(self.params)

    def _encoding(self):
        return feature_map(self.settings())

    def fit(self, images, progress=None):
        """Learn the whitening and the centroids from training images (N, 32, 32, 3) uint8."""
        s = self.settings()
        self.arrays = kmeans.fit(images, s["kmeans_k"], patch_size=s["patch_size"], num_patches=s["kmeans_patches"],
                                 iterations=s["kmeans_iterations"], seed=s["kmeans_seed"], progress=progress,
                                 mirror=s["kmeans_symmetry"] == "mirror")
        if s["kmeans_encoding"] == "soft":  # a threshold above every response: features all zero, chance accuracy
            sample = images[:ALPHA_CHECK_IMAGES]
            if not self.transform(sample).any():
                raise LinclfError(f"kmeans_alpha {s['kmeans_alpha']:g} makes every feature zero (no response of the "
                                  f"first {len(sample)} training images exceeds it); choose a smaller kmeans_alpha "
                                  f"(default {DEFAULTS['kmeans_alpha']:g})")
        return self

    def transform(self, images, out=None, start=0, progress=None, flip=False):
        """Images (N, 32, 32, 3) uint8 -> features (N, dim) float32 (into out[start:] when given)."""
        return encoder.encode(images, self.arrays, self._encoding(), out=out, start=start, progress=progress, flip=flip)

    def pictures(self):
        """The centroids as (K, ps, ps, 3) pictures in [0, 1], de-whitened (kmeans.centroid_images)."""
        return kmeans.centroid_images(self.arrays, self._encoding())

    def check(self, where):
        """Refuse params that are no valid configuration's (config.complete's ranges and rules) and
        arrays that do not fit them."""
        try:
            s = complete({"features": "kmeans", **self.settings()})
        except (LinclfError, TypeError, AttributeError) as error:
            raise LinclfError(f"{where}: the kmeans step's parameters are damaged ({error})") from None
        F, k = 3 * s["patch_size"] ** 2, s["kmeans_k"]
        for name, shape in {"patch_mean": (F,), "whiten": (F, F), "centroids": (k, F)}.items():
            value = self.arrays.get(name)
            if not isinstance(value, np.ndarray) or value.shape != shape or value.dtype.kind != "f":
                raise LinclfError(f"{where}: the kmeans step's {name} must be a float array of shape {shape}")
            if not np.all(np.isfinite(value)):
                raise LinclfError(f"{where}: the kmeans step's {name} holds NaN or infinite values")
        inertia = self.arrays.get("inertia")
        if inertia is not None and not (isinstance(inertia, np.ndarray) and inertia.ndim == 1 and
                                        inertia.dtype.kind == "f" and np.all(np.isfinite(inertia))):
            raise LinclfError(f"{where}: the kmeans step's inertia must be a 1-D array of finite numbers")

    @property
    def dim(self):
        return encoder.feature_dim(self._encoding(), int(self.params["k"]))


STEPS = {"pixels": Standardize, "standardize": Standardize, "kmeans": KMeansFeatures}


class Pipeline:
    """Feature steps (maybe none) followed by one Standardize step. `input_shape` is the shape of
    one raw input (32, 32, 3) or (D,), checked where inputs enter."""

    def __init__(self, steps, input_shape, input_kind):
        self.steps = steps
        self.input_shape = tuple(input_shape)
        self.input_kind = input_kind  # "images" or "features"

    @property
    def scaler(self):
        return self.steps[-1]

    @property
    def feature_steps(self):
        return self.steps[:-1]

    def params(self):
        """The pipeline's parameters as JSON-ready data (part of every run id)."""
        return [{"step": step.name, **step.params} for step in self.steps]

    def check_inputs(self, X, where="inputs"):
        """Refuse inputs (N, ...) whose shape is not (N, *input_shape)."""
        shape = tuple(np.shape(X)[1:])
        if shape != self.input_shape:
            expected = "x".join(map(str, self.input_shape))
            raise LinclfError(f"{where}: the model takes inputs of shape {expected}, got "
                              f"{'x'.join(map(str, shape)) or 'scalars'}")

    def features(self, X, progress=None):
        """Raw inputs (N, ...) -> (N, D) rows the scaler standardizes (a view for pixels).
        Feature steps encode in chunks, so the float temporaries stay bounded."""
        for step in self.feature_steps:
            X = step.transform(X, progress=progress)
        return flatten(X)

    def fit(self, X, progress=None):
        """Fit every step on raw training inputs X (N, ...); returns their features (N, D)."""
        self.check_inputs(X, "training inputs")
        for step in self.feature_steps:
            step.fit(X)
        features = self.features(X, progress)
        self.scaler.fit(features)
        return features

    def fit_split(self, X, train_rows, val_rows, memory=None):
        """Fit every step on the training rows of raw inputs X (N, ...): the one place a pipeline is
        fitted for training. Returns (X_train, X_val), the rows' features before standardization
        (the trainer standardizes batch by batch). memory(step, rows), when given, stands in for a
        feature step's fit and encoding, like scikit-learn's Pipeline(memory=...): cache.memory."""
        if self.feature_steps and memory is not None:
            step = self.feature_steps[0]
            step.arrays, (X_train, X_val) = memory(step, (train_rows, val_rows))
            self.scaler.fit(X_train)
            return X_train, X_val
        return self.fit(X[train_rows]), self.features(X[val_rows])

    def transform(self, X):
        """Raw inputs (N, ...) -> the classifier's input (N, D) float32."""
        return self.scaler.transform(self.features(X))

    def to_arrays(self):
        """(spec JSON string, {name: array}) to store in a model file."""
        spec, arrays = [], {}
        for index, step in enumerate(self.steps):
            spec.append({"step": step.name, "params": step.params, "arrays": sorted(step.arrays)})
            arrays.update({f"pipeline.{index}.{name}": value for name, value in step.arrays.items()})
        text = json.dumps({"steps": spec, "input_shape": list(self.input_shape), "input_kind": self.input_kind})
        return text, arrays

    @classmethod
    def from_arrays(cls, text, arrays, where):
        """The pipeline a model file stores; one-line LinclfError when anything is missing or bad."""
        try:
            spec = json.loads(text)
            steps, input_shape, input_kind = spec["steps"], spec["input_shape"], spec["input_kind"]
            built = []
            for index, entry in enumerate(steps):
                step = STEPS[entry["step"]](entry["step"], {
                    name: arrays[f"pipeline.{index}.{name}"] for name in entry["arrays"]})
                step.params = dict(entry.get("params", {}))
                built.append(step)
            shape = tuple(int(v) for v in input_shape)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise LinclfError(f"{where}: damaged pipeline description ({type(error).__name__}: {error}); "
                              f"train the model again") from None
        if not built or not isinstance(built[-1], Standardize):
            raise LinclfError(f"{where}: damaged pipeline description (no standardization step); train again")
        pipeline = cls(built, shape, str(input_kind))
        for step in built:
            step.check(where)
        return pipeline


def build(config, source_kind, input_shape):
    """The unfitted pipeline a configuration asks for on a source of this kind."""
    if config.get("features", "pixels") == "kmeans":
        if source_kind != "images" or tuple(input_shape) != (32, 32, 3):
            raise LinclfError("features: kmeans needs 32x32 RGB images; this data holds "
                              f"{'x'.join(map(str, input_shape))} {source_kind}")
        return Pipeline([KMeansFeatures.from_config(config), Standardize("standardize")], input_shape, source_kind)
    return Pipeline([Standardize("pixels" if source_kind == "images" else "standardize")], input_shape, source_kind)
