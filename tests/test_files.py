import os

import pytest

from linclf.files import atomic_write_bytes, build_dir


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
