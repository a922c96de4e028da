import matplotlib.colors
import numpy as np
import pytest

from linclf.evaluation import plots


@pytest.fixture
def captured(monkeypatch):
    """The figures plot_heatmap would write, kept open instead."""
    figures = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.append(figure) or path)
    yield figures
    for figure in figures:
        plots.plt.close(figure)


def luminance(colour):
    red, green, blue, _ = matplotlib.colors.to_rgba(colour)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def test_diverged_cells_are_labelled_visibly(captured, tmp_path):
    plots.plot_heatmap([[np.nan, 0.4], [0.3, np.nan]], ["a", "b"], ["x", "y"], tmp_path / "h.png", "reg", "lr", "t")
    axes = captured[0].axes[0]
    image = axes.images[0]
    bad = image.cmap.get_bad()
    cell = bad if bad[3] > 0 else axes.get_facecolor()  # a transparent "bad" colour shows the background
    labels = [text for text in axes.texts if text.get_text() == "div."]
    assert len(labels) == 2
    for label in labels:
        assert abs(luminance(label.get_color()) - luminance(cell)) > 0.4  # readable
    assert luminance(cell) < 0.9  # the cell itself stands out from the white figure


@pytest.mark.parametrize("values, expected", [
    ([1e-3, 1e-2, 1e-1], True),
    ([3e-4, 1e-3, 3e-3], True),
    ([1e-1, 1e-3, 1e-2, 1e-3], True),    # order and repeats do not matter
    ([0.8, 0.85, 0.9], False),           # even steps: linear
    ([1, 2, 3], False),
    ([1e-3, 1e-2], False),               # two values say nothing about spacing
    ([0, 1e-3, 1e-2], False),            # zero has no log
    ([None], False),
])
def test_axis_is_log(values, expected):
    assert plots.axis_is_log(values) is expected


def test_axis_names_follow_the_values(captured, tmp_path):
    values = np.full((3, 3), 0.5)
    plots.plot_heatmap(values, ["0.001", "0.01", "0.1"], ["0.8", "0.85", "0.9"], tmp_path / "h.png",
                       "reg", "lr_decay (log scale)", "t", row_values=[1e-3, 1e-2, 1e-1],
                       column_values=[0.8, 0.85, 0.9])
    axes = captured[0].axes[0]
    assert axes.get_ylabel() == "reg (log scale)" and axes.get_xlabel() == "lr_decay"



def test_heatmap_writes_a_png(tmp_path):
    path = plots.plot_heatmap([[np.nan]], ["a"], ["x"], tmp_path / "h.png", "reg", "lr", "all diverged")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("draw", [
    lambda path, name: plots.plot_history({"epoch": [1, 2], "train_loss": [1.0, 0.5], "val_loss": [1.1, 0.6],
                                           "train_accuracy": [0.3, 0.5], "val_accuracy": [0.2, 0.4]}, path, title=name),
    lambda path, name: plots.plot_confusion(np.eye(2, dtype=int), [name, "b"], path, title=name),
    lambda path, name: plots.plot_templates(np.zeros((3072, 2), np.float32), [name, "b"], path, title=name),
])
def test_names_with_control_characters_are_drawn_without_glyph_warnings(tmp_path, draw):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        draw(tmp_path / "p.png", "run\x1b[31m\tred")
    assert not [w for w in caught if "Glyph" in str(w.message)], [str(w.message) for w in caught]
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
