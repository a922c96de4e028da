import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from linclf import config, config_files
from linclf.cli import cli
from linclf.util.errors import LinclfError

TINY_FLAGS = ["--epochs", "3", "--batch-size", "16", "--val-size", "50", "--quiet"]


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "one"
    result = run("train", *TINY_FLAGS, "--data-dir", data_dir, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_the_run_files(trained):
    assert sorted(p.name for p in trained.iterdir()) == ["config.yaml", "loss.png", "metrics.json", "weights.npz"]
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["val_accuracy"] > 0.5
    with np.load(trained / "weights.npz", allow_pickle=False) as weights:
        assert weights["W"].shape == (3072, 10) and weights["pipeline.0.mean"].shape == (3072,)
        assert str(weights["format"]) == "linclf-softmax-v2" and str(weights["data_id"]).startswith("cifar10-")
        assert list(weights["class_names"])[:2] == ["airplane", "automobile"]
        assert json.loads(str(weights["config"]))["epochs"] == 3
    assert (trained / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_train_yaml_and_flags_and_json(data_dir, tmp_path):
    config_file = tmp_path / "t.yaml"
    config_file.write_text("epochs: 1\nlr: 2e-3\nbatch_size: 16\nval_size: 50\n")
    result = run("train", config_file, "--lr", "5e-4", "--data-dir", data_dir, "--runs-dir", tmp_path / "runs",
                 "--json", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    run_dir = tmp_path / "runs" / report["run_dir"].split("/")[-1]
    saved = (run_dir / "config.yaml").read_text()
    assert "lr: 0.0005" in saved and "epochs: 1" in saved
    assert report["status"] == "ok" and 0 <= report["val_accuracy"] <= 1


def test_runs_dir_from_the_environment(data_dir, tmp_path):
    result = run("train", *TINY_FLAGS, "--epochs", "1", "--data-dir", data_dir,
                 env={"LINCLF_RUNS_DIR": str(tmp_path / "envruns")})
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "envruns").glob("train-*/weights.npz"))) == 1


def test_eval_json_and_table(trained, data_dir):
    result = run("eval", trained / "weights.npz", "--data-dir", data_dir, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["split"] == "test" and report["num_examples"] == 50 and report["data_id"].startswith("cifar10-")
    assert np.sum(report["confusion"]) == 50
    assert report["accuracy"] == pytest.approx(np.trace(report["confusion"]) / 50)
    assert set(report["per_class_accuracy"]) == set(report["class_names"])
    assert (trained / "confusion.png").is_file()
    table = run("eval", trained / "weights.npz", "--data-dir", data_dir, "--split", "val")
    assert table.exit_code == 0 and "split val: 50 examples" in table.output and "accuracy" in table.output


def test_visualize_writes_a_png(trained, tmp_path):
    out = tmp_path / "t.png"
    result = run("visualize", trained / "weights.npz", "--out", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert run("visualize", trained / "weights.npz").exit_code == 0
    assert (trained / "templates.png").is_file()


def test_template_images_use_one_global_scale():
    from linclf.evaluation.plots import template_images
    W = np.zeros((3072, 2))
    W[:, 0] = 1.0
    W[0, 1] = -1.0
    images = template_images(W)
    assert images.shape == (2, 32, 32, 3) and images[0].min() == 255 and images[1, 0, 0, 0] == 0
    assert images[1, 0, 0, 1] == 128  # 0 lies half way between the global min and max


def error_line(result):
    """The whole output of a failed command: one line, no traceback."""
    lines = result.output.strip().splitlines()
    assert result.exit_code != 0
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["train", "--lr", "-1"], "command line: lr must be a number in (0, 1000], got '-1'"),
    (["train", "--epochs", "many"], "command line: epochs must be an integer in [1, 10,000], got 'many'"),
    (["train", "--bogus"], "No such option '--bogus'"),
    (["eval"], "give WEIGHTS.npz or --best"),
    (["visualize", "nothing.npz"], "weights file not found: nothing.npz"),
])
def test_bad_input_is_one_clear_line(args, message, tmp_path):
    assert message in error_line(run(*args, "--data-dir", tmp_path) if args[0] == "train" else run(*args))


@pytest.mark.parametrize("args, message", [
    (["--solver", "lbfgs", "--lr", "0.1"], "command line: lr is a setting of solver sgd's schedule; solver lbfgs"),
    (["--tol", "1e-5", "--epochs", "3"], "command line: tol is a setting of solver lbfgs; solver sgd runs its "
                                         "schedule (epochs, lr, lr_decay), and epochs asks for it"),
    (["--solver", "sgd", "--max-iter", "5"], "command line: max_iter is a setting of solver lbfgs"),
    (["--tol", "0"], "command line: tol must be a number in (0, 1], got '0'"),
    (["--max-iter", "0"], "command line: max_iter must be an integer in [1, 100,000], got '0'"),
])
def test_solver_settings_that_contradict_are_one_line(args, message, tmp_path):
    assert message in error_line(run("train", *args, "--data-dir", tmp_path))


