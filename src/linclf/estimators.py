"""scikit-learn estimators over linclf's core (needs scikit-learn: pip install 'linclf[sklearn]').

    SoftmaxClassifier   one softmax classifier trained by minibatch SGD (what `linclf train` does)
    SoftmaxSweep        a grid of them trained in batched groups, the best chosen by the one ranking
                        on a validation split (what `linclf sweep` does), as a classifier
    KMeansFeatures      the Coates-Ng learned feature map of 32x32 RGB images, as a transformer

Parameters have the names, meanings and defaults of the config keys (linclf.config.SETTINGS; the
seed is `random_state`). Inputs are validated here, once, where they enter (scikit-learn's
validate_data), then handed to the same trainer, pipelines and model files as the CLI's. Two kinds
of X are accepted: (N, D) numbers (standardized per feature), or (N, 32, 32, 3) uint8 images, the
fast pixel path (mean image and one scalar std folded into the trainer).
"""
import dataclasses
import inspect
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as error:  # pragma: no cover - the CLI never imports this module
    raise ImportError("linclf's Python estimators need scikit-learn: pip install scikit-learn (or, in linclf's checkout, "
                      "pip install -e '.[sklearn]')") from error

from linclf import config as configuration
from linclf.config import DEFAULTS, SWEEP_DEFAULTS
from linclf.data import sources
from linclf.data.cifar10 import IMAGE_SHAPE
from linclf.evaluation import evaluate
from linclf.experiments import jobs, modelfile, ranking, runfolders
from linclf.features import pipeline as pipelines
from linclf.training import loop, softmax
from linclf.util.errors import LinclfError

# config keys whose estimator parameter has another name (scikit-learn's convention for the seed)
RENAMED = {"seed": "random_state"}


def _init_with_settings(*leading):
    """An estimator's __init__: the `leading` (name, default) parameters, then every training
    setting of config.SETTINGS with its default (the seed as random_state), then verbose=False, all
    keyword-only and stored as given (scikit-learn's convention). Its signature lists them, so
    get_params, clone and help() see them; the defaults are never written twice."""
    names = [*leading, *((RENAMED.get(key, key), default) for key, default in DEFAULTS.items()), ("verbose", False)]

    def __init__(self, **params):
        unknown = set(params) - {name for name, _ in names}
        if unknown:
            raise TypeError(f"{type(self).__name__} got an unexpected parameter {sorted(unknown)[0]!r}")
        for name, default in names:
            setattr(self, name, params.get(name, default))

    __init__.__signature__ = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default) for name, default in names])
    return __init__


def _given(estimator):
    """The settings the estimator was given (config key -> value; None is not given), validated."""
    overrides = {key: getattr(estimator, RENAMED.get(key, key)) for key in DEFAULTS}
    overrides["seed"] = _seed(overrides["seed"])
    return {k: v for k, v in configuration.validate(overrides, type(estimator).__name__).items() if v is not None}


def _settings(estimator):
    """The estimator's settings as a complete config dict (config.complete: the solver chosen)."""
    return pipelines.check_settings(configuration.complete(_given(estimator), type(estimator).__name__))


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
    import hashlib

    digest = hashlib.sha1(f"{X.shape} {X.dtype}".encode())
    digest.update(np.ascontiguousarray(labels).tobytes())
    digest.update(np.ascontiguousarray(X[np.linspace(0, len(X) - 1, min(len(X), 256)).astype(np.intp)]).tobytes())
    return f"python-{digest.hexdigest()[:16]}-{len(X)}"


def _source(X, labels, classes, kind):
    """Arrays in memory as a sources.Source (no test split, no place on disk)."""
    return sources.Source(X, labels, X[:0], labels[:0], [str(c) for c in classes], _data_id(X, labels), kind, {})


# what a Python user can set when val_size does not fit the rows given to fit
VAL_SIZE_HINT = "; set val_size=0 (train on every row, no validation) or below the number of rows"


