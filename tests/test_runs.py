"""Run folders, model files, and the one ranking that decides "best"."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from linclf import config
from linclf.experiments import jobs
from linclf.experiments import modelfile
from linclf.experiments import ranking
from linclf.experiments import runfolders
from linclf.data import sources
from linclf.cli import cli
from linclf.util.errors import LinclfError
from conftest import TINY


@pytest.fixture(scope="module")
def one_run(data_dir, tmp_path_factory):
    """A finished run folder on the data_dir fixture."""
    outcome = jobs.train_group(sources.cifar10(data_dir), [{**config.DEFAULTS, **TINY}])
    folder, = jobs.save(outcome, lambda result: tmp_path_factory.mktemp("runs") / "one")
    return folder


def copy_run(run, where, **metric_changes):
    """A copy of a run folder whose metrics.json has some values changed."""
    shutil.copytree(run, where)
    metrics = json.loads((where / runfolders.METRICS).read_text())
    metrics.update(metric_changes)
    (where / runfolders.METRICS).write_text(json.dumps(metrics))
    return where


def test_rank_breaks_ties_by_validation_loss_then_run_id():
    rows = [{"run_id": "c", "status": "ok", "val_accuracy": 0.9, "val_loss": 0.5},
            {"run_id": "b", "status": "ok", "val_accuracy": 0.9, "val_loss": 0.4},
            {"run_id": "a", "status": "ok", "val_accuracy": 0.9, "val_loss": 0.4},
            {"run_id": "d", "status": "ok", "val_accuracy": 0.95, "val_loss": 0.9},
            {"run_id": "e", "status": "diverged", "val_accuracy": None, "val_loss": None}]
    assert [r["run_id"] for r in ranking.rank(rows, "val_accuracy")] == ["d", "a", "b", "c", "e"]


def test_hidden_and_staging_folders_are_never_candidates(one_run, tmp_path):
    """A half-saved staging folder a killed run left behind (even one that looks finished)."""
    copy_run(one_run, tmp_path / "visible", val_accuracy=0.5)
    copy_run(one_run, tmp_path / ".visible.tmp-x1y2", val_accuracy=1.0)
    copy_run(one_run, tmp_path / "sweep" / ".hidden", val_accuracy=1.0)
    run_dir, metrics, _ = ranking.find_best(tmp_path)
    assert run_dir == tmp_path / "visible" and metrics["val_accuracy"] == 0.5


def test_runs_on_other_splits_or_data_are_skipped_and_said(one_run, tmp_path):
    """A train run validated on 10 images must not beat runs validated on 50."""
    split = json.loads((one_run / runfolders.METRICS).read_text())["split"]
    copy_run(one_run, tmp_path / "a", val_accuracy=0.8)
    copy_run(one_run, tmp_path / "b", val_accuracy=0.7)
    copy_run(one_run, tmp_path / "small-val", val_accuracy=1.0, split={**split, "val_size": 10})
    copy_run(one_run, tmp_path / "other-data", val_accuracy=1.0, data_id="cifar10-other")
    run_dir, _, notes = ranking.find_best(tmp_path)
    assert run_dir == tmp_path / "a"
    assert any("skipped 2 runs measured on other data or other validation rows" in n for n in notes)
    run_dir, _, _ = ranking.find_best(tmp_path, data_id="cifar10-other")
    assert run_dir == tmp_path / "other-data"


def test_an_out_that_is_a_file_says_so(tmp_path):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(LinclfError, match=r"output folder .*/file is not a folder; choose another --out"):
        runfolders.reserve_out(tmp_path / "file")
    assert (tmp_path / "file").read_text() == "mine"


def test_two_runs_started_in_the_same_second_get_two_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(runfolders.time, "strftime", lambda pattern: "20261201-120000")
    first, second = runfolders.reserve_run_dir(tmp_path), runfolders.reserve_run_dir(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name == "train-20261201-120000-2"


def test_train_reserves_its_folder_before_training(data_dir, tmp_path, monkeypatch):
    """Two `linclf train` in the same second: each gets its own folder; nothing is replaced."""
    monkeypatch.setattr(runfolders.time, "strftime", lambda pattern: "20261201-120000")
    args = ["train", "--epochs", "1", "--batch-size", "16", "--val-size", "50", "--quiet", "--data-dir",
            str(data_dir), "--runs-dir", str(tmp_path)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-20261201-120000", "train-20261201-120000-2"]


def test_a_model_file_of_another_format_is_refused_in_one_line(one_run, tmp_path):
    """Only the current format is read: a file of another `format` (the 0.1 format's mean and std
    instead of a pipeline, say) is refused, naming the file."""
    model = modelfile.load_model(one_run)
    offset, scale = model.pipeline.scaler.fold()
    path = tmp_path / modelfile.WEIGHTS
    np.savez(path, W=model.W, b=model.b, mean=offset, std=np.float32(1 / scale), class_names=np.array(model.class_names),
             config=np.array(json.dumps(model.config)), metrics=np.array(json.dumps(model.metrics)),
             format=np.array("linclf-softmax-v1"))
    with pytest.raises(LinclfError, match=r"weights\.npz is not a linclf weights file; expected a weights\.npz") as error:
        modelfile.load_model(tmp_path)
    assert "\n" not in str(error.value)
    assert modelfile.input_shape(tmp_path) is None


def rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays.update(changes)
    for key, value in changes.items():
        if value is None:
            del arrays[key]
    np.savez(path, **arrays)


@pytest.mark.parametrize("changes, message", [
    ({"W": None}, r"no 'W' entry"),
    ({"config": np.array("{not json")}, r"'config' is not valid JSON"),
    ({"metrics": np.array("[1, 2]")}, r"'metrics' is not a JSON object"),
    ({"W": np.full((3072, 10), np.nan, np.float32)}, r"W or b holds NaN or infinite values"),
    ({"b": np.zeros(3, np.float32)}, r"do not fit"),
    ({"W": np.zeros((3072, 10), np.int64)}, r"do not fit"),
    ({"pipeline.0.std": np.float32(0.0)}, r"std that is not > 0"),
    ({"pipeline.0.mean": np.zeros(100, np.float32)}, r"the pipeline gives 100 inputs, W takes 3072"),
    ({"pipeline": np.array('{"steps": [{"step": "magic"}]}')}, r"damaged pipeline description"),
    ({"class_names": np.array(["a", "b"])}, r"class_names .* do not fit"),
])
def test_a_damaged_model_file_is_one_clear_line(one_run, tmp_path, changes, message):
    path = shutil.copytree(one_run, tmp_path / "run") / modelfile.WEIGHTS
    rewrite(path, **changes)
    with pytest.raises(LinclfError, match=message):
        modelfile.load_model(path)


def pipeline_spec(steps, input_shape=(32, 32, 3), input_kind="images"):
    """A pipeline description as a model file stores it; steps are (name, params, array names)."""
    return np.array(json.dumps({"steps": [{"step": name, "params": params, "arrays": list(arrays)}
                                          for name, params, arrays in steps],
                                "input_shape": list(input_shape), "input_kind": input_kind}))


PIXELS = ("pixels", {}, ("mean", "std"))
KMEANS = ("kmeans", {"k": 4, "patch_size": 6, "stride": 1, "patches": 1000, "iterations": 1, "seed": 0},
          ("patch_mean", "whiten", "centroids"))
KMEANS_ARRAYS = {"pipeline.0.patch_mean": np.zeros(108, np.float32), "pipeline.0.whiten": np.eye(108, dtype=np.float32),
                 "pipeline.0.centroids": np.ones((4, 108), np.float32)}


def stored_config(one_run, **changes):
    """The run's stored config (JSON) with some keys changed; a value None removes the key."""
    with np.load(one_run / modelfile.WEIGHTS) as archive:
        config = json.loads(str(archive["config"]))
    config.update(changes)
    return np.array(json.dumps({k: v for k, v in config.items() if v is not None}))


