"""Figures, rendered with matplotlib's Agg backend and written atomically as PNG files."""
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from linclf.errors import LinclfError  # noqa: E402
from linclf.files import atomic_write_bytes  # noqa: E402


def _save(figure, path):
    """Write figure to path as PNG through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_history(history, path, title=""):
    """Loss (train, val) and accuracy (train, val) per epoch, side by side."""
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
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_confusion(matrix, class_names, path, title="confusion matrix"):
    """Confusion matrix (C, C): rows are true classes, columns predicted; counts in the cells."""
    matrix = np.asarray(matrix)
    figure, axes = plt.subplots(figsize=(7.5, 6.5))
    image = axes.imshow(matrix, cmap="Blues")
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set(xlabel="predicted", ylabel="true", title=title)
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
        axis.set_title(name)
    for axis in axes.flat:
        axis.axis("off")
    figure.suptitle(title)
    return _save(figure, path)


def plot_heatmap(values, row_labels, column_labels, path, row_name, column_name, title):
    """A (R, K) grid of metric values (NaN = missing or diverged) with the values in the cells."""
    values = np.asarray(values, dtype=float)
    figure, axes = plt.subplots(figsize=(1.1 * len(column_labels) + 3, 0.6 * len(row_labels) + 2))
    image = axes.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
    axes.set_xticks(np.arange(len(column_labels)), column_labels, rotation=45, ha="right")
    axes.set_yticks(np.arange(len(row_labels)), row_labels)
    axes.set(xlabel=column_name, ylabel=row_name, title=title)
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            value = values[i, j]
            text = "div." if np.isnan(value) else f"{value:.3f}"
            axes.text(j, i, text, ha="center", va="center", fontsize=8,
                      color="black" if np.isfinite(value) and value > middle else "white")
    figure.colorbar(image, ax=axes, fraction=0.046)
    return _save(figure, path)


def plot_model(trained, path):
    """The picture of what a model (runs.Model) learned, chosen by its pipeline: the class
    templates of a model on raw pixels."""
    if trained.pipeline.scaler.name != "pixels" or trained.pipeline.feature_steps:
        raise LinclfError(f"{trained.path}: pictures exist for models on raw pixels (templates) only; "
                          f"this one's pipeline is {[s.name for s in trained.pipeline.steps]}")
    return plot_templates(trained.W, trained.class_names, path, title=f"class templates: {trained.path.parent.name}")
