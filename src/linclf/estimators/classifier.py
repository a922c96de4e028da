"""SoftmaxClassifier: one softmax classifier, what `linclf train` trains, as a scikit-learn classifier."""
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from linclf.config import DEFAULTS
from linclf.data import sources
from linclf.estimators.base import (_class_names, _encode_labels, _inputs, _raw_weights, _required, _settings, _source,
                                    _train)
from linclf.evaluation import evaluate
from linclf.experiments import modelfile, runfolders
from linclf.training import softmax
from linclf.util.files import folder_problem


class SoftmaxClassifier(ClassifierMixin, BaseEstimator):
    """Softmax (multinomial logistic) regression: the minimum of its objective (solver lbfgs, the
    default), or minibatch SGD with momentum on a schedule (solver sgd, chosen when lr, epochs or
    another setting of the schedule is given).

    Objective: mean cross-entropy + 0.5 * reg * sum(W**2) (the bias is not regularized), the model
    of scikit-learn's LogisticRegression(C=1 / (reg * N)) (C=2 / (reg * N) for two classes).
    Solver lbfgs stops when the largest gradient entry is at most `tol`, or after `max_iter`
    iterations with a ConvergenceWarning. `val_size` rows of X (the last ones, or a stratified
    sample with val_split="random"; by default a tenth of the rows, at most 1,000, none below 10)
    are held out to measure the result; val_size=0 trains on every row. Each parameter is the
    config key of the same name (see configs/train.yaml and linclf.config.SETTINGS);
    `random_state` is `seed`. `features="kmeans"` learns the Coates-Ng features of
    (N, 32, 32, 3) images first (the kmeans_* settings). `verbose` shows a progress bar.

    Fitted attributes: classes_ (C,), coef_ (C, D) and intercept_ (C,) on the raw inputs
    (flattened images, or the learned features), so decision_function(X) = X @ coef_.T + intercept_
    for pixel and (N, D) models; n_features_in_, n_iter_ (lbfgs iterations, or sgd epochs),
    history_ (lbfgs: the objective after each iteration; sgd: loss and accuracy per epoch), model_
    (the modelfile.Model that `save` writes and `linclf eval` reads).
    """

    def __init__(self, *, solver=DEFAULTS["solver"], tol=DEFAULTS["tol"], max_iter=DEFAULTS["max_iter"],
                 reg=DEFAULTS["reg"], epochs=DEFAULTS["epochs"], batch_size=DEFAULTS["batch_size"], lr=DEFAULTS["lr"],
                 lr_decay=DEFAULTS["lr_decay"], momentum=DEFAULTS["momentum"], init_scale=DEFAULTS["init_scale"],
                 random_state=DEFAULTS["seed"], val_size=DEFAULTS["val_size"], train_size=DEFAULTS["train_size"],
                 val_split=DEFAULTS["val_split"], precondition=DEFAULTS["precondition"],
                 features=DEFAULTS["features"], kmeans_k=DEFAULTS["kmeans_k"], patch_size=DEFAULTS["patch_size"],
                 stride=DEFAULTS["stride"], kmeans_patches=DEFAULTS["kmeans_patches"],
                 kmeans_iterations=DEFAULTS["kmeans_iterations"], kmeans_seed=DEFAULTS["kmeans_seed"],
                 kmeans_pool=DEFAULTS["kmeans_pool"], kmeans_encoding=DEFAULTS["kmeans_encoding"],
                 kmeans_alpha=DEFAULTS["kmeans_alpha"], kmeans_symmetry=DEFAULTS["kmeans_symmetry"], verbose=False):
        self.solver, self.tol, self.max_iter, self.reg, self.epochs = solver, tol, max_iter, reg, epochs
        self.batch_size, self.lr, self.lr_decay, self.momentum = batch_size, lr, lr_decay, momentum
        self.init_scale, self.random_state, self.val_size = init_scale, random_state, val_size
        self.train_size, self.val_split, self.precondition = train_size, val_split, precondition
        self.features, self.kmeans_k, self.patch_size, self.stride = features, kmeans_k, patch_size, stride
        self.kmeans_patches, self.kmeans_iterations, self.kmeans_seed = kmeans_patches, kmeans_iterations, kmeans_seed
        self.kmeans_pool, self.kmeans_encoding, self.kmeans_alpha = kmeans_pool, kmeans_encoding, kmeans_alpha
        self.kmeans_symmetry, self.verbose = kmeans_symmetry, verbose

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
        scores = self._scores(X)  # first: it checks that the estimator is fitted
        return self.classes_[np.argmax(scores, axis=1)]

    def save(self, folder: str | Path, class_names: Sequence[str] | None = None, overwrite: bool = False) -> Path:
        """Write a run folder (weights.npz, config.yaml, metrics.json, loss.png) that `linclf eval`,
        `predict`, `visualize` and `load` read. `class_names` (C,) name the classes (default: the
        classes_ as text); a folder holding a finished run is replaced only with `overwrite`.
        Returns the folder's Path."""
        check_is_fitted(self)
        names = _class_names(class_names if class_names is not None else self.model_.class_names, self.classes_)
        folder = Path(folder)
        problem = folder_problem(folder)
        if problem:
            raise ValueError(f"{folder} {problem}; save into a folder")
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
