"""Figures, rendered with matplotlib's Agg backend and written atomically as PNG files."""
import io
import math
import os
import stat
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from linclf.util.errors import LinclfError  # noqa: E402
from linclf.util.files import atomic_write_bytes  # noqa: E402


DIVERGED_CELL = "0.72"  # mid grey: black text on it reads well, and it is no colour of viridis
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# what can go wrong drawing and writing a picture: a full disk, a folder in the way, matplotlib
PLOT_ERRORS = (OSError, RuntimeError, ValueError, MemoryError)  # ValueError: LinclfError too


def _is_png(path):
    """Whether path is a regular file (not a link) starting with the PNG signature. Never blocks
    on a FIFO."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(descriptor).st_mode) and os.read(descriptor, 8) == PNG_SIGNATURE
    except OSError:
        return False
    finally:
        os.close(descriptor)


def _save(figure, path, title=""):
    """Write figure, under `title` when given, to path as PNG through a temporary file and a rename.
    A regular file at path that is not a PNG image (a text file given as --out, say) is refused."""
    path = Path(path)
    if title:
        figure.suptitle(printable(title))
    try:
        if path.is_file() and not path.is_symlink() and path.stat().st_size and not _is_png(path):
            raise LinclfError(f"refusing to overwrite {path}: it is not a PNG image; choose another name")
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def draw_or_warn(draw, path, warn=None):
    """Call draw(), which writes a picture at path; returns path, or None when it failed: then
    warn(line) says why (one line), and an older picture at path, which would show other results,
    is removed. For pictures beside results: a picture is never worth a result."""
    try:
        return draw()
    except PLOT_ERRORS as error:
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        if _is_png(path):
            Path(path).unlink(missing_ok=True)
        if warn is not None:
            warn(f"warning: {path} not drawn ({reason}); the results are saved without it")
        return None


def printable(text):
    """text as matplotlib can draw it: each control character (an escape, a tab...) written as its
    escape sequence, since fonts have no glyph for it; names of runs and classes come from users."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def plot_history(history, path, title=""):
    """Solver sgd: loss (train, val) and accuracy (train, val) per epoch, side by side. Solver
    lbfgs: the objective after each iteration, above its final value (log scale)."""
    if "objective" in history:
        return _plot_objective(history, path, title)
    epochs = history["epoch"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    steps = np.asarray(history.get("step_loss", []), dtype=float)
    if steps.size:
        left.plot(np.arange(1, steps.size + 1) * epochs[-1] / steps.size, steps, color="0.8", lw=0.6,
                  label="minibatch (data term)")
    left.plot(epochs, history["train_loss"], "o-", label="train (with L2)")
    left.plot(epochs, history["val_loss"], "s-", label="validation")
    left.set(xlabel="epoch", ylabel="cross-entropy (nats)", title="loss")
    left.legend()
    right.plot(epochs, history["train_accuracy"], "o-", label="train (during epoch)")
    right.plot(epochs, history["val_accuracy"], "s-", label="validation")
    right.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    right.legend()
    return _save(figure, path, title)


def _plot_objective(history, path, title):
    objective = np.asarray(history["objective"], dtype=float)
    figure, axes = plt.subplots(figsize=(6, 3.8))
    above = objective - objective[-1]
    iterations = np.arange(len(objective))
    axes.semilogy(iterations[above > 0], above[above > 0], "o-", ms=3)
    axes.set(xlabel="iteration", ylabel="objective - final objective (nats)",
             title=f"solver lbfgs: final objective {objective[-1]:.6g}, largest gradient entry {history['gradient']:.2g}")
    return _save(figure, path, title)


def plot_confusion(matrix, class_names, path, title="confusion matrix"):
    """Confusion matrix (C, C): rows are true classes, columns predicted; counts in the cells."""
    matrix = np.asarray(matrix)
    figure, axes = plt.subplots(figsize=(7.5, 6.5))
    image = axes.imshow(matrix, cmap="Blues")
    ticks = np.arange(len(class_names))
    class_names = [printable(name) for name in class_names]
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set(xlabel="predicted", ylabel="true", title=printable(title))
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            axes.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                      color="white" if matrix[i, j] > threshold else "black")
    figure.colorbar(image, ax=axes, fraction=0.046)
    return _save(figure, path)


def template_images(W):
    """Weights (3072, C) -> C images (C, 32, 32, 3) uint8, rescaled to 0..255 by the min and max
    over all templates together, so their brightness can be compared (as in cs231n)."""
    if np.shape(W)[0] != 32 * 32 * 3:
        raise LinclfError(f"class templates exist only for models on raw pixels (3072 inputs); "
                          f"this one has {np.shape(W)[0]}")
    templates = np.asarray(W, dtype=np.float64).T.reshape(-1, 32, 32, 3)
    low, high = templates.min(), templates.max()
    scaled = (templates - low) / (high - low) if high > low else np.zeros_like(templates)
    return np.round(255 * scaled).astype(np.uint8)


def plot_templates(W, class_names, path, title="class templates"):
    """The columns of W (3072, C) as a 2 x ceil(C/2) grid of 32x32 colour images."""
    images = template_images(W)
    columns = (len(images) + 1) // 2
    figure, axes = plt.subplots(2, columns, figsize=(2 * columns, 4.6))
    for axis, image, name in zip(axes.flat, images, class_names):
        axis.imshow(image, interpolation="nearest")
        axis.set_title(printable(name))
    for axis in axes.flat:
        axis.axis("off")
    return _save(figure, path, title)


LOG_SCALE = " (log scale)"