@pytest.mark.parametrize("changes, message", [
    ({"pipeline.0.mean": np.zeros(100, np.float32), "W": np.zeros((100, 10), np.float32)},
     r"its inputs \(32x32x3\) hold 3072 values, its pixels step standardizes 100"),
    ({"pipeline": pipeline_spec([PIXELS], (8,), "features")},
     r"its inputs \(8\) hold 8 values, its pixels step standardizes 3072"),
    ({"pipeline": pipeline_spec([KMEANS, ("standardize", {}, ("mean", "std"))]), **KMEANS_ARRAYS,
      "pipeline.1.mean": np.zeros(17, np.float32), "pipeline.1.std": np.ones(17, np.float32),
      "W": np.zeros((17, 10), np.float32)},
     r"its kmeans step gives 16 features, its standardize step standardizes 17"),
    ({"pipeline": pipeline_spec([KMEANS, ("standardize", {}, ("mean", "std"))], (8,), "features"), **KMEANS_ARRAYS,
      "pipeline.1.mean": np.zeros(16, np.float32), "pipeline.1.std": np.ones(16, np.float32),
      "W": np.zeros((16, 10), np.float32)},
     r"its kmeans step takes 32x32x3 images, its inputs are 8 features"),
    ({"pipeline": pipeline_spec([PIXELS, PIXELS])}, r"damaged pipeline description"),
    ({"pipeline": pipeline_spec([PIXELS], input_kind="banana")}, r"input_kind must be images or features"),
    ({"config": "val_size"}, r"is damaged: its config lacks val_size; train the model again"),
    ({"config": {"val_size": "abc"}}, r"config: val_size must be an integer in \[0, 10,000,000\], got 'abc'"),
    ({"config": {"val_size": 1.5}}, r"config: val_size must be an integer"),
    ({"config": {"train_size": [1]}}, r"config: train_size must be an integer"),
    ({"config": {"val_split": "sideways"}}, r"config: val_split must be one of tail, random"),
])
def test_a_model_file_whose_parts_do_not_fit_together_is_one_clear_line(one_run, tmp_path, changes, message):
    path = shutil.copytree(one_run, tmp_path / "run") / modelfile.WEIGHTS
    config = changes.pop("config", None)
    if config is not None:
        changes["config"] = stored_config(one_run, **({config: None} if isinstance(config, str) else config))
    rewrite(path, **changes)
    with pytest.raises(LinclfError, match=message):
        modelfile.load_model(path)


