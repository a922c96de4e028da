"""scikit-learn estimators over linclf's core (needs scikit-learn: pip install -e '.[sklearn]' in the checkout).

    SoftmaxClassifier   one softmax classifier (what `linclf train` does; classifier.py)
    SoftmaxSweep        a grid of them trained in batched groups, the best chosen by the one ranking
                        on a validation split (what `linclf sweep` does), as a classifier (sweep.py)
    KMeansFeatures      the Coates-Ng learned feature map of 32x32 RGB images, as a transformer (kmeans.py)
    load, plot_model    a fitted classifier from a run folder, and a picture of what it learned (persistence.py)

Parameters have the names, meanings and defaults of the config keys (linclf.config.SETTINGS; the
seed is `random_state`). Inputs are validated here, once, where they enter (scikit-learn's
validate_data), then handed to the same trainer, pipelines and model files as the CLI's. Two kinds
of X are accepted: (N, D) numbers (standardized per feature), or (N, 32, 32, 3) uint8 images, the
fast pixel path (mean image and one scalar std folded into the trainer).
"""
from linclf.estimators.base import RENAMED
from linclf.estimators.classifier import SoftmaxClassifier
from linclf.estimators.kmeans import KMEANS_NAMES, KMeansFeatures
from linclf.estimators.persistence import load, plot_model
from linclf.estimators.sweep import SoftmaxSweep

__all__ = ["SoftmaxClassifier", "SoftmaxSweep", "KMeansFeatures", "load", "plot_model", "RENAMED", "KMEANS_NAMES"]
