"""Running a sweep's batched groups as tasks on a Dask cluster (the optional `dask` extra).

Each task carries only the configurations of one group and the data-dir path: the worker opens its
own cache, trains the group with train.train_group and sends back the results (weights and metrics,
about 120 KB a run). The client writes the run folders exactly as a local sweep does, so results,
resume and `eval --best` are the same. A task whose worker dies is run again on another worker by
the scheduler.
"""
import contextlib
import math
import re

from tqdm import tqdm

from linclf import data, sweep, train
from linclf.errors import LinclfError

INSTALL_HINT = "--scheduler needs dask: pip install 'linclf[dask]'"


def train_group_task(data_dir, configs):
    """Runs on a worker: train one group from the worker's own cache.

    Returns (results, preprocessing, class_names), the arguments of sweep.run_sweep's on_results.
    """
    dataset = data.load_cache(data_dir)
    prepared = train.prepare_for(dataset, configs[0])
    # the worker was given one thread, and as a daemonic process may not fork a loader (same results)
    results = train.train_group(prepared, configs, len(dataset.class_names), prefetch=False)
    return results, prepared.preprocessing, dataset.class_names


@contextlib.contextmanager
def connect(address):
    """A dask.distributed Client for a scheduler address, or for `local:N` (a LocalCluster of N
    single-threaded worker processes on 127.0.0.1)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise LinclfError(INSTALL_HINT) from None
    local = re.fullmatch(r"local:(\d+)", address)
    if local:
        workers = int(local.group(1))
        if not 1 <= workers <= 256:
            raise LinclfError(f"--scheduler local:N needs N in [1, 256], got {workers}")
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            yield client
        return
    if address.startswith("local"):
        raise LinclfError(f"--scheduler must be an address such as tcp://127.0.0.1:8786 or local:N, got {address!r}")
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as error:
        raise LinclfError(f"cannot reach the Dask scheduler at {address}: {error}") from None
    with client:
        yield client


def split_for_workers(todo, workers):
    """Cut groups into smaller ones until there is a task for every worker (results do not change)."""
    total = sum(len(members) for members in todo)
    if total == 0 or len(todo) >= workers:
        return todo
    size = max(1, math.ceil(total / workers))
    return [members[start:start + size] for members in todo for start in range(0, len(members), size)]


def train_groups(client, data_dir, todo, on_results, progress=False):
    """Submit every group, hand each finished one to on_results(results, preprocessing, class_names)."""
    from dask.distributed import as_completed

    workers = max(1, len(client.scheduler_info().get("workers", {})))
    todo = split_for_workers(todo, workers)
    futures = [client.submit(train_group_task, str(data_dir), members, pure=False) for members in todo]
    try:
        with tqdm(total=len(futures), desc="groups", unit="group", disable=not progress) as bar:
            for future in as_completed(futures):
                on_results(*future.result())
                bar.update(1)
    finally:
        client.cancel(futures)


def run_sweep(spec, data_dir, runs_dir, address, fresh=False, progress=False, log=print):
    """sweep.run_sweep with the training done on the cluster at address."""
    with connect(address) as client:
        workers = len(client.scheduler_info().get("workers", {}))
        log(f"Dask scheduler {client.scheduler.address}: {workers} workers")
        return sweep.run_sweep(spec, data_dir, runs_dir, fresh=fresh, progress=progress, log=log,
                               train_groups=lambda todo, on_results: train_groups(client, data_dir, todo,
                                                                                    on_results, progress))
