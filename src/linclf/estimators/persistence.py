"""load: a fitted SoftmaxClassifier from a run folder, a weights file, a sweep or a runs dir;
plot_model: what a fitted estimator learned, as a picture."""
import dataclasses
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from linclf.config import DEFAULTS
from linclf.estimators.base import RENAMED, _class_names
from linclf.estimators.classifier import SoftmaxClassifier
from linclf.estimators.kmeans import KMeansFeatures
from linclf.experiments import modelfile, ranking, runfolders
from linclf.training import loop


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
            return plots.plot_centroids(learned[-1].step_, Path(path), "KMeansFeatures")
        model = getattr(model.steps[-1][1], "best_estimator_", model.steps[-1][1])
    if not hasattr(model, "_set_fitted"):
        raise TypeError(f"plot_model takes a SoftmaxClassifier or SoftmaxSweep (or a Pipeline ending in one), "
                        f"got {type(model).__name__}")
    check_is_fitted(model)
    trained = model.model_
    if class_names is not None:
        trained = dataclasses.replace(trained, class_names=_class_names(class_names, model.classes_))
    return plots.plot_model(trained, Path(path))
