"""Grid search: expand a grid file into configurations, train them in batched groups, record them.

Grid file (YAML):
    name: softmax-grid        # the sweep's folder under the runs dir
    metric: val_accuracy      # what "best" maximizes: val_accuracy or train_accuracy
    base: {epochs: 10}        # any train key, applied to every configuration
    grid:                     # cartesian product; a list, or {min, max, num, scale: log|linear}
      lr: [1.0e-3, 3.0e-3]
      reg: {min: 1.0e-4, max: 1.0e-1, num: 4, scale: log}
    group_size: 32            # at most this many configurations trained together (memory bound)
    data: embeddings.npz      # optional: train on this array file (relative to the grid file's
                              # folder; `--data` and `--data-dir` override it)

Each configuration is a run folder <runs-dir>/<name>/<run-id>/ (runfolders.save_run), with a run id
derived from its resolved configuration, the data and the pipeline (runfolders.run_id), so re-running
skips what is finished and other data trains anew.
"""
import csv
import hashlib
import io
import json
import itertools
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linclf import config
from linclf.experiments import jobs
from linclf.util import locks
from linclf.util.files import folder_problem
from linclf.evaluation import plots
from linclf.util import progress
from linclf.experiments import checkpoints
from linclf.experiments import ranking
from linclf.experiments import runfolders
from linclf.data import sources
from linclf.config import DATA_KEYS, DEFAULTS
from linclf.util.errors import LinclfError
from linclf.util.files import atomic_write_bytes

SWEEP_KEYS = ("name", "metric", "base", "grid", "group_size", "data")
CHECKPOINTS = ".checkpoints"  # hidden: never a run, never a candidate for --best
LOCK = ".sweep.lock"          # held while a process runs the sweep
CHECKPOINT_SECONDS = 5.0      # a group in progress is checkpointed at an epoch end at most this often
CONFIRM_ABOVE = 1000          # more configurations than this to train need --yes
MOST_CONFIGURATIONS = 100_000  # no grid may expand to more
METRICS = config.METRIC_NAMES
RANGE_KEYS = ("min", "max", "num", "scale")
RESULT_COLUMNS = ("train_accuracy", "val_accuracy", "val_loss", "final_loss", "status", "converged", "n_iter", "seconds",
                  "run_id")


@dataclass
class Sweep:
    name: str
    metric: str
    axes: dict           # grid key -> list of values, in file order
    configs: list        # resolved configurations, one per grid point
    group_size: int
    data: Path | None = None  # the array file the grid names, if any


def _axis_values(key, spec, source):
    prefix = f"{source}: grid.{key}"
    if isinstance(spec, list):
        values = spec
    elif isinstance(spec, dict):
        for range_key in spec:
            config.check_key(range_key, valid=RANGE_KEYS, prefix=f"{prefix}: ")
        missing = [k for k in ("min", "max", "num") if k not in spec]
        if missing:
            raise LinclfError(f"{prefix}: a range needs min, max and num; missing {', '.join(missing)}")
        low, high = (config.check_value(key, spec[k], prefix=f"{prefix}.{k}: ") for k in ("min", "max"))
        num, scale = spec["num"], spec.get("scale", "linear")
        if isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= 1000:
            raise LinclfError(f"{prefix}.num must be an integer in [1, 1000], got {config.shown(num)}")
        if scale not in ("log", "linear"):
            raise LinclfError(f"{prefix}.scale must be log or linear, got {config.shown(scale)}")
        if low > high:
            raise LinclfError(f"{prefix}: min ({low:g}) must not exceed max ({high:g})")
        if scale == "log" and low <= 0:
            raise LinclfError(f"{prefix}: a log range needs min > 0, got {low:g}")
        values = np.geomspace(low, high, num) if scale == "log" else np.linspace(low, high, num)
        values = [float(f"{v:.6g}") for v in values]
    else:
        raise LinclfError(f"{prefix} must be a list of values or {{min, max, num, scale}}, got {config.shown(spec)}")
    if not values:
        raise LinclfError(f"{prefix} is empty; give at least one value")
    checked = [config.check_value(key, v, prefix=f"{prefix}: ") for v in values]
    if len(set(checked)) != len(checked):
        raise LinclfError(f"{prefix} repeats a value: {checked}")
    return checked


