"""What the estimators share: their settings as a configuration, inputs validated where they
enter (scikit-learn's validate_data), labels encoded, arrays in memory as a data source."""
import hashlib

import numpy as np

try:
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import column_or_1d, validate_data
except ImportError as error:  # pragma: no cover - the CLI never imports this module
    raise ImportError("linclf's Python estimators need scikit-learn: pip install scikit-learn (or, in linclf's checkout, "
                      "pip install -e '.[sklearn]')") from error

from linclf import config
from linclf.config import DEFAULTS
from linclf.data import sources
from linclf.data.cifar10 import IMAGE_SHAPE
from linclf.experiments import jobs
from linclf.util import progressbars

# config keys whose estimator parameter has another name (scikit-learn's convention for the seed)
RENAMED = {"seed": "random_state"}


def _given(estimator):
    """The settings the estimator was given (config key -> value; None is not given), validated."""
    overrides = {key: getattr(estimator, RENAMED.get(key, key)) for key in DEFAULTS}
    overrides["seed"] = _seed(overrides["seed"])
    return {k: v for k, v in config.validate(overrides, type(estimator).__name__).items() if v is not None}


def _settings(estimator):
    """The estimator's settings as a complete config dict (config.complete: the solver chosen)."""
    return config.complete(_given(estimator), type(estimator).__name__)


def _seed(random_state):
    """random_state (None, an int or a RandomState) as the trainer's integer seed."""
    if random_state is None:
        return int(np.random.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    return random_state


def _inputs(estimator, X, y=None, reset=True):
    """X (and y) validated where they enter: images (N, 32, 32, 3) uint8 stay as they are (the
    folded pixel path); anything else must be (N, D) finite numbers, kept as float16/32/64
    (integers become float32). Returns (X, y, kind), kind "images" or "features"; at predict time
    (reset False) X must be of the kind the estimator was fitted on."""
    if not hasattr(X, "ndim") and not hasattr(X, "tocsr"):  # a list of images or rows (not sparse)
        X = np.asarray(X)
    if getattr(getattr(X, "dtype", None), "kind", None) in ("m", "M"):  # numpy would cast times to numbers
        raise ValueError(f"X of dtype {X.dtype}: features must be numbers (dates and durations are not); "
                         f"convert them to numbers yourself")
    images = getattr(X, "ndim", 0) == 4 and getattr(X, "dtype", None) == np.uint8 and X.shape[1:] == IMAGE_SHAPE
    kind = "images" if images else "features"
    if getattr(X, "ndim", 2) > 2 and not images:
        raise ValueError(f"X of shape {X.shape} and dtype {X.dtype}: images must be (N, 32, 32, 3) uint8 "
                         f"(height, width, RGB); anything else must be (N, D) rows: flatten it")
    if not reset and kind != estimator.input_kind_:
        expected = "(N, 32, 32, 3) uint8 images" if estimator.input_kind_ == "images" else "(N, D) rows"
        raise ValueError(f"{type(estimator).__name__} was fitted on {expected}; X of shape {X.shape} is not")
    kwargs = {"accept_sparse": False, "reset": reset}
    if images:
        kwargs.update(allow_nd=True, dtype=None)
    else:
        kwargs.update(dtype=(np.float32, np.float64, np.float16))
    if y is None:
        X = validate_data(estimator, X, **kwargs)
    else:
        X, y = validate_data(estimator, X, y, **kwargs)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
    if not images and X.dtype == np.float64:  # finite (checked above), but maybe beyond float32's range
        sources.check_features("X", X, "input")
    return X, y, kind


def _required(estimator, y):
    if y is None:
        raise ValueError(f"{type(estimator).__name__} requires y to be passed, but the target y is None")
    return y


def _encode_labels(y):
    """(classes (C,), labels (N,) intp in 0..C-1); ValueError for fewer than 2 classes. Text labels
    held as Python objects (a pandas column, say) become a string array, so a model file can hold
    them without pickling; other object labels are refused."""
    if y.dtype == object:  # a model file holds numbers or text, never pickled objects
        y = np.array(y.tolist())
        if y.dtype == object or y.dtype.kind not in "iufUSb":
            raise ValueError("labels of dtype object must all be text or all numbers")
    classes, labels = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"the classifier needs samples of at least 2 classes in the data; got {len(classes)} class")
    return classes, labels.astype(np.intp)


def _data_id(X, labels):
    """A data id for arrays in memory: a hash of their shape, dtype, every label and 256 rows
    spread over X (cheap at any size; arrays that differ in those get other ids, so `linclf runs`
    and --best never take two notebooks' data for one)."""
    digest = hashlib.sha1(f"{X.shape} {X.dtype}".encode())
    digest.update(np.ascontiguousarray(labels).tobytes())
    digest.update(np.ascontiguousarray(X[np.linspace(0, len(X) - 1, min(len(X), 256)).astype(np.intp)]).tobytes())
    return f"python-{digest.hexdigest()[:16]}-{len(X)}"


def _source(X, labels, classes, kind):
    """Arrays in memory as a sources.Source (no test split, no place on disk)."""
    return sources.Source(X, labels, X[:0], labels[:0], [str(c) for c in classes], _data_id(X, labels), kind, {})


def _check_splits(configs, rows):
    """Refuse, before any training, a configuration whose val_size or train_size does not fit `rows`."""
    for cfg in configs:
        sources.check_split(rows, cfg["val_size"], cfg["train_size"],
                            hint="; set val_size=0 (train on every row, no validation) or below the number of rows")


def _train(source, configs, verbose):
    """jobs.train_group on arrays in memory, a progress bar when verbose."""
    _check_splits(configs, len(source.train_y))
    return jobs.train_group(source, configs, progress=progressbars.factory("fit", "step") if verbose else None)


def _class_names(names, classes):
    """class_names as C distinct strings for classes (C,); ValueError otherwise."""
    names = [str(n) for n in names]
    if len(names) != len(classes) or len(set(names)) != len(names):
        raise ValueError(f"class_names must be {len(classes)} distinct names, one per class; got {names}")
    return names


def _raw_weights(W, b, pipe):
    """coef_ (C, D) and intercept_ (C,) on the inputs of the pipeline's last step: its
    standardization (x - offset) * scale folded into W (D, C) and b (C,)."""
    offset, scale = pipe.scaler.fold()
    scaled = W * np.asarray(scale, np.float32).reshape(-1, 1) if np.ndim(scale) else W * np.float32(scale)
    return np.ascontiguousarray(scaled.T), (b - offset @ scaled).astype(np.float32)
