import errno
import json
import os
import re
import signal

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from linclf import config
from linclf.data import cifar10
from linclf.experiments import jobs
from linclf.experiments import checkpoints
from linclf.experiments import modelfile
from linclf.experiments import ranking
from linclf.experiments import runfolders
from linclf.data import sources
from linclf.experiments import grids
from linclf.experiments import reports
from linclf.experiments import sweep
from linclf.training import kernels
from linclf.training import loop
from linclf.cli import cli
from linclf.util.errors import LinclfError
from conftest import BASE, batch_files, grid_spec, read_results, ref, write_batches


def test_expansion_is_the_cartesian_product_over_defaults():
    parsed = grids.parse(grid_spec(grid={"lr": ["1e-3", 3e-3], "reg": {"min": "1e-4", "max": 1e-2, "num": 3,
                                                                      "scale": "log"}, "momentum": [0.0, 0.9]}))
    assert parsed.axes == {"lr": [1e-3, 3e-3], "reg": [1e-4, 1e-3, 1e-2], "momentum": [0.0, 0.9]}
    assert len(parsed.configs) == 12
    assert all(cfg["epochs"] == 2 and cfg["init_scale"] == config.SOLVER_DEFAULTS["sgd"]["init_scale"] for cfg in parsed.configs)
    assert {(c["lr"], c["reg"], c["momentum"]) for c in parsed.configs} == {
        (lr, reg, m) for lr in (1e-3, 3e-3) for reg in (1e-4, 1e-3, 1e-2) for m in (0.0, 0.9)}


def test_linear_ranges_and_integer_axes():
    parsed = grids.parse(grid_spec(grid={"epochs": {"min": 1, "max": 4, "num": 4}}, base={}))
    assert parsed.axes["epochs"] == [1, 2, 3, 4] and all(isinstance(v, int) for v in parsed.axes["epochs"])


@pytest.mark.parametrize("changes, message", [
    ({"grd": {}}, r"unknown key 'grd' \(did you mean 'grid'\?\)"),
    ({"grid": {"lrr": [1]}}, r"grid: unknown key 'lrr' \(did you mean 'lr'\?\)"),
    ({"base": {"epoch": 3}}, r"base: unknown key 'epoch' \(did you mean 'epochs'\?\)"),
    ({"grid": {"lr": []}}, r"grid.lr is empty"),
    ({"grid": {}}, r"grid must map at least one train key"),
    ({"grid": {"lr": {"min": 1e-2, "max": 1e-3, "num": 3}}}, r"grid.lr: min \(0.01\) must not exceed max \(0.001\)"),
    ({"grid": {"reg": {"min": 0, "max": 1, "num": 3, "scale": "log"}}}, r"a log range needs min > 0"),
    ({"grid": {"lr": {"min": 1e-3, "max": 1e-2}}}, r"a range needs min, max and num; missing num"),
    ({"grid": {"lr": {"min": 1e-3, "max": 1e-2, "num": 2.5}}}, r"grid.lr.num must be an integer"),
    ({"grid": {"lr": {"min": 1e-3, "max": 1e-2, "num": 2, "scale": "cubic"}}}, r"scale must be log or linear"),
    ({"grid": {"lr": {"min": 1e-3, "max": 1e-2, "nmu": 2}}}, r"unknown key 'nmu' \(did you mean 'num'\?\)"),
    ({"grid": {"lr": [1e-3, -1]}}, r"grid.lr: lr must be a number in \(0, 1000\], got -1"),
    ({"grid": {"lr": 0.1}}, r"grid.lr must be a list of values or"),
    ({"grid": {"lr": [0.1, "1e-1"]}}, r"grid.lr repeats a value"),
    ({"metric": "accuracy"}, r"metric must be one of val_accuracy, train_accuracy, got 'accuracy'"),
    ({"name": "../up"}, r"name must be a folder name"),
    ({"base": {"lr": 0.1}}, r"lr is in both base and grid"),
    ({"group_size": 0}, r"group_size must be an integer in \[1, 1024\], got 0"),
    ({"base": {}, "grid": {"val_size": [2, 50]}}, r"val_size cannot be a grid axis: runs validated on other rows are not comparable"),
    ({"grid": {"val_split": ["tail", "random"]}}, r"val_split cannot be a grid axis"),
])
def test_bad_grids_are_rejected_clearly(changes, message):
    with pytest.raises(LinclfError, match=message):
        grids.parse(grid_spec(**changes), source="grid.yaml")


