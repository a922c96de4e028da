"""The feature cache's own files read back: every one checked, a bad one rebuilt (one line) or refused (one line)."""
import json
import re
import zlib

import numpy as np
import pytest
from click.testing import CliRunner

from linclf.cli import cli
from linclf.data import sources
from linclf.experiments import jobs
from linclf.features import cache
from linclf.features import pipeline
from linclf.util.errors import LinclfError
from test_features import settings, data_copy  # noqa: F401 - the fixture


def quiet(message):
    pass


def step_of(source, cfg):
    return jobs.build_pipeline(source, cfg).feature_steps[0]


def folder_of(source, cfg):
    return cache.cache_root(source) / cache.key(source, step_of(source, cfg), cfg)[0]


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def rewrite_state(path, **changes):
    with np.load(path, allow_pickle=False) as archive:
        state = {name: archive[name] for name in archive.files}
    state.update(changes)
    state = {name: value for name, value in state.items() if value is not None}
    np.savez(path, **state)


def wrong_centroids(path):
    with np.load(path) as archive:
        centroids = archive["centroids"]
    rewrite_state(path, centroids=np.concatenate([centroids, centroids[:1]]))


def nan_whitening(path):
    with np.load(path) as archive:
        whiten = archive["whiten"].copy()
    whiten[0, 0] = np.nan
    rewrite_state(path, whiten=whiten)


def no_centroids(path):
    rewrite_state(path, centroids=None)


STATE_DAMAGE = {"truncated": (truncate, "not an .npz file or is damaged"),
                "wrong shape": (wrong_centroids, r"centroids must be a float array of shape \(8, 108\)"),
                "NaN": (nan_whitening, "whiten holds NaN"),
                "missing array": (no_centroids, "no array centroids")}


