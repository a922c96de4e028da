"""Linear probes on arrays a user brings: `--data FILE.npz` for train, sweep, eval (sources.arrays)."""
import json
import os
import re
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner

from linclf.experiments import jobs
from linclf.features import pipeline
from linclf.experiments import modelfile
from linclf.experiments import runfolders
from linclf.data import npzfiles, sources
from linclf.experiments import grids
from linclf.util import chunks
from linclf.cli import cli
from linclf.config import DEFAULTS
from linclf.util.errors import LinclfError

NAMES = ["red", "green", "blue", "black"]
PROBE = {**DEFAULTS, "epochs": 4, "batch_size": 32, "val_size": 100, "lr": 1e-2, "reg": 1e-4}
FLAGS = ["--epochs", "4", "--batch-size", "32", "--val-size", "100", "--lr", "1e-2", "--quiet"]


def embedding(num, seed, dim=24, classes=4, dtype=np.float32):
    """num rows of a separable embedding: a fixed centre per class (far apart, on an offset and
    scale of their own per feature, so standardization matters) plus unit noise; labels (num,)."""
    centres = np.random.default_rng(7).normal(0, 4, size=(classes, dim))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=num)
    X = (centres[labels] + rng.normal(size=(num, dim))) * np.linspace(0.1, 50, dim) + 100
    return X.astype(dtype), labels


def write(path, compressed=False, **arrays):
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def good_arrays(dim=24, classes=4, dtype=np.float32, names=True):
    X_train, y_train = embedding(600, 1, dim, classes, dtype)
    X_test, y_test = embedding(200, 2, dim, classes, dtype)
    found = {"X_train": X_train, "y_train": y_train, "X_test": X_test, "y_test": y_test}
    if names:
        found["class_names"] = np.array(NAMES[:classes])
    return found