def test_groups_share_data_keys_and_respect_the_size():
    parsed = grids.parse(grid_spec(grid={"lr": [1e-3, 2e-3, 3e-3], "batch_size": [16, 32]}, group_size=2, base={}))
    batches = list(grids.groups(parsed.configs, parsed.group_size))
    assert sorted(len(b) for b in batches) == [1, 1, 2, 2]
    for members in batches:
        assert len({m["batch_size"] for m in members}) == 1
    mixed = grids.parse(grid_spec(grid={"lr": [1e-3, 2e-3], "train_size": [0, 100], "seed": [0, 1]}, base={}))
    for members in grids.groups(mixed.configs, 8):  # one prepared split (jobs.Preparer's key) serves a group
        assert len(members) == 2 and len({tuple(m[k] for k in jobs.PREPARE_KEYS) for m in members}) == 1


class CountingTrainer:
    """Wraps loop.train_group, counting the configurations trained; optionally fails on call N."""

    def __init__(self, monkeypatch, interrupt_on=None):
        self.trained, self.calls, self.interrupt_on = [], 0, interrupt_on
        self.real = loop.train_group
        monkeypatch.setattr(loop, "train_group", self)

    def __call__(self, prepared, configs, *args, **kwargs):
        self.calls += 1
        if self.calls == self.interrupt_on:
            raise KeyboardInterrupt
        self.trained += configs
        return self.real(prepared, configs, *args, **kwargs)


