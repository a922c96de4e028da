"""Encoding images with a learned k-means feature map (step 3 of the method in kmeans.py).

Speed: the distances are one float32 product per block of images, [w, |w|^2, 1] @ [-2 C^T; 1; |c|^2],
so the squared distances come out of BLAS with no extra pass; the whitening matrix is augmented
with the mean so whitening is one product too. Blocks of a few images keep the (rows x K) distance
block in cache for the passes after the product (fused.py). Blocks are spread over Python threads
(parallel.py), each running single-threaded BLAS, so the elementwise passes use every core too.
"""
import numpy as np

from linclf.config import RULES, patch_positions, pool_bounds
from linclf.features import fused
from linclf.features.kmeans import CHANNELS, normalize_patches, with_defaults
from linclf.features.parallel import run_blocks

ENCODINGS = RULES["kmeans_encoding"]
ENCODE_BLOCK = 2        # images per block: 2 x 729 x 1600 float32 distances = 9 MB, in cache beside
                        # the other thread's block (measured 1-8: 1-2 fastest)


def num_positions(params):
    """P: patch positions per image side at the params' patch_size and stride (27 for 6 at 1)."""
    params = with_defaults(params)
    return patch_positions(params["patch_size"], params["stride"])


def channels(params, k):
    """Activations per patch: k (triangle) or 2 k (soft: both polarities)."""
    return int(k) * (2 if with_defaults(params)["encoding"] == "soft" else 1)


def feature_dim(params, k):
    """Length of an encoded image: pool^2 regions x channels (4 k: quadrants), halved by mirror."""
    params = with_defaults(params)
    return params["pool"] ** 2 * channels(params, k) // (2 if params["mirror"] else 1)


