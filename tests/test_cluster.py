"""Sweeps on a dask.distributed LocalCluster bound to 127.0.0.1."""
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("distributed", reason="the test extra installs dask[distributed]")
from dask.distributed import Client, LocalCluster  # noqa: E402

from linclf.experiments import cluster  # noqa: E402
from linclf.data import cifar10
from linclf.experiments import modelfile
from linclf.experiments import runfolders
from linclf.experiments import grids
from linclf.experiments import sweep
from conftest import ref  # noqa: E402
from linclf.cli import cli  # noqa: E402
from linclf.util.errors import LinclfError  # noqa: E402

GRID = {"name": "c", "base": {"epochs": 2, "batch_size": 16, "val_size": 50},
        "grid": {"lr": [1e-3, 3e-3], "reg": [1e-4, 1e-2]}, "group_size": 1}


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as local, Client(local) as connected:
        yield connected


def quiet(message):
    pass


def comparable(rows):
    return {r["run_id"]: (r["status"], r["val_accuracy"], r["train_accuracy"], r["final_loss"]) for r in rows}


@pytest.mark.slow
def test_cluster_sweep_matches_the_local_sweep(client, data_dir, tmp_path):
    spec = grids.parse(GRID)
    local_rows = sweep.run_sweep(spec, ref(data_dir), tmp_path / "local", log=quiet)
    remote_rows = sweep.run_sweep(spec, ref(data_dir), tmp_path / "remote", log=quiet,
                                  trainer=cluster.ClusterTrainer(client))
    assert comparable(remote_rows) == comparable(local_rows)
    files = lambda root: sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files(tmp_path / "remote") == files(tmp_path / "local")


@pytest.mark.slow
def test_the_client_never_opens_the_cache(client, data_dir, tmp_path, monkeypatch):
    """Only the workers need the data: a client without a cache can still run the sweep."""
    def no_cache_here(*args, **kwargs):
        raise AssertionError("the client opened the cache")

    monkeypatch.setattr(cifar10, "load_cache", no_cache_here)
    rows = sweep.run_sweep(grids.parse(GRID), ref(data_dir), tmp_path, log=quiet,
                           trainer=cluster.ClusterTrainer(client))
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert modelfile.load_model(tmp_path / "c" / rows[0]["run_id"]).class_names[0] == "airplane"


@pytest.mark.slow
def test_a_worker_killed_mid_task_loses_no_run(client, data_dir, tmp_path):
    spec = grids.parse({**GRID, "base": {**GRID["base"], "epochs": 300}})  # about a second per task
    killed = []

    def kill_a_busy_worker():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not killed:
            busy = [address for address, tasks in client.processing().items() if tasks]
            if busy:
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    rows = sweep.run_sweep(spec, ref(data_dir), tmp_path, log=quiet, trainer=cluster.ClusterTrainer(client))
    killer.join()
    assert killed, "no worker was busy long enough to be killed"
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert all((tmp_path / "c" / r["run_id"] / "weights.npz").is_file() for r in rows)
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker


@pytest.mark.slow
def test_missing_cache_on_the_workers_is_the_usual_error(client, tmp_path):
    spec = grids.parse(GRID)
    with pytest.raises(LinclfError, match=rf"no CIFAR-10 cache in {tmp_path}/nowhere/cifar-10: run 'linclf download"):
        cluster.ClusterTrainer(client).train_groups(ref(tmp_path / "nowhere"), list(grids.groups(spec.configs, 1)),
                                                    lambda outcome: None)


def test_groups_are_split_so_every_worker_gets_one():
    configs = [{"lr": i} for i in range(5)]
    assert [len(g) for g in cluster.split_for_workers([configs], 2)] == [3, 2]
    assert cluster.split_for_workers([configs[:2], configs[2:]], 2) == [configs[:2], configs[2:]]


@pytest.mark.slow
def test_cli_local_cluster_and_errors(data_dir, tmp_path):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text("name: q\nbase: {epochs: 1, batch_size: 16, val_size: 50}\ngrid: {lr: [1e-3, 2e-3]}\n")
    args = ["sweep", str(grid_file), "--runs-dir", str(tmp_path / "runs"), "--quiet"]
    result = CliRunner().invoke(cli, args + ["--data-dir", str(data_dir), "--scheduler", "local:1"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "runs" / "q").glob("*/weights.npz"))) == 2
    missing = CliRunner().invoke(cli, args + ["--data-dir", str(tmp_path / "none"), "--scheduler", "local:1", "--fresh"])
    assert missing.exit_code == 1 and len(missing.output.strip().splitlines()) == 1
    assert "no CIFAR-10 cache in" in missing.output
    bad = CliRunner().invoke(cli, args + ["--scheduler", "local:zero"])
    assert bad.exit_code == 1 and "tcp://127.0.0.1:8786 or local:N" in bad.output