@pytest.mark.slow
def test_train_solves_to_the_minimum_by_default_and_says_so(data_dir, tmp_path):
    result = run("train", "--val-size", "50", "--reg", "1e-2", "--data-dir", data_dir, "--out", tmp_path / "r",
                 "--quiet")
    assert result.exit_code == 0 and "converged in" in result.output, result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["converged"] is True and 1 <= metrics["n_iter"] < 1000
    history = metrics["history"]
    assert len(history["objective"]) == metrics["n_iter"] + 1 and history["gradient"] <= 1e-4
    assert history["objective"][-1] == metrics["final_loss"] < history["objective"][0]
    assert (tmp_path / "r" / "loss.png").read_bytes()[:4] == b"\x89PNG"  # the objective by iteration
    capped = run("train", "--val-size", "50", "--reg", "1e-4", "--max-iter", "2", "--data-dir", data_dir,
                 "--out", tmp_path / "c", "--quiet")
    assert capped.exit_code == 0 and "warning: not converged: stopped after 2 iterations (max_iter)" in capped.output
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["converged"] is False


def test_missing_data_is_one_clear_line(tmp_path):
    line = error_line(run("train", "--data-dir", tmp_path / "none", "--runs-dir", tmp_path))
    assert f"no CIFAR-10 cache in {tmp_path}/none/cifar-10: run 'linclf download" in line


@pytest.mark.parametrize("text, message", [
    ("lr: [0.1\n", "bad YAML at line 2"),
    ("learning_rate: 0.1\n", "unknown key 'learning_rate'"),
    ("lrr: 0.1\n", "did you mean 'lr'?"),
    ("reg: -3\n", "reg must be a number in [0, 1000], got -3"),
])
def test_bad_yaml_is_one_clear_line(tmp_path, text, message, data_dir):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert message in error_line(run("train", path, "--data-dir", data_dir, "--runs-dir", tmp_path / "r"))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("content", [b"not a zip", None])
def test_wrong_file_given_to_eval(tmp_path, content, data_dir):
    path = tmp_path / "w.npz"
    if content is None:
        np.savez(path, something=np.zeros(3))  # a real npz, but not ours
    else:
        path.write_bytes(content)
    line = error_line(run("eval", path, "--data-dir", data_dir))
    assert "expected a weights.npz written by 'linclf train'" in line
    assert "unsafely" not in line  # numpy's allow_pickle advice is not for our users


def test_existing_output_is_never_overwritten(trained, data_dir):
    before = (trained / "weights.npz").read_bytes()
    line = error_line(run("train", *TINY_FLAGS, "--data-dir", data_dir, "--out", trained))
    assert "already exists and is not empty" in line
    assert (trained / "weights.npz").read_bytes() == before


def test_diverged_train_run_is_reported_and_has_no_weights(data_dir, tmp_path):
    result = run("train", *TINY_FLAGS, "--lr", "1000", "--data-dir", data_dir, "--out", tmp_path / "d")
    assert result.exit_code == 3 and "diverged at epoch 1" in result.output
    assert json.loads((tmp_path / "d" / "metrics.json").read_text())["status"] == "diverged"
    assert not (tmp_path / "d" / "weights.npz").exists()


def test_help_lists_every_command():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("train", "eval", "visualize"):
        assert command in result.output


def test_templates_need_raw_pixel_weights():
    from linclf.util.errors import LinclfError
    from linclf.evaluation.plots import template_images
    with pytest.raises(LinclfError, match="only for models on raw pixels .3072 inputs.; this one has 512"):
        template_images(np.zeros((512, 10)))


