"""Learned features as a pipeline step: the feature cache, training, eval and pictures through it."""
import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from linclf import config
from linclf.data import cifar10
from linclf.evaluation import evaluate
from linclf.features import cache, cache_files
from linclf.experiments import jobs
from linclf.experiments import modelfile
from linclf.data import sources
from linclf.cli import cli
from linclf.util.errors import LinclfError
from conftest import TINY, batch_files, ref, write_batches

# tiny k-means: 8 centroids of 6x6 patches at stride 4 (7 x 7 positions), 32 features an image
SMALL = {"features": "kmeans", "kmeans_k": 8, "stride": 4, "kmeans_patches": 2000, "kmeans_iterations": 4}


def settings(**changes):
    return {**config.DEFAULTS, **TINY, **SMALL, **changes}


@pytest.fixture
def data_copy(data_dir, tmp_path):
    """A private data dir (the feature cache is written under it)."""
    root = tmp_path / "data"
    cifar10.build_cache(write_batches(tmp_path / "batches", batch_files()), root, source_md5="test")
    return root


def test_the_cache_key_changes_with_every_feature_setting_and_the_data(data_copy, tmp_path):
    source = sources.cifar10(data_copy)
    base = settings()

    def key_of(cfg, src=source):
        return cache.key(src, jobs.build_pipeline(src, cfg).feature_steps[0], cfg)[0]

    keys = {key_of(base)}
    for name, value in [("kmeans_k", 9), ("patch_size", 5), ("stride", 3), ("kmeans_patches", 2001),
                        ("kmeans_iterations", 5), ("kmeans_seed", 1), ("val_size", 40), ("val_split", "random"),
                        ("kmeans_pool", 3), ("kmeans_symmetry", "mirror"), ("kmeans_encoding", "soft"),
                        ("kmeans_iterations", 0)]:
        keys.add(key_of({**base, name: value}))
    keys.add(key_of({**base, "kmeans_encoding": "soft", "kmeans_alpha": 0.5}))
    other = tmp_path / "other"
    cifar10.build_cache(write_batches(tmp_path / "b2", batch_files()), other, source_md5="another")
    keys.add(key_of(base, sources.cifar10(other)))
    assert len(keys) == 15
    # settings added later leave the keys of caches built before them alone
    step = jobs.build_pipeline(source, base).feature_steps[0]
    assert set(step.params) == {"k", "patch_size", "stride", "patches", "iterations", "seed"}
    assert key_of(dict(base)) == key_of(base) and key_of({**base, "lr": 1.0}) == key_of(base)


def test_a_second_run_reuses_the_cached_features(data_copy, monkeypatch):
    source = sources.cifar10(data_copy)
    first, pipe, _ = jobs.prepare(source, settings())
    assert first.X_train.shape == (150, 32) and first.X_train.dtype == cache.DTYPE == np.float16
    calls = []
    monkeypatch.setattr("linclf.features.encoder.encode", lambda *a, **k: calls.append(1))
    monkeypatch.setattr("linclf.features.kmeans.fit", lambda *a, **k: calls.append(1))
    again, _, _ = jobs.prepare(source, settings(lr=5e-3))
    assert not calls
    np.testing.assert_array_equal(again.X_train, first.X_train)


def test_an_interrupted_build_resumes_from_its_finished_chunks(data_copy, tmp_path, monkeypatch):
    from linclf.features import pipeline

    monkeypatch.setattr(cache, "CHUNK", 40)  # 5 chunks of training images, 2 of test images
    source = sources.cifar10(data_copy)
    step = jobs.build_pipeline(source, settings()).feature_steps[0]
    real, encoded = pipeline.KMeansFeatures.transform, []

    def failing(self, images, *args, **kwargs):
        if len(encoded) == 3:
            raise KeyboardInterrupt
        encoded.append(len(images))
        return real(self, images, *args, **kwargs)

    monkeypatch.setattr(pipeline.KMeansFeatures, "transform", failing)
    with pytest.raises(KeyboardInterrupt, match=r"the centroids and 3 of 7 chunks of features are kept in .*building"):
        cache.build(source, step, settings(), progress=False, log=lambda m: None)
    assert cache.find(source, step, settings()) is None  # nothing half-built looks finished
    encoded.clear()
    monkeypatch.setattr(pipeline.KMeansFeatures, "transform", lambda self, images, *a, **k: (
        encoded.append(len(images)), real(self, images, *a, **k))[1])
    _, train_features, test_features = cache.build(source, step, settings(), progress=False,
                                                          log=lambda m: None)
    assert sum(encoded) == 200 + 50 - 3 * 40  # only the chunks not finished before
    state = step.arrays
    fresh = pipeline.KMeansFeatures(params=step.params, arrays=state)
    np.testing.assert_allclose(train_features, fresh.transform(source.train_x), rtol=2**-10, atol=1e-6)  # float16: 11 bits
    np.testing.assert_allclose(test_features, fresh.transform(source.test_x), rtol=2**-10, atol=1e-6)  # float16: 11 bits