@pytest.mark.parametrize("command", [["eval", "--split", "val"], ["eval", "--split", "train"], ["eval"],
                                     ["predict"]])
@pytest.mark.parametrize("changes", [
    {"pipeline.0.mean": np.zeros(100, np.float32), "W": np.zeros((100, 10), np.float32)},
    {"config": "val_size"},
    {"config": {"val_size": "many"}},
])
def test_eval_and_predict_of_a_damaged_model_file_say_one_line(one_run, data_dir, tmp_path, command, changes):
    path = shutil.copytree(one_run, tmp_path / "run") / modelfile.WEIGHTS
    changes = dict(changes)
    config = changes.pop("config", None)
    if config is not None:
        changes["config"] = stored_config(one_run, **({config: None} if isinstance(config, str) else config))
    rewrite(path, **changes)
    image = tmp_path / "one.png"
    from PIL import Image
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    args = [command[0], path, *command[1:], *([image] if command[0] == "predict" else ["--no-plots"])]
    result = CliRunner().invoke(cli, [*map(str, args), "--data-dir", str(data_dir)])
    assert result.exit_code == 1, result.output
    line, = result.output.strip().splitlines()
    assert line.startswith(f"Error: {path} is damaged: ")


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", r"expected a JSON object, got list"),
    ('{"status": "ok", "val_accuracy": "high"}', r"val_accuracy must be a finite number or null"),
    ('{"status": "great"}', r"status must be one of ok, diverged"),
    ("{oops", r"not valid JSON"),
])
def test_a_damaged_metrics_file_is_one_clear_line(tmp_path, text, message):
    (tmp_path / runfolders.METRICS).write_text(text)
    with pytest.raises(LinclfError, match=message):
        runfolders.read_metrics(tmp_path)


