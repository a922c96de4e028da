"""The encoder's elementwise passes fused into one sweep per block (numba).

After the distance product, `encoder.encode` turns each block's squared distances z (rows, K) into
pooled triangle activations. In numpy (triangle_pool_numpy, the reference the tests compare
against) that is five passes over the (rows x K) block; `triangle_pool` does the same arithmetic
row by row while the row is in the first-level cache:

    d_k = sqrt(max(z_k, 0));  mu = mean_k d_k;  pooled[region(row), k] += max(mu - d_k, 0)

`soft_pool` does the same for the soft encoding's responses s (rows, K), into channels k and K + k:
max(s_k - alpha, 0) and max(-s_k - alpha, 0). Both equal their numpy reference up to float32
rounding (sums run in another order). numba is imported when the encoder first runs, never by the
CLI's start; its compiled code is cached on disk, so a process pays the compile once.
"""
import numpy as np

_kernels = None


def _compiled():
    """{"triangle": kernel, "soft": kernel} compiled by numba (lazily, each on its first call)."""
    global _kernels
    if _kernels is None:
        import numba

        jit = numba.njit(cache=True, nogil=True, fastmath=True)
        _kernels = {"triangle": jit(_triangle_pool), "soft": jit(_soft_pool)}
    return _kernels


def _triangle_pool(z, images, P, region, pooled):
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
                row = (image * P + i) * P + j
                total = np.float32(0.0)
                for k in range(K):  # branch-free, so that it vectorizes
                    d[k] = np.sqrt(max(z[row, k], zero))
                for k in range(K):  # summed from d, allocated here: the same order whatever z's alignment
                    total += d[k]
                mu = total * inverse_k
                out = pooled[image, r, region[j]]
                for k in range(K):
                    out[k] += max(mu - d[k], zero)


def _soft_pool(s, images, P, region, alpha, pooled):
    """s (images * P * P, K) float32 responses, row-major positions; region (P,) as above; pooled
    (images, g, g, 2K) float32, overwritten."""
    K = s.shape[1]
    pooled[:] = 0
    zero = np.float32(0.0)
    for image in range(images):
        for i in range(P):
            r = region[i]
            for j in range(P):
                row = (image * P + i) * P + j
                positive, negative = pooled[image, r, region[j], :K], pooled[image, r, region[j], K:]
                for k in range(K):  # one polarity a loop: each vectorizes (in one loop, 4x slower)
                    positive[k] += max(s[row, k] - alpha, zero)
                for k in range(K):
                    negative[k] += max(-s[row, k] - alpha, zero)


def _regions(bounds):
    """The region (P,) int64 of each position row/column, from the edges bounds (g + 1,) of P positions."""
    return np.repeat(np.arange(len(bounds) - 1, dtype=np.int64), np.diff(bounds))


def triangle_pool(z, images, P, bounds, pooled):
    """Fill pooled (images, g, g, K) float32 with the region sums of the triangle activations of
    the squared distances z (images * P * P, K) float32; bounds (g + 1,) are the region edges
    (config.pool_bounds). Returns pooled."""
    _compiled()["triangle"](z, images, P, _regions(bounds), pooled)
    return pooled


def soft_pool(s, images, P, bounds, alpha, pooled):
    """Fill pooled (images, g, g, 2K) float32 with the region sums of the soft activations
    max(0, s - alpha), max(0, -s - alpha) of the responses s (images * P * P, K) float32; bounds as
    triangle_pool's, alpha a float32. Returns pooled."""
    _compiled()["soft"](s, images, P, _regions(bounds), np.float32(alpha), pooled)
    return pooled


# The same passes in numpy: the reference the kernels above are tested against, with the same arguments.

def triangle_pool_numpy(z, images, P, bounds, pooled):
    """Squared distances z (images * P * P, K) float32 (overwritten) -> pooled (images, g, g, K),
    the region sums of the triangle activations max(0, mean_k(d) - d_k), d = sqrt(max(z, 0))."""
    K = z.shape[1]
    np.maximum(z, 0, out=z)                         # rounding can leave -0.0001 for a hit
    np.sqrt(z, out=z)
    mu = z @ np.full(K, 1 / K, dtype=np.float32)    # mean distance of each patch (rows,)
    np.subtract(mu[:, None], z, out=z)
    np.maximum(z, 0, out=z)                         # triangle activation
    return _region_sums(z.reshape(images, P, P, K), bounds, pooled)


def soft_pool_numpy(s, images, P, bounds, alpha, pooled):
    """Responses s (images * P * P, K) float32 -> pooled (images, g, g, 2K), the region sums of
    max(0, s - alpha) (channels 0..K-1) and max(0, -s - alpha) (channels K..2K-1)."""
    K = s.shape[1]
    act = np.empty((len(s), 2 * K), dtype=np.float32)
    np.subtract(s, alpha, out=act[:, :K])
    np.negative(s, out=act[:, K:])
    act[:, K:] -= alpha
    np.maximum(act, 0, out=act)
    return _region_sums(act.reshape(images, P, P, 2 * K), bounds, pooled)


def _region_sums(grid, bounds, pooled):
    """pooled[:, r, c] = the sum of grid (images, P, P, C) over region rows r and columns c."""
    regions = [slice(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    for r, rows in enumerate(regions):
        band = grid[:, rows].sum(axis=1)            # (images, P, C)
        for c, columns in enumerate(regions):
            band[:, columns].sum(axis=1, out=pooled[:, r, c])
    return pooled