@pytest.fixture(scope="module")
def emb(tmp_path_factory):
    return write(tmp_path_factory.mktemp("emb") / "emb.npz", **good_arrays())


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_train_and_eval_a_probe_through_the_cli(emb, tmp_path):
    result = run("train", "--data", emb, *FLAGS, "--runs-dir", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["status"] == "ok" and report["val_accuracy"] >= 0.97
    model = modelfile.load_model(report["run_dir"])
    assert model.W.shape == (24, 4) and model.class_names == NAMES
    assert model.pipeline.input_kind == "features" and model.pipeline.scaler.name == "standardize"
    assert model.data_id == sources.arrays(emb).data_id
    evaluated = run("eval", report["run_dir"], "--data", emb, "--json", "--no-plots")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["accuracy"] >= 0.97


@pytest.mark.slow
def test_sweep_with_data_in_the_grid_file_and_eval_best(emb, tmp_path):
    folder = tmp_path / "grids"
    folder.mkdir()
    os.symlink(emb, folder / "mine.npz")
    grid = folder / "g.yaml"
    grid.write_text("name: probe\ndata: mine.npz\nbase: {epochs: 4, batch_size: 32, val_size: 100, "
                    "val_split: random}\ngrid:\n  lr: [3.0e-3, 1.0e-2]\n  reg: [1.0e-4, 1.0e-2, 1.0]\n")
    result = run("sweep", grid, "--runs-dir", tmp_path / "runs", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["results"]
    assert len(rows) == 6 and rows[0]["val_accuracy"] >= 0.97
    best = run("eval", "--best", "--data", emb, "--runs-dir", tmp_path / "runs", "--json", "--no-plots")
    assert best.exit_code == 0, best.output
    report = json.loads(best.output)
    assert report["accuracy"] >= 0.97 and report["run_dir"].endswith(rows[0]["run_id"])
    assert report["data_id"] == sources.arrays(emb).data_id and "note" not in report


def test_data_flags_override_the_grid_file(emb, data_dir, tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("name: p\ndata: missing.npz\nbase: {epochs: 1, batch_size: 32, val_size: 50}\n"
                    "grid: {reg: [1.0e-3]}\n")
    missing = run("sweep", grid, "--runs-dir", tmp_path, "--quiet")
    assert missing.exit_code == 1 and f"data file not found: {tmp_path / 'missing.npz'}" in missing.output
    assert run("sweep", grid, "--data", emb, "--runs-dir", tmp_path / "a", "--quiet").exit_code == 0
    cifar = run("sweep", grid, "--data-dir", data_dir, "--runs-dir", tmp_path / "b", "--json", "--quiet")
    assert cifar.exit_code == 0, cifar.output
    assert (tmp_path / "b" / "p" / json.loads(cifar.output)["results"][0]["run_id"] / "weights.npz").is_file()
    both = run("train", "--data", emb, "--data-dir", data_dir, "--runs-dir", tmp_path)
    assert both.exit_code == 1 and "give --data FILE.npz or --data-dir DIR, not both" in both.output


def test_a_grid_data_that_is_not_a_path_is_refused():
    spec = {"grid": {"reg": [1e-3]}, "data": 3}
    with pytest.raises(LinclfError, match="g.yaml: data must be the path of an .npz file, got 3"):
        grids.parse(spec, "g.yaml")


def bad(**changes):
    """good_arrays with changes: a value of None drops the array."""
    found = good_arrays()
    found.update(changes)
    return {key: value for key, value in found.items() if value is not None}


def with_value(name, row, value):
    array = good_arrays()[name].copy()
    array[row, 1] = value
    return array


def too_big_for_float32(name, row):
    array = good_arrays()[name].astype(np.float64)
    array[row, 1] = 1e300
    return array


BAD_FILES = [
    (bad(X_test=None), r"no array X_test; linclf needs an .npz"),
    (bad(y_train=None), r"no array y_train"),
    (bad(X_train=np.zeros(600, np.float32)), r"X_train must be a 2-D array \(N, D\) of features, got shape \(600,\)"),
    (bad(X_test=np.zeros((200, 24, 1), np.float32)), r"X_test must be a 2-D array"),
    (bad(X_train=np.zeros((600, 24), np.int64)), r"X_train must hold float16, float32, float64 features, got int64"),
    (bad(X_train=np.zeros((0, 24), np.float32), y_train=np.zeros(0, int)), r"X_train is empty \(shape \(0, 24\)\)"),
    (bad(X_train=with_value("X_train", 3, np.nan)), r"X_train holds NaN, infinite or out-of-float32-range values \(first in row 3\)"),
    (bad(X_train=too_big_for_float32("X_train", 4)),  # finite in float64, not in the trainer's float32
     r"X_train holds NaN, infinite or out-of-float32-range values \(first in row 4\)"),
    (bad(X_test=with_value("X_test", 150, -np.inf)), r"X_test holds NaN, infinite or out-of-float32-range values \(first in row 150\)"),
    (bad(X_test=np.zeros((200, 23), np.float32)), r"X_test has 23 features \(D\) but X_train has 24"),
    (bad(y_train=np.zeros(599, int)), r"X_train has 600 rows but y_train has 599 labels"),
    (bad(y_test=np.zeros(201, int)), r"X_test has 200 rows but y_test has 201 labels"),
    (bad(y_train=np.zeros(600, np.float32)), r"y_train must hold integer labels, got dtype float32"),
    (bad(y_test=np.zeros((200, 1), int)), r"y_test must be a 1-D array of labels"),
    (bad(y_test=np.full(200, -1)), r"y_test: labels must be in 0..3, got values -1..-1"),
    (bad(y_train=np.full(600, 4)), r"y_train holds label 4 but class_names has only 4 names; class_names must cover"),
    (bad(class_names=None, y_test=np.full(200, 10**9)), r"the largest label, 1000000000, would make more classes"),
    (bad(class_names=None, y_train=np.zeros(600, int), y_test=np.zeros(200, int)), r"needs at least 2"),
    (bad(class_names=np.array([1, 2, 3, 4])), r"class_names must be a 1-D array of C strings"),
    (bad(class_names=np.array(["a", "b", "a", "c"])), r"class_names repeats a name"),
    (bad(X_train=np.array([[1.0]] * 600, dtype=object)), r"X_train is an object array, which would need unpickling"),
    (bad(class_names=np.array(NAMES, dtype=object)), r"class_names is an object array"),
]


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "compressed"])
@pytest.mark.parametrize("arrays, message", BAD_FILES)
def test_every_bad_file_gets_its_message(tmp_path, arrays, message, compressed):
    path = write(tmp_path / "bad.npz", compressed, **arrays)
    with pytest.raises(LinclfError, match=message):
        sources.arrays(path)


@pytest.mark.parametrize("content, message", [
    (None, r"data file not found: .*nothing.npz"),
    (b"not a zip file", r"bad.npz is not an .npz file or is damaged .*linclf needs an .npz"),
    ("npy", r"bad.npz is a single .npy array; linclf needs an .npz"),
])
def test_a_file_that_is_no_npz_is_refused(tmp_path, content, message):
    path = tmp_path / ("nothing.npz" if content is None else "bad.npz")
    if content == "npy":
        with open(path, "wb") as stream:
            np.save(stream, np.zeros((3, 2)))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(LinclfError, match=message):
        sources.arrays(path)


def test_a_bad_file_is_one_line_and_a_non_zero_exit(tmp_path):
    path = write(tmp_path / "bad.npz", **bad(X_train=with_value("X_train", 5, np.nan)))
    result = run("train", "--data", path, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {path}: X_train holds NaN, infinite or out-of-float32-range values "
                                    f"(first in row 5); features must be finite numbers")
    assert len(result.output.splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_stored_members_are_read_as_needed_and_give_the_same_weights(emb, tmp_path):
    compressed = write(tmp_path / "c.npz", True, **good_arrays())
    mapped, in_memory = sources.arrays(emb), sources.arrays(emb, lazy=False)
    assert isinstance(mapped.train_x, npzfiles.FileRows) and isinstance(in_memory.train_x, np.ndarray)
    assert isinstance(sources.arrays(compressed).train_x, np.ndarray)
    weights = [jobs.train_group(source, [PROBE], prefetch=False).results[0].W
               for source in (mapped, in_memory, sources.arrays(compressed))]
    np.testing.assert_array_equal(weights[0], weights[1])
    np.testing.assert_array_equal(weights[0], weights[2])


def test_a_fortran_ordered_member_reads_the_same(tmp_path):
    arrays = good_arrays()
    path = write(tmp_path / "f.npz", **{**arrays, "X_train": np.asfortranarray(arrays["X_train"])})
    np.testing.assert_array_equal(sources.arrays(path).train_x, arrays["X_train"])


@pytest.mark.parametrize("val_split", ["tail", "random"])
@pytest.mark.parametrize("dtype,precondition", [(np.float16, 0), (np.float32, 0), (np.float32, 8)])
def test_the_trainer_copies_the_features_once_in_their_own_dtype(tmp_path, monkeypatch, val_split, dtype,
                                                                 precondition):
    """No float64 and no second copy of the training matrix: the memory numpy allocates while
    preparing stays below 1.6 times the training split (a second copy makes it 2, a float64 one 3-5),
    also when the copy is preconditioned (in place)."""
    arrays = good_arrays(dim=64, dtype=dtype)
    X_train, y_train = embedding(8000, 3, 64, 4, dtype)
    path = write(tmp_path / "big.npz", **{**arrays, "X_train": X_train, "y_train": y_train})
    source = sources.arrays(path)
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 256 * 64 * 8)  # the moments' and the preconditioner's
                                                               # float temporaries stay small
    config = {**PROBE, "val_split": val_split, "precondition": precondition}
    tracemalloc.start()
    try:
        prepared, _, _ = jobs.prepare(source, config)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert prepared.X_train.dtype == dtype and not isinstance(prepared.X_train, np.memmap)
    assert prepared.X_train.shape == (7900, 64)
    assert peak < 1.6 * prepared.X_train.nbytes


def test_the_data_id_is_the_file_hash(emb, tmp_path):
    first = sources.arrays(emb)
    copy = tmp_path / "copy.npz"
    copy.write_bytes(emb.read_bytes())
    assert sources.arrays(copy).data_id == first.data_id  # the bytes, not the name
    changed = write(tmp_path / "changed.npz", **bad(X_test=with_value("X_test", 0, 7.0)))
    assert sources.arrays(changed).data_id != first.data_id
    identity = jobs.identify({"arrays": str(emb)})
    assert runfolders.run_id(PROBE, identity) != runfolders.run_id(PROBE, jobs.identify({"arrays": str(changed)}))
    write(copy, **bad(X_test=with_value("X_test", 0, 7.0)))  # the same file rewritten: a new id
    assert sources.arrays(copy).data_id == sources.arrays(changed).data_id != first.data_id


def test_the_ref_opens_the_same_source_again(emb):
    source = sources.arrays(emb)
    again = sources.open_source(source.ref)
    assert source.ref == {"arrays": str(emb.resolve())} and again.data_id == source.data_id
    assert source.kind == "features" and source.class_names == NAMES and source.named


def test_without_class_names_the_classes_are_numbered(tmp_path):
    path = write(tmp_path / "n.npz", **good_arrays(classes=3, names=False))
    source = sources.arrays(path)
    assert source.class_names == ["0", "1", "2"] and not source.named


@pytest.fixture(scope="module")
def probe_model(emb, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "run"
    result = run("train", "--data", emb, *FLAGS, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("arrays, message", [
    (good_arrays(dim=20), r"holds features \(D=20\) but the model takes features \(D=24\)"),
    (good_arrays(classes=3), r"the data has 3 classes but the model has 4"),
    ({**good_arrays(), "class_names": np.array(["a", "b", "c", "d"])},
     r"class_names \(a, b, c, d\) differ from the model's \(red, green, blue, black\)"),
])
def test_eval_refuses_data_that_does_not_match_the_model(probe_model, tmp_path, arrays, message):
    path = write(tmp_path / "other.npz", **arrays)
    result = run("eval", probe_model, "--data", path, "--no-plots")
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert f"Error: {path}" in result.output and re.search(message, result.output)


def test_eval_on_a_second_file_of_the_same_shape(probe_model, tmp_path):
    other = write(tmp_path / "other.npz", **good_arrays(names=False))  # no names: classes counted only
    result = run("eval", probe_model, "--data", other, "--json", "--no-plots")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["accuracy"] >= 0.97 and "trained on other data" in report["note"]


def test_eval_of_a_probe_without_its_data_says_so(probe_model, data_dir, tmp_path):
    no_cache = run("eval", probe_model, "--data-dir", tmp_path, "--no-plots")
    assert no_cache.exit_code == 1 and "takes features (D=24): give its data with --data FILE.npz" in no_cache.output
    cifar = run("eval", probe_model, "--data-dir", data_dir, "--no-plots")
    assert cifar.exit_code == 1
    assert "holds 32x32x3 images but the model takes features (D=24); give the model's data" in cifar.output


@pytest.mark.slow
def test_a_probe_sweep_on_dask_matches_the_local_one(emb, tmp_path, monkeypatch):
    pytest.importorskip("distributed", reason="the test extra installs dask[distributed]")
    monkeypatch.chdir(emb.parent)  # a relative --data: the workers get the absolute path
    grid = tmp_path / "g.yaml"
    grid.write_text("name: p\nbase: {epochs: 2, batch_size: 32, val_size: 100}\ngrid: {reg: [1.0e-4, 1.0e-2]}\n")
    local = run("sweep", grid, "--data", emb.name, "--runs-dir", tmp_path / "l", "--json", "--quiet")
    remote = run("sweep", grid, "--data", emb.name, "--runs-dir", tmp_path / "r", "--json", "--quiet",
                 "--scheduler", "local:1")
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    strip = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    assert strip(json.loads(remote.output)["results"]) == strip(json.loads(local.output)["results"])


def npy_bytes(array=None, header=None):
    """The bytes of an .npy file: an array's, or a bare header dict followed by 1,000 zero bytes."""
    import io

    from numpy.lib import format as npy_format

    stream = io.BytesIO()
    if header is None:
        np.save(stream, array)
    else:
        npy_format.write_array_header_1_0(stream, header)
        stream.write(bytes(1000))
    return stream.getvalue()


def zip_of(path, members, compression):
    import zipfile

    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, payload in members.items():
            archive.writestr(f"{name}.npy", payload)
    return path


@pytest.mark.parametrize("compression", ["stored", "deflated"])
@pytest.mark.parametrize("payload,message", [
    (npy_bytes(header={"descr": "<f4", "fortran_order": False, "shape": (100_000_000_000, 1)}),
     r"X_train is damaged: its header says \(100000000000, 1\) float32 \(400,000,000,000 bytes\), the archive holds "
     r"1,000 bytes of data"),
    (b"garbage, not an array", r"X_train is not an .npy array linclf reads \(the magic string is not correct"),
    (b"\x93NUM", r"X_train is not an .npy array linclf reads \(EOF"),
])
def test_a_member_whose_header_lies_is_one_line_naming_file_and_array(tmp_path, compression, payload, message):
    """A 400 GB header over a few bytes never reaches the allocator (it was 'out of memory; try a
    smaller group_size', naming neither file nor array); garbage is one line, never a traceback."""
    import zipfile

    arrays = good_arrays()
    members = {name: npy_bytes(value) for name, value in arrays.items()}
    members["X_train"] = payload
    kind = zipfile.ZIP_STORED if compression == "stored" else zipfile.ZIP_DEFLATED
    path = zip_of(tmp_path / "lies.npz", members, kind)
    with pytest.raises(LinclfError, match=rf"lies.npz: {message}"):
        sources.arrays(path)
    result = run("train", "--data", path, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 1 and result.output.startswith(f"Error: {path.resolve()}: X_train")
    assert len(result.output.splitlines()) == 1


def test_a_compressed_member_larger_than_memory_is_refused_by_name(tmp_path, monkeypatch):
    path = write(tmp_path / "c.npz", True, **good_arrays())
    monkeypatch.setattr(npzfiles, "_memory_bytes", lambda: 10_000)
    with pytest.raises(LinclfError, match=r"c.npz: X_train would take 57,600 bytes in memory, more than the "
                                          r"10,000 this machine has: store it uncompressed \(np.savez\)"):
        sources.arrays(path)


def test_a_file_rewritten_in_place_with_its_old_size_and_time_gets_a_new_id(tmp_path):
    path = write(tmp_path / "e.npz", **good_arrays())
    first = sources.arrays(path).data_id
    before = os.stat(path)
    changed = write(tmp_path / "changed.npz", **bad(X_test=with_value("X_test", 0, 7.0)))
    with open(path, "r+b") as stream:  # in place: same inode, same size
        stream.write(changed.read_bytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_size == before.st_size and os.stat(path).st_mtime_ns == before.st_mtime_ns
    assert sources.arrays(path).data_id == sources.arrays(changed).data_id != first


@pytest.mark.parametrize("how", ["in place", "renamed over"])
def test_a_file_changed_in_place_while_training_saves_no_run(tmp_path, monkeypatch, how):
    """Rewritten in place, the mapped rows may mix old and new data: no run. Replaced by a rename,
    the old file stays mapped, whole: the run is saved."""
    from linclf.training import loop

    path = write(tmp_path / "e.npz", **good_arrays())
    changed = write(tmp_path / "changed.npz", **bad(X_test=with_value("X_test", 0, 7.0)))
    real = loop.train_group

    def rewriting(*args, **kwargs):
        results = real(*args, **kwargs)
        if how == "in place":
            with open(path, "r+b") as stream:
                stream.write(changed.read_bytes())
        else:
            os.replace(changed, path)
        return results

    monkeypatch.setattr(loop, "train_group", rewriting)
    result = run("train", "--data", path, *FLAGS, "--runs-dir", tmp_path / "runs")
    if how == "renamed over":
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: {path.resolve()} changed while linclf was reading it")
    assert len(result.output.splitlines()) == 1
    assert not list((tmp_path / "runs").rglob("weights.npz"))


def test_a_compressed_member_claiming_more_than_deflate_can_hold_is_refused(tmp_path, monkeypatch):
    arrays = good_arrays()
    path = write(tmp_path / "z.npz", True, **{**arrays, "X_train": np.zeros((20000, 24), np.float32),
                                              "y_train": np.zeros(20000, int)})
    monkeypatch.setattr(npzfiles, "MAX_DEFLATE_RATIO", 1)  # as if the zip's sizes had been forged
    with pytest.raises(LinclfError, match=r"z.npz: X_train is damaged: [\d,]+ compressed bytes cannot hold the "
                                          r"1,920,000 bytes its header says"):
        sources.arrays(path)


def test_corrupt_compressed_data_is_one_line(tmp_path):
    path = write(tmp_path / "c.npz", True, **good_arrays())
    data = bytearray(path.read_bytes())
    for offset in range(200, 2000, 7):  # inside X_train's deflate stream, after its local header
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(LinclfError, match=r"c.npz (is not an .npz file or is damaged|: X_train)"):
        sources.arrays(path)


def test_a_class_with_no_training_row_is_said_in_one_warning_line(tmp_path):
    """Rows sorted by class and the tail split: the last class lies wholly in the validation rows,
    so the model never learns it. Trained anyway, with one line naming the class and the fix."""
    arrays = good_arrays()
    order = np.argsort(arrays["y_train"], kind="stable")
    path = write(tmp_path / "sorted.npz", **{**arrays, "X_train": arrays["X_train"][order],
                                             "y_train": arrays["y_train"][order]})
    result = run("train", "--data", path, "--val-size", 200, "--quiet", "--json", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: class 'black' has no row in the training split (val_split tail, 200 validation "
                        "rows), so the model never predicts it; if the rows are sorted by class, set val_split to "
                        "random (a stratified validation sample)"]
    assert json.loads(result.stdout)["status"] == "ok"
    result = run("train", "--data", path, "--val-size", 200, "--val-split", "random", "--quiet",
                 "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0 and "warning" not in result.output, result.output


@pytest.mark.parametrize("key", [slice(2, 7), slice(None), slice(1, 9, 3), [5, 1, 1, 8], np.array([0, 2, 3, 4, 9]), 5, -1,
                                 np.arange(12) > 8, (slice(1, 3), 2), np.array([], int), np.zeros(12, bool)])
def test_file_rows_read_what_numpy_would_index(tmp_path, key):
    X = np.arange(60, dtype=np.float32).reshape(12, 5)
    path = write(tmp_path / "t.npz", X_train=X, y_train=np.arange(12) % 3, X_test=X[:4], y_test=np.arange(4) % 3)
    rows = sources.arrays(path).train_x
    assert isinstance(rows, npzfiles.FileRows)
    np.testing.assert_array_equal(rows[key], X[key])
    np.testing.assert_array_equal(np.asarray(rows), X)


def test_a_file_cut_short_while_training_is_one_error_line_not_sigbus(tmp_path):
    """Truncated in place after it was opened: a memory map of it would end linclf with SIGBUS
    (exit -7, no message); the rows are read with ordinary reads, so it is one line and exit 1."""
    import subprocess
    import sys
    from pathlib import Path

    path = write(tmp_path / "e.npz", **good_arrays())
    script = (f"import os\nfrom linclf.data import sources\nfrom linclf.cli import cli\n"
              f"split_rows = sources.split_rows\n"
              f"def cutting(*args, **kwargs):\n    os.truncate({str(path)!r}, 5000)\n"
              f"    return split_rows(*args, **kwargs)\n"
              f"sources.split_rows = cutting\n"
              f"cli.main(['train', '--data', {str(path)!r}, '--quiet', '--runs-dir', {str(tmp_path / 'runs')!r}])\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert done.stderr == (f"Error: {path.resolve()} was cut short while linclf was reading it, so the results would "
                           f"mix old and new data; replace a data file by renaming a new one over it, never rewrite "
                           f"it in place\n")
    assert not list((tmp_path / "runs").rglob("weights.npz"))