@pytest.mark.parametrize("damage", sorted(STATE_DAMAGE))
def test_a_damaged_state_of_a_finished_cache_is_one_line(data_copy, damage):  # noqa: F811
    source, cfg = sources.cifar10(data_copy), settings()
    cache.build(source, step_of(source, cfg), cfg, progress=False, log=quiet)
    folder = folder_of(source, cfg)
    spoil, message = STATE_DAMAGE[damage]
    spoil(folder / "state.npz")
    with pytest.raises(LinclfError, match=rf"state.npz.*{message}.*; delete .* to build it again"):
        cache.find(source, step_of(source, cfg), cfg)
    result = CliRunner().invoke(cli, ["train", "--data-dir", str(data_copy), "--runs-dir", str(data_copy / "runs"),
                                      "--features", "kmeans", "--kmeans-k", "8", "--stride", "4",
                                      "--kmeans-patches", "2000", "--kmeans-iterations", "4", "--val-size", "50",
                                      "--epochs", "1", "--quiet"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert not list((data_copy / "runs").rglob("weights.npz"))


@pytest.mark.parametrize("text,message", [("{", "not a JSON description"),
                                          ('{"data_id": "other"}', "describes other data or settings"),
                                          (None, "describes other data or settings")])
def test_an_info_file_that_does_not_fit_its_folder_is_one_line(data_copy, text, message):  # noqa: F811
    source, cfg = sources.cifar10(data_copy), settings()
    cache.build(source, step_of(source, cfg), cfg, progress=False, log=quiet)
    folder = folder_of(source, cfg)
    if text is None:  # the folder of other settings renamed to this key
        other = settings(kmeans_seed=5)
        cache.build(source, step_of(source, other), other, progress=False, log=quiet)
        (folder / "info.json").write_bytes((folder_of(source, other) / "info.json").read_bytes())
    else:
        (folder / "info.json").write_text(text)
    with pytest.raises(LinclfError, match=rf"info.json: {message}"):
        cache.find(source, step_of(source, cfg), cfg)


def test_rows_changed_after_the_build_are_found(data_copy):  # noqa: F811
    source, cfg = sources.cifar10(data_copy), settings()
    cache.build(source, step_of(source, cfg), cfg, progress=False, log=quiet)
    path = folder_of(source, cfg) / "test.npy"
    features = np.load(path)
    features[7] = 0.0  # finite, plausible: only the checksum tells
    np.save(path, features)
    with pytest.raises(LinclfError, match=r"test.npy: rows 0..49 differ from what the build wrote"):
        cache.find(source, step_of(source, cfg), cfg)


def interrupted_build(source, cfg, monkeypatch, after=3):
    """A build interrupted after `after` chunks of 40 images; returns the building folder."""
    monkeypatch.setattr(cache, "CHUNK", 40)  # 5 chunks of training images, 2 of test images
    real, calls = pipeline.KMeansFeatures.transform, []

    def failing(self, images, *args, **kwargs):
        if len(calls) == after:
            raise KeyboardInterrupt
        calls.append(1)
        return real(self, images, *args, **kwargs)

    monkeypatch.setattr(pipeline.KMeansFeatures, "transform", failing)
    with pytest.raises(KeyboardInterrupt):
        cache.build(source, step_of(source, cfg), cfg, progress=False, log=quiet)
    monkeypatch.setattr(pipeline.KMeansFeatures, "transform", real)
    return cache.cache_root(source) / f".{cache.key(source, step_of(source, cfg), cfg)[0]}.building"


def zero_first_chunk(building):
    array = np.load(building / "train.npy", mmap_mode="r+")
    array[:40] = 0
    array.flush()


def all_done_without_features(building):
    (building / "train.npy").unlink()
    done = np.load(building / "train.done.npy")
    np.save(building / "train.done.npy", np.ones_like(done) if done.dtype == bool else np.zeros_like(done))


def forged_marks(building):
    """Marks saying the chunks not encoded yet are done: the crc32 of their rows, all zeros."""
    done = np.load(building / "train.done.npy")
    width = np.load(building / "train.npy", mmap_mode="r").shape[1]
    done[done < 0] = zlib.crc32(np.zeros((40, width), cache.DTYPE))
    np.save(building / "train.done.npy", done)


def garbage_marks(building):
    (building / "train.done.npy").write_bytes(b"garbage, not an array")


def pickled_marks(building):
    np.save(building / "train.done.npy", np.array([None, 1], dtype=object), allow_pickle=True)


def float32_features(building):
    np.save(building / "train.npy", np.load(building / "train.npy").astype(np.float32))


BUILD_DAMAGE = {"truncated state": (lambda b: truncate(b / "state.npz"), "state.npz"),
                "state of the wrong shape": (lambda b: wrong_centroids(b / "state.npz"), "state.npz"),
                "garbage done marks": (garbage_marks, "train.done.npy"),
                "pickled done marks": (pickled_marks, "train.done.npy"),
                "features of another dtype": (float32_features, "float32, not"),
                "chunk zeroed after its mark": (zero_first_chunk, "train.npy"),
                "forged marks of all-zero chunks": (forged_marks, "hold all-zero rows"),
                "marks without features": (all_done_without_features, "train")}


@pytest.mark.parametrize("damage", sorted(BUILD_DAMAGE))
@pytest.mark.slow
def test_a_damaged_build_folder_is_rebuilt_saying_so_in_one_line(data_copy, monkeypatch, damage):  # noqa: F811
    source, cfg = sources.cifar10(data_copy), settings()
    building = interrupted_build(source, cfg, monkeypatch)
    spoil, named = BUILD_DAMAGE[damage]
    spoil(building)
    lines = []
    step = step_of(source, cfg)
    state, train_features, test_features = cache.build(source, step, cfg, progress=False, log=lines.append)
    assert any(named in line for line in lines), lines
    assert all("\n" not in line for line in lines)
    fresh = pipeline.KMeansFeatures(params=step.params, arrays=state)
    np.testing.assert_allclose(train_features, fresh.transform(source.train_x), rtol=2**-10, atol=1e-6)  # float16: 11 bits
    np.testing.assert_allclose(test_features, fresh.transform(source.test_x), rtol=2**-10, atol=1e-6)  # float16: 11 bits
    assert (np.abs(train_features).sum(axis=1) > 0).all()


def test_a_complete_cache_is_read_without_its_lock(data_copy, monkeypatch):  # noqa: F811
    """A read-only data dir: reading a finished cache takes no lock and creates nothing."""
    source, cfg = sources.cifar10(data_copy), settings()
    cache.build(source, step_of(source, cfg), cfg, progress=False, log=quiet)
    before = sorted(p.name for p in cache.cache_root(source).iterdir())

    def no_lock(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("linclf.util.locks.hold", no_lock)
    _, train_features, _ = cache.build(source, step_of(source, cfg), cfg, progress=False, log=quiet)
    assert train_features.shape == (200, 32)
    assert sorted(p.name for p in cache.cache_root(source).iterdir()) == before


def features_cli(data_copy, tmp_path, *args):  # noqa: F811
    import yaml

    grid_file = tmp_path / "km.yaml"
    grid_file.write_text(yaml.safe_dump({key: value for key, value in settings().items()
                                         if key in ("features", "kmeans_k", "stride", "kmeans_patches",
                                                    "kmeans_iterations", "val_size")}))
    return CliRunner().invoke(cli, ["features", str(grid_file), "--data-dir", str(data_copy), "--quiet", *args])


@pytest.mark.parametrize("name,content,message", [
    ("notes.txt", b"my notes", r"notes.txt: feature exports are .npz files; give a name ending in .npz"),
    ("notes.txt", None, r"notes.txt: feature exports are .npz files"),
    ("mine.npz", "npz", r"refusing to replace .*mine.npz: it is not a feature export linclf wrote"),
    ("mine.npz", b"not a zip", r"refusing to replace .*mine.npz: it is not a feature export linclf wrote"),
])
def test_export_never_replaces_a_file_of_another_kind(data_copy, tmp_path, name, content, message):  # noqa: F811
    target = tmp_path / name
    if content == "npz":
        np.savez(target, X_train=np.zeros((2, 2)), extra=np.ones(3))
    elif content is not None:
        target.write_bytes(content)
    before = target.read_bytes() if target.exists() else None
    result = features_cli(data_copy, tmp_path, "--export", str(target))
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert re.match(rf"Error: .*{message}", result.output), result.output
    assert (target.read_bytes() if target.exists() else None) == before
    assert not (data_copy / cache.FOLDER).exists()  # refused before any work


def test_export_replaces_its_own_earlier_export(data_copy, tmp_path):  # noqa: F811
    target = tmp_path / "emb.npz"
    for _ in range(2):
        result = features_cli(data_copy, tmp_path, "--export", str(target))
        assert result.exit_code == 0, result.output
    with np.load(target) as exported:
        assert exported["X_train"].shape == (200, 32)


def npz_marks(building):
    np.savez(building / "train.done.npy.tmp", marks=np.zeros(5, np.int64))
    (building / "train.done.npy.tmp.npz").rename(building / "train.done.npy")


def huge_marks(building):
    import io

    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": "<i8", "fortran_order": False,
                                                  "shape": (50_000_000_000,)})
    (building / "train.done.npy").write_bytes(stream.getvalue())


@pytest.mark.parametrize("spoil", [npz_marks, huge_marks])
def test_done_marks_of_another_format_are_refused_from_their_header(data_copy, monkeypatch, spoil):  # noqa: F811
    source, cfg = sources.cifar10(data_copy), settings()
    building = interrupted_build(source, cfg, monkeypatch)
    spoil(building)
    lines = []
    cache.build(source, step_of(source, cfg), cfg, progress=False, log=lines.append)
    assert any("train.done.npy is not a record of this build's chunks" in line for line in lines), lines


@pytest.mark.parametrize("lacking", ["dtype", "chunks"])
def test_a_cache_whose_info_lacks_its_dtype_or_checksums_is_refused_in_one_line(data_copy, lacking):  # noqa: F811
    import json

    source, cfg = sources.cifar10(data_copy), settings()
    _, train, test = cache.build(source, step_of(source, cfg), cfg, progress=False, log=quiet)
    assert train.dtype == test.dtype == np.float16
    del train, test  # unmapped before the rewrite
    info_path = folder_of(source, cfg) / "info.json"
    info = json.loads(info_path.read_text())
    del info[lacking]
    info_path.write_text(json.dumps(info))
    with pytest.raises(LinclfError, match=r"info.json: records no dtype or no chunk checksums; delete .* to build it "
                                          r"again$") as error:
        cache.build(source, step_of(source, cfg), cfg, progress=False, log=quiet)
    assert "\n" not in str(error.value)


def test_features_beyond_float16s_range_are_refused_in_one_line(data_copy, monkeypatch):  # noqa: F811
    source, cfg = sources.cifar10(data_copy), settings()
    real = pipeline.KMeansFeatures.transform
    monkeypatch.setattr(pipeline.KMeansFeatures, "transform",
                        lambda self, images, **kw: real(self, images, **kw) * np.float32(1e5))
    with pytest.raises(LinclfError, match=r"^features of train images 0\.\.\d+: values up to [\d.e+]+ do not fit "
                                          r"the cache's float16 \(at most 65504\)$"):
        cache.build(source, step_of(source, cfg), cfg, progress=False, log=quiet)
    assert cache.find(source, step_of(source, cfg), cfg) is None  # nothing looks finished


def test_an_info_file_naming_another_dtype_is_one_line(data_copy):  # noqa: F811
    import json

    source, cfg = sources.cifar10(data_copy), settings()
    cache.build(source, step_of(source, cfg), cfg, progress=False, log=quiet)
    info_path = folder_of(source, cfg) / "info.json"
    info_path.write_text(json.dumps({**json.loads(info_path.read_text()), "dtype": "float64"}))
    with pytest.raises(LinclfError, match=r"info.json: names features of dtype 'float64'; float16 "
                                          r"expected; delete .* to build it again$"):
        cache.build(source, step_of(source, cfg), cfg, progress=False, log=quiet)


@pytest.mark.parametrize("name", ["info.json", "train.npy", "state.npz"])
def test_a_fifo_in_a_finished_cache_is_one_line_naming_it_never_a_hang(data_copy, fifo, name):  # noqa: F811
    source, cfg = sources.cifar10(data_copy), settings()
    cache.build(source, step_of(source, cfg), cfg, progress=False, log=quiet)
    folder = folder_of(source, cfg)
    (folder / name).unlink()
    fifo(folder / name)
    result = CliRunner().invoke(cli, ["train", "--data-dir", str(data_copy), "--runs-dir", str(data_copy / "runs"),
                                      "--features", "kmeans", "--kmeans-k", "8", "--stride", "4",
                                      "--kmeans-patches", "2000", "--kmeans-iterations", "4", "--val-size", "50",
                                      "--epochs", "1", "--quiet"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert re.search(rf"Error: cannot read .*{name}: it is a special file.*not a regular file.*; delete .* to build "
                     rf"it again", result.output), result.output


def test_train_with_an_alpha_that_makes_every_feature_zero_is_one_line(data_copy):  # noqa: F811
    result = CliRunner().invoke(cli, ["train", "--data-dir", str(data_copy), "--runs-dir", str(data_copy / "runs"),
                                      "--features", "kmeans", "--kmeans-k", "8", "--stride", "4",
                                      "--kmeans-patches", "2000", "--kmeans-iterations", "2", "--kmeans-encoding",
                                      "soft", "--kmeans-alpha", "100", "--val-size", "50", "--epochs", "1", "--quiet"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("Error: kmeans_alpha 100 makes every feature zero")


@pytest.mark.parametrize("plant, what", [
    (lambda root, folder: (root.parent.mkdir(parents=True, exist_ok=True), root.write_text("mine")), "not a folder"),
    (lambda root, folder: (root.mkdir(parents=True), folder.symlink_to(folder.name)),
     "a symbolic link that leads to no folder"),
])
def test_a_features_folder_that_is_no_folder_is_one_line_before_any_work(data_copy, monkeypatch, plant, what):  # noqa: F811
    source, cfg = sources.cifar10(data_copy), settings()
    root, folder = cache.cache_root(source), folder_of(source, cfg)
    plant(root, folder)
    monkeypatch.setattr(pipeline.KMeansFeatures, "fit", lambda *args, **kwargs: pytest.fail("fitted"))
    with pytest.raises(LinclfError, match=rf"features.* is {what}; linclf keeps its feature cache there"):
        cache.build(source, step_of(source, cfg), cfg, progress=False, log=quiet)


def test_all_zero_rows_of_a_finished_cache_are_refused_in_one_line(data_copy):  # noqa: F811
    """Rows zeroed with checksums to match (no real image encodes to all zeros) are never trained on."""
    source, cfg = sources.cifar10(data_copy), settings()
    cache.build(source, step_of(source, cfg), cfg, progress=False, log=quiet)
    folder = folder_of(source, cfg)
    features = np.load(folder / "test.npy")
    features[3] = 0
    np.save(folder / "test.npy", features)
    info = json.loads((folder / "info.json").read_text())
    rows = info["chunks"]["rows"]
    info["chunks"]["test"] = [zlib.crc32(features[i:i + rows]) for i in range(0, len(features), rows)]
    (folder / "info.json").write_text(json.dumps(info))
    with pytest.raises(LinclfError, match=r"test.npy: row 3 is all zeros, which no image encodes to; delete "):
        cache.find(source, step_of(source, cfg), cfg)
