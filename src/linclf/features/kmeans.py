"""Learned features: single-layer k-means features (Coates, Lee & Ng, AISTATS 2011). Math only, no I/O.

The method, with F = patch_size * patch_size * 3 numbers per patch (height, width, RGB order):

1. `sample_patches`: random patches of the training images, (n, F) float32 on the 0-255 scale;
   `normalize_patches`: each minus its own mean, divided by sqrt(var + norm_eps) (var with n-1, as
   the paper's code); `fit_whitening`: ZCA whitening, V diag(1 / sqrt(lambda + whiten_eps)) V^T of
   the patches' covariance.
2. `kmeans`: K centroids (K, F) of the whitened patches (Lloyd's algorithm).
3. `encoder.encode`: every patch of an image at `stride` (P x P positions, P = (32 - patch_size) // stride + 1:
   27 x 27 for 6 x 6 patches at stride 1), normalized and whitened the same way, its distances z_k
   to the centroids, the triangle activation f_k = max(0, mean(z) - z_k), summed over the four
   quadrants of the P x P grid (rows and columns [0, h) and [h, P) with h = ceil(P / 2) = 14 for
   P = 27, the paper code's round(P / 2)). Features (N, 4K) float32, laid out (quadrant, k) with the
   quadrants top-left, top-right, bottom-left, bottom-right. `pool` = g sums over a g x g grid of
   regions instead (bounds round(i P / g): 0, 9, 18, 27 for g = 3): (N, g * g * K), (row, column, k).
   Mirror pairs (below): each feature summed with its partner, (N, g * g * K / 2).
   encoding "soft" (Coates & Ng 2011, "The importance of encoding versus training") instead of the
   triangle: the responses s_k = w . c_k / |c_k| of the whitened patch w to the normalized
   centroids, in both polarities, max(0, s_k - alpha) and max(0, -s_k - alpha): 2K channels per
   patch, laid out (polarity, k), so twice the features: (N, g * g * 2K), halved by mirror pairs.
   On the real images (scripts/screen_features.py, README) it gains a point of test accuracy at
   K = 1600 over the triangle, more than a K = 4000 triangle does, at the same distance products.
4. The caller standardizes the features and trains a linear classifier on them.

Mirror pairs (fit(mirror=True), params["mirror"]): the whitening is fitted on the patches and their
left-right mirror images (and made exactly mirror-symmetric), k-means learns K/2 centroids, and
their mirror images are the other K/2 (centroid k + K/2 is the mirror of k). Then mirroring an image
permutes its activations: position column c becomes P - 1 - c and centroid k its partner. Each
pooled feature is summed with its partner (region column g - 1 - c, partner centroid), so an image
and its mirror image get the same features: a linear classifier on them is what training on
flipped copies converges to (the optimum of that convex problem is flip-invariant), at no extra
encoding cost, with half as many features. Exact when the patch positions and the region bounds
are mirror-symmetric (27 positions with pool 3; with pool 2 the 14/13 split is off by one
column): config.check_features refuses the settings where they are not.
"""
import numpy as np

from linclf.config import DEFAULTS, feature_map
from linclf.features.parallel import run_blocks
from linclf.util.chunks import chunk_rows

NORM_EPS = 10.0  # patch normalization: (p - mean(p)) / sqrt(var(p) + NORM_EPS), 0-255 scale
# the settings encoder.encode needs beside the state: config.feature_map's at its defaults, and norm_eps
DEFAULT_PARAMS = {**feature_map(DEFAULTS), "norm_eps": NORM_EPS}
CHANNELS = 3
KMEANS_CHUNK = 4096     # patches per k-means assignment block


def with_defaults(params):
    """params with DEFAULT_PARAMS for the settings they leave out."""
    return {**DEFAULT_PARAMS, **(params or {})}


def sample_patches(images, num_patches, patch_size, rng):
    """Random patches of random images: images (N, 32, 32, 3) uint8 (a memmap is fine) ->
    (num_patches, patch_size * patch_size * 3) float32, each row a (patch_size, patch_size, 3)
    patch in height, width, RGB order. rng: a numpy Generator (image, then row, then column)."""
    images = np.asarray(images) if not isinstance(images, np.ndarray) else images
    N, height, width = images.shape[:3]
    index = rng.integers(0, N, size=num_patches)
    rows = rng.integers(0, height - patch_size + 1, size=num_patches)
    cols = rng.integers(0, width - patch_size + 1, size=num_patches)
    out = np.empty((num_patches, patch_size * patch_size * images.shape[3]), dtype=np.float32)
    offsets = np.arange(patch_size)
    # gather image by image (sorted, so a memmap is read in order), patches of one image at once
    order = np.argsort(index, kind="stable")
    bounds = np.searchsorted(index[order], np.arange(N + 1))
    for i in np.flatnonzero(np.diff(bounds)):
        picks = order[bounds[i]:bounds[i + 1]]
        image = np.asarray(images[i])
        r = rows[picks][:, None, None] + offsets[None, :, None]
        c = cols[picks][:, None, None] + offsets[None, None, :]
        out[picks] = image[r, c].reshape(len(picks), -1)
    return out


