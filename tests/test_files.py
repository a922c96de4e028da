import os

import numpy as np
import pytest

from linclf.util.errors import LinclfError
from linclf.util.files import (atomic_write_bytes, build_dir, is_regular, open_for_append, open_new, open_regular,
                               read_bytes, read_text)


def test_build_dir_renames_into_place_and_replaces(tmp_path):
    target = tmp_path / "out"
    with build_dir(target) as staging:
        (staging / "a").write_text("1")
        assert not target.exists()  # nothing visible until the block succeeds
    assert (target / "a").read_text() == "1"
    with build_dir(target) as staging:
        (staging / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_build_dir_failure_leaves_the_old_target_and_no_temporaries(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep").write_text("old")
    with pytest.raises(RuntimeError):
        with build_dir(target) as staging:
            (staging / "half").write_text("x")
            raise RuntimeError("interrupted")
    assert (target / "keep").read_text() == "old" and not (target / "half").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "results.csv"
    atomic_write_bytes(path, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["results.csv"]
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode


# -- nothing is written through a planted link or into a special file -------------------------------

@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim"
    path.write_bytes(b"precious")
    return path


def test_atomic_write_replaces_a_planted_link_instead_of_writing_through_it(tmp_path, victim):
    (tmp_path / "out.csv").symlink_to(victim)
    atomic_write_bytes(tmp_path / "out.csv", b"new")
    assert victim.read_bytes() == b"precious"
    assert not (tmp_path / "out.csv").is_symlink() and (tmp_path / "out.csv").read_bytes() == b"new"


@pytest.mark.parametrize("make, kind", [
    (lambda path: path.mkdir(), "a directory"),
    (lambda path: os.mkfifo(path), "a special file"),
])
def test_atomic_write_refuses_a_directory_or_special_file(tmp_path, make, kind):
    make(tmp_path / "out")
    with pytest.raises(LinclfError, match=f"refusing to write .*out: it is {kind}"):
        atomic_write_bytes(tmp_path / "out", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left


def test_open_new_never_follows_a_link(tmp_path, victim):
    (tmp_path / "new").symlink_to(victim)
    with pytest.raises(FileExistsError):
        open_new(tmp_path / "new")
    assert victim.read_bytes() == b"precious"


@pytest.mark.parametrize("make, kind", [
    (lambda path, victim: path.symlink_to(victim), "a symbolic link"),
    (lambda path, victim: path.symlink_to(path.parent / "missing"), "a symbolic link"),  # dangling
    (lambda path, victim: os.mkfifo(path), "a special file"),
    (lambda path, victim: path.mkdir(), "a directory"),
])
def test_open_for_append_refuses_links_and_special_files(tmp_path, victim, make, kind):
    make(tmp_path / "log", victim)
    with pytest.raises(LinclfError, match=f"refusing to write .*log: it is {kind}"):
        open_for_append(tmp_path / "log")
    assert victim.read_bytes() == b"precious" and not (tmp_path / "missing").exists()


def test_open_for_append_appends_and_creates(tmp_path):
    with open_for_append(tmp_path / "log") as stream:
        stream.write(b"a")
    with open_for_append(tmp_path / "log") as stream:
        stream.write(b"b")
    assert (tmp_path / "log").read_bytes() == b"ab"


def test_files_and_folders_follow_the_umask_without_changing_it(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
        with build_dir(tmp_path / "d") as staging:
            (staging / "a").write_text("1")
        assert os.umask(0o027) == 0o027  # still the umask we set
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o750


def test_no_umask_juggling_in_the_source():
    import inspect

    from linclf.util import files
    assert "umask(" not in inspect.getsource(files)  # os.umask(0) is a race with other threads


def test_build_dir_replaces_a_planted_link_to_a_folder(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("mine")
    (tmp_path / "out").symlink_to(elsewhere)
    with build_dir(tmp_path / "out") as staging:
        (staging / "a").write_text("1")
    assert not (tmp_path / "out").is_symlink() and (tmp_path / "out" / "a").read_text() == "1"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep"]


def test_build_dir_refuses_a_file_at_the_target(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(LinclfError, match=r"refusing to replace .*out: it is a regular file, not a folder"):
        with build_dir(tmp_path / "out"):
            pass
    assert (tmp_path / "out").read_text() == "a file"


# -- reading: only regular files ---------------------------------------------------------------------

@pytest.mark.parametrize("reader", [read_bytes, read_text, lambda path: open_regular(path).close(), is_regular])
@pytest.mark.parametrize("make, kind", [
    (lambda path, fifo: fifo(path), "a special file"),
    (lambda path, fifo: path.mkdir(), "a directory"),
])
def test_reading_anything_but_a_regular_file_is_one_line_naming_it(tmp_path, fifo, reader, make, kind):
    make(tmp_path / "metrics.json", fifo)
    with pytest.raises(LinclfError, match=f"cannot read .*metrics.json: it is {kind}.*, not a regular file"):
        reader(tmp_path / "metrics.json")


def test_reading_a_regular_file_or_a_missing_one(tmp_path):
    (tmp_path / "a").write_text("é")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    assert read_text(tmp_path / "link") == "é" and read_bytes(tmp_path / "a") == "é".encode()
    assert is_regular(tmp_path / "a") and not is_regular(tmp_path / "missing") and not is_regular(tmp_path / "dangling")
    with pytest.raises(FileNotFoundError):
        read_bytes(tmp_path / "missing")


def test_folder_problem_says_why_a_path_cannot_be_a_folder(tmp_path):
    from linclf.util.files import folder_problem

    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "to-folder").symlink_to(tmp_path / "folder")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    assert folder_problem(tmp_path / "missing") is None and folder_problem(tmp_path / "folder") is None
    assert folder_problem(tmp_path / "file") == folder_problem(tmp_path / "file", links=True) == "is not a folder"
    assert folder_problem(tmp_path / "to-folder") == "is a symbolic link"
    assert folder_problem(tmp_path / "to-folder", links=True) is None
    assert folder_problem(tmp_path / "dangling", links=True) == "is a symbolic link that leads to no folder"


@pytest.mark.parametrize("command", [["train", "--data", "DATA"], ["sweep", "probe", "--data", "DATA", "--yes"]])
def test_a_runs_dir_that_is_a_dangling_link_is_named_in_one_line(tmp_path, command):
    from click.testing import CliRunner

    from linclf.cli import cli

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 3)).astype(np.float32), np.arange(60) % 3
    np.savez(tmp_path / "d.npz", X_train=X, y_train=y, X_test=X[:6], y_test=y[:6])
    (tmp_path / "runs").symlink_to(tmp_path / "nowhere")
    args = [str(tmp_path / "d.npz") if a == "DATA" else a for a in command]
    result = CliRunner().invoke(cli, [*args, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert "runs is a symbolic link that leads to no folder" in result.output
    assert len(result.output.strip().splitlines()) == 1
