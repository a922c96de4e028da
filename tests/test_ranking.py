"""experiments/ranking.py, the one ranking that decides "best": its order, the runs it skips and
says, and --best (eval, predict, visualize, load) choosing by it."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from linclf.experiments import grids
from linclf.experiments import modelfile
from linclf.experiments import ranking
from linclf.experiments import runfolders
from linclf.experiments import sweep
from linclf.cli import cli
from linclf.util.errors import LinclfError
from conftest import BASE, copy_run, grid_spec, read_results, ref


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


def test_eval_best_without_runs(tmp_path):
    result = CliRunner().invoke(cli, ["eval", "--best", "--runs-dir", str(tmp_path / "none")])
    assert result.exit_code == 1 and "run 'linclf train' or 'linclf sweep' first" in result.output


def cli_sweep(grid, data_dir, runs_dir, *extra):
    grid_file = runs_dir.parent / f"{grid['name']}.yaml"
    grid_file.write_text(yaml.safe_dump(grid))
    result = CliRunner().invoke(cli, ["sweep", str(grid_file), "--data-dir", str(data_dir), "--runs-dir",
                                      str(runs_dir), "--quiet", "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["results"]


def eval_best(data_dir, runs_dir, *extra):
    result = CliRunner().invoke(cli, ["eval", "--best", "--data-dir", str(data_dir), "--runs-dir", str(runs_dir),
                                      "--json", "--no-plots", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.splitlines()[-1])


HARD_BASE = {"epochs": 3, "batch_size": 32, "val_size": 100}


@pytest.mark.slow
def test_eval_best_sweep_sees_only_the_current_grid(hard_data_dir, tmp_path):
    """Edit a grid and sweep again: the old runs stay in the folder, but --best --sweep evaluates
    the run the new sweep marked best, not a better one the grid no longer holds."""
    runs_dir = tmp_path / "runs"
    first = cli_sweep({"name": "g", "base": HARD_BASE, "grid": {"lr": [3e-3, 1e-6], "reg": [1e-3]}},
                      hard_data_dir, runs_dir)
    assert first[0]["lr"] == 3e-3 and first[0]["val_accuracy"] > first[1]["val_accuracy"]
    second = cli_sweep({"name": "g", "base": HARD_BASE, "grid": {"lr": [1e-6, 2e-6], "reg": [1e-3]}},
                       hard_data_dir, runs_dir)
    report = eval_best(hard_data_dir, runs_dir, "--sweep", "g")
    assert report["run_dir"].endswith(second[0]["run_id"])
    assert report["run_dir"] == eval_best(hard_data_dir, runs_dir)["run_dir"]  # stale runs skipped everywhere


@pytest.mark.slow
def test_sweep_table_and_eval_best_agree_on_ties(data_dir, tmp_path):
    """On the easy fixture every run reaches accuracy 1.0: the tie-break decides, the same everywhere."""
    runs_dir = tmp_path / "runs"
    rows = cli_sweep({"name": "t", "base": dict(BASE), "grid": {"lr": [3e-3, 1e-3, 2e-3], "reg": [1e-4]}},
                     data_dir, runs_dir)
    assert len({r["val_accuracy"] for r in rows}) == 1  # a real tie
    assert [r["run_id"] for r in read_results(runs_dir / "t" / "results.csv")] == [r["run_id"] for r in rows]
    assert eval_best(data_dir, runs_dir, "--sweep", "t")["run_dir"].endswith(rows[0]["run_id"])
    assert eval_best(data_dir, runs_dir)["run_dir"].endswith(rows[0]["run_id"])


@pytest.mark.slow
def test_eval_best_ranks_by_the_sweeps_metric(hard_data_dir, tmp_path):
    runs_dir = tmp_path / "runs"
    rows = cli_sweep({"name": "m", "metric": "train_accuracy", "base": HARD_BASE,
                      "grid": {"lr": [3e-3, 1e-5], "reg": [1e-4, 3e-1]}}, hard_data_dir, runs_dir)
    by_val = max(rows, key=lambda r: r["val_accuracy"])
    by_train = ranking.rank(rows, "train_accuracy")[0]
    assert rows[0] == by_train
    report = eval_best(hard_data_dir, runs_dir, "--sweep", "m")
    assert report["run_dir"].endswith(by_train["run_id"])
    if by_val["run_id"] != by_train["run_id"]:
        assert not report["run_dir"].endswith(by_val["run_id"])


@pytest.mark.parametrize("record", [
    {"name": "g", "metric": "val_accuracy", "runs": ["../../elsewhere"]},
    {"name": "g", "metric": "val_accuracy", "runs": ["/tmp/abs"]},
    {"name": "g", "metric": "bogus", "runs": []},
])
@pytest.mark.slow
def test_a_damaged_sweep_record_is_one_clear_line(data_dir, tmp_path, record):
    sweep.run_sweep(grids.parse(grid_spec()), ref(data_dir), tmp_path, log=lambda m: None)
    (tmp_path / "g" / "sweep.json").write_text(json.dumps(record))
    with pytest.raises(LinclfError, match=r"sweep.json: damaged .*run the sweep again"):
        ranking.find_best(tmp_path, "g")


def test_eval_best_when_every_run_diverged_says_so(data_dir, tmp_path):
    sweep.run_sweep(grids.parse(grid_spec(grid={"lr": [1e3]})), ref(data_dir), tmp_path, log=lambda m: None)
    with pytest.raises(LinclfError, match=r"every run under .* diverged \(1\); try a smaller lr"):
        ranking.find_best(tmp_path, "g")
    run_dir = next(p for p in (tmp_path / "g").iterdir() if (p / "metrics.json").is_file())
    with pytest.raises(LinclfError, match=r"this run diverged .* it has no weights"):
        modelfile.load_model(run_dir)