def normalize_patches(P, eps=NORM_EPS):
    """Brightness and contrast normalization of patches P (n, F) float32, in place: each row minus
    its mean, divided by sqrt(its variance (n-1 denominator) + eps). Returns P."""
    F = P.shape[1]
    mean = P.mean(axis=1, keepdims=True, dtype=np.float32)
    P -= mean
    var = np.einsum("ij,ij->i", P, P) / np.float32(F - 1)
    var += np.float32(eps)
    np.sqrt(var, out=var)
    P /= var[:, None]
    return P


def fit_whitening(P, eps=0.1):
    """ZCA whitening of patches P (n, F): returns (mean (F,), matrix (F, F)) float32 with
    matrix = V diag(1 / sqrt(lambda + eps)) V^T from the covariance (n-1 denominator) of P, so that
    `whiten(P, mean, matrix)` = (P - mean) @ matrix has covariance V diag(lambda / (lambda + eps)) V^T.
    The sums run in float64 over chunks of at most util.chunks.CHUNK_BYTES."""
    n, F = P.shape
    total = np.zeros(F)
    gram = np.zeros((F, F))
    chunk = chunk_rows(F)
    for start in range(0, n, chunk):
        block = P[start:start + chunk].astype(np.float64)
        total += block.sum(axis=0)
        gram += block.T @ block
    mean = total / n
    cov = (gram - n * np.outer(mean, mean)) / max(n - 1, 1)
    values, vectors = np.linalg.eigh((cov + cov.T) / 2)
    values = np.maximum(values, 0.0)
    matrix = (vectors / np.sqrt(values + eps)) @ vectors.T
    return mean.astype(np.float32), matrix.astype(np.float32)


def whiten(P, mean, matrix):
    """(P - mean) @ matrix: P (n, F) -> new (n, F) float32 array."""
    return np.matmul(np.asarray(P, dtype=np.float32) - mean, matrix)