def axis_is_log(values):
    """Whether axis values are best described as "log scale": at least 3 distinct positive numbers,
    roughly evenly spaced in log (steps within a factor 1.5 of each other) but not in linear terms."""
    try:
        values = np.unique(np.asarray(values, dtype=float))
    except (TypeError, ValueError):  # None (no such axis), text
        return False
    if values.size < 3 or not np.all(np.isfinite(values)) or values[0] <= 0:
        return False

    def even(steps):
        return steps.max() <= 1.5 * steps.min()

    return bool(even(np.diff(np.log(values))) and not even(np.diff(values)))


def _axis_name(name, values):
    if values is None:
        return name
    name = name[:-len(LOG_SCALE)] if name.endswith(LOG_SCALE) else name
    return name + LOG_SCALE if axis_is_log(values) else name


HEATMAP_INCHES = 20    # a heatmap is at most this wide and high, whatever the grid
HEATMAP_TICKS = 30     # an axis with more values labels every k-th of them


def heatmap_shows_values(rows, columns):
    """Whether a heatmap of rows x columns cells has room for the values in its cells."""
    return 1.1 * columns + 3 <= HEATMAP_INCHES and 0.6 * rows + 2 <= HEATMAP_INCHES


def _ticks(labels):
    """(positions, labels) of at most about HEATMAP_TICKS evenly spread labels."""
    step = math.ceil(len(labels) / HEATMAP_TICKS)
    return np.arange(0, len(labels), step), list(labels)[::step]


def plot_heatmap(values, row_labels, column_labels, path, row_name, column_name, title,
                 row_values=None, column_values=None):
    """A (R, K) grid of metric values with the values in the cells; NaN cells (missing or diverged) are
    grey with a black "div.". A grid too large for its values (heatmap_shows_values) is drawn at most
    HEATMAP_INCHES square, without them, and with every k-th axis label. row_values (R,) and
    column_values (K,), when given, are the axis values behind the labels: an axis name gets " (log
    scale)" only when its values are spaced evenly in log (see axis_is_log), and a " (log scale)"
    already in the name is dropped when they are not."""
    values = np.asarray(values, dtype=float)
    R, K = values.shape
    figure, axes = plt.subplots(figsize=(min(1.1 * K + 3, HEATMAP_INCHES), min(0.6 * R + 2, HEATMAP_INCHES)))
    colours = plt.get_cmap("viridis").with_extremes(bad=DIVERGED_CELL)
    image = axes.imshow(np.ma.masked_invalid(values), cmap=colours, aspect="auto", interpolation="nearest")
    axes.set_xticks(*_ticks(column_labels), rotation=45, ha="right")
    axes.set_yticks(*_ticks(row_labels))
    shows_values = heatmap_shows_values(R, K)
    if not shows_values and not np.isfinite(values).all():
        title += " (grey: diverged)"
    axes.set(xlabel=_axis_name(column_name, column_values), ylabel=_axis_name(row_name, row_values),
             title=printable(title))
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(R if shows_values else 0):
        for j in range(K):
            value = values[i, j]
            if not np.isfinite(value):
                text, colour = "div.", "black"
            else:  # viridis is light (yellow) at the top
                text, colour = f"{value:.3f}", "black" if value > middle else "white"
            axes.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
    figure.colorbar(image, ax=axes, fraction=0.046)
    return _save(figure, path)


def centroid_mosaic(pictures, columns=None, gap=1):
    """Pictures (K, p, p, 3) in [0, 1] -> one (rows*(p+gap), columns*(p+gap), 3) image, row by row."""
    K, p = len(pictures), pictures.shape[1]
    columns = columns or int(np.ceil(np.sqrt(K)))
    rows = int(np.ceil(K / columns))
    mosaic = np.ones((rows * (p + gap) - gap, columns * (p + gap) - gap, 3), dtype=np.float32)
    for index, picture in enumerate(pictures):
        r, c = divmod(index, columns)
        mosaic[r * (p + gap):r * (p + gap) + p, c * (p + gap):c * (p + gap) + p] = picture
    return mosaic


def plot_centroids(step, path, name):
    """The de-whitened centroids of a fitted k-means step (features.pipeline.KMeansFeatures) as one
    grid of colour patches, titled with `name` (the model's)."""
    pictures = step.pictures()  # (K, p, p, 3) in [0, 1]
    pairs = " in mirror pairs (the second half mirrors the first)" if step.params.get("mirror") else ""
    title = f"{len(pictures)} k-means centroids (de-whitened){pairs}: {name}"
    mosaic = centroid_mosaic(pictures)
    side = min(14.0, max(4.0, mosaic.shape[1] / 20))
    figure, axes = plt.subplots(figsize=(side, side * mosaic.shape[0] / mosaic.shape[1] + 0.6))
    axes.imshow(mosaic, interpolation="nearest")
    axes.axis("off")
    axes.set_title(printable(title))
    return _save(figure, path)


def plot_model(trained, path):
    """The picture of what a model (modelfile.Model) learned, chosen by its pipeline: the class
    templates of a model on raw pixels, the de-whitened centroids of a k-means feature model."""
    steps = trained.pipeline.feature_steps
    name = trained.path.parent.name if trained.path else "model"
    if steps and hasattr(steps[0], "pictures"):
        return plot_centroids(steps[0], path, name)
    if trained.pipeline.scaler.name != "pixels":
        raise LinclfError(f"{trained.path or 'this model'}: it was trained on features a user brought; there is no "
                          f"picture of its weights (templates need raw pixels, centroids a k-means model)")
    return plot_templates(trained.W, trained.class_names, path, title=f"class templates: {name}")