@pytest.mark.parametrize("extra,dim", [({}, 32), ({"kmeans_pool": 3, "kmeans_symmetry": "mirror", "stride": 2}, 36),
                                       ({"kmeans_pool": 3, "kmeans_symmetry": "mirror", "stride": 2, "precondition": 12}, 36),
                                       ({"kmeans_encoding": "soft", "kmeans_iterations": 0, "kmeans_pool": 3,
                                         "kmeans_symmetry": "mirror", "stride": 2, "precondition": 12}, 72)])
@pytest.mark.slow
def test_a_feature_model_evaluates_raw_images_through_its_pipeline(data_copy, tmp_path, extra, dim):
    """The saved model takes raw images through whitening, centroids and standardization: its
    validation accuracy and loss equal the training path's (also for mirror pairs on a 3 x 3 grid,
    and for weights trained on preconditioned features)."""
    source = sources.cifar10(data_copy)
    outcome = jobs.train_group(source, [settings(epochs=4, lr=1e-2, **extra)])
    folder, = jobs.save(outcome, lambda result: tmp_path / "run")
    model = modelfile.load_model(folder)
    assert [s.name for s in model.pipeline.steps] == ["kmeans", "standardize"] and model.W.shape == (dim, 10)
    report = evaluate.evaluate_split(model, source, "val")
    history = outcome.results[0].history
    assert report["accuracy"] == pytest.approx(history["val_accuracy"][-1], abs=1e-6)
    assert report["cross_entropy"] == pytest.approx(history["val_loss"][-1], rel=1e-4, abs=1e-5)
    assert history["val_accuracy"][-1] > 0.5  # chance is 0.1


@pytest.mark.slow
def test_features_command_sweep_eval_and_centroids(data_copy, tmp_path):
    grid = {"name": "km", "base": {"epochs": 3, "batch_size": 16, "val_size": 50, **SMALL},
            "grid": {"lr": [3e-3, 1e-2], "reg": [1e-4]}}
    grid_file = tmp_path / "km.yaml"
    grid_file.write_text(yaml.safe_dump(grid))
    runner = CliRunner()
    built = runner.invoke(cli, ["features", str(grid_file), "--data-dir", str(data_copy), "--quiet",
                                "--export", str(tmp_path / "emb.npz")])
    assert built.exit_code == 0, built.output
    assert "32 features of 200 training and 50 test images" in built.output
    with np.load(tmp_path / "emb.npz", allow_pickle=False) as exported:
        assert exported["X_train"].shape == (200, 32) and exported["y_test"].shape == (50,)
        assert exported["X_train"].dtype == exported["X_test"].dtype == np.float16  # the cache's dtype
    swept = runner.invoke(cli, ["sweep", str(grid_file), "--data-dir", str(data_copy), "--runs-dir",
                                str(tmp_path / "runs"), "--quiet", "--json"])
    assert swept.exit_code == 0, swept.output
    best = json.loads(swept.output)["results"][0]
    report = runner.invoke(cli, ["eval", "--best", "--sweep", "km", "--data-dir", str(data_copy), "--runs-dir",
                                 str(tmp_path / "runs"), "--json", "--no-plots"])
    assert report.exit_code == 0, report.output
    assert json.loads(report.output.splitlines()[-1])["run_dir"].endswith(best["run_id"])
    picture = runner.invoke(cli, ["visualize", "--best", "--runs-dir", str(tmp_path / "runs")])
    assert picture.exit_code == 0, picture.output
    assert (tmp_path / "runs" / "km" / best["run_id"] / "centroids.png").read_bytes()[:4] == b"\x89PNG"


def test_a_worker_without_the_features_says_to_build_them(data_copy):
    from linclf.experiments import cluster
    from linclf.util.errors import LinclfError

    with pytest.raises(LinclfError, match=r"no cached kmeans features .* build them first with 'linclf features"):
        cluster.train_group_task(ref(data_copy), [settings()])


