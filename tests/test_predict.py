"""`linclf predict`: images (PNG, JPEG, any size) and rows of an array through the stored pipeline."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from linclf.evaluation import evaluate
from linclf.evaluation import predict
from linclf.experiments import modelfile
from linclf.data import sources
from linclf.cli import cli
from linclf.util.errors import LinclfError

TINY_FLAGS = ["--epochs", "3", "--batch-size", "16", "--val-size", "50", "--quiet"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs_dir(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    result = run("train", *TINY_FLAGS, "--data-dir", data_dir, "--out", root / "pixels")
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def model(runs_dir):
    return modelfile.load_model(runs_dir / "pixels")


@pytest.fixture(scope="module")
def test_images(data_dir):
    return sources.cifar10(data_dir).test_x


def save(path, pixels, **options):
    Image.fromarray(np.asarray(pixels)).save(path, **options)
    return path


def expected(model, pixels, top=3):
    """What eval's code path says about pixels (N, 32, 32, 3): predict.top_classes of its probabilities."""
    return predict.top_classes(evaluate.probabilities(model, np.asarray(pixels)), model.class_names, top)


def predicted(result):
    assert result.exit_code == 0, result.output
    return [entry["top"] for entry in json.loads(result.stdout)["predictions"]]


def test_a_png_gets_exactly_the_probabilities_of_eval(model, runs_dir, test_images, tmp_path):
    paths = [save(tmp_path / f"{i}.png", test_images[i]) for i in range(5)]
    top = predicted(run("predict", runs_dir / "pixels", *paths, "--json"))
    assert top == expected(model, test_images[:5])
    assert [t[0]["class"] for t in top] == [model.class_names[c] for c in
                                            evaluate.scores(model, test_images[:5]).argmax(axis=1)]


def test_a_jpeg_gets_the_classes_of_its_decoded_pixels(model, runs_dir, test_images, tmp_path):
    path = save(tmp_path / "a.jpg", test_images[7], quality=75)
    decoded = np.asarray(Image.open(path).convert("RGB"))
    assert not np.array_equal(decoded, test_images[7])  # lossy: the test means something
    assert predicted(run("predict", runs_dir / "pixels", path, "--json")) == expected(model, decoded[None])


def test_text_output_and_top(runs_dir, model, test_images, tmp_path):
    path = save(tmp_path / "cat.png", test_images[0])
    result = run("predict", runs_dir / "pixels", path, "--top", "1")
    assert result.exit_code == 0, result.output
    best = expected(model, test_images[:1], 1)[0][0]
    assert result.output == f"{path}: {best['class']} {best['probability']:.3f}\n"
    assert len(predicted(run("predict", runs_dir / "pixels", path, "--top", "99", "--json"))[0]) == 10


def test_an_image_of_another_size_is_cropped_resized_and_noted(runs_dir, test_images, tmp_path):
    big = save(tmp_path / "big.png", np.asarray(Image.fromarray(test_images[1]).resize((64, 48))))
    result = run("predict", runs_dir / "pixels", big)
    assert result.exit_code == 0, result.output
    assert f"note: {big} is 64x48: centre-cropped to 48x48, resized to 32x32" in result.stderr
    assert result.stdout.startswith(f"{big}: ")
    exact = save(tmp_path / "exact.png", test_images[1])
    assert "note" not in run("predict", runs_dir / "pixels", exact).stderr


def test_a_wide_image_is_centre_cropped(test_images, tmp_path):
    wide = np.concatenate([np.zeros((32, 4, 3), np.uint8), test_images[2], np.zeros((32, 4, 3), np.uint8)], axis=1)
    pixels, note = predict.read_image(save(tmp_path / "wide.png", wide))
    np.testing.assert_array_equal(pixels, test_images[2])
    assert note.endswith("is 40x32: centre-cropped to 32x32, resized to 32x32")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_grey_alpha_and_palette_images_are_converted_to_rgb(test_images, tmp_path, mode):
    path = tmp_path / "x.png"
    Image.fromarray(test_images[3]).convert(mode).save(path)
    pixels, note = predict.read_image(path)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8 and note is None
    np.testing.assert_array_equal(pixels, np.asarray(Image.open(path).convert("RGB")))


def test_one_unreadable_image_among_good_ones(runs_dir, model, test_images, tmp_path):
    good = [save(tmp_path / "a.png", test_images[0]), save(tmp_path / "c.jpg", test_images[1])]
    broken = tmp_path / "b.png"
    broken.write_bytes(b"\x89PNG not really")
    result = run("predict", runs_dir / "pixels", good[0], broken, good[1])
    assert result.exit_code == 1
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == [str(good[0]), str(good[1])]
    assert result.stderr.splitlines() == [f"Error: {broken}: not a readable PNG or JPEG image "
                                          f"(cannot identify image file '{broken}')"]
    as_json = run("predict", runs_dir / "pixels", good[0], broken, "--json")
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert len(report["predictions"]) == 1 and report["errors"][0]["input"] == str(broken)


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"GIF89a", "not a readable PNG or JPEG image"),
])
def test_missing_and_foreign_files(tmp_path, content, message):
    path = tmp_path / "x.gif"
    if content is not None:
        Image.new("RGB", (32, 32)).save(path, format="GIF")
    with pytest.raises(LinclfError, match=f"{path}: {message}"):
        predict.read_image(path)


