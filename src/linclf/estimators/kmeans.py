"""KMeansFeatures: the learned feature map of 32x32 RGB images (features/pipeline.py's step) as a
scikit-learn transformer."""
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from linclf import config
from linclf.config import DEFAULTS
from linclf.data.cifar10 import IMAGE_SHAPE
from linclf.estimators.base import _seed
from linclf.features import cache
from linclf.features import pipeline
from linclf.util.errors import LinclfError


# KMeansFeatures' parameters: config key -> parameter name (scikit-learn's words for them)
KMEANS_NAMES = {"kmeans_k": "n_centroids", "patch_size": "patch_size", "stride": "stride",
                "kmeans_patches": "n_patches", "kmeans_iterations": "max_iter", "kmeans_seed": "random_state",
                "kmeans_pool": "pool", "kmeans_symmetry": "symmetry", "kmeans_encoding": "encoding",
                "kmeans_alpha": "alpha"}


def _parameter_names(message):
    """A message about the kmeans_* settings in KMeansFeatures' parameter names."""
    for key, name in KMEANS_NAMES.items():
        message = message.replace(key, name)
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
            return config.complete({**overrides, "features": "kmeans"}, "KMeansFeatures")
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
        step = pipeline.KMeansFeatures.from_config(self._config())
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
        return cache.transform_cached(Path(self.memory), self.step_, X)

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self)
        return np.array([f"kmeans{i}" for i in range(self.n_features_out_)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # images (N, 32, 32, 3), as PatchExtractor declares
        tags.input_tags.three_d_array = True
        tags.requires_fit = True
        return tags