def test_eval_on_a_read_only_run_folder_still_prints_its_numbers(trained, data_dir, tmp_path):
    import os
    import shutil

    if os.geteuid() == 0:  # root writes anyway: simulate the folder with a file where the plot goes
        folder = tmp_path / "ro"
        shutil.copytree(trained, folder)
        (folder / "confusion.png").unlink(missing_ok=True)
        (folder / "confusion.png").mkdir()  # a folder at the plot's name: the write must fail
    else:
        folder = tmp_path / "ro"
        shutil.copytree(trained, folder)
        folder.chmod(0o555)
    result = run("eval", folder, "--data-dir", data_dir, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads([line for line in result.output.splitlines() if line.startswith("{")][0])
    assert report["num_examples"] == 50 and report["confusion_png"] is None
    assert "warning: cannot write" in result.output and "--no-plots" in result.output
    assert ".tmp" not in result.output  # the user's file is named, never a temporary one


def test_a_write_error_names_the_users_file(tmp_path):
    from linclf.util import files
    from linclf.util.errors import LinclfError

    with pytest.raises(LinclfError, match=rf"cannot write {tmp_path}/missing/x.png: No such file or directory"):
        files.atomic_write_bytes(tmp_path / "missing" / "x.png", b"")


def test_bare_linclf_prints_help_and_succeeds():
    result = run()
    assert result.exit_code == 0 and "Commands:" in result.output and "Typical session" in result.output


def test_every_setting_has_a_flag_with_its_default():
    from linclf import config

    result = run("train", "--help")
    for key, default in config.DEFAULTS.items():
        assert f"--{key.replace('_', '-')}" in result.output
    assert "--init-scale" in result.output and "[default: 0.001]" in result.output and "Examples:" in result.output


def test_json_output_is_always_strict():
    from linclf.cli_options import strict_json

    assert json.loads(json.dumps(strict_json({"a": float("nan"), "b": [float("inf"), 1.5]}), allow_nan=False)) == \
        {"a": None, "b": [None, 1.5]}


def test_download_from_a_file_and_a_url_at_once_is_refused(tmp_path):
    line = error_line(run("download", "--from-file", tmp_path / "a.tar.gz", "--url", "http://127.0.0.1:9/x",
                          "--data-dir", tmp_path))
    assert "give --from-file PATH or --url URL, not both" in line


@pytest.mark.slow
def test_runs_lists_every_run_best_first(hard_data_dir, tmp_path):
    runs_dir = tmp_path / "runs"
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\nbase: {epochs: 2, batch_size: 16, val_size: 50}\n"
                    "grid: {lr: [1.0e-5, 3.0e-3, 5.0e+2]}\n")
    common = ["--data-dir", str(hard_data_dir), "--runs-dir", str(runs_dir)]
    CliRunner().invoke(cli, ["sweep", str(grid), "--quiet", *common])
    listed = CliRunner().invoke(cli, ["runs", "--runs-dir", str(runs_dir), "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)["runs"]
    assert [r["status"] for r in rows] == ["ok", "ok", "diverged"]
    assert rows[0]["val_accuracy"] >= rows[1]["val_accuracy"] and rows[0]["val_accuracy"] != rows[1]["val_accuracy"]
    best = json.loads(CliRunner().invoke(cli, ["eval", "--best", "--json", "--no-plots", *common]).stdout)
    assert best["run_dir"] == str(runs_dir / rows[0]["run_id"])
    table = CliRunner().invoke(cli, ["runs", "--runs-dir", str(runs_dir), "--sweep", "g"])
    assert table.exit_code == 0 and table.stdout.splitlines()[1].startswith(rows[0]["run_id"])


def test_a_packaged_config_is_found_by_its_bare_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert config_files.find("grid") == config_files.PACKAGED / "grid.yaml"
    assert config_files.find("kmeans.yaml") == config_files.PACKAGED / "kmeans.yaml"
    (tmp_path / "grid").write_text("epochs: 2\n")
    assert config_files.find("grid") == Path("grid")  # a file of that name wins
    result = CliRunner().invoke(cli, ["sweep", "nosuch", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 1 and "packaged configs, usable by name: grid, kmeans" in result.output


def test_the_sweep_says_when_the_best_is_on_the_edge_of_an_axis():
    from linclf.experiments import grids

    spec = grids.parse({"grid": {"lr": [1e-3, 2e-3, 3e-3], "reg": [1e-4, 1e-3], "momentum": [0.0, 0.9]}})
    notes = grids.edge_notes(spec, {"lr": 3e-3, "reg": 1e-4, "momentum": 0.9})
    assert len(notes) == 1 and "the best lr, 0.003, is the largest value of the grid's lr axis" in notes[0]
    assert grids.edge_notes(spec, {"lr": 2e-3, "reg": 1e-4, "momentum": 0.9}) == []


def full_disk(monkeypatch):
    """Every PNG write fails as on a full disk; other files are written."""
    from linclf.evaluation import plots
    from linclf.util.errors import LinclfError

    def refuse(path, payload):
        raise LinclfError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(plots, "atomic_write_bytes", refuse)


def test_a_plot_that_cannot_be_written_is_a_warning_after_the_run_is_saved(data_dir, tmp_path, monkeypatch):
    full_disk(monkeypatch)
    result = run("train", *TINY_FLAGS, "--data-dir", data_dir, "--out", tmp_path / "one")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["config.yaml", "metrics.json", "weights.npz"]
    warning, = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert "loss.png" in warning and "No space left on device" in warning


@pytest.mark.parametrize("where, expected", [("/dev/null", "is not a folder"), ("link", "is a symbolic link"),
                                             ("full", "already exists and is not empty")])
def test_train_out_that_is_not_an_empty_folder_says_what_it_is(data_dir, tmp_path, where, expected):
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    out = where if where.startswith("/") else tmp_path / where
    line = error_line(run("train", *TINY_FLAGS, "--data-dir", data_dir, "--out", out))
    assert f"output folder {out} {expected}; choose another --out" in line
    assert not any((tmp_path / "empty").iterdir()) and (tmp_path / "full" / "x").read_text() == "mine"


@pytest.mark.parametrize("name, content", [("notes.txt", b"my notes"), ("old.png", b"not really a picture")])
def test_visualize_never_overwrites_a_file_that_is_not_a_png(trained, tmp_path, name, content):
    out = tmp_path / name
    out.write_bytes(content)
    line = error_line(run("visualize", trained / "weights.npz", "--out", out))
    assert f"refusing to overwrite {out}: it is not a PNG image" in line
    assert out.read_bytes() == content


def test_visualize_replaces_its_own_png(trained, tmp_path):
    out = tmp_path / "t.png"
    for _ in range(2):
        assert run("visualize", trained / "weights.npz", "--out", out).exit_code == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["../runs", "", "a/b"])
def test_sweep_names_never_leave_the_runs_dir(tmp_path, name):
    (tmp_path / "runs").mkdir()
    result = CliRunner().invoke(cli, ["runs", "--runs-dir", str(tmp_path / "runs"), "--sweep", name])
    assert result.exit_code == 1 and "--sweep must name a sweep" in result.output


@pytest.mark.slow
def test_sigterm_stops_a_sweep_as_ctrl_c_does(data_dir, tmp_path):
    """`kill` (SIGTERM) during a sweep: one line saying what was kept, exit 130; the same command
    then finishes it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\nbase: {epochs: 400, batch_size: 16, val_size: 50}\ngrid: {lr: [1.0e-4, 2.0e-4]}\n"
                    "group_size: 1\n")
    command = [sys.executable, "-m", "linclf", "sweep", str(grid), "--data-dir", str(data_dir), "--runs-dir",
               str(tmp_path / "runs"), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not (tmp_path / "runs" / "g" / "sweep.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("Interrupted:") and "Traceback" not in stderr
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("raised, one_line", [(LinclfError("a problem the user can fix"), True),
                                              (ValueError("a bug's own ValueError"), False)])
def test_a_linclf_error_is_one_line_and_a_bugs_value_error_is_not_hidden(tmp_path, monkeypatch, raised, one_line):
    """LinclfError is a ValueError (for the estimators); the CLI still prints it as one line, and
    never mistakes another ValueError (a bug) for one."""
    from linclf import app

    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(app, "list_runs", fail)
    result = CliRunner().invoke(cli, ["runs", "--runs-dir", str(tmp_path)])
    if one_line:
        assert error_line(result) == "Error: a problem the user can fix"
    else:
        assert result.exception is raised and "Error:" not in result.output


def test_a_bare_name_says_which_config_it_reads_and_a_folder_is_no_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quick.yaml").write_text("name: mine\ngrid: {lr: [0.001]}\n")
    (tmp_path / "grid").mkdir()
    assert config_files.find("quick") == config_files.PACKAGED / "quick.yaml"
    assert config_files.find("quick.yaml") == Path("quick.yaml")
    assert config_files.find("grid") == config_files.PACKAGED / "grid.yaml"  # ./grid/ is a folder, not a config
    assert config_files.which_note("quick", config_files.find("quick")) == \
        f"note: reading the packaged config {config_files.PACKAGED / 'quick.yaml'}, not ./quick.yaml; give ./quick.yaml to read yours"
    assert config_files.which_note("quick.yaml", Path("quick.yaml")).startswith("note: reading ./quick.yaml, not the packaged")
    result = CliRunner().invoke(cli, ["sweep", "quick", "--runs-dir", str(tmp_path / "runs"), "--data-dir",
                                      str(tmp_path / "nodata")])
    assert "note: reading the packaged config" in result.output and "No such" not in result.output


@pytest.mark.parametrize("name", ["quick", "grid"])
def test_train_of_a_grid_file_says_to_use_sweep(tmp_path, name):
    result = CliRunner().invoke(cli, ["train", name, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert f"{name}.yaml is a grid file (it has grid:), not one configuration: train its grid with 'linclf sweep" \
        in result.output