@pytest.mark.slow
def test_sweep_records_every_run_and_resumes(data_dir, tmp_path, monkeypatch):
    parsed = grids.parse(grid_spec(group_size=2))
    counter = CountingTrainer(monkeypatch, interrupt_on=2)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(parsed, ref(data_dir), tmp_path, log=lambda m: None)
    folder = tmp_path / "g"
    assert len(read_results(folder / "results.csv")) == 2  # the first group was kept
    finished = sorted(p.name for p in folder.iterdir() if (p / "metrics.json").is_file())
    assert len(finished) == 2 and not [p for p in folder.iterdir() if p.name.startswith(".") and p.name != sweep.LOCK]

    counter = CountingTrainer(monkeypatch)
    rows = sweep.run_sweep(parsed, ref(data_dir), tmp_path, log=lambda m: None)
    assert len(counter.trained) == 2  # only the missing runs
    assert len(rows) == 4 and rows == ranking.rank(rows, "val_accuracy")
    table = read_results(folder / "results.csv")
    assert [r["run_id"] for r in table] == [r["run_id"] for r in rows]  # best first
    record = json.loads((folder / "sweep.json").read_text())
    assert record["runs"] == [runfolders.run_id(c, jobs.identify(ref(data_dir)), parsed.axes) for c in parsed.configs]
    assert set(table[0]) == set(config.DEFAULTS) | set(reports.RESULT_COLUMNS)
    assert (folder / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    for row in table:
        run = folder / row["run_id"]
        assert yaml.safe_load((run / "config.yaml").read_text())["lr"] == float(row["lr"])
        assert json.loads((run / "metrics.json").read_text())["val_accuracy"] == pytest.approx(float(row["val_accuracy"]))

    counter = CountingTrainer(monkeypatch)
    sweep.run_sweep(parsed, ref(data_dir), tmp_path, log=lambda m: None)
    assert counter.trained == []  # everything finished: nothing redone

    bigger = grids.parse(grid_spec(grid={"lr": [1e-3, 3e-3, 5e-3], "reg": [1e-4, 1e-2]}))
    sweep.run_sweep(bigger, ref(data_dir), tmp_path, log=lambda m: None)
    assert sorted(c["lr"] for c in counter.trained) == [5e-3, 5e-3]  # a changed grid adds only its new runs

    sweep.run_sweep(parsed, ref(data_dir), tmp_path, fresh=True, log=lambda m: None)
    assert len(counter.trained) == 2 + 4
    assert len([p for p in folder.iterdir() if p.is_dir()]) == 4 and (folder / sweep.LOCK).is_file()


@pytest.mark.slow
def test_sweep_results_equal_single_runs(data_dir, tmp_path):
    parsed = grids.parse(grid_spec())
    sweep.run_sweep(parsed, ref(data_dir), tmp_path, log=lambda m: None)
    cfg = parsed.configs[3]
    alone = loop.train(jobs.prepare(sources.cifar10(data_dir), cfg)[0], cfg)
    saved = modelfile.load_model(tmp_path / "g" / runfolders.run_id(cfg, jobs.identify(ref(data_dir)), parsed.axes))
    np.testing.assert_allclose(saved.W, alone.W, rtol=1e-4, atol=1e-6)


def test_diverged_runs_are_recorded_and_never_best(data_dir, tmp_path):
    parsed = grids.parse(grid_spec(grid={"lr": [1e-3, 1e3]}))
    rows = sweep.run_sweep(parsed, ref(data_dir), tmp_path, log=lambda m: None)
    assert [r["status"] for r in rows] == ["ok", "diverged"]
    assert rows[1]["val_accuracy"] is None
    best_dir, best, _ = ranking.find_best(tmp_path, "g")
    assert best["status"] == "ok" and best_dir.name == rows[0]["run_id"]
    table = reports.format_table(rows, parsed).splitlines()
    assert table[1].startswith("*") and " ok " in table[1]
    assert not table[2].startswith("*") and " diverged " in table[2]


@pytest.mark.slow
def test_eval_best_over_sweeps_and_train_runs(data_dir, tmp_path):
    runner = CliRunner()
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(grid_spec()))
    result = runner.invoke(cli, ["sweep", str(grid_file), "--data-dir", str(data_dir), "--runs-dir",
                                 str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["lr", "reg", "train_acc"] and lines[1].startswith("*")
    rows = list(read_results(tmp_path / "runs" / "g" / "results.csv"))
    best_row = rows[0]  # results.csv is best first
    report = json.loads(runner.invoke(cli, ["eval", "--best", "--runs-dir", str(tmp_path / "runs"), "--data-dir",
                                            str(data_dir), "--json"]).output.splitlines()[-1])
    assert report["run_dir"].endswith(best_row["run_id"])
    assert report["val_accuracy"] == pytest.approx(float(best_row["val_accuracy"]))
    shown = runner.invoke(cli, ["eval", "--best", "--sweep", "g", "--runs-dir", str(tmp_path / "runs"),
                                "--data-dir", str(data_dir)])
    assert shown.exit_code == 0 and f"best run: {tmp_path / 'runs' / 'g' / best_row['run_id']}" in shown.output
    picture = runner.invoke(cli, ["visualize", "--best", "--runs-dir", str(tmp_path / "runs")])
    assert picture.exit_code == 0 and (tmp_path / "runs" / "g" / best_row["run_id"] / "templates.png").is_file()
    as_json = json.loads(runner.invoke(cli, ["sweep", str(grid_file), "--data-dir", str(data_dir), "--runs-dir",
                                             str(tmp_path / "runs"), "--json"]).output)
    assert len(as_json["results"]) == 4 and as_json["results"][0]["run_id"] == best_row["run_id"]


@pytest.mark.parametrize("text, message", [
    ("grid: {lr: []}\n", "grid.lr is empty"),
    ("grid: {lr: [1e-3]}\nbase: {epochss: 2}\n", "did you mean 'epochs'?"),
    ("grid: [1, 2\n", "bad YAML"),
])
def test_cli_sweep_errors_are_one_line(tmp_path, text, message):
    path = tmp_path / "g.yaml"
    path.write_text(text)
    result = CliRunner().invoke(cli, ["sweep", str(path), "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 1 and message in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["grid.yaml", "quick.yaml", "kmeans.yaml", "kmeans-fast.yaml"])
def test_shipped_grids_are_valid(name):
    from pathlib import Path
    parsed = grids.load(Path(__file__).parent.parent / "configs" / name)
    assert len(parsed.configs) >= (24 if name == "grid.yaml" else 1)


@pytest.mark.slow
def test_other_data_trains_anew(data_dir, tmp_path, monkeypatch):
    """The same grid against another cache (another archive) must not print "already finished"."""
    other = tmp_path / "other"
    cifar10.build_cache(write_batches(other / "batches", batch_files(40, 50)), other, source_md5="another-archive")
    parsed = grids.parse(grid_spec())
    sweep.run_sweep(parsed, ref(data_dir), tmp_path / "runs", log=lambda m: None)
    counter = CountingTrainer(monkeypatch)
    sweep.run_sweep(parsed, ref(other), tmp_path / "runs", log=lambda m: None)
    assert len(counter.trained) == 4


@pytest.mark.slow
def test_ctrl_c_in_a_one_group_sweep_keeps_a_checkpoint_and_resumes_bit_identically(data_dir, tmp_path,
                                                                                   monkeypatch):
    grid = {"name": "k", "base": {**BASE, "epochs": 4}, "grid": {"lr": [1e-3, 3e-3], "reg": [1e-4, 1e-2]}}
    grid_file = tmp_path / "k.yaml"
    grid_file.write_text(yaml.safe_dump(grid))
    args = ["sweep", str(grid_file), "--data-dir", str(data_dir), "--quiet"]
    assert CliRunner().invoke(cli, args + ["--runs-dir", str(tmp_path / "whole")]).exit_code == 0

    real_save = checkpoints.Checkpoint.save

    def save_then_interrupt(self, snapshot, epoch):
        real_save(self, snapshot, epoch)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.Checkpoint, "save", save_then_interrupt)
    monkeypatch.setattr(sweep, "CHECKPOINT_SECONDS", 0.0)
    stopped = CliRunner().invoke(cli, args + ["--runs-dir", str(tmp_path / "cut")])
    assert stopped.exit_code == 130
    assert ("Interrupted: 0 of 4 runs are finished and kept; the group in progress is checkpointed at epoch 2/4; "
            "run the same command again to continue.") in stopped.output
    assert list((tmp_path / "cut" / "k" / sweep.CHECKPOINTS).glob("*.npz"))
    monkeypatch.setattr(checkpoints.Checkpoint, "save", real_save)
    counter = CountingTrainer(monkeypatch)
    assert CliRunner().invoke(cli, args + ["--runs-dir", str(tmp_path / "cut")]).exit_code == 0
    assert len(counter.trained) == 4  # the group went on from its checkpoint
    assert not (tmp_path / "cut" / "k" / sweep.CHECKPOINTS).exists()
    for row in read_results(tmp_path / "whole" / "k" / "results.csv"):
        whole = modelfile.load_model(tmp_path / "whole" / "k" / row["run_id"])
        cut = modelfile.load_model(tmp_path / "cut" / "k" / row["run_id"])
        np.testing.assert_array_equal(whole.W, cut.W)
        np.testing.assert_array_equal(whole.b, cut.b)


def huge_grid(path, name, num_reg):
    """A grid file of 40 x num_reg configurations: past the 1,000 that need --yes."""
    path.write_text(yaml.safe_dump({"name": name, "base": dict(BASE), "grid": {
        "lr": {"min": 1e-4, "max": 1e-2, "num": 40, "scale": "log"},
        "reg": {"min": 1e-4, "max": 1e-1, "num": num_reg, "scale": "log"}}}))
    return path


def test_a_huge_grid_says_its_size_and_needs_yes(data_dir, tmp_path):
    grid_file = huge_grid(tmp_path / "huge.yaml", "huge", 30)
    result = CliRunner().invoke(cli, ["sweep", str(grid_file), "--data-dir", str(data_dir), "--runs-dir",
                                      str(tmp_path / "runs")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "would train 1,200 configurations in 38 groups of up to 32" in result.output and "--yes" in result.output


def test_a_grid_past_the_hard_limit_is_refused_before_it_expands():
    spec = grid_spec(grid={k: {"min": 1e-4, "max": 1e-2, "num": 1000} for k in ("lr", "reg")})
    with pytest.raises(LinclfError, match=r"expands to 1,000,000 configurations; at most 100,000"):
        grids.parse(spec, source="g.yaml")


def test_a_second_sweep_of_the_same_name_says_who_holds_it(data_dir, tmp_path):
    from linclf.util import locks

    folder = tmp_path / "runs" / "g"
    folder.mkdir(parents=True)
    with locks.hold(folder / sweep.LOCK, "testing", wait=False):
        with pytest.raises(LinclfError, match=r"another linclf process is running sweep 'g' in .*; wait for it"):
            sweep.run_sweep(grids.parse(grid_spec()), ref(data_dir), tmp_path / "runs", log=lambda m: None)


@pytest.mark.slow
def test_fresh_deletes_only_what_sweeps_write(data_dir, tmp_path):
    parsed = grids.parse(grid_spec())
    sweep.run_sweep(parsed, ref(data_dir), tmp_path, log=lambda m: None)
    folder = tmp_path / "g"
    (folder / "MY_NOTES.txt").write_text("mine")
    (folder / "mydata").mkdir()
    sweep.run_sweep(parsed, ref(data_dir), tmp_path, fresh=True, log=lambda m: None)
    assert (folder / "MY_NOTES.txt").read_text() == "mine" and (folder / "mydata").is_dir()
    assert len([p for p in folder.iterdir() if (p / "metrics.json").is_file()]) == 4


def test_a_symlinked_sweep_folder_is_refused(data_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "g").symlink_to(elsewhere)
    with pytest.raises(LinclfError, match=r"refusing to use .*/runs/g as the sweep's folder: it is a symbolic link"):
        sweep.run_sweep(grids.parse(grid_spec()), ref(data_dir), tmp_path / "runs", fresh=True, log=lambda m: None)
    assert (elsewhere / "precious.txt").read_text() == "keep"


@pytest.mark.slow
def test_a_checkpoint_with_nan_is_not_trusted(data_dir, tmp_path, monkeypatch):
    """A damaged snapshot must not turn into a permanent wrong result: the group starts over."""
    parsed = grids.parse({**grid_spec(), "base": {**BASE, "epochs": 3}})
    whole = sweep.run_sweep(parsed, ref(data_dir), tmp_path / "whole", log=lambda m: None)
    real_save = checkpoints.Checkpoint.save

    def save_then_interrupt(self, snapshot, epoch):
        real_save(self, snapshot, epoch)
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "CHECKPOINT_SECONDS", 0.0)
    monkeypatch.setattr(checkpoints.Checkpoint, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(parsed, ref(data_dir), tmp_path / "cut", log=lambda m: None)
    monkeypatch.setattr(checkpoints.Checkpoint, "save", real_save)
    saved, = (tmp_path / "cut" / "g" / sweep.CHECKPOINTS).glob("*.npz")
    with np.load(saved) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["array.Wt"][0, 0] = np.nan
    np.savez(saved, **arrays)
    said = []
    rows = sweep.run_sweep(parsed, ref(data_dir), tmp_path / "cut", log=said.append)
    assert any("started over" in line for line in said)
    assert comparable(rows) == comparable(whole)


def comparable(rows):
    return {r["run_id"]: (r["status"], r["val_accuracy"], r["final_loss"]) for r in rows}


def interrupt_after_epoch(parsed, data_dir, runs_dir, monkeypatch, epoch):
    """Run the sweep until its group's checkpoint after `epoch` is saved, then Ctrl-C; returns the
    checkpoint file."""
    real_save = checkpoints.Checkpoint.save

    def save_then_interrupt(self, snapshot, reached):
        real_save(self, snapshot, reached)
        if reached == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "CHECKPOINT_SECONDS", 0.0)
    monkeypatch.setattr(checkpoints.Checkpoint, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(parsed, ref(data_dir), runs_dir, log=lambda m: None)
    monkeypatch.setattr(checkpoints.Checkpoint, "save", real_save)
    saved, = (runs_dir / parsed.name / sweep.CHECKPOINTS).glob("*.npz")
    return saved


@pytest.mark.slow
def test_resuming_from_a_checkpoint_is_said_when_training_resumes(data_dir, tmp_path, monkeypatch):
    parsed = grids.parse({**grid_spec(), "base": {**BASE, "epochs": 3}})
    runs_dir = tmp_path / "runs"
    interrupt_after_epoch(parsed, data_dir, runs_dir, monkeypatch, 1)
    said = []
    real_save = checkpoints.Checkpoint.save
    monkeypatch.setattr(checkpoints.Checkpoint, "save", lambda self, snapshot, epoch: said.append(f"saved after {epoch}")
                        or real_save(self, snapshot, epoch))
    sweep.run_sweep(parsed, ref(data_dir), runs_dir, log=said.append)
    resumed = [i for i, line in enumerate(said)
               if "group of 4 runs: continuing from its checkpoint after epoch 1" in line]
    assert resumed and resumed[0] < said.index("saved after 2")


def edit_checkpoint(path, facts=None, arrays=None):
    with np.load(path) as archive:
        saved = {k: archive[k] for k in archive.files}
    if facts:
        saved["facts"] = np.array(json.dumps({**json.loads(str(saved["facts"])), **facts}))
    for name, change in (arrays or {}).items():
        saved[f"array.{name}"] = change(saved[f"array.{name}"])
    np.savez(path, **saved)


@pytest.mark.parametrize("facts, arrays, reason", [
    ({"rng": {"bit_generator": "PCG64", "state": 5}}, None, "random generator"),
    ({"members": [0, 1, 2, 3, 7]}, None, "members and stopped"),
    ({"epochs_done": 2}, None, "epochs_done is 2"),
    ({"epochs_done": 99}, None, r"epochs_done must be an integer in 1\.\.3, got 99"),
    ({"histories": "none"}, None, "histories must be a list"),
    (None, {"Wt": lambda a: a * np.float32(1e30)}, "validation loss"),
    (None, {"Wt": lambda a: a[:, :-1]}, "Wt has shape"),
    (None, {"b": lambda a: a.astype(np.float64)}, "b must be a float32 array"),
])
@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_its_group_starts_it_over_and_says_why(data_dir, tmp_path, monkeypatch,
                                                                            facts, arrays, reason):
    """No traceback, no sweep stuck until .checkpoints/ is deleted, no wrong run saved."""
    parsed = grids.parse({**grid_spec(), "base": {**BASE, "epochs": 3}})
    whole = sweep.run_sweep(parsed, ref(data_dir), tmp_path / "whole", log=lambda m: None)
    edit_checkpoint(interrupt_after_epoch(parsed, data_dir, tmp_path / "cut", monkeypatch, 1), facts, arrays)
    said = []
    rows = sweep.run_sweep(parsed, ref(data_dir), tmp_path / "cut", log=said.append)
    refusal, = [line for line in said if "does not fit this group" in line]
    assert re.search(reason, refusal) and refusal.endswith(": started over"), refusal
    assert comparable(rows) == comparable(whole)
    assert not (tmp_path / "cut" / "g" / sweep.CHECKPOINTS).exists()


@pytest.mark.parametrize("extra", [[], ["--fresh"]])
@pytest.mark.slow
def test_a_size_refused_sweep_changes_nothing_of_a_finished_sweep(data_dir, tmp_path, extra):
    """A grid named like a finished sweep but too large for want of --yes (with or without
    --fresh): sweep.json, the runs and eval --best --sweep stay as they were."""
    runs_dir = tmp_path / "runs"
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump({"name": "same", "base": dict(BASE), "grid": {"lr": [1e-3, 3e-3]}}))
    args = ["--data-dir", str(data_dir), "--runs-dir", str(runs_dir)]
    assert CliRunner().invoke(cli, ["sweep", str(small), "--quiet", *args]).exit_code == 0
    before = {p.relative_to(runs_dir): p.read_bytes() for p in runs_dir.rglob("*") if p.is_file()}
    best_before = ranking.find_best(runs_dir, "same")[0]
    huge = huge_grid(tmp_path / "huge.yaml", "same", 50)
    result = CliRunner().invoke(cli, ["sweep", str(huge), *extra, *args])
    assert result.exit_code == 1 and "--yes" in result.output
    after = {p.relative_to(runs_dir): p.read_bytes() for p in runs_dir.rglob("*") if p.is_file()}
    assert after == before
    assert ranking.find_best(runs_dir, "same")[0] == best_before


def test_a_refused_new_sweep_leaves_no_folder(data_dir, tmp_path):
    huge = huge_grid(tmp_path / "huge.yaml", "new", 50)
    result = CliRunner().invoke(cli, ["sweep", str(huge), "--data-dir", str(data_dir), "--runs-dir",
                                      str(tmp_path / "runs")])
    assert result.exit_code == 1 and not (tmp_path / "runs" / "new").exists()


@pytest.mark.slow
def test_plots_that_cannot_be_written_never_cost_a_sweep_its_results(data_dir, tmp_path, monkeypatch):
    from linclf.evaluation import plots

    def refuse(path, payload):
        raise LinclfError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(plots, "atomic_write_bytes", refuse)
    said = []
    rows = sweep.run_sweep(grids.parse(grid_spec()), ref(data_dir), tmp_path, log=said.append)
    folder = tmp_path / "g"
    assert len(rows) == 4 and len(read_results(folder / "results.csv")) == 4
    assert all((folder / row["run_id"] / "weights.npz").is_file() for row in rows)
    warnings = [line for line in said if line.startswith("warning:")]
    assert len(warnings) == 5 and all("No space left on device" in line for line in warnings)
    assert any("heatmap.png" in line for line in warnings) and not (folder / "heatmap.png").exists()


@pytest.mark.slow
def test_a_heatmap_that_is_a_folder_is_a_warning(data_dir, tmp_path):
    (tmp_path / "g" / "heatmap.png").mkdir(parents=True)
    said = []
    rows = sweep.run_sweep(grids.parse(grid_spec()), ref(data_dir), tmp_path, log=said.append)
    assert len(read_results(tmp_path / "g" / "results.csv")) == len(rows) == 4
    assert any(line.startswith("warning:") and "heatmap.png" in line and "a directory" in line for line in said)


def test_a_long_axis_gets_a_heatmap_of_bounded_size_and_a_note(monkeypatch, tmp_path):
    from linclf.evaluation import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.append(figure) or path)
    parsed = grids.parse(grid_spec(grid={"lr": {"min": 1e-4, "max": 1e-1, "num": 1000, "scale": "log"},
                                         "reg": [1e-4, 1e-3]}))
    rows = [{**cfg, "status": "ok", "val_accuracy": 0.5} for cfg in parsed.configs]
    said = []
    reports.plot_heatmap(parsed, rows, tmp_path / "heatmap.png", log=said.append)
    figure, = figures
    width, height = figure.get_size_inches()
    assert width <= 20 and height <= 20
    axes = figure.axes[0]
    assert not axes.texts and len(axes.get_xticks()) <= 40
    assert any("2 x 1000 cells" in line for line in said)
    plots.plt.close(figure)


def test_a_sweep_whose_split_does_not_fit_the_data_changes_nothing(data_dir, tmp_path):
    """The same grid name on data too small for its train_size: refused before sweep.json is rewritten."""
    runs_dir = tmp_path / "runs"
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"name": "same", "base": dict(BASE), "grid": {"lr": [1e-3, 3e-3]}}))
    args = ["--data-dir", str(data_dir), "--runs-dir", str(runs_dir)]
    assert CliRunner().invoke(cli, ["sweep", str(grid), "--quiet", *args]).exit_code == 0
    before = (runs_dir / "same" / "sweep.json").read_bytes()
    grid.write_text(yaml.safe_dump({"name": "same", "base": {**BASE, "train_size": 5000}, "grid": {"lr": [1e-3]}}))
    result = CliRunner().invoke(cli, ["sweep", str(grid), *args])
    assert result.exit_code == 1 and "train_size must be at most 150" in result.output
    assert (runs_dir / "same" / "sweep.json").read_bytes() == before


