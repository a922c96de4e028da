"""The encoder's elementwise passes fused into one sweep per block (numba), beside the numpy passes.

After the distance product, `kmeans.encode` turns each block's squared distances z (rows, K) into
pooled triangle activations with five numpy passes over the (rows x K) block, each a sweep through
memory: max(z, 0), sqrt, the mean over k, max(mean - z, 0), and the region sums. `triangle_pool`
does the same arithmetic row by row while the row is in the first-level cache:

    d_k = sqrt(max(z_k, 0));  mu = mean_k d_k;  pooled[region(row), k] += max(mu - d_k, 0)

It equals the numpy passes up to float32 rounding (the mean is summed in another order); the
tests check them equal on random blocks and through `encode`. numba is imported when the encoder
first runs, never by the CLI's start; without numba (`available()` False) encode keeps the numpy
passes. Compiled code is cached on disk (numba's cache), so a process pays the compile once.
"""
import numpy as np

_kernel = None


def available():
    """Whether the fused kernel can run here (numba importable)."""
    return _compiled() is not None


def _compiled():
    global _kernel
    if _kernel is None:
        try:
            import numba
        except ImportError:
            _kernel = False
            return None
        _kernel = numba.njit(cache=True, nogil=True, fastmath=True)(_triangle_pool)
    return _kernel or None


def _triangle_pool(z, images, P, region, g, pooled):
    """z (images * P * P, K) float32 squared distances, row-major positions; region (P,) the
    pooling region of each position row/column; pooled (images, g, g, K) float32, overwritten."""
    K = z.shape[1]
    d = np.empty(K, dtype=np.float32)
    pooled[:] = 0
    inverse_k = np.float32(1.0) / np.float32(K)
    zero = np.float32(0.0)
    for image in range(images):
        for i in range(P):
            r = region[i]
            for j in range(P):
                c = region[j]
                row = (image * P + i) * P + j
                total = np.float32(0.0)
                for k in range(K):  # branch-free, so that it vectorizes
                    d[k] = np.sqrt(max(z[row, k], zero))
                for k in range(K):  # summed from d, allocated here: the same order whatever z's alignment
                    total += d[k]
                mu = total * inverse_k
                out = pooled[image, r, c]
                for k in range(K):
                    out[k] += max(mu - d[k], zero)


def triangle_pool(z, images, P, bounds, pooled):
    """Fill pooled (images, g, g, K) float32 with the region sums of the triangle activations of
    the squared distances z (images * P * P, K) float32; bounds (g + 1,) are the region edges
    (kmeans.pool_bounds). Returns pooled."""
    kernel = _compiled()
    g = len(bounds) - 1
    region = np.empty(P, dtype=np.int64)
    for index in range(g):
        region[bounds[index]:bounds[index + 1]] = index
    kernel(z, images, P, region, g, pooled)
    return pooled
