import json
import pickle

import numpy as np
import pytest

from linclf.data import cifar10
from linclf.util.errors import LinclfError
from conftest import batch_bytes, batch_files, synthetic_images, write_batches


def test_cache_layout_shapes_and_pixel_order(tmp_path):
    files = batch_files(per_batch=8, num_test=6)
    cifar10.build_cache(write_batches(tmp_path / "b", files), tmp_path / "d", source_md5="abc")
    dataset = cifar10.load_cache(tmp_path / "d")
    assert dataset.train_x.shape == (40, 32, 32, 3) and dataset.train_x.dtype == np.uint8
    assert dataset.train_y.shape == (40,) and dataset.test_x.shape == (6, 32, 32, 3)
    assert isinstance(dataset.train_x, np.memmap)
    assert dataset.class_names[0] == "airplane" and dataset.meta["source_md5"] == "abc"
    raw, labels = synthetic_images(8, seed=1)  # data_batch_1
    # official rows are R plane, G plane, B plane of 32x32 each
    np.testing.assert_array_equal(dataset.train_x[0, :, :, 0].ravel(), raw[0, :1024])
    np.testing.assert_array_equal(dataset.train_x[0, :, :, 2].ravel(), raw[0, 2048:])
    np.testing.assert_array_equal(dataset.train_y[:8], labels)
    assert json.loads((tmp_path / "d" / "cifar-10" / "meta.json").read_text())["num_train"] == 40
    assert not list((tmp_path / "d").glob(".cifar-10*"))  # no temporary folders left


def test_python2_numpy1_global_names_are_admitted(tmp_path):
    images, labels = synthetic_images(4, seed=0)
    payload = batch_bytes(images, labels).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in payload
    (tmp_path / "b").write_bytes(payload)
    read, read_labels = cifar10.read_batch(tmp_path / "b")
    assert read.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(read_labels, labels)


class Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo owned > /dev/null",))


def test_hostile_pickle_cannot_run_code(tmp_path):
    (tmp_path / "b").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(LinclfError, match=r"forbidden global (posix|os)\.system"):
        cifar10.read_batch(tmp_path / "b")


@pytest.mark.parametrize("images, labels, message", [
    (np.zeros((4, 100), np.uint8), [0, 1, 2, 3], r"expected data of shape \(N, 3072\) uint8"),
    (np.zeros((4, 3072), np.float64), [0, 1, 2, 3], r"uint8, got \(4, 3072\) float64"),
    (np.zeros((4, 3072), np.uint8), [0, 1, 2], r"expected 4 labels"),
    (np.zeros((4, 3072), np.uint8), [0, 1, 2, 10], r"labels must be in 0..9, got values 0..10"),
])
def test_bad_batches_are_rejected(tmp_path, images, labels, message):
    (tmp_path / "b").write_bytes(batch_bytes(images, labels))
    with pytest.raises(LinclfError, match=message):
        cifar10.read_batch(tmp_path / "b")


def test_garbage_file_is_rejected(tmp_path):
    (tmp_path / "b").write_bytes(b"this is not a pickle")
    with pytest.raises(LinclfError, match="not a valid CIFAR-10 batch file"):
        cifar10.read_batch(tmp_path / "b")


def test_missing_batch_file(tmp_path):
    folder = write_batches(tmp_path / "b", batch_files(per_batch=4, num_test=4))
    (folder / "data_batch_3").unlink()
    with pytest.raises(LinclfError, match="missing the batch file cifar-10-batches-py/data_batch_3"):
        cifar10.build_cache(folder, tmp_path / "d")
    assert not (tmp_path / "d" / "cifar-10").exists()


def test_missing_cache_names_the_folder_and_the_command(tmp_path):
    with pytest.raises(LinclfError, match=rf"no CIFAR-10 cache in {tmp_path}/cifar-10: run 'linclf download"):
        cifar10.load_cache(tmp_path)


def test_default_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LINCLF_DATA_DIR", str(tmp_path))
    assert cifar10.default_data_dir() == tmp_path
    monkeypatch.delenv("LINCLF_DATA_DIR")
    assert str(cifar10.default_data_dir()) == "data"


def test_splits(data_dir):
    from linclf.data import sources

    source = sources.cifar10(data_dir)

    def split(name, **sizes):
        return sources.split(source, name, {"val_size": 50, "train_size": 0, **sizes})

    train_x, train_y = split("train")
    val_x, val_y = split("val")
    assert len(train_x) == 150 and len(val_x) == 50
    np.testing.assert_array_equal(val_y, source.train_y[150:])
    assert len(split("train", train_size=30)[0]) == 30
    assert len(split("test")[0]) == 50
    with pytest.raises(LinclfError, match=r"train_size must be at most 150 with val_size 50, got 151"):
        split("train", train_size=151)
    with pytest.raises(LinclfError, match=r"val_size must be in \[0, 199\] for this data, got 200"):
        split("val", val_size=200)