@pytest.mark.slow
def test_a_reg_path_is_solved_and_the_table_says_each_run_converged(data_dir, tmp_path):
    grid_file = tmp_path / "path.yaml"
    grid_file.write_text(yaml.safe_dump({"name": "path", "base": {"val_size": 50}, "grid": {"reg": [1e-3, 1e-1, 10.0]}}))
    args = ["sweep", str(grid_file), "--data-dir", str(data_dir), "--runs-dir", str(tmp_path / "runs"), "--quiet"]
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0, table.output
    assert "converged" in table.output.splitlines()[0] and table.output.count("yes (") == 3
    rows = json.loads(CliRunner().invoke(cli, [*args, "--json"]).stdout)["results"]  # finished: read back
    assert all(row["converged"] is True and row["lr"] is None and row["n_iter"] >= 1 for row in rows)


class SignalInFinalizer:
    """An object whose finalizer receives a signal: a KeyboardInterrupt raised there is one that
    Python swallows ("Exception ignored in ...")."""

    def __init__(self, number):
        self.number = number

    def __del__(self):
        signal.raise_signal(self.number)


def send(number, where):
    if where == "finalizer":
        SignalInFinalizer(number)  # freed at once: the signal arrives inside its __del__
    else:
        signal.raise_signal(number)