def parse(spec, source="grid"):
    """Validate a grid mapping (as read from YAML) and expand it into a Sweep."""
    if not isinstance(spec, dict):
        raise LinclfError(f"{source}: expected a mapping with keys {', '.join(SWEEP_KEYS)}")
    for key in spec:
        config.check_key(key, valid=SWEEP_KEYS, prefix=f"{source}: ")
    name = spec.get("name", Path(source).stem)
    if not isinstance(name, str) or not re.fullmatch(config.SWEEP_NAME, name):
        raise LinclfError(f"{source}: name must be a folder name (text) of letters, digits, '.', '_' and '-', "
                          f"got {config.shown(name)}")
    metric = spec.get("metric", config.SWEEP_DEFAULTS["metric"])
    if metric not in METRICS:
        raise LinclfError(f"{source}: metric must be one of {', '.join(METRICS)}, got {config.shown(metric)}")
    group_size = spec.get("group_size", config.SWEEP_DEFAULTS["group_size"])
    if isinstance(group_size, bool) or not isinstance(group_size, int) or not 1 <= group_size <= 1024:
        raise LinclfError(f"{source}: group_size must be an integer in [1, 1024], got {config.shown(group_size)}")
    base = {k: v for k, v in config.validate(spec.get("base") or {}, source=f"{source}: base").items()
            if v is not None}
    grid = spec.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise LinclfError(f"{source}: grid must map at least one train key to its values")
    axes = {}
    for key, values in grid.items():
        config.check_key(key, prefix=f"{source}: grid: ")
        if key in base:
            raise LinclfError(f"{source}: {key} is in both base and grid; keep one")
        axes[key] = _axis_values(key, values, source)
    count = math.prod(len(values) for values in axes.values())
    if count > MOST_CONFIGURATIONS:
        raise LinclfError(f"{source}: the grid expands to {count:,} configurations; at most "
                          f"{MOST_CONFIGURATIONS:,} are allowed")
    configs = [config.complete({**base, **dict(zip(axes, point))}, source) for point in itertools.product(*axes.values())]
    if metric == "val_accuracy" and any(cfg["val_size"] == 0 for cfg in configs):
        raise LinclfError(f"{source}: a sweep ranks its runs by val_accuracy: val_size must be at least 1")
    data = spec.get("data")
    if data is not None and (not isinstance(data, str) or not data.strip()):
        raise LinclfError(f"{source}: data must be the path of an .npz file, got {config.shown(data)}")
    return Sweep(name, metric, axes, configs, group_size, Path(data) if data else None)


def load(path):
    """The grid file at path; its `data` path, when relative, is relative to the file's folder."""
    spec = parse(config.load_yaml(path), source=str(path))
    if spec.data is not None and not spec.data.is_absolute():
        spec.data = Path(path).parent / spec.data
    return spec


def config_key(config):
    """A configuration as text, to find it again when it comes back from training as an equal dict."""
    return json.dumps(config, sort_keys=True)


def groups(configs, group_size):
    """Split configurations into batches that share the data-shaping keys, at most group_size each."""
    by_data = {}
    for cfg in configs:
        by_data.setdefault(tuple(cfg[k] for k in DATA_KEYS), []).append(cfg)
    for members in by_data.values():
        for start in range(0, len(members), group_size):
            yield members[start:start + group_size]


def _row(cfg, metrics, identifier):
    row = {key: cfg[key] for key in DEFAULTS}
    row.update({key: metrics.get(key) for key in RESULT_COLUMNS[:-1]})
    row["run_id"] = identifier
    return row