@pytest.mark.parametrize("key, value", [("val_accuracy", 1.5), ("val_accuracy", -0.2), ("train_accuracy", 2),
                                        ("val_loss", -1.0), ("final_loss", -0.5), ("seconds", -3)])
def test_a_metric_out_of_its_range_is_skipped_by_best_and_said(one_run, tmp_path, key, value):
    copy_run(one_run, tmp_path / "good", val_accuracy=0.5)
    copy_run(one_run, tmp_path / "bad", **{key: value})
    run_dir, _, notes = ranking.find_best(tmp_path)
    assert run_dir == tmp_path / "good"
    assert any("skipped a damaged run" in note and key in note for note in notes), notes


def test_a_damaged_metrics_file_is_skipped_by_best_and_said(one_run, tmp_path):
    copy_run(one_run, tmp_path / "good")
    (copy_run(one_run, tmp_path / "bad") / runfolders.METRICS).write_text("[]")
    run_dir, _, notes = ranking.find_best(tmp_path)
    assert run_dir == tmp_path / "good" and any("skipped a damaged run" in n for n in notes)


def test_folders_left_by_killed_train_runs_are_cleaned_at_the_next_start(data_dir, tmp_path):
    """A kill -9 leaves a reserved folder without metrics.json; a live run's folder is left alone."""
    import os

    from linclf.util import locks

    killed = tmp_path / "train-20261201-000000"
    killed.mkdir()
    (killed / "config.yaml").write_text("lr: 1\n")
    (killed / runfolders.TRAINING_LOCK).touch()
    live = runfolders.reserve_run_dir(tmp_path)
    user = tmp_path / "train-mine"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    old = tmp_path / "train-20261201-000001"
    old.mkdir()
    os.utime(old, (0, 0))
    with locks.hold(live / runfolders.TRAINING_LOCK, "testing", wait=False):
        args = ["train", "--epochs", "1", "--batch-size", "16", "--val-size", "50", "--quiet", "--data-dir",
                str(data_dir), "--runs-dir", str(tmp_path)]
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"removed {killed}, left unfinished by a killed run" in result.output
    assert not killed.exists() and not old.exists() and live.is_dir() and user.is_dir()
    finished = [p for p in tmp_path.iterdir() if (p / runfolders.METRICS).is_file()]
    assert len(finished) == 1 and not (finished[0] / runfolders.TRAINING_LOCK).exists()


def test_train_size_does_not_split_the_comparison(one_run, tmp_path):
    """Runs trained on fewer rows validate on the same rows: the best metric wins, not the larger group."""
    split = json.loads((one_run / runfolders.METRICS).read_text())["split"]
    copy_run(one_run, tmp_path / "train-full", val_accuracy=0.9)
    for index, value in enumerate((0.5, 0.6, 0.7)):
        copy_run(one_run, tmp_path / "quick" / f"run{index}", val_accuracy=value, split={**split, "train_size": 20})
    run_dir, _, notes = ranking.find_best(tmp_path)
    assert run_dir == tmp_path / "train-full"
    assert not any("skipped" in note for note in notes)


def test_among_incomparable_runs_the_larger_validation_set_is_taken_not_the_larger_group(one_run, tmp_path):
    split = json.loads((one_run / runfolders.METRICS).read_text())["split"]
    copy_run(one_run, tmp_path / "big-val", val_accuracy=0.6, split={**split, "val_size": 100})
    for index in range(3):
        copy_run(one_run, tmp_path / f"small-val{index}", val_accuracy=0.9, split={**split, "val_size": 10})
    run_dir, _, notes = ranking.find_best(tmp_path)
    assert run_dir == tmp_path / "big-val"
    assert any("skipped 3 runs" in note for note in notes)