def _check_splits(configs, rows):
    """Refuse, before any training, a configuration whose val_size or train_size does not fit `rows`."""
    for cfg in configs:
        sources.check_split(rows, cfg["val_size"], cfg["train_size"], hint=VAL_SIZE_HINT)


def _train(source, configs, verbose):
    """jobs.train_group on arrays in memory, a progress bar when verbose."""
    from linclf.util import progress

    _check_splits(configs, len(source.train_y))
    return jobs.train_group(source, configs, progress=progress.factory("fit", "step") if verbose else None)


class SoftmaxClassifier(ClassifierMixin, BaseEstimator):
    """Softmax (multinomial logistic) regression trained by minibatch SGD with momentum.

    Loss: mean cross-entropy + 0.5 * reg * sum(W**2) (the bias is not regularized). The last
    `val_size` rows of X (or a stratified sample, val_split="random") are held out to measure
    each epoch (history_); val_size=0 trains on every row. Each parameter is the config key of
    the same name (see configs/train.yaml and linclf.config.SETTINGS); `random_state` is `seed`.
    `features="kmeans"` learns the Coates-Ng features of (N, 32, 32, 3) images first (the
    kmeans_* settings). `verbose` shows a progress bar.

    Fitted attributes: classes_ (C,), coef_ (C, D) and intercept_ (C,) on the raw inputs
    (flattened images, or the learned features), so decision_function(X) = X @ coef_.T + intercept_
    for pixel and (N, D) models; n_features_in_, n_iter_ (epochs run), history_ (per-epoch loss
    and accuracy), model_ (the modelfile.Model that `save` writes and `linclf eval` reads).
    """

    __init__ = _init_with_settings()

    def fit(self, X: ArrayLike, y: ArrayLike) -> "SoftmaxClassifier":
        """Train on X (N, D) numbers or (N, 32, 32, 3) uint8 images and labels y (N,) of any
        kind (classes_ are their sorted distinct values). Returns self."""
        settings = _settings(self)
        X, y, kind = _inputs(self, X, _required(self, y))
        classes, labels = _encode_labels(y)
        outcome = _train(_source(X, labels, classes, kind), [settings], self.verbose)
        result = outcome.results[0]
        if result.converged is False:
            warnings.warn(f"{type(self).__name__}: {result.message}; raise max_iter or tol, or scale the "
                          f"inputs", ConvergenceWarning, stacklevel=2)
        return self._set_fitted(result, outcome.pipeline, classes, outcome.data_id)

    def _set_fitted(self, result, pipe, classes, data_id, class_names=None, path=None):
        """Fitted attributes from a training result (loop.RunResult) and its fitted pipeline, or
        from a model file."""
        if result.status != "ok":
            raise ValueError(f"training diverged: {result.message}")
        names = class_names or [str(c) for c in classes]
        self.input_kind_ = pipe.input_kind
        self.n_features_in_ = pipe.input_shape[0]
        metrics = {**result.metrics(), "data_id": data_id, "split": sources.split_key(result.config)}
        self.model_ = modelfile.Model(result.W, result.b, pipe, names, result.config, metrics, data_id, path, classes)
        self.classes_ = np.asarray(classes)
        self.history_ = result.history
        self.n_iter_ = result.n_iter
        self.coef_, self.intercept_ = _raw_weights(result.W, result.b, pipe)
        self._result = result
        return self

    def _scores(self, X):
        """Scores (N, C) float32 of X through the fitted pipeline (the same code as `linclf eval`)."""
        check_is_fitted(self)
        return evaluate.scores(self.model_, _inputs(self, X, reset=False)[0])

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """Scores (N, C) float32, columns in the order of classes_; for two classes, scikit-learn's
        (N,) margin of classes_[1] over classes_[0]."""
        scores = self._scores(X)
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities (N, C) float64, columns in the order of classes_."""
        return np.exp(self.predict_log_proba(X))

    def predict_log_proba(self, X: ArrayLike) -> np.ndarray:
        """Log-probabilities (N, C) float64, columns in the order of classes_."""
        return softmax.log_softmax(self._scores(X).astype(np.float64))

    def predict(self, X: ArrayLike) -> np.ndarray:
        """The class (N,) of highest score for each row of X."""
        scores = self._scores(X)
        return self.classes_[np.argmax(scores, axis=1)]

    def save(self, folder: str | Path, class_names: Sequence[str] | None = None, overwrite: bool = False) -> Path:
        """Write a run folder (weights.npz, config.yaml, metrics.json, loss.png) that `linclf eval`,
        `predict`, `visualize` and `load` read. `class_names` (C,) name the classes (default: the
        classes_ as text); a folder holding a finished run is replaced only with `overwrite`.
        Returns the folder's Path."""
        check_is_fitted(self)
        names = _class_names(class_names if class_names is not None else self.model_.class_names, self.classes_)
        folder = Path(folder)
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise ValueError(f"{folder} is {'a symbolic link' if folder.is_symlink() else 'not a folder'}; "
                             f"save into a folder")
        if folder.is_dir() and any(folder.iterdir()) and not (overwrite and (folder / runfolders.METRICS).is_file()):
            raise ValueError(f"{folder} is not empty; save into a new or empty folder (overwrite=True replaces "
                             f"a run folder)")
        folder = runfolders.save_run(folder, self._result, self.model_.pipeline, names, self.model_.data_id,
                                     replace=overwrite, classes=self.classes_,
                                     feature_names=getattr(self, "feature_names_in_", None))
        self.model_ = modelfile.load_model(folder)
        return folder

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True  # also (N, 32, 32, 3) images
        return tags


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


