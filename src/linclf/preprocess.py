"""From pixels to the classifier's input, in one explicit step: images -> standardized features.

Preprocessing is fitted on the training split only and stored with the model:
  - mean image subtraction: mean (D,) float32, the per-pixel, per-channel mean over training images;
  - scaling by one global scalar, std: the standard deviation of all mean-subtracted training pixels,
    so every input has unit variance on average and the weight templates keep their colours.
D = 32 * 32 * 3 = 3072, features flattened in height, width, RGB order. All in float32.

A learned feature map would slot in after `standardize`, in `to_inputs`; the weight templates of
`vis` are only meaningful for the raw-pixel model built here.
"""
import numpy as np

CHUNK = 4096  # images converted at a time, to bound the float temporaries


def flatten(images):
    """(N, 32, 32, 3) uint8 images -> (N, 3072) view or copy."""
    return np.asarray(images).reshape(len(images), -1)


def fit(images):
    """Fit preprocessing on training images (N, 32, 32, 3) uint8: {"mean": (D,), "std": ()} float32."""
    pixels = flatten(images)
    total = np.zeros(pixels.shape[1], dtype=np.float64)
    for start in range(0, len(pixels), CHUNK):
        total += pixels[start:start + CHUNK].sum(axis=0, dtype=np.float64)
    mean = total / len(pixels)
    square = 0.0
    for start in range(0, len(pixels), CHUNK):
        centred = pixels[start:start + CHUNK].astype(np.float64) - mean
        square += float(np.sum(centred * centred))
    std = np.sqrt(square / pixels.size)
    return {"mean": mean.astype(np.float32), "std": np.float32(std if std > 0 else 1.0)}


def standardize(images, preprocessing, out=None):
    """(N, 32, 32, 3) uint8 -> (N, D) float32: (pixels - mean) / std, converted chunk by chunk."""
    pixels = flatten(images)
    if out is None:
        out = np.empty(pixels.shape, dtype=np.float32)
    mean = preprocessing["mean"].astype(np.float32)
    scale = np.float32(1.0 / preprocessing["std"])
    for start in range(0, len(pixels), CHUNK):
        block = out[start:start + CHUNK]
        np.subtract(pixels[start:start + CHUNK], mean, out=block, dtype=np.float32)
        block *= scale
    return out


def to_inputs(images, preprocessing):
    """The classifier's input X (N, D) float32 for images (N, 32, 32, 3) uint8."""
    return standardize(images, preprocessing)