def best_of(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
def test_eval_predict_and_visualize_best_choose_by_merit_over_train_and_sweep(hard_data_dir, tmp_path):
    """`linclf train` then a quick sweep on fewer training rows: the best validation accuracy over
    all of them wins, and predict --best and visualize --best take the same run."""
    runs_dir = tmp_path / "runs"
    common = ["--data-dir", hard_data_dir, "--runs-dir", runs_dir]
    best_of("train", "--epochs", "6", "--batch-size", "16", "--val-size", "50", "--lr", "3e-3", "--quiet", "--json",
            *common)
    grid = tmp_path / "quick.yaml"
    grid.write_text("name: quick\nbase: {epochs: 2, batch_size: 16, val_size: 50, train_size: 40}\n"
                    "grid: {lr: [1.0e-4, 3.0e-4], reg: [1.0e-3, 1.0e-1]}\n")
    best_of("sweep", grid, "--json", "--quiet", *common)
    finished = [json.loads(p.read_text()) | {"run_id": p.parent.name, "dir": p.parent}
                for p in runs_dir.rglob(runfolders.METRICS)]
    assert len(finished) == 5 and len({m["val_accuracy"] for m in finished}) > 1  # results spread
    expected = ranking.rank(finished, "val_accuracy")[0]["dir"]
    assert expected.name.startswith("train-")  # the full-data run is the best; the sweep has more runs
    report = best_of("eval", "--best", "--json", "--no-plots", *common)
    assert report["run_dir"] == str(expected)
    image = tmp_path / "one.png"
    from PIL import Image
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    predicted = best_of("predict", "--best", image, "--json", "--quiet", *common)
    assert predicted["model"] == str(expected / modelfile.WEIGHTS)
    drawn = CliRunner().invoke(cli, ["visualize", "--best", *map(str, common)])
    assert drawn.exit_code == 0 and drawn.stdout.strip() == str(expected / "templates.png")


def test_predict_best_on_rows_without_labels_never_takes_an_image_model(data_dir, tmp_path):
    """A CIFAR model with a better validation accuracy must not win for rows of features."""
    runs_dir = tmp_path / "runs"
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    X = (rng.normal(size=(300, 8)) + labels[:, None]).astype(np.float32)
    emb = tmp_path / "emb.npz"
    np.savez(emb, X_train=X[:200], y_train=labels[:200], X_test=X[200:], y_test=labels[200:])
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, X_test=X[200:210])
    best_of("train", "--data", emb, "--epochs", "2", "--val-size", "50", "--lr", "1e-4", "--quiet", "--json",
            "--runs-dir", runs_dir)
    image_run = best_of("train", "--epochs", "3", "--batch-size", "16", "--val-size", "50", "--quiet", "--json",
                        "--data-dir", data_dir, "--runs-dir", runs_dir)["run_dir"]
    copy_run(Path(image_run), runs_dir / "image-best", val_accuracy=1.0)
    predicted = best_of("predict", "--best", "--data", inputs, "--json", "--quiet", "--runs-dir", runs_dir)
    assert len(predicted["predictions"]) == 10
    assert modelfile.load_model(predicted["model"]).pipeline.input_kind == "features"