def load(path: str | Path) -> SoftmaxClassifier:
    """A fitted SoftmaxClassifier from a run folder, a weights.npz, a sweep folder (its best run,
    by the sweep's metric) or a runs dir (its best run, as `linclf eval --best` chooses it: among
    runs on one data set and one set of validation rows, said in a UserWarning when others are
    skipped). The best run is checked as --best checks it. Its score on the test split equals
    `linclf eval`'s accuracy."""
    path = Path(path)
    if path.is_dir() and not os.path.lexists(path / modelfile.WEIGHTS) and not (path / runfolders.METRICS).exists():
        sweep = path if os.path.lexists(path / ranking.SWEEP_FILE) else None
        model, notes = ranking.load_best(path, sweep)
        for note in notes:
            warnings.warn(f"load({str(path)!r}): {note}", UserWarning, stacklevel=2)
    else:
        model = modelfile.load_model(path)
    settings = {**DEFAULTS, **{k: v for k, v in model.config.items() if k in DEFAULTS}}
    clf = SoftmaxClassifier(**{RENAMED.get(k, k): v for k, v in settings.items()})
    history = model.metrics.get("history", {})
    result = loop.RunResult(settings, "ok", model.W, model.b, "", history, model.metrics.get("seconds") or 0.0,
                            converged=model.metrics.get("converged"), n_iter=model.metrics.get("n_iter") or 0)
    classes = model.classes if model.classes is not None else np.arange(len(model.class_names))
    clf._set_fitted(result, model.pipeline, classes, model.data_id, model.class_names, model.path)
    if model.feature_names is not None:  # as fit on a DataFrame left it: columns are checked by name
        clf.feature_names_in_ = np.asarray(model.feature_names, dtype=object)
    return clf


