"""Running a sweep: train a grid's configurations (grids.py) in batched groups, record each run.

Each configuration is a run folder <runs-dir>/<name>/<run-id>/ (runfolders.save_run), with a run id
derived from its resolved configuration, the data and the pipeline (runfolders.run_id), so re-running
skips what is finished and other data trains anew. A group in progress is checkpointed
(checkpoints.py); reports.py writes results.csv, the table and the heatmap.
"""
import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np

from linclf import config
from linclf.data import sources
from linclf.evaluation import plots
from linclf.experiments import checkpoints, grids, jobs, ranking, reports, runfolders
from linclf.util import interrupts, locks, progressbars
from linclf.util.errors import LinclfError
from linclf.util.files import folder_problem, make_folders

CHECKPOINTS = ".checkpoints"  # hidden: never a run, never a candidate for --best
LOCK = ".sweep.lock"          # held while a process runs the sweep
CHECKPOINT_SECONDS = 5.0      # a group in progress is checkpointed at an epoch end at most this often
CONFIRM_ABOVE = 1000          # more configurations than this to train need --yes


class LocalTrainer:
    """Trains a sweep's groups here, one after another (cluster.ClusterTrainer does it on Dask).
    `source`: the data (a sources.Source), else opened from the ref by `identify`, once a sweep."""

    def __init__(self, progress=False, log=print, source=None):
        self.progress, self.source = progress, source
        # consecutive groups on one split share the prepared data; learned features are built here
        self.preparer = jobs.Preparer(build_features=True, progress=progress, log=log)

    def identify(self, ref):
        """Open the data `ref` names (once: train_groups uses it); returns jobs.identify's dict."""
        self.source = sources.open_source(ref)
        return jobs.identify(self.source)

    def train_groups(self, ref, todo, on_outcome, checkpoint_for=lambda members: None):
        """Train each group, hand its Outcome to on_outcome; checkpoint_for(members) gives the
        group's checkpoints.Checkpoint (or None)."""
        source = self.source if self.source is not None else sources.open_source(ref)
        for number, members in enumerate(todo, 1):
            bar = progressbars.factory(f"group {number}/{len(todo)} ({len(members)} runs)", "step") if self.progress \
                else None
            on_outcome(jobs.train_group(source, members, progress=bar, preparer=self.preparer,
                                        checkpoint=checkpoint_for(members)))


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep; the message says what was kept."""


def _kept(done, total, group_checkpoints, todo):
    saved = [c for c in group_checkpoints if c.saved_epoch]
    line = f"Interrupted: {done} of {total} runs are finished and kept"
    if saved:
        epochs = todo[0][0]["epochs"] if todo else "?"
        line += f"; the group in progress is checkpointed at epoch {saved[-1].saved_epoch}/{epochs}"
    return line + "; run the same command again to continue."


LBFGS_PASSES = 60  # a typical lbfgs run's passes over the data (README: 15-70 iterations measured)


def estimate_seconds(configs, num_train, dim, num_classes):
    """A rough training time (s) of one group of configurations, from this machine's float32
    matmul rate measured now: per epoch (sgd) or pass (lbfgs) two products of 2 * N * D * K*C
    multiply-adds."""
    A, B = np.ones((512, 1024), np.float32), np.ones((1024, 256), np.float32)
    started = time.perf_counter()
    for _ in range(4):
        A @ B
    rate = 4 * 2 * A.shape[0] * A.shape[1] * B.shape[1] / max(time.perf_counter() - started, 1e-9)
    passes = configs[0]["epochs"] if configs[0]["solver"] == "sgd" else LBFGS_PASSES
    flops = passes * 4 * num_train * dim * len(configs) * num_classes
    return 1.3 * flops / rate


def _duration(seconds):
    if seconds < 1:
        return "under 1 s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def run_sweep(sweep, ref, runs_dir, fresh=False, log=print, trainer=None, confirmed=False):
    """Train every configuration of sweep not yet finished; returns the results rows, best first
    (ranking.rank). `ref` names the data source (sources.open_source); `trainer` is a LocalTrainer
    (the default) or a cluster.ClusterTrainer.

    Writes <runs-dir>/<name>/: a folder per run, results.csv (best first), sweep.json (the metric
    and the current grid's run ids: what `eval --best --sweep` considers) and heatmap.png. A group
    in progress is checkpointed (at most every CHECKPOINT_SECONDS, at epoch ends) in the hidden
    .checkpoints/ folder; Ctrl-C raises SweepInterrupted, and running again continues from there.
    """
    trainer = trainer or LocalTrainer()
    folder = Path(runs_dir) / sweep.name
    problem = folder_problem(folder)
    if problem:
        raise LinclfError(f"refusing to use {folder} as the sweep's folder: it {problem}; remove it")
    created = not folder.exists()
    make_folders(folder)
    try:
        # one process per sweep folder: a second sweep of the same name says who holds it
        with locks.hold(folder / LOCK, f"running sweep '{sweep.name}' in {folder}", wait=False):
            return _run_sweep(sweep, ref, folder, log, trainer, confirmed, fresh)
    except LinclfError:
        if created and {p.name for p in folder.iterdir()} <= {LOCK}:
            shutil.rmtree(folder)  # refused before anything was written: leave no folder behind
        raise


SWEEP_FILES = ("results.csv", "heatmap.png", ranking.SWEEP_FILE, CHECKPOINTS)


def _remove_sweep_files(folder):
    """--fresh: delete what sweeps write in folder (run folders, results.csv, heatmap.png,
    sweep.json, checkpoints) and nothing else: a file of the user's stays."""
    for path in folder.iterdir():
        if path.is_symlink():
            continue
        run_folder = path.is_dir() and ((path / runfolders.METRICS).exists() or (path / runfolders.CONFIG).exists())
        if path.name in SWEEP_FILES or run_folder:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _run_sweep(sweep, ref, folder, log, trainer, confirmed, fresh):
    identity = trainer.identify(ref)
    configs = [config.for_data(cfg, identity["num_train"]) for cfg in sweep.configs]
    grids.check_validated(configs, sweep.metric, f"sweep '{sweep.name}'", identity["num_train"])
    identifiers = [runfolders.run_id(cfg, identity, sweep.axes) for cfg in configs]
    finished = {}
    for cfg, identifier in [] if fresh else zip(configs, identifiers):
        try:
            metrics = runfolders.read_metrics(folder / identifier)
        except LinclfError as error:
            log(f"{error}: training it again")  # saved over when it is trained (jobs.save's replace)
            continue
        if metrics is not None:
            finished[identifier] = reports.result_row(cfg, metrics, identifier)
    pending = [cfg for cfg, identifier in zip(configs, identifiers) if identifier not in finished]

    def rows_in_order():
        return ranking.rank([finished[i] for i in identifiers if i in finished], sweep.metric)

    todo = list(grids.groups(pending, sweep.group_size))
    plan = ""
    if todo:
        widest = max(todo, key=len)
        each = estimate_seconds(widest, identity["num_train"], identity["dim"], len(identity["class_names"]))
        groups_text = "1 group" if len(todo) == 1 else f"{len(todo)} groups"
        plan = f"; {len(pending)} to train in {groups_text} of up to {len(widest)} (about {_duration(each)} each)"
        if len(pending) > CONFIRM_ABOVE and not confirmed:
            raise LinclfError(f"sweep '{sweep.name}' would train {len(pending):,} configurations in {len(todo):,} "
                              f"groups of up to {len(widest)} (about {_duration(each)} each); add --yes to go ahead")
    for cfg in pending:  # splits that do not fit this data: refused before anything is written
        sources.check_split(identity["num_train"], cfg["val_size"], cfg["train_size"])
    # every check passed: only now is anything in the sweep's folder changed
    if fresh:
        _remove_sweep_files(folder)
    ranking.write_sweep_record(folder, {"name": sweep.name, "metric": sweep.metric, "data_id": identity["data_id"],
                                     "axes": sweep.axes, "runs": identifiers})
    log(f"sweep '{sweep.name}': {len(configs)} configurations, {len(finished)} already finished{plan} -> {folder}")
    in_progress = {}  # group key -> its checkpoints.Checkpoint
    # the run ids are planned once, above; configurations come back from training as equal dicts
    identifier_of = {grids.config_key(cfg): identifier for cfg, identifier in zip(configs, identifiers)}

    def run_of(cfg):
        return identifier_of[grids.config_key(cfg)]

    def group_key(configs):
        """A group's name, from its run ids: a changed grid never resumes a wrong checkpoint."""
        return hashlib.sha1(json.dumps([run_of(cfg) for cfg in configs]).encode()).hexdigest()[:16]

    def checkpoint_for(members):
        key = group_key(members)
        in_progress[key] = checkpoints.Checkpoint(folder / CHECKPOINTS / f"{key}.npz", CHECKPOINT_SECONDS,
                                           log=lambda line: log(f"group of {len(members)} runs: {line}"))
        return in_progress[key]

    def on_outcome(outcome):
        if outcome.data_id != identity["data_id"]:  # a worker that read other data: never mixed in
            raise LinclfError(f"{outcome.origin} trained on other data ({outcome.data_id}) than the sweep's "
                              f"({identity['data_id']}); every worker must hold the same data")
        key = group_key([r.config for r in outcome.results])
        # a group is saved whole or not at all (its checkpoint kept), so a rerun trains the same
        # groups and gets the same bits; a signal waits until the end, and the count is true
        with interrupts.held():
            # replace: a damaged run folder is trained again; the sweep's lock keeps others out
            jobs.save(outcome, lambda result: folder / run_of(result.config), warn=log, replace=True)
            for result in outcome.results:
                metrics = {**result.metrics(), "data_id": outcome.data_id}
                finished[run_of(result.config)] = reports.result_row(result.config, metrics, run_of(result.config))
            reports.write_results(folder / "results.csv", rows_in_order())
            checkpoint = in_progress.pop(key, None)
            if checkpoint is not None:
                checkpoint.remove()

    if pending:
        try:
            with interrupts.watching():
                trainer.train_groups(ref, todo, on_outcome, checkpoint_for)
        except KeyboardInterrupt:
            raise SweepInterrupted(_kept(len(finished), len(identifiers), in_progress.values(), todo)) from None
    shutil.rmtree(folder / CHECKPOINTS, ignore_errors=True)
    rows = rows_in_order()
    reports.write_results(folder / "results.csv", rows)
    heatmap = folder / "heatmap.png"
    if any(r["status"] == "ok" for r in rows):
        plots.draw_or_warn(lambda: reports.plot_heatmap(sweep, rows, heatmap, log), heatmap, log)
    elif heatmap.is_file() or heatmap.is_symlink():
        heatmap.unlink()  # every run diverged: no picture of older results stays
    return rows