@pytest.fixture
def terminated_as_by_the_cli():
    """SIGTERM handled as `linclf` handles it (cli_options.Group.main)."""
    from linclf import cli_options

    previous = signal.signal(signal.SIGTERM, cli_options._terminated)
    yield
    signal.signal(signal.SIGTERM, previous)


def assert_same_weights(whole, cut, rows):
    for row in rows:
        a, b = modelfile.load_model(whole / row["run_id"]), modelfile.load_model(cut / row["run_id"])
        np.testing.assert_array_equal(a.W, b.W)
        np.testing.assert_array_equal(a.b, b.b)


@pytest.mark.parametrize("where", ["plain", "finalizer"])
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.slow
def test_a_signal_while_a_sweep_saves_keeps_whole_groups_counts_them_and_reruns_bit_identically(
        data_dir, tmp_path, monkeypatch, terminated_as_by_the_cli, number, where):
    parsed = grids.parse(grid_spec(group_size=2))
    rows = sweep.run_sweep(parsed, ref(data_dir), tmp_path / "whole", log=lambda m: None)
    real_save = runfolders.save_run
    sent = []

    def save_then_signal(*args, **kwargs):
        saved = real_save(*args, **kwargs)
        if not sent:  # after the first run folder of the first group
            sent.append(number)
            send(number, where)
        return saved

    monkeypatch.setattr(runfolders, "save_run", save_then_signal)
    with pytest.raises(KeyboardInterrupt) as interrupted:
        sweep.run_sweep(parsed, ref(data_dir), tmp_path / "cut", log=lambda m: None)
    kept = [p for p in (tmp_path / "cut" / "g").iterdir() if (p / "metrics.json").is_file()]
    assert len(kept) == 2  # the group being saved is saved whole
    assert f"Interrupted: {len(kept)} of 4 runs are finished and kept" in str(interrupted.value)
    monkeypatch.setattr(runfolders, "save_run", real_save)
    counter = CountingTrainer(monkeypatch)
    sweep.run_sweep(parsed, ref(data_dir), tmp_path / "cut", log=lambda m: None)
    assert len(counter.trained) == 2
    assert_same_weights(tmp_path / "whole" / "g", tmp_path / "cut" / "g", rows)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the one swallowed
