"""SoftmaxSweep: a grid of SoftmaxClassifier settings trained as `linclf sweep` trains it, the best kept."""
import warnings

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from linclf import config
from linclf.config import DEFAULTS, SWEEP_DEFAULTS
from linclf.estimators.base import RENAMED, _check_splits, _encode_labels, _given, _inputs, _required, _settings, _source
from linclf.estimators.classifier import SoftmaxClassifier
from linclf.experiments import ranking, runfolders


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

    def __init__(self, *, grid=None, group_size=SWEEP_DEFAULTS["group_size"], metric=SWEEP_DEFAULTS["metric"],
                 refit=False, solver=DEFAULTS["solver"], tol=DEFAULTS["tol"], max_iter=DEFAULTS["max_iter"],
                 reg=DEFAULTS["reg"], epochs=DEFAULTS["epochs"], batch_size=DEFAULTS["batch_size"], lr=DEFAULTS["lr"],
                 lr_decay=DEFAULTS["lr_decay"], momentum=DEFAULTS["momentum"], init_scale=DEFAULTS["init_scale"],
                 random_state=DEFAULTS["seed"], val_size=DEFAULTS["val_size"], train_size=DEFAULTS["train_size"],
                 val_split=DEFAULTS["val_split"], precondition=DEFAULTS["precondition"],
                 features=DEFAULTS["features"], kmeans_k=DEFAULTS["kmeans_k"], patch_size=DEFAULTS["patch_size"],
                 stride=DEFAULTS["stride"], kmeans_patches=DEFAULTS["kmeans_patches"],
                 kmeans_iterations=DEFAULTS["kmeans_iterations"], kmeans_seed=DEFAULTS["kmeans_seed"],
                 kmeans_pool=DEFAULTS["kmeans_pool"], kmeans_encoding=DEFAULTS["kmeans_encoding"],
                 kmeans_alpha=DEFAULTS["kmeans_alpha"], kmeans_symmetry=DEFAULTS["kmeans_symmetry"], verbose=False):
        self.grid, self.group_size, self.metric, self.refit, self.solver = grid, group_size, metric, refit, solver
        self.tol, self.max_iter, self.reg, self.epochs, self.batch_size = tol, max_iter, reg, epochs, batch_size
        self.lr, self.lr_decay, self.momentum, self.init_scale = lr, lr_decay, momentum, init_scale
        self.random_state, self.val_size, self.train_size = random_state, val_size, train_size
        self.val_split, self.precondition, self.features, self.kmeans_k = val_split, precondition, features, kmeans_k
        self.patch_size, self.stride, self.kmeans_patches = patch_size, stride, kmeans_patches
        self.kmeans_iterations, self.kmeans_seed, self.kmeans_pool = kmeans_iterations, kmeans_seed, kmeans_pool
        self.kmeans_encoding, self.kmeans_alpha, self.kmeans_symmetry = kmeans_encoding, kmeans_alpha, kmeans_symmetry
        self.verbose = verbose

    def _spec(self, val_rows=None):
        """The grid as an experiments.grids.Sweep (validated as grid files are). Grid keys are the
        parameter names (random_state) or the config keys (seed)."""
        from linclf.experiments import grids

        grid = self.grid if self.grid is not None else {"reg": list(config.REG_PATH)}
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
        configs = [config.for_data(cfg, len(labels)) for cfg in spec.configs]  # as the trainer completes them
        grids.check_validated(configs, self.metric, type(self).__name__, len(labels))
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
        unconverged = sum(result.converged is False for result in results)
        if unconverged:
            warnings.warn(f"{type(self).__name__}: {unconverged} of {len(results)} runs stopped before converging "
                          f"(cv_results_['converged'] says which); raise max_iter or tol", ConvergenceWarning,
                          stacklevel=2)
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
    """scikit-learn's cv_results_ layout for one validation split: one entry per config."""
    count = len(results)
    params = [{RENAMED.get(key, key): result.config[key] for key in spec.axes} for result in results]
    metrics = [result.metrics() for result in results]

    def column(key, dtype=None):
        return np.array([m[key] for m in metrics], dtype=dtype)

    def numbers(key):  # None (not measured) as NaN
        return np.array([np.nan if m[key] is None else m[key] for m in metrics], dtype=float)

    score = numbers(metric)
    rank = np.empty(count, dtype=np.int32)
    rank[order] = np.arange(1, count + 1)
    out = {"params": params}
    for key in spec.axes:
        name = RENAMED.get(key, key)
        out[f"param_{name}"] = np.ma.MaskedArray([p[name] for p in params], mask=False, dtype=object)
    out.update(split0_test_score=score, mean_test_score=score, std_test_score=np.zeros(count),
               rank_test_score=rank, mean_fit_time=column("seconds", float), std_fit_time=np.zeros(count),
               mean_score_time=np.zeros(count), std_score_time=np.zeros(count), val_loss=numbers("val_loss"),
               train_accuracy=numbers("train_accuracy"), status=column("status"),
               converged=column("converged", object), n_iter=column("n_iter"))
    return out