def test_runs_without_validation_rows_never_win_best_and_have_no_val_split(data_dir, tmp_path):
    runs_dir = tmp_path / "runs"
    args = ["--epochs", "1", "--batch-size", "16", "--quiet", "--data-dir", str(data_dir), "--runs-dir", str(runs_dir)]
    trained = best_of("train", "--val-size", "0", "--json", *args)
    assert trained["val_accuracy"] is None
    alone = CliRunner().invoke(cli, ["eval", "--best", "--no-plots", "--data-dir", str(data_dir), "--runs-dir",
                                     str(runs_dir)])
    assert alone.exit_code == 1 and "skipped 1 runs without val_accuracy (trained with val_size 0)" in alone.output
    val = CliRunner().invoke(cli, ["eval", trained["run_dir"], "--split", "val", "--no-plots", "--data-dir",
                                   str(data_dir)])
    assert val.exit_code == 1 and "trained with val_size 0: it has no validation rows" in val.output
    measured = best_of("train", "--val-size", "50", "--json", *args)
    report = best_of("eval", "--best", "--json", "--no-plots", "--data-dir", data_dir, "--runs-dir", runs_dir)
    assert report["run_dir"] == measured["run_dir"]


def test_an_out_folder_a_killed_train_left_can_be_trained_into_again(data_dir, tmp_path):
    """kill -9 during `train --out t1` leaves t1/ with its lock file only; the same command works
    again. A folder holding a user's own config.yaml is still refused."""
    left = tmp_path / "t1"
    left.mkdir()
    (left / runfolders.TRAINING_LOCK).touch()
    args = ["--epochs", "1", "--batch-size", "16", "--val-size", "50", "--quiet", "--data-dir", str(data_dir)]
    result = CliRunner().invoke(cli, ["train", *args, "--out", str(left)])
    assert result.exit_code == 0, result.output
    assert (left / runfolders.METRICS).is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("lr: 1\n")
    refused = CliRunner().invoke(cli, ["train", *args, "--out", str(mine)])
    assert refused.exit_code == 1 and "already exists and is not empty" in refused.output
    assert (mine / "config.yaml").read_text() == "lr: 1\n"


def test_best_refuses_a_run_whose_metrics_json_was_changed(one_run, tmp_path):
    """A metrics.json edited to win: the model file's own metrics disagree, and --best says so."""
    from linclf import app

    copy_run(one_run, tmp_path / "edited", val_accuracy=0.99)
    with pytest.raises(LinclfError, match=r"edited: its metrics.json says val_accuracy 0.99 but its weights.npz says"):
        app.choose_model(best=True, runs_dir=tmp_path)


@pytest.mark.parametrize("name", [runfolders.METRICS, modelfile.WEIGHTS])
def test_a_fifo_in_a_run_folder_is_skipped_and_named_never_waited_on(one_run, data_dir, tmp_path, fifo, name):
    copy_run(one_run, tmp_path / "good")
    copy_run(one_run, tmp_path / "piped", val_accuracy=0.99)
    (tmp_path / "piped" / name).unlink()
    fifo(tmp_path / "piped" / name)
    listed = CliRunner().invoke(cli, ["runs", "--runs-dir", str(tmp_path)])
    best = CliRunner().invoke(cli, ["eval", "--best", "--runs-dir", str(tmp_path), "--data-dir", str(data_dir),
                                    "--no-plots", "--json"])
    for result in (listed, best):
        assert result.exit_code == 0, result.output
    note = rf"note: skipped a damaged run: cannot read .*piped/{name}: it is a special file"
    assert re.search(note, best.output) and json.loads(best.stdout.splitlines()[-1])["run_dir"] == str(tmp_path / "good")
    if name == runfolders.METRICS:
        assert re.search(note, listed.output)


def test_a_fifo_given_as_weights_is_named_not_called_missing(tmp_path, fifo):
    from linclf import load

    fifo(tmp_path / "weights.npz")
    with pytest.raises(ValueError, match=r"cannot read .*weights.npz: it is a special file"):
        load(tmp_path / "weights.npz")
    with pytest.raises(ValueError, match=r"cannot read .*weights.npz: it is a special file"):
        load(tmp_path)