def test_a_signal_swallowed_during_training_stops_the_sweep_at_the_next_step(data_dir, tmp_path, monkeypatch):
    parsed = grids.parse(grid_spec(group_size=4))
    real_step = kernels.softmax_gradient
    steps = []

    def step_then_signal(*args):
        steps.append(1)
        if len(steps) == 3:
            send(signal.SIGINT, "finalizer")
        return real_step(*args)

    monkeypatch.setattr(kernels, "softmax_gradient", step_then_signal)
    with pytest.raises(KeyboardInterrupt, match="Interrupted: 0 of 4 runs are finished and kept"):
        sweep.run_sweep(parsed, ref(data_dir), tmp_path, log=lambda m: None)
    assert len(steps) == 3  # stopped at the safe point of the next step


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_is_a_warning_not_a_lost_sweep(data_dir, tmp_path, monkeypatch):
    parsed = grids.parse(grid_spec(group_size=2))
    monkeypatch.setattr(sweep, "CHECKPOINT_SECONDS", 0.0)

    def full_disk(path, write):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoints, "atomic_write", full_disk)
    lines = []
    rows = sweep.run_sweep(parsed, ref(data_dir), tmp_path / "full", log=lines.append)
    whole = sweep.run_sweep(parsed, ref(data_dir), tmp_path / "whole", log=lambda m: None)
    assert [r["status"] for r in rows] == ["ok"] * 4
    warnings = [line for line in lines if "cannot write its checkpoint" in line]
    assert len(warnings) == 2 and all("\n" not in line for line in warnings)  # once a group
    assert "No space left on device" in warnings[0]
    assert_same_weights(tmp_path / "whole" / "g", tmp_path / "full" / "g", whole)