def test_a_folder_predicts_its_images_in_order(runs_dir, test_images, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, index in (("b.PNG", 1), ("a.jpeg", 0), ("c.png", 2)):
        save(folder / name, test_images[index])
    (folder / "notes.txt").write_text("not an image")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("predict", runs_dir / "pixels", folder, empty)
    assert result.exit_code == 1
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == \
        [str(folder / n) for n in ("a.jpeg", "b.PNG", "c.png")]
    assert result.stderr == f"Error: {empty} holds no .png, .jpg, .jpeg images\n"


def test_predict_best(runs_dir, model, test_images, tmp_path):
    path = save(tmp_path / "a.png", test_images[4])
    assert predicted(run("predict", "--best", "--runs-dir", runs_dir, path, "--json")) == \
        expected(model, test_images[4:5])


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """A probe model on a small embedding file, and the file."""
    root = tmp_path_factory.mktemp("probe")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 6)).astype(np.float32), rng.integers(0, 3, 300)
    X[np.arange(300), y] += 4
    path = root / "emb.npz"
    np.savez(path, X_train=X[:200], y_train=y[:200], X_test=X[200:], y_test=y[200:])
    result = run("train", "--data", path, *TINY_FLAGS, "--out", root / "run")
    assert result.exit_code == 0, result.output
    return modelfile.load_model(root / "run"), path


def test_predict_the_rows_of_an_array(probe):
    trained, path = probe
    rows = predicted(run("predict", trained.path, "--data", path, "--json", "--top", "2"))
    X_test = sources.arrays(path).test_x
    assert rows == expected(trained, X_test, 2) and len(rows) == 100
    assert len(predicted(run("predict", trained.path, "--data", path, "--array", "X_train", "--json"))) == 200
    text = run("predict", trained.path, "--data", path)
    assert text.exit_code == 0 and text.output.splitlines()[0].startswith("row 0: ")


@pytest.mark.parametrize("which, args, message", [
    ("probe", ["IMAGE"], "takes features (D=6), not RGB images; predict rows of an array with --data FILE.npz"),
    ("pixels", ["--data", "EMB"], "takes 32x32x3 images, not feature arrays; give it image files"),
    ("probe", ["--data", "EMB", "--array", "X_val"], "no array X_val"),
    ("probe", ["--data", "EMB", "IMAGE"], "give images or --data FILE.npz, not both"),
    ("probe", [], "give images (or folders of images) to predict, or --data FILE.npz"),
])
def test_a_model_that_does_not_match_is_one_line(probe, model, test_images, tmp_path, which, args, message):
    image = save(tmp_path / "a.png", test_images[0])
    names = {"IMAGE": str(image), "EMB": str(probe[1])}
    trained = probe[0] if which == "probe" else model
    result = run("predict", trained.path, *[names.get(a, a) for a in args])
    assert result.exit_code == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr


def test_rows_of_the_wrong_width_are_refused(probe, tmp_path):
    path = tmp_path / "wide.npz"
    np.savez(path, X_test=np.zeros((4, 7), np.float32))
    result = run("predict", probe[0].path, "--data", path)
    assert result.exit_code == 1 and "X_test has 7 features (D) but the model takes 6" in result.output


def test_predict_best_on_a_data_file_and_many_images_with_a_bar(probe, runs_dir, model, test_images, tmp_path,
                                                                 monkeypatch):
    trained, path = probe
    rows = predicted(run("predict", "--best", "--runs-dir", trained.path.parent.parent, "--data", path, "--json"))
    assert rows == expected(trained, sources.arrays(path).test_x)
    from linclf import cli as commands

    monkeypatch.setattr(commands, "show_progress", lambda quiet: True)  # as at a terminal
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(60):
        save(folder / f"{index:02d}.png", test_images[index % 50])
    result = run("predict", runs_dir / "pixels", folder, "--json")
    assert predicted(result) == expected(model, test_images[np.arange(60) % 50])


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(LinclfError, match=r"not a regular file"):
        predict.read_image(fifo)


def test_a_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    levels = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60)  # 0 .. 61,380 of 65,535
    path = tmp_path / "deep.png"
    Image.fromarray(levels).save(path)
    pixels, _ = predict.read_image(path)
    assert pixels.shape == (32, 32, 3) and (pixels == 255).mean() < 0.01
    assert abs(int(pixels[16, 0, 0]) - round(levels[16, 0] / 65535 * 255)) <= 1


def test_weights_too_large_for_the_inputs_are_one_line(model, test_images, tmp_path):
    import dataclasses

    huge = dataclasses.replace(model, W=np.full_like(model.W, 1e38))
    with pytest.raises(LinclfError, match=r"the model's scores are not finite"):
        evaluate.scores(huge, test_images[:4])


@pytest.mark.parametrize("orientation,turn", [(3, lambda p: p[::-1, ::-1]), (6, lambda p: np.rot90(p, -1)),
                                              (8, lambda p: np.rot90(p, 1))])
def test_a_jpeg_is_turned_upright_as_its_exif_orientation_says(tmp_path, orientation, turn):
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[:16, :16] = 255  # a white top-left quadrant, as stored
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(tmp_path / "photo.jpg", pixels, quality=100, exif=exif)
    got, note = predict.read_image(path)
    assert note is None and np.abs(got.astype(int) - turn(pixels)).mean() < 8


def png_header_only(width, height):
    """The signature and IHDR of a grey PNG of width x height with a few bytes of data: Pillow
    opens it (and checks its size) without decoding anything."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [12_000, 20_000])  # Pillow warns above 89 M pixels, refuses above 179 M
def test_a_huge_image_is_refused_in_one_line_naming_file_and_cap(tmp_path, side):
    import warnings

    path = tmp_path / "huge.png"
    path.write_bytes(png_header_only(side, side))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's two-line DecompressionBombWarning must not show
        with pytest.raises(LinclfError, match=rf"huge.png: .*more than linclf reads \(at most "
                                              rf"{predict.MAX_PIXELS:,} pixels\)"):
            predict.read_image(path)