def remove_deep(top):
    """Remove a folder nested thousands deep, innermost first (shutil.rmtree recurses)."""
    folders = [top]
    while (next_level := folders[-1] / "d").is_dir():
        folders.append(next_level)
    for folder in reversed(folders):
        for entry in folder.iterdir():
            shutil.rmtree(entry) if entry.name != "d" else None
        folder.rmdir()


@pytest.fixture
def deep_runs(tmp_path):
    yield tmp_path / "runs"
    remove_deep(tmp_path / "runs" / "b")


@pytest.mark.slow
def test_runs_dirs_nested_thousands_deep_are_walked_without_recursion(one_run, data_dir, tmp_path, deep_runs):
    copy_run(one_run, tmp_path / "runs" / "a")
    deep = tmp_path / "runs" / "b"
    deep.mkdir()
    for _ in range(1500):  # one level at a time: pathlib's mkdir(parents=True) itself recurses
        deep = deep / "d"
        deep.mkdir()
    copy_run(one_run, deep / "r", val_accuracy=0.01)
    listed = CliRunner().invoke(cli, ["runs", "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert listed.exit_code == 0, listed.output[-500:]
    assert [row["run_id"] for row in json.loads(listed.stdout)["runs"]] == ["a", "b/" + "d/" * 1500 + "r"]
    best = CliRunner().invoke(cli, ["eval", "--best", "--runs-dir", str(tmp_path / "runs"), "--data-dir",
                                    str(data_dir), "--no-plots", "--json"])
    assert best.exit_code == 0 and json.loads(best.stdout)["run_dir"] == str(tmp_path / "runs" / "a"), best.output[-500:]


def sweep_folder(one_run, folder, **edits):
    """A sweep folder (sweep.json) of two copies of one_run: 'a' as trained, 'b' with `edits` to its metrics."""
    copy_run(one_run, folder / "a")
    copy_run(one_run, folder / "b", **edits)
    ranking.write_sweep_record(folder, {"name": folder.name, "metric": "val_accuracy", "runs": ["a", "b"]})
    return folder


def test_load_checks_the_best_run_as_eval_best_does(one_run, tmp_path):
    from linclf import load

    folder = sweep_folder(one_run, tmp_path / "runs" / "g", val_loss=0.0)  # ties on accuracy, wins on the loss
    message = r"g/b: its metrics.json says val_loss 0.0 but its weights.npz says"
    with pytest.raises(ValueError, match=message):
        load(folder)
    with pytest.raises(ValueError, match=message):
        load(tmp_path / "runs")
    refused = CliRunner().invoke(cli, ["eval", "--best", "--sweep", "g", "--runs-dir", str(tmp_path / "runs")])
    assert refused.exit_code == 1 and re.search(message, refused.output)



def test_load_takes_a_sweep_folder_of_any_name(one_run, tmp_path):
    from linclf import load

    folder = sweep_folder(one_run, tmp_path / "my sweep")
    assert load(folder).model_.path == folder / "a" / modelfile.WEIGHTS


def test_load_of_a_runs_dir_never_compares_runs_on_other_data(one_run, tmp_path):
    from linclf import load

    copy_run(one_run, tmp_path / "runs" / "cifar")
    copy_run(one_run, tmp_path / "runs" / "probe", data_id="arrays-0123456789abcdef")
    with pytest.warns(UserWarning, match=r"skipped 1 runs measured on other data or other validation rows"):
        load(tmp_path / "runs")


@pytest.mark.slow
def test_best_keeps_no_more_of_each_run_than_linclf_runs(one_run, tmp_path):
    """eval --best over many runs: each metrics.json's per-step history is read and dropped."""
    import tracemalloc

    for index in range(20):
        copy_run(one_run, tmp_path / f"r{index:02d}", history={"step_loss": [0.5 + index * 1e-6] * 20_000})

    def peak(function):
        tracemalloc.start()
        try:
            function()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    listed, best = peak(lambda: ranking.list_runs(tmp_path)), peak(lambda: ranking.find_best(tmp_path))
    assert best < 2 * listed, (best, listed)