@pytest.mark.slow
def test_with_its_later_checkpoints_unwritable_an_interrupted_group_resumes_from_an_earlier_one(
        data_dir, tmp_path, monkeypatch):
    parsed = grids.parse(grid_spec(base={**BASE, "epochs": 4}, group_size=4))
    whole = sweep.run_sweep(parsed, ref(data_dir), tmp_path / "whole", log=lambda m: None)
    monkeypatch.setattr(sweep, "CHECKPOINT_SECONDS", 0.0)
    real_write, real_save = checkpoints.atomic_write, checkpoints.Checkpoint.save

    def fills_after_one(path, write):
        if path.exists():  # the first is written, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, write)

    def save_then_interrupt(self, snapshot, epoch):
        real_save(self, snapshot, epoch)
        if epoch == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "atomic_write", fills_after_one)
    monkeypatch.setattr(checkpoints.Checkpoint, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt, match="checkpointed at epoch 1/4"):
        sweep.run_sweep(parsed, ref(data_dir), tmp_path / "cut", log=lambda m: None)
    monkeypatch.setattr(checkpoints.Checkpoint, "save", real_save)
    lines = []
    sweep.run_sweep(parsed, ref(data_dir), tmp_path / "cut", log=lines.append)
    assert any("continuing from its checkpoint after epoch 1" in line for line in lines)
    assert_same_weights(tmp_path / "whole" / "g", tmp_path / "cut" / "g", whole)


def test_a_cli_sweep_on_too_few_rows_to_validate_is_one_line(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(9, 3)).astype(np.float32)
    np.savez(tmp_path / "n15.npz", X_train=X, y_train=np.arange(9) % 3, X_test=X, y_test=np.arange(9) % 3)
    grid_file = tmp_path / "g.yaml"
    grid_file.write_text("name: tiny\ngrid: {reg: [1.0e-4, 1.0e-2]}\n")
    result = CliRunner().invoke(cli, ["sweep", str(grid_file), "--data", str(tmp_path / "n15.npz"),
                                      "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "val_size must be at least 1 (this data has 9 training rows" in result.output