def _partners(k, num_channels):
    """The mirror partner (num_channels,) of each channel: centroid i's is i + k/2 (mod k), in each
    polarity's block of k channels."""
    base = np.concatenate([np.arange(k // 2, k), np.arange(k // 2)])
    return np.concatenate([base + k * block for block in range(num_channels // k)])


def _fold(pooled, out, partner):
    """Sum mirror partners: pooled (b, g, g, C), channel j's mirror channel partner[j] -> out (b, D),
    per region row: the column pairs (c, g-1-c) for c < g/2 (j and its partner), then for odd g the
    middle column (j < partner[j], plus its partner)."""
    b, g, _, C = pooled.shape
    keep = np.flatnonzero(np.arange(C) < partner)
    out = out.reshape(b, g, -1)
    for c in range(g // 2):
        np.add(pooled[:, :, c], pooled[:, :, g - 1 - c][..., partner], out=out[:, :, c * C:(c + 1) * C])
    if g % 2:
        middle = pooled[:, :, g // 2]
        np.add(middle[..., keep], middle[..., partner[keep]], out=out[:, :, (g // 2) * C:])


def _extract(images, patch_size, stride, out):
    """Write every patch of images (b, 32, 32, 3) at `stride` into out (b * P * P, F) (a view with
    unit inner stride), positions row-major, patches in height, width, RGB order."""
    windows = np.lib.stride_tricks.sliding_window_view(images, (patch_size, patch_size), axis=(1, 2))
    windows = windows[:, ::stride, ::stride]                     # (b, P, P, 3, ps, ps)
    b, P = windows.shape[0], windows.shape[1]
    row, item = out.strides
    if out.shape != (b * P * P, patch_size * patch_size * CHANNELS) or item != out.itemsize:
        raise ValueError(f"out must be ({b * P * P}, {patch_size * patch_size * CHANNELS}) with unit inner stride")
    target = np.lib.stride_tricks.as_strided(
        out, (b, P, P, patch_size, patch_size, CHANNELS),
        (P * P * row, P * row, row, patch_size * CHANNELS * item, CHANNELS * item, item), writeable=True)
    np.copyto(target, windows.transpose(0, 1, 2, 4, 5, 3), casting="unsafe")


def encode(images, state, params=None, out=None, start=0, progress=None, flip=False, block=ENCODE_BLOCK,
           threads=None):
    """Features of images (N, 32, 32, 3) uint8 (a memmap is fine): (N, D) float32, D = feature_dim
    (kmeans.py, step 3: (N, 4K) for the paper's quadrants), written into out[start:start + N] and
    returned as that slice.

    out: None (a new array, start must be 0) or a preallocated (M, D) float32 array (a memmap slice
    is fine), M >= start + N. progress(n_done), if given, runs in the calling thread after each
    block with the number of these images encoded so far. flip=True encodes the images mirrored
    left-right. block: images per block; threads: default `default_threads()`. The result does not
    depend on block or threads, bit for bit (fused.py sums each row's mean in its own buffer).
    """
    params = with_defaults(params)
    ps, stride, eps = params["patch_size"], params["stride"], np.float32(params["norm_eps"])
    centroids = np.asarray(state["centroids"], dtype=np.float32)
    K, F = centroids.shape
    if F != ps * ps * CHANNELS:
        raise ValueError(f"centroids have {F} numbers, patch_size {ps} needs {ps * ps * CHANNELS}")
    N = len(images)
    D = feature_dim(params, K)
    if out is None:
        if start:
            raise ValueError("start needs a preallocated out")
        out = np.empty((N, D), dtype=np.float32)
    if out.shape[1:] != (D,) or out.dtype != np.float32 or len(out) < start + N:
        raise ValueError(f"out must be float32 (>= {start + N}, {D}), got {out.dtype} {out.shape}")
    target = out[start:start + N]
    if N == 0:
        return target
    P = num_positions(params)
    PP = P * P
    block = max(1, int(block))

    # whitening with the mean folded in: [p, 1] @ [M; -mean M]
    whitening = np.empty((F + 1, F), dtype=np.float32)
    whitening[:F] = state["whiten"]
    whitening[F] = -(np.asarray(state["patch_mean"], dtype=np.float32) @ whitening[:F])
    # triangle, squared distances: [w, |w|^2, 1] @ [-2 C^T; 1; |c|^2]; soft, responses to the
    # normalized centroids: [w, |w|^2, 1] @ [C^T / |c|; 0; 0] (the same product)
    distance_weights = np.zeros((F + 2, K), dtype=np.float32)
    squares = np.einsum("ij,ij->i", centroids, centroids)
    soft = params["encoding"] == "soft"
    if params["encoding"] not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, got {params['encoding']!r}")
    if soft:
        distance_weights[:F] = (centroids / np.maximum(np.sqrt(squares), 1e-12)[:, None]).T
    else:
        distance_weights[:F] = -2 * centroids.T
        distance_weights[F] = 1
        distance_weights[F + 1] = squares
    alpha = np.float32(params["alpha"])
    g, mirror = int(params["pool"]), bool(params["mirror"])
    C = channels(params, K)
    if mirror and K % 2:
        raise ValueError(f"mirror pairs need an even number of centroids, got {K}")
    partner = _partners(K, C) if mirror else None
    bounds = pool_bounds(P, g)

    def work(index, scratch):
        first, last = index * block, min(N, (index + 1) * block)
        b, rows = last - first, (last - first) * PP
        if "patches" not in scratch:
            scratch["patches"] = np.ones((block * PP, F + 1), dtype=np.float32)   # [p, 1]
            scratch["inputs"] = np.ones((block * PP, F + 2), dtype=np.float32)    # [w, |w|^2, 1]
            scratch["distances"] = np.empty((block * PP, K), dtype=np.float32)
            scratch["pooled"] = np.empty((block, g, g, C), dtype=np.float32)
        patches, inputs = scratch["patches"][:rows], scratch["inputs"][:rows]
        z, pooled = scratch["distances"][:rows], scratch["pooled"][:b]
        pixels = np.asarray(images[first:last])
        if flip:
            pixels = pixels[:, :, ::-1]
        raw = patches[:, :F]
        _extract(pixels, ps, stride, raw)
        normalize_patches(raw, eps)
        np.matmul(patches, whitening, out=inputs[:, :F])
        inputs[:, F] = np.einsum("ij,ij->i", inputs[:, :F], inputs[:, :F])
        np.matmul(inputs, distance_weights, out=z)
        if soft:  # the passes after the product in one sweep, row by row (features/fused.py)
            fused.soft_pool(z, b, P, bounds, alpha, pooled)
        else:
            fused.triangle_pool(z, b, P, bounds, pooled)
        if mirror:
            _fold(pooled, target[first:last], partner)
        else:
            target[first:last] = pooled.reshape(b, g * g * C)

    done_images = [0]

    def done(index):
        done_images[0] += min(N, (index + 1) * block) - index * block
        progress(done_images[0])

    run_blocks(-(-N // block), work, threads, done if progress is not None else None)
    return target
