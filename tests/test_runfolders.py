"""experiments/runfolders.py: run ids, reserved run folders (train's and --out's), a run's files."""
import pytest
from click.testing import CliRunner

from linclf.cli import cli
from linclf.experiments import grids, runfolders
from linclf.util.errors import LinclfError
from conftest import BASE, grid_spec


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


IDENTITY = {"data_id": "cifar10-test-200-50", "kind": "images", "input_shape": [32, 32, 3]}


def test_run_ids_are_stable_and_distinct():
    parsed = grids.parse(grid_spec())
    ids = [runfolders.run_id(cfg, IDENTITY, parsed.axes) for cfg in parsed.configs]
    assert ids == [runfolders.run_id(dict(cfg), dict(IDENTITY), parsed.axes) for cfg in grids.parse(grid_spec()).configs]
    assert len(set(ids)) == 4 and ids[0].startswith("lr=0.001_reg=0.0001_")
    other_base = grids.parse(grid_spec(base={**BASE, "epochs": 3}))
    assert runfolders.run_id(other_base.configs[0], IDENTITY, other_base.axes) != ids[0]
    other_data = {**IDENTITY, "data_id": "cifar10-other-200-50"}
    assert runfolders.run_id(parsed.configs[0], other_data, parsed.axes) != ids[0]


def test_every_key_of_the_resolved_config_names_the_run():
    cfg = dict(grids.parse(grid_spec()).configs[0])
    for change in ({"val_split": "random"}, {"precondition": 8}, {"kmeans_alpha": 0.5}):
        assert runfolders.run_id({**cfg, **change}, IDENTITY) != runfolders.run_id(cfg, IDENTITY)