def test_kmeans_needs_images():
    from linclf.features import pipeline
    from linclf.util.errors import LinclfError

    with pytest.raises(LinclfError, match="features: kmeans needs 32x32 RGB images; this data holds 64 features"):
        pipeline.build(settings(), "features", (64,))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_in_the_feature_cache_is_found_and_named(data_copy, bad):
    source = sources.cifar10(data_copy)
    jobs.prepare(source, settings())
    step = jobs.build_pipeline(source, settings()).feature_steps[0]
    name, _ = cache.key(source, step, settings())
    path = cache.cache_root(source) / name / "train.npy"
    features = np.load(path)
    assert features.dtype == np.float16
    features[3, 3] = bad
    np.save(path, features)
    from linclf.util.errors import LinclfError
    with pytest.raises(LinclfError, match=r"train.npy: holds NaN or infinite values .*delete .* to build it again"):
        jobs.prepare(source, settings())


@pytest.mark.parametrize("rows", [slice(0, 7), slice(3, 60), slice(55, 55), np.array([5, 1, 40, 2, 2, 59]),
                                  np.arange(60)[::-3]])
def test_read_rows_equals_indexing_the_map(tmp_path, rows):
    array = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float32, shape=(60, 5))
    array[:] = np.arange(300, dtype=np.float32).reshape(60, 5)
    array.flush()
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    np.testing.assert_array_equal(cache_files.read_rows(mapped, rows, chunk=4), np.asarray(mapped[rows]))


def test_read_rows_names_a_truncated_file(tmp_path):
    array = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float32, shape=(10, 5))
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    del array
    with open(tmp_path / "f.npy", "r+b") as stream:
        stream.truncate(mapped.offset + 20 * 4)
    with pytest.raises(LinclfError, match="shorter than its header says"):
        cache_files.read_rows(mapped, slice(0, 10))


def test_read_rows_reads_blocks_of_at_most_chunk_rows_for_sparse_rows(tmp_path):
    """1000 random rows spread over the file must not read the whole file in one block."""
    import tracemalloc

    array = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float32, shape=(20000, 16))
    array[:] = np.arange(20000 * 16, dtype=np.float32).reshape(20000, 16)
    array.flush()
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    rows = np.sort(np.random.default_rng(0).choice(20000, size=200, replace=False))
    tracemalloc.start()
    try:
        got = cache_files.read_rows(mapped, rows, chunk=100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got, mapped[rows])
    assert peak < 10 * got.nbytes


def test_read_rows_refuses_a_view_of_the_map(tmp_path):
    array = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float32, shape=(10, 3))
    del array
    mapped = np.load(tmp_path / "f.npy", mmap_mode="r")
    with pytest.raises(ValueError, match="whole, row-ordered"):
        cache_files.read_rows(mapped[2:], slice(0, 3))


def test_a_chunk_of_the_wrong_width_from_elsewhere_stops_the_build(data_copy):
    source = sources.cifar10(data_copy)
    step = jobs.build_pipeline(source, settings()).feature_steps[0]

    def wrong(state, jobs_, write):
        split, start, stop = jobs_[0]
        write(split, start, np.zeros((stop - start, step.dim + 3), np.float32))

    with pytest.raises(LinclfError, match=r"expected shape \(\d+, 32\), got \(\d+, 35\)"):
        cache.build(source, step, settings(), progress=False, log=lambda m: None, encode_chunks=wrong)


def test_an_empty_feature_file_is_one_line(data_copy):
    source = sources.cifar10(data_copy)
    cfg = settings()
    step = jobs.build_pipeline(source, cfg).feature_steps[0]
    _, train, _ = cache.build(source, step, cfg, progress=False, log=lambda m: None)
    path = train.filename
    del train
    with open(path, "wb"):
        pass
    with pytest.raises(LinclfError, match="not a valid .npy array; delete"):
        cache.find(source, step, cfg)


@pytest.mark.parametrize("planted", ["file", "folder"])
def test_a_link_planted_in_a_build_is_refused_and_not_written_through(data_copy, tmp_path, planted):
    source = sources.cifar10(data_copy)
    cfg = settings()
    step = jobs.build_pipeline(source, cfg).feature_steps[0]
    name, _ = cache.key(source, step, cfg)
    root = cache.cache_root(source)
    root.mkdir(parents=True, exist_ok=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "train.npy").write_bytes(b"precious")
    if planted == "folder":
        (root / f".{name}.building").symlink_to(victim)
    else:
        (root / f".{name}.building").mkdir()
        (root / f".{name}.building" / "train.npy").symlink_to(victim / "train.npy")
    with pytest.raises(LinclfError, match="symbolic link"):
        cache.build(source, step, cfg, progress=False, log=lambda m: None)
    assert sorted(p.name for p in victim.iterdir()) == ["train.npy"]
    assert (victim / "train.npy").read_bytes() == b"precious"