def test_without_dask_the_option_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    with pytest.raises(LinclfError, match=r"pip install 'dask\[distributed\]' \(or, in linclf's checkout, pip install -e '\.\[dask\]'\)"):
        with cluster.connect("local:1"):
            pass


@pytest.mark.slow
def test_unreachable_scheduler(monkeypatch):
    with pytest.raises(LinclfError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        with cluster.connect("tcp://127.0.0.1:9"):
            pass


@pytest.mark.slow
def test_features_encoded_as_dask_tasks_equal_a_local_build(client, data_dir, tmp_path):
    from linclf import config
    from linclf.data import cifar10
    from linclf.features import cache
    from linclf.experiments import jobs
    from linclf.data import sources
    from conftest import batch_files, write_batches

    settings = {**config.DEFAULTS, "val_size": 50, "features": "kmeans", "kmeans_k": 8, "stride": 4,
                "kmeans_patches": 2000, "kmeans_iterations": 3}
    built = {}
    for name in ("here", "there"):
        root = tmp_path / name
        cifar10.build_cache(write_batches(tmp_path / f"b-{name}", batch_files()), root, source_md5="test")
        source = sources.cifar10(root)
        step = jobs.build_pipeline(source, settings).feature_steps[0]
        encoder = cluster.chunk_encoder(client, ref(root), step) if name == "there" else None
        built[name] = cache.build(source, step, settings, progress=False, log=quiet, encode_chunks=encoder)
    np.testing.assert_array_equal(built["here"][1], built["there"][1])
    np.testing.assert_array_equal(built["here"][2], built["there"][2])


@pytest.mark.slow
def test_workers_on_different_data_are_refused_and_named(client, tmp_path):
    """The same relative --data-dir holds another cache on one worker: no run is saved, rc != 0,
    and the message names the worker."""
    from conftest import batch_files, write_batches

    for name, md5 in (("a", "first"), ("b", "second")):
        cifar10.build_cache(write_batches(tmp_path / name / "batches", batch_files(20, 10)), tmp_path / name / "data",
                         source_md5=md5)
    addresses = sorted(client.scheduler_info()["workers"])
    original = client.run(os.getcwd)
    try:
        client.run(os.chdir, str(tmp_path / "a"), workers=[addresses[0]])
        client.run(os.chdir, str(tmp_path / "b"), workers=[addresses[1]])
        with pytest.raises(LinclfError, match=rf"Dask workers read different data under data .*{addresses[1]}"):
            sweep.run_sweep(grids.parse(GRID), {"cifar10": "data"}, tmp_path / "runs", log=quiet,
                            trainer=cluster.ClusterTrainer(client))
        assert not list((tmp_path / "runs").rglob(runfolders.METRICS))
        client.run(os.chdir, str(tmp_path), workers=[addresses[1]])  # no cache there
        with pytest.raises(LinclfError, match=rf"Dask worker {addresses[1]}: no CIFAR-10 cache"):
            sweep.run_sweep(grids.parse(GRID), {"cifar10": "data"}, tmp_path / "runs", log=quiet,
                            trainer=cluster.ClusterTrainer(client))
    finally:
        for address, folder in original.items():
            client.run(os.chdir, folder, workers=[address])


def test_an_outcome_on_other_data_is_never_saved(data_dir, tmp_path):
    """A worker that joins later with other data: its outcome is refused before anything is saved."""
    import dataclasses

    class OtherData(sweep.LocalTrainer):
        def train_groups(self, ref, todo, on_outcome, checkpoint_for=lambda members: None):
            def relabelled(outcome):
                on_outcome(dataclasses.replace(outcome, data_id="cifar10-other", origin="Dask worker tcp://x:1"))
            super().train_groups(ref, todo, relabelled, checkpoint_for)

    with pytest.raises(LinclfError, match=r"Dask worker tcp://x:1 trained on other data \(cifar10-other\)"):
        sweep.run_sweep(grids.parse(GRID), ref(data_dir), tmp_path, log=quiet, trainer=OtherData())
    assert not list(tmp_path.rglob(runfolders.METRICS))