def kmeans(P, k, iterations, seed, chunk=KMEANS_CHUNK, tol=0.0, threads=None, progress=None):
    """Lloyd's k-means on P (n, F) float32 (the whitened patches).

    Starts from k distinct rows of P chosen with numpy's default_rng(seed); every iteration assigns
    each row to its nearest centroid (one float32 product per `chunk` rows, fewer when k is large:
    [p, 1] @ [C^T; -|c|^2/2]) and moves each centroid to the mean of its rows (sums in float64). A centroid left without rows is
    re-seeded at the row farthest from its own centroid (distinct rows for several), which cannot
    increase the inertia. Stops after `iterations` assignments, when no assignment changed, or when
    the inertia fell by less than tol (relative) in one iteration.

    Returns (centroids (k, F) float32, history): history[i] is the inertia (sum of squared distances
    of the rows to their centroids) of assignment i, non-increasing up to float32 rounding. Same P,
    k, seed and threads: same result. progress(iteration, inertia), if given, runs after each one.
    """
    P = np.ascontiguousarray(P, dtype=np.float32)
    n, F = P.shape
    if not 0 < k <= n:
        raise ValueError(f"k must be in [1, {n}] for {n} patches, got {k}")
    chunk = min(chunk, chunk_rows(max(k, F + 1), 4))  # the (chunk, k) float32 scores stay within CHUNK_BYTES
    rng = np.random.default_rng(seed)
    centroids = P[np.sort(rng.choice(n, size=k, replace=False))].astype(np.float32)
    squares = np.einsum("ij,ij->i", P, P)             # |p|^2 (n,)
    columns = np.ascontiguousarray(P.T)               # (F, n): per-feature bincounts run on rows
    labels = np.full(n, -1, dtype=np.intp)
    previous = np.empty_like(labels)
    distances = np.empty(n, dtype=np.float32)         # squared distance to the own centroid
    weights = np.empty((F + 1, k), dtype=np.float32)  # [C^T; -|c|^2 / 2]
    num_chunks = -(-n // chunk)

    def assign(block, scratch):
        rows = slice(block * chunk, min(n, (block + 1) * chunk))
        m = rows.stop - rows.start
        if "inputs" not in scratch:
            scratch["inputs"] = np.ones((chunk, F + 1), dtype=np.float32)
            scratch["scores"] = np.empty((chunk, k), dtype=np.float32)
        inputs, scores = scratch["inputs"][:m], scratch["scores"][:m]
        inputs[:, :F] = P[rows]
        np.matmul(inputs, weights, out=scores)        # p.c - |c|^2/2: largest is nearest
        best = scores.argmax(axis=1)
        labels[rows] = best
        top = np.take_along_axis(scores, best[:, None], axis=1)[:, 0]
        np.maximum(squares[rows] - 2 * top, 0, out=distances[rows])

    history = []
    for iteration in range(iterations):
        weights[:F] = centroids.T
        weights[F] = -0.5 * np.einsum("ij,ij->i", centroids, centroids)
        previous[:] = labels
        run_blocks(num_chunks, assign, threads)
        inertia = float(distances.sum(dtype=np.float64))
        history.append(inertia)
        if progress is not None:
            progress(iteration, inertia)
        changed = bool(np.any(labels != previous))
        counts = np.bincount(labels, minlength=k)
        sums = np.empty((k, F))
        for feature in range(F):
            sums[:, feature] = np.bincount(labels, weights=columns[feature], minlength=k)
        full = counts > 0
        centroids[full] = (sums[full] / counts[full, None]).astype(np.float32)
        empty = np.flatnonzero(~full)
        if len(empty):
            far = np.argpartition(distances, n - len(empty))[n - len(empty):]
            far = far[np.argsort(-distances[far], kind="stable")]
            centroids[empty] = P[far]
            changed = True
        if not changed:
            break
        if tol > 0 and len(history) > 1 and history[-2] - inertia <= tol * history[-2]:
            break
    return centroids, history


def mirror_order(patch_size):
    """The column order (F,) that mirrors flattened (patch_size, patch_size, 3) patches left-right."""
    return np.arange(patch_size * patch_size * CHANNELS).reshape(patch_size, patch_size, CHANNELS)[:, ::-1].ravel()


def fit(images, k, patch_size=DEFAULTS["patch_size"], num_patches=DEFAULTS["kmeans_patches"],
        iterations=DEFAULTS["kmeans_iterations"], seed=DEFAULTS["kmeans_seed"], norm_eps=NORM_EPS, whiten_eps=0.1, tol=0.0, threads=None, progress=None, mirror=False):
    """Learn the feature map from training images (N, 32, 32, 3) uint8: sample num_patches patches
    (default_rng(seed)), normalize, fit and apply the ZCA whitening, run `kmeans` (seed, iterations,
    tol, threads, progress as there). Returns the state {"patch_mean": (F,), "whiten": (F, F),
    "centroids": (k, F)} float32, plus "inertia": (iterations run,) float64, k-means' history.

    mirror=True (k even): mirror pairs (module docstring), k / 2 centroids learned from the patches
    and their mirror images. iterations=0: no k-means, the centroids are k distinct random whitened
    patches (a random dictionary; inertia empty).
    """
    rng = np.random.default_rng(seed)
    patches = normalize_patches(sample_patches(images, num_patches, patch_size, rng), norm_eps)
    order = mirror_order(patch_size)
    if mirror:
        if k % 2:
            raise ValueError(f"mirror pairs need an even k, got {k}")
        patches = np.concatenate([patches, patches[:, order]])
    mean, matrix = fit_whitening(patches, whiten_eps)
    if mirror:  # exactly symmetric, so that whitening commutes with mirroring
        mean = (mean + mean[order]) / 2
        matrix = (matrix + matrix[order][:, order]) / 2
    patches -= mean
    patches = np.matmul(patches, matrix)
    centroids, history = kmeans(patches, k // 2 if mirror else k, iterations, seed, tol=tol, threads=threads,
                                progress=progress)
    if mirror:
        centroids = np.concatenate([centroids, centroids[:, order]])
    return {"patch_mean": mean, "whiten": matrix, "centroids": centroids,
            "inertia": np.asarray(history, dtype=np.float64)}


def centroid_images(state, params=None):
    """The centroids as pictures, like the paper's filters: each centroid mapped back through the
    inverse whitening, then stretched to [0, 1] on its own. Returns (K, ps, ps, 3) float32."""
    ps = with_defaults(params)["patch_size"]
    values, vectors = np.linalg.eigh(state["whiten"].astype(np.float64))
    unwhiten = (vectors / values) @ vectors.T                   # the inverse of the symmetric matrix
    patches = state["centroids"].astype(np.float64) @ unwhiten  # the normalized mean is ~0: left out
    low = patches.min(axis=1, keepdims=True)
    high = patches.max(axis=1, keepdims=True)
    pictures = (patches - low) / np.maximum(high - low, 1e-12)
    return pictures.reshape(len(patches), ps, ps, CHANNELS).astype(np.float32)