# -- nothing read back from the cache is trusted ------------------------------------------------------

def rewrite_meta(folder, change):
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps(change(meta)))


def save(folder, name, array):
    np.save(folder / name, array)


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "meta.json").write_text("[1, 2]"), r"meta.json: expected a JSON object, got list"),
    (lambda f: (f / "meta.json").write_text('{"class_names": '), r"meta.json is not valid JSON"),
    (lambda f: rewrite_meta(f, lambda m: {**m, "class_names": list(range(10))}),
     r"meta.json: class_names must be a list of strings, got \[0, 1, 2, 3, \.\.\.\]"),
    (lambda f: rewrite_meta(f, lambda m: {k: v for k, v in m.items() if k != "class_names"}),
     r"meta.json: class_names must be a list of strings, got None"),
    (lambda f: rewrite_meta(f, lambda m: {**m, "class_names": ["cat", "dog", "ship"]}),
     r"meta.json: expected 10 class names, got 3"),
    (lambda f: save(f, "train_y.npy", np.zeros(40, np.float64)), r"train_y.npy: labels must be integers, got float64"),
    (lambda f: save(f, "test_y.npy", np.full(6, 10, np.uint8)),
     r"test_y.npy: labels must be in 0..9 \(one per class name\), got 10..10"),
    (lambda f: save(f, "test_y.npy", np.zeros(5, np.uint8)), r"test_y.npy: expected 6 labels, shape \(6,\), got \(5,\)"),
    (lambda f: save(f, "train_x.npy", np.zeros((40, 3072), np.uint8)),
     r"train_x.npy: expected images of shape \(N, 32, 32, 3\) uint8, got \(40, 3072\) uint8"),
    (lambda f: save(f, "test_x.npy", np.zeros((6, 32, 32, 3), np.int16)), r"test_x.npy: expected images .* int16"),
    (lambda f: (f / "train_x.npy").write_bytes((f / "train_x.npy").read_bytes()[:5000]), r"train_x.npy is truncated"),
    (lambda f: (f / "test_y.npy").write_bytes(b""), r"test_y.npy is truncated"),
    (lambda f: save(f, "train_y.npy", np.array(["cat"] * 40, dtype=object)), r"train_y.npy is not a .npy array"),
])
def test_a_damaged_cache_names_the_file_the_problem_and_the_repair(tmp_path, damage, message):
    cifar10.build_cache(write_batches(tmp_path / "b", batch_files(per_batch=8, num_test=6)), tmp_path / "d")
    folder = tmp_path / "d" / "cifar-10"
    damage(folder)
    with pytest.raises(LinclfError, match=rf"{message}.*; run 'linclf download --force --data-dir {tmp_path}/d'$"):
        cifar10.load_cache(tmp_path / "d")


def test_a_meta_json_that_is_not_an_object_is_no_cache_for_download(tmp_path):
    cifar10.build_cache(write_batches(tmp_path / "b", batch_files(per_batch=4, num_test=4)), tmp_path / "d")
    (tmp_path / "d" / "cifar-10" / "meta.json").write_text('"a string"')
    assert cifar10.read_meta(tmp_path / "d") is None  # so `linclf download` rebuilds it


@pytest.mark.parametrize("labels, message", [
    ([1.0, 2.5, 3.0, 4.0], r"labels must be integers in 0..9, got floating-point numbers such as 1.0"),
    (["1", "2", "3", "4"], r"labels must be integers in 0..9, got strings such as '1'"),
    ([True, False, True, False], r"got booleans such as True"),
    ([1, None, 2, 3], r"got mixed values such as 1"),
])
def test_labels_that_are_not_integers_are_refused(tmp_path, labels, message):
    payload = pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": labels}, protocol=2)
    (tmp_path / "b").write_bytes(payload)
    with pytest.raises(LinclfError, match=message):
        cifar10.read_batch(tmp_path / "b")


@pytest.mark.parametrize("missing", [b"data", b"labels"])
def test_a_batch_file_without_data_or_labels_says_which_entry_is_missing(tmp_path, missing):
    entries = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [1, 2, 3, 4]}
    del entries[missing]
    (tmp_path / "b").write_bytes(pickle.dumps(entries, protocol=2))
    with pytest.raises(LinclfError, match=rf"is not a valid CIFAR-10 batch file: no '{missing.decode()}' entry"):
        cifar10.read_batch(tmp_path / "b")