class SoftmaxSweep(ClassifierMixin, BaseEstimator):
    """A grid of SoftmaxClassifier settings trained in batched groups and ranked on a validation
    split, the best kept as a classifier (what `linclf sweep` does, from Python).

    grid: {key: list of values, or {min, max, num, scale}} over the config keys, as in a grid
    file's `grid:`; every other parameter is the grid file's `base` (same names and defaults as
    SoftmaxClassifier's). Configurations that share the data-shaping keys train together in one
    pass (at most group_size at a time). The validation rows are val_size/val_split of X, or the
    X_val, y_val given to fit. The best run is chosen by `metric` with the one ranking (ties: lower
    validation loss, then grid order); refit=True trains it again on the training and validation
    rows together (what linear-probe benchmarks do).

    Fitted attributes: cv_results_ (scikit-learn's layout: params, param_<key>, mean_test_score,
    rank_test_score, mean_fit_time, status, ...), best_index_, best_params_, best_score_,
    best_estimator_ (a fitted SoftmaxClassifier), classes_, n_features_in_, best_on_edge_ (notes:
    the best sits on the edge of a numeric axis). predict, predict_proba, decision_function and
    score use best_estimator_.
    """

    __init__ = _init_with_settings(("grid", None), ("group_size", SWEEP_DEFAULTS["group_size"]),
                                   ("metric", SWEEP_DEFAULTS["metric"]), ("refit", False))

    def _spec(self, val_rows=None):
        """The grid as an experiments.grids.Sweep (validated as grid files are). Grid keys are the
        parameter names (random_state) or the config keys (seed)."""
        from linclf.experiments import grids

        grid = self.grid if self.grid is not None else {"reg": list(configuration.REG_PATH)}
        if not isinstance(grid, dict):
            raise ValueError(f"grid must map parameters to their values, got {type(grid).__name__}")
        config_key = {name: key for key, name in RENAMED.items()}
        named_twice = [key for key in grid if key in config_key and config_key[key] in grid]
        if named_twice:
            raise ValueError(f"grid names {named_twice[0]} twice (also as {config_key[named_twice[0]]}); keep one")
        grid = {config_key.get(key, key): (list(values) if isinstance(values, (tuple, np.ndarray)) else values)
                for key, values in grid.items()}
        _settings(self)  # the settings checked as SoftmaxClassifier checks them, before the grid
        base = {k: v for k, v in _given(self).items() if k not in grid}
        if val_rows is not None:
            base.update(val_size=val_rows, val_split="tail", train_size=0)
        return grids.parse({"name": "python", "metric": self.metric, "group_size": self.group_size,
                            "base": base, "grid": grid}, source=type(self).__name__)

    def fit(self, X: ArrayLike, y: ArrayLike, X_val: ArrayLike | None = None,
            y_val: ArrayLike | None = None) -> "SoftmaxSweep":
        """Train every configuration of the grid on X (N, D) or (N, 32, 32, 3) uint8 images and
        labels y (N,), validate on the held-out rows (or on X_val, y_val), keep the best. Returns self."""
        from linclf.experiments import grids, sweep

        X, y, kind = _inputs(self, X, _required(self, y))
        self.input_kind_ = kind
        val_rows = None
        if X_val is not None or y_val is not None:
            if X_val is None or y_val is None:
                raise ValueError("give both X_val and y_val, or neither")
            X_val, y_val, _ = _inputs(self, X_val, y_val, reset=False)
            val_rows = len(y_val)
            X, y = np.concatenate([X, X_val]), np.concatenate([y, y_val])
        spec = self._spec(val_rows)
        classes, labels = _encode_labels(y)
        source = _source(X, labels, classes, kind)
        configs = [configuration.for_data(cfg, len(labels)) for cfg in spec.configs]  # as the trainer completes them
        # the grid trained as `linclf sweep` trains it, each result found again by its configuration
        outcomes = {}

        def on_outcome(outcome):
            for result in outcome.results:
                outcomes[grids.config_key(result.config)] = result, outcome.pipeline

        trainer = sweep.LocalTrainer(progress=self.verbose, log=lambda message: None, source=source)
        _check_splits(configs, len(labels))
        trainer.train_groups(None, list(grids.groups(configs, spec.group_size)), on_outcome)
        results, pipes = zip(*(outcomes[grids.config_key(cfg)] for cfg in configs))
        # ranked as the CLI ranks a sweep: ties broken by the run ids' grid values, as there
        rows = [{**result.metrics(), "run_id": runfolders.shown_axes(cfg, spec.axes), "index": index}
                for index, (cfg, result) in enumerate(zip(configs, results))]
        order = [row["index"] for row in ranking.rank(rows, self.metric)]
        self.best_index_ = order[0]
        best = results[self.best_index_]
        if best.status != "ok":
            raise ValueError(f"every configuration diverged (the first: {best.message})")
        self.cv_results_ = _cv_results(spec, results, order, self.metric)
        self.best_params_ = dict(self.cv_results_["params"][self.best_index_])
        self.best_score_ = rows[self.best_index_][self.metric]
        self.best_on_edge_ = grids.edge_notes(spec, best.config)
        for note in self.best_on_edge_:
            warnings.warn(note, UserWarning, stacklevel=2)
        params = {**self.get_params(), **self.best_params_}
        if val_rows is not None:  # the settings that split the rows as trained: X_val's rows at the end
            params.update(val_size=val_rows, val_split="tail", train_size=0)
        estimator = SoftmaxClassifier(**{k: v for k, v in params.items() if k in SoftmaxClassifier().get_params()})
        if self.refit:  # the best settings again, on the training and validation rows together
            estimator.set_params(val_size=0, train_size=0).fit(X, y)
        else:
            estimator._set_fitted(best, pipes[self.best_index_], classes, source.data_id)
        if hasattr(self, "feature_names_in_"):
            estimator.feature_names_in_ = self.feature_names_in_
        self.best_estimator_, self.classes_, self.n_iter_ = estimator, estimator.classes_, estimator.n_iter_
        return self

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        check_is_fitted(self)
        return self.best_estimator_.decision_function(X)

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        check_is_fitted(self)
        return self.best_estimator_.predict_proba(X)

    def predict_log_proba(self, X: ArrayLike) -> np.ndarray:
        check_is_fitted(self)
        return self.best_estimator_.predict_log_proba(X)

    def predict(self, X: ArrayLike) -> np.ndarray:
        check_is_fitted(self)
        return self.best_estimator_.predict(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags


def _cv_results(spec, results, order, metric):
    """scikit-learn's cv_results_ layout for one validation split: one entry per configuration."""
    count = len(results)
    params = [{RENAMED.get(key, key): result.config[key] for key in spec.axes} for result in results]
    metrics = [result.metrics() for result in results]
    score = np.array([m[metric] if m[metric] is not None else np.nan for m in metrics], dtype=float)
    rank = np.empty(count, dtype=np.int32)
    rank[order] = np.arange(1, count + 1)
    out = {"params": params}
    for key in spec.axes:
        name = RENAMED.get(key, key)
        out[f"param_{name}"] = np.ma.MaskedArray([p[name] for p in params], mask=False, dtype=object)
    seconds = np.array([m["seconds"] for m in metrics], dtype=float)
    out.update(split0_test_score=score, mean_test_score=score, std_test_score=np.zeros(count),
               rank_test_score=rank, mean_fit_time=seconds, std_fit_time=np.zeros(count),
               mean_score_time=np.zeros(count), std_score_time=np.zeros(count),
               val_loss=np.array([m["val_loss"] if m["val_loss"] is not None else np.nan for m in metrics]),
               train_accuracy=np.array([m["train_accuracy"] if m["train_accuracy"] is not None else np.nan
                                        for m in metrics]),
               status=np.array([m["status"] for m in metrics]))
    return out


# KMeansFeatures' parameters: config key -> parameter name (scikit-learn's words for them)
KMEANS_NAMES = {"kmeans_k": "n_centroids", "patch_size": "patch_size", "stride": "stride",
                "kmeans_patches": "n_patches", "kmeans_iterations": "max_iter", "kmeans_seed": "random_state",
                "kmeans_pool": "pool", "kmeans_symmetry": "symmetry", "kmeans_encoding": "encoding",
                "kmeans_alpha": "alpha"}


def _parameter_names(message):
    """A message about the kmeans_* settings in KMeansFeatures' parameter names."""
    for key, name in KMEANS_NAMES.items():
        message = message.replace(key, name) if key != name else message
    return message


class KMeansFeatures(TransformerMixin, BaseEstimator):
    """Learned features of 32x32 RGB images (Coates, Lee & Ng 2011): patches whitened, K centroids
    learned by k-means, each image encoded as triangle activations (or encoding="soft": both
    polarities of the responses, thresholded at alpha) pooled over pool x pool regions.

    X: (N, 32, 32, 3) uint8 images. transform gives (N, pool^2 * K) float32 features (twice that
    with encoding="soft"; half with symmetry="mirror": centroids in mirror pairs, so an image and
    its mirror image get the same features). Parameters map to the config's kmeans_* settings:
    n_centroids (kmeans_k), patch_size, stride, n_patches (kmeans_patches), max_iter
    (kmeans_iterations), random_state (kmeans_seed), pool (kmeans_pool), symmetry
    (kmeans_symmetry), encoding (kmeans_encoding), alpha (kmeans_alpha). `memory`, a folder, caches the
    features of the arrays transformed (keyed by the fitted state and the images' bytes), like
    scikit-learn's Pipeline(memory=...).
    """

    def __init__(self, n_centroids=DEFAULTS["kmeans_k"], *, patch_size=DEFAULTS["patch_size"],
                 stride=DEFAULTS["stride"], n_patches=DEFAULTS["kmeans_patches"],
                 max_iter=DEFAULTS["kmeans_iterations"], random_state=DEFAULTS["kmeans_seed"],
                 pool=DEFAULTS["kmeans_pool"], symmetry=DEFAULTS["kmeans_symmetry"],
                 encoding=DEFAULTS["kmeans_encoding"], alpha=DEFAULTS["kmeans_alpha"], memory=None):
        self.n_centroids, self.patch_size, self.stride, self.n_patches = n_centroids, patch_size, stride, n_patches
        self.max_iter, self.random_state, self.pool, self.symmetry = max_iter, random_state, pool, symmetry
        self.encoding, self.alpha, self.memory = encoding, alpha, memory

    def _config(self):
        overrides = {key: getattr(self, name) for key, name in KMEANS_NAMES.items()}
        overrides["kmeans_seed"] = _seed(overrides["kmeans_seed"])
        try:
            return pipelines.check_settings({**DEFAULTS, "features": "kmeans",
                                             **configuration.validate(overrides, "KMeansFeatures")})
        except LinclfError as error:
            raise ValueError(_parameter_names(str(error))) from None

    def _images(self, X, reset):
        if not hasattr(X, "shape") and not hasattr(X, "tocsr"):  # a list of images
            X = np.asarray(X)
        if not hasattr(X, "tocsr") and (X.ndim != 4 or X.shape[1:] != IMAGE_SHAPE or X.dtype != np.uint8):
            # said before validate_data, which would compare the image height with a row's width
            raise ValueError(f"KMeansFeatures takes (N, 32, 32, 3) uint8 images, got {X.shape} of {X.dtype}")
        return validate_data(self, X, reset=reset, allow_nd=True, dtype=None, accept_sparse=False,
                             ensure_all_finite=False)

    def fit(self, X: ArrayLike, y: object = None) -> "KMeansFeatures":
        """Learn the whitening and the centroids from images X (N, 32, 32, 3) uint8. Returns self."""
        X = self._images(X, reset=True)
        step = pipelines.KMeansFeatures.from_config(self._config())
        try:
            step.fit(X)
        except LinclfError as error:
            raise ValueError(_parameter_names(str(error))) from None
        self.step_ = step
        self.centroids_ = step.arrays["centroids"]
        self.n_features_out_ = step.dim
        return self

    def transform(self, X: ArrayLike) -> np.ndarray:
        """Features (N, n_features_out_) float32 of images X (N, 32, 32, 3) uint8."""
        check_is_fitted(self)
        X = self._images(X, reset=False)
        if self.memory is None:
            return self.step_.transform(X)
        return _cached(Path(self.memory), self.step_, X)

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self)
        return np.array([f"kmeans{i}" for i in range(self.n_features_out_)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # images (N, 32, 32, 3), as PatchExtractor declares
        tags.input_tags.three_d_array = True
        tags.requires_fit = True
        return tags


def _cached(folder, step, X):
    """step.transform(X), read from folder/<key>.npz when an earlier call stored it (the key hashes
    the step's parameters and fitted arrays and the images' bytes), else computed and stored. The
    file holds the features and their crc32: features that no longer match it (a file replaced or
    zeroed) are computed again, as the CLI's feature cache checks its rows."""
    import hashlib
    import json
    import zipfile
    import zlib

    from linclf.util.files import atomic_write, open_regular

    digest = hashlib.sha256(json.dumps(step.params, sort_keys=True).encode())
    for name in sorted(step.arrays):
        digest.update(np.ascontiguousarray(step.arrays[name]).tobytes())
    digest.update(np.ascontiguousarray(X).tobytes())
    path = folder / f"kmeans-{digest.hexdigest()[:24]}.npz"
    try:
        with open_regular(path) as stream, np.load(stream, allow_pickle=False) as archive:
            cached, crc = archive["features"], archive["crc32"]
        if cached.shape == (len(X), step.dim) and cached.dtype == np.float32 and crc.shape == () \
                and zlib.crc32(np.ascontiguousarray(cached)) == int(crc):
            return sources.check_features("features", cached, str(path))  # finite, or computed again
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, LinclfError):
        pass  # missing or damaged: computed again below and written over
    features = step.transform(X)
    try:  # a cache that cannot be written costs the cache, never the features
        folder.mkdir(parents=True, exist_ok=True)
        crc = np.int64(zlib.crc32(np.ascontiguousarray(features)))
        atomic_write(path, lambda stream: np.savez(stream, features=features, crc32=crc))
    except (OSError, LinclfError) as error:
        warnings.warn(f"KMeansFeatures: features not cached in {folder} ({getattr(error, 'strerror', None) or error})",
                      UserWarning, stacklevel=3)
    return features


def plot_model(estimator: BaseEstimator, path: str | Path, class_names: Sequence[str] | None = None) -> Path:
    """Draw what a fitted SoftmaxClassifier or SoftmaxSweep (its best) learned into the PNG at
    path: the class templates of a pixel model (named by class_names, default its classes), the
    de-whitened centroids of a k-means model or of a Pipeline's KMeansFeatures. Returns the path."""
    from linclf.evaluation import plots

    model = getattr(estimator, "best_estimator_", estimator)
    if hasattr(model, "steps"):  # a scikit-learn Pipeline: its k-means features' centroids, else its classifier
        learned = [step for _, step in model.steps[:-1] if isinstance(step, KMeansFeatures)]
        if learned:
            check_is_fitted(learned[-1])
            step = learned[-1].step_
            pairs = " in mirror pairs (the second half mirrors the first)" if step.params.get("mirror") else ""
            try:
                return plots.plot_centroids(step.pictures(), Path(path),
                                            title=f"{len(step.arrays['centroids'])} k-means centroids (de-whitened)"
                                                  f"{pairs}: KMeansFeatures")
            except LinclfError as error:
                raise ValueError(str(error)) from None
        model = getattr(model.steps[-1][1], "best_estimator_", model.steps[-1][1])
    if not hasattr(model, "_set_fitted"):
        raise TypeError(f"plot_model takes a SoftmaxClassifier or SoftmaxSweep (or a Pipeline ending in one), "
                        f"got {type(model).__name__}")
    check_is_fitted(model)
    trained = model.model_
    if class_names is not None:
        trained = dataclasses.replace(trained, class_names=_class_names(class_names, model.classes_))
    return plots.plot_model(trained, Path(path))


__all__ = ["SoftmaxClassifier", "SoftmaxSweep", "KMeansFeatures", "load", "plot_model"]