def write_results(path, rows):
    """results.csv, one row per finished run, best first, written atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(DEFAULTS) + list(RESULT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, text.getvalue().encode())


def shown(value):
    """A grid value as text: numbers in %g."""
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def plot_heatmap(sweep, rows, path, log=None):
    """The metric over the first two axes (lr x reg when both vary), best over any other axes.
    log(line) is told when the grid is too large for the values in its cells."""
    keys = [k for k in ("reg", "lr") if k in sweep.axes] or list(sweep.axes)
    keys = (keys + [k for k in sweep.axes if k not in keys])[:2]
    row_key, column_key = (keys + [None])[:2]
    row_values = sweep.axes[row_key]
    column_values = sweep.axes[column_key] if column_key else [None]
    values = np.full((len(row_values), len(column_values)), np.nan)
    for row in rows:
        if row["status"] != "ok":
            continue
        i = row_values.index(row[row_key])
        j = column_values.index(row[column_key]) if column_key else 0
        values[i, j] = np.fmax(values[i, j], row[sweep.metric])

    if log is not None and not plots.heatmap_shows_values(*values.shape):
        log(f"note: {path} shows {values.shape[0]} x {values.shape[1]} cells ({' x '.join(filter(None, keys))}), "
            f"too many for their values; {path.parent / 'results.csv'} has them")
    others = [k for k in sweep.axes if k not in keys]
    title = f"{sweep.name}: {sweep.metric}" + (f" (best over {', '.join(others)})" if others else "")
    numeric = [v for v in row_values + column_values if v is not None]
    if not all(isinstance(v, (int, float)) for v in numeric):  # a word axis: no log scale to judge
        row_values = column_values = None
    return plots.plot_heatmap(values, [shown(v) for v in sweep.axes[row_key]],
                              [shown(v) if v is not None else "" for v in (sweep.axes[column_key] if column_key
                                                                           else [None])],
                              path, row_key, column_key or "", title, row_values=row_values,
                              column_values=column_values if column_key else None)


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
            bar = progress.factory(f"group {number}/{len(todo)} ({len(members)} runs)", "step") if self.progress \
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
    import time

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
    folder.mkdir(parents=True, exist_ok=True)
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
    identifiers = [runfolders.run_id(cfg, identity, sweep.axes) for cfg in configs]
    finished = {}
    for cfg, identifier in zip(configs, identifiers):
        if fresh:
            continue
        try:
            metrics = runfolders.read_metrics(folder / identifier)
        except LinclfError as error:
            log(f"{error}: training it again")  # saved over when it is trained (jobs.save's replace)
            continue
        if metrics is not None:
            finished[identifier] = _row(cfg, metrics, identifier)
    pending = [cfg for cfg, identifier in zip(configs, identifiers) if identifier not in finished]

    def rows_in_order():
        return ranking.rank([finished[i] for i in identifiers if i in finished], sweep.metric)

    todo = list(groups(pending, sweep.group_size))
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
    log(f"sweep '{sweep.name}': {len(configs)} configurations, {len(finished)} already finished{plan}"
        f" -> {folder}")

    in_progress = {}  # group key -> its checkpoints.Checkpoint

    # the run ids are planned once, above; configurations come back from training as equal dicts
    identifier_of = {config_key(cfg): identifier for cfg, identifier in zip(configs, identifiers)}

    def group_key(configs):
        """A group's name, from its run ids: a changed grid never resumes a wrong checkpoint."""
        return hashlib.sha1(json.dumps([identifier_of[config_key(cfg)] for cfg in configs]).encode()).hexdigest()[:16]

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
        # replace: a damaged run folder is trained again; the sweep's lock keeps others out
        jobs.save(outcome, lambda result: folder / identifier_of[config_key(result.config)], warn=log, replace=True)
        for result in outcome.results:
            identifier = identifier_of[config_key(result.config)]
            finished[identifier] = _row(result.config, {**result.metrics(), "data_id": outcome.data_id}, identifier)
        write_results(folder / "results.csv", rows_in_order())
        checkpoint = in_progress.pop(key, None)
        if checkpoint is not None:
            checkpoint.remove()

    if pending:
        try:
            trainer.train_groups(ref, todo, on_outcome, checkpoint_for)
        except KeyboardInterrupt:
            raise SweepInterrupted(_kept(len(finished), len(identifiers), in_progress.values(), todo)) from None
    shutil.rmtree(folder / CHECKPOINTS, ignore_errors=True)
    rows = rows_in_order()
    write_results(folder / "results.csv", rows)
    heatmap = folder / "heatmap.png"
    if any(r["status"] == "ok" for r in rows):
        plots.draw_or_warn(lambda: plot_heatmap(sweep, rows, heatmap, log), heatmap, log)
    elif heatmap.is_file() or heatmap.is_symlink():
        heatmap.unlink()  # every run diverged: no picture of older results stays
    return rows


def edge_notes(sweep, best):
    """Lines saying which numeric axes (of 3 or more values) the best row `best` sits on the edge
    of: the best setting may lie beyond the grid there."""
    notes = []
    for key, values in sweep.axes.items():
        numeric = [v for v in values if isinstance(v, (int, float))]
        if len(numeric) < 3 or len(numeric) != len(values) or best.get(key) not in (min(values), max(values)):
            continue
        end = "largest" if best[key] == max(values) else "smallest"
        notes.append(f"the best {key}, {shown(best[key])}, is the {end} value of the grid's {key} axis: "
                     f"a better one may lie beyond it; widen the axis")
    return notes


def _converged(row):
    """A run's convergence for the table: "yes (23 it)" / "NO (1000 it)" (lbfgs), "- (10 ep)" (sgd)."""
    count = row.get("n_iter")
    if row.get("converged") is None:
        return f"- ({count} ep)" if count else "-"
    return f"{'yes' if row['converged'] else 'NO'} ({count} it)"


def format_table(rows, sweep):
    """The results as an aligned text table, best first, the best marked with '*'."""
    axes = list(sweep.axes)
    header = ["", *axes, "train_acc", "val_acc", "loss", "status", "converged", "seconds", "run_id"]
    lines = []
    best_id = rows[0]["run_id"] if rows and rows[0]["status"] == "ok" else None

    def number(value, spec):
        return format(value, spec) if value is not None else "-"

    for row in rows:
        lines.append(["*" if row["run_id"] == best_id else "", *[shown(row[k]) for k in axes],
                      number(row["train_accuracy"], ".4f"), number(row["val_accuracy"], ".4f"),
                      number(row["final_loss"], ".4f"), row["status"], _converged(row), number(row["seconds"], ".2f"),
                      row["run_id"]])
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]

    def render(cells):
        return "  ".join(str(c).rjust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([render(header)] + [render(line) for line in lines])
