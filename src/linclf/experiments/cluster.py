"""Running a sweep's batched groups as tasks on a Dask cluster (the optional `dask` extra).

Each task carries only the configurations of one group and the data source's ref (a data-dir
path): the worker opens its own data and runs jobs.train_group -- the same load -> fit -> train
path as a local sweep -- and sends back the Outcome (weights, pipeline and metrics). The client
writes the run folders exactly as a local sweep does, so results, resume and `eval --best` are
the same; it never opens the data itself (a worker tells it the data id). A task whose worker
dies is run again on another worker by the scheduler.
"""
import contextlib
import dataclasses
import functools
import logging
import math
import re

from linclf.experiments import jobs
from linclf.util.errors import LinclfError

INSTALL_HINT = "--scheduler needs dask: pip install 'dask[distributed]' (or, in linclf's checkout, pip install -e '.[dask]')"


def _here():
    """The address of the Dask worker this runs on, for messages."""
    from dask.distributed import get_worker

    try:
        return f"Dask worker {get_worker().address}"
    except ValueError:  # not on a worker
        return "this machine"


def train_group_task(ref, configs):
    """Runs on a worker: jobs.train_group on the worker's own data. The worker was given one thread,
    and as a daemonic process may not fork a loader (the results are the same). Learned features
    must be in the worker's feature cache already ('linclf features'); a worker never builds them.
    The Outcome says which worker made it; an error names the worker."""
    try:
        outcome = jobs.train_group(ref, configs, prefetch=False,
                                   preparer=functools.partial(jobs.prepare, build_features=False))
    except LinclfError as error:
        raise LinclfError(f"{_here()}: {error}") from None
    return dataclasses.replace(outcome, origin=_here())


def identify_task(ref, dask_worker=None):
    """Runs on every worker (Client.run hands it the worker): jobs.identify of its own data."""
    try:
        return jobs.identify(ref)
    except LinclfError as error:
        where = f"Dask worker {dask_worker.address}" if dask_worker is not None else _here()
        raise LinclfError(f"{where}: {error}") from None


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
        # silence_logs: a task's error reaches the user as one line, not as the workers' tracebacks
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL) as cluster, \
                Client(cluster) as client:
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


def _result(future):
    """A task's result; a LinclfError raised on a worker (no data there, say) stays one line."""
    try:
        return future.result()
    except Exception as error:  # noqa: BLE001 - a worker's failure, reported in one line
        if type(error).__name__ == "LinclfError":  # ours, or a copy of its class on the way back
            raise LinclfError(str(error)) from None
        raise


class ClusterTrainer:
    """sweep.run_sweep's trainer for a dask.distributed client."""

    def __init__(self, client, progress=False):
        self.client, self.progress = client, progress

    def identify(self, ref):
        """The data's identity (jobs.identify) as every worker sees it. Workers that read other data
        under the same ref (another cache under the same relative path) would mix two data sets into
        one sweep: refused, naming the workers; so is a worker without the data."""
        answers = self.client.run(identify_task, ref, on_error="return")
        if not answers:  # no worker yet: the first one to start answers
            return _result(self.client.submit(identify_task, ref, pure=False))
        by_data = {}
        for address, answer in sorted(answers.items()):
            if isinstance(answer, BaseException):
                if type(answer).__name__ == "LinclfError":
                    raise LinclfError(str(answer)) from None
                raise LinclfError(f"Dask worker {address} cannot open the data: {answer}") from None
            by_data.setdefault(answer["data_id"], []).append(address)
        if len(by_data) > 1:
            seen = "; ".join(f"{', '.join(addresses)}: {data_id}" for data_id, addresses in by_data.items())
            raise LinclfError(f"the Dask workers read different data under {next(iter(ref.values()))} ({seen}); "
                              f"every worker must hold the same data there")
        return next(iter(answers.values()))

    def train_groups(self, ref, todo, on_outcome, checkpoint_for=None):
        """Submit every group, hand each finished one to on_outcome(outcome). Groups on workers
        are not checkpointed (a worker's disk may not be the client's); finished ones are kept."""
        from dask.distributed import as_completed

        from linclf.util import progressbars

        workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        todo = split_for_workers(todo, workers)
        futures = [self.client.submit(train_group_task, ref, members, pure=False) for members in todo]
        try:
            with progressbars.bar(len(futures), "groups", "group", enabled=self.progress) as bar:
                for future in as_completed(futures):
                    on_outcome(_result(future))
                    bar.update(1)
        finally:
            self.client.cancel(futures)


def encode_task(ref, step_name, params, state, split, start, stop):
    """Runs on a worker: the learned features of images start..stop of a split of the worker's own
    data, through the same pipeline step as a local build."""
    from linclf.features import pipeline
    from linclf.data import sources

    source = sources.open_source(ref)
    step = pipeline.STEPS[step_name](step_name, state, params)
    images = source.train_x if split == "train" else source.test_x
    return split, start, step.transform(images[start:stop])


def chunk_encoder(client, ref, step):
    """cache.build's encode_chunks for a Dask client: every chunk a task; the fitted state
    is sent to the workers once."""
    def encode_chunks(state, jobs, write):
        from dask.distributed import as_completed

        shared = client.scatter(state, broadcast=True)
        futures = [client.submit(encode_task, ref, step.name, step.params, shared, split, start, stop, pure=False)
                   for split, start, stop in jobs]
        try:
            for future in as_completed(futures):
                write(*_result(future))
        finally:
            client.cancel(futures)

    return encode_chunks


def run_sweep(spec, ref, runs_dir, address, fresh=False, progress=False, log=print, confirmed=False):
    """sweep.run_sweep with the training done on the cluster at address."""
    from linclf.experiments import sweep

    with connect(address) as client:
        workers = len(client.scheduler_info().get("workers", {}))
        log(f"Dask scheduler {client.scheduler.address}: {workers} workers")
        return sweep.run_sweep(spec, ref, runs_dir, fresh=fresh, log=log, trainer=ClusterTrainer(client, progress),
                               confirmed=confirmed)
