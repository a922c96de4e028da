"""The one ranking that decides "best", and finding the best run among the runs on disk.

rank_key orders runs (finished first, the metric, then the validation loss, then the run id);
find_best applies it to the runs that are comparable (the same data and validation rows); every
place that says "best" (the sweep table, results.csv, eval/predict/visualize --best, linclf runs,
SoftmaxSweep) goes through rank. sweep.json, the record of a sweep's current runs, is read here.
"""
import json
import math
import os
import re
from pathlib import Path

from linclf.config import METRIC_NAMES, SWEEP_NAME
from linclf.experiments import modelfile
from linclf.experiments.modelfile import WEIGHTS, input_shape
from linclf.experiments.runfolders import METRICS, _number_or_none, read_metrics
from linclf.util.errors import LinclfError
from linclf.util.files import atomic_write_bytes, is_regular, read_text

SWEEP_FILE = "sweep.json"


def rank_key(row, metric):
    """Sort key of a run: finished runs first, then the higher metric, then the lower validation
    loss, then the run id (alphabetical) -- a total order, so every place that asks gets the same
    "best": the sweep table, results.csv and `eval --best`."""
    value, loss = row.get(metric), row.get("val_loss")
    ok = row.get("status") == "ok" and _number_or_none(value) and value is not None
    return (not ok, -value if ok else 0.0, loss if ok and _number_or_none(loss) and loss is not None else math.inf,
            str(row.get("run_id", "")))


def rank(rows, metric):
    """Rows (dicts with status, the metric, val_loss, run_id) sorted best first."""
    return sorted(rows, key=lambda row: rank_key(row, metric))


def write_sweep_record(folder, record):
    """sweep.json: the sweep's name, metric, data id and its current run ids (grid order)."""
    atomic_write_bytes(Path(folder) / SWEEP_FILE, (json.dumps(record, indent=1) + "\n").encode())


def read_sweep_record(folder):
    """sweep.json of a sweep folder, or None when folder holds none (it is no sweep's folder: the
    runs dir, say); LinclfError when damaged."""
    path = Path(folder) / SWEEP_FILE
    try:
        record = json.loads(read_text(path))
    except FileNotFoundError:
        return None
    except LinclfError:  # not a regular file: said as such (LinclfError is a ValueError too)
        raise
    except (OSError, ValueError) as error:
        raise LinclfError(f"{path}: damaged ({type(error).__name__}); run the sweep again to rewrite it") from None
    runs = record.get("runs") if isinstance(record, dict) else None
    if (not isinstance(runs, list) or record.get("metric") not in METRIC_NAMES  # runs: plain folder names
            or not all(isinstance(r, str) and r not in ("", ".", "..") and not {"/", "\\"} & set(r) for r in runs)):
        raise LinclfError(f"{path}: damaged (expected a metric of {', '.join(METRIC_NAMES)} and a list of run "
                          f"folder names); run the sweep again to rewrite it")
    return record


def _run_folders(root):
    """Every run folder (one holding metrics.json) under root, root itself included, in sorted
    depth-first order; hidden folders (staging, temporary) are never entered, nor a run folder's own
    subfolders, nor links to folders. A stack, not recursion: folders nested thousands deep are
    walked like any others."""
    root = Path(root)
    stack = [root]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as listing:
                entries = list(listing)
        except OSError:  # unreadable or vanished meanwhile: as os.walk, passed over
            continue
        folders = sorted(entry.name for entry in entries if _is_folder(entry) and not entry.name.startswith("."))
        if any(entry.name == METRICS and not _is_folder(entry) for entry in entries):
            yield current
            if current != root:
                continue
        stack.extend(current / name for name in reversed(folders))


def _is_folder(entry):
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _current_runs(runs_dir, sweep=None, metric=None):
    """The run folders that count under runs_dir: with `sweep` (a sweep's name, or its folder as a
    Path), that sweep's current runs (its sweep.json); else every run folder except a sweep's runs
    that its latest grid dropped. Returns (run folders, the metric to rank by, notes)."""
    if isinstance(sweep, Path):  # a folder the caller named (load()): any name
        sweep, runs_dir = sweep.name, sweep.parent
    elif sweep is not None and not re.fullmatch(SWEEP_NAME, sweep):
        raise LinclfError(f"--sweep must name a sweep: letters, digits, '.', '_' and '-', got {sweep!r}")
    root = Path(runs_dir) / sweep if sweep else Path(runs_dir)
    if not root.is_dir():
        what = f"sweep '{sweep}' in {runs_dir}" if sweep else f"runs dir {root}"
        raise LinclfError(f"no {what}; run 'linclf train' or 'linclf sweep' first")
    notes = []
    if sweep:
        record = read_sweep_record(root)
        if record is None:
            raise LinclfError(f"{root} holds no {SWEEP_FILE}: it is not a sweep's folder; run 'linclf sweep' first")
        # anything but a file at metrics.json: said when read
        folders = [root / name for name in record["runs"] if os.path.lexists(root / name / METRICS)]
        return folders, metric or record["metric"], notes
    folders, records, stale = [], {}, 0
    for run_dir in _run_folders(root):
        parent = run_dir.parent
        if parent not in records:
            try:
                records[parent] = read_sweep_record(parent)
            except LinclfError as error:
                notes.append(str(error))
                records[parent] = None
        if records[parent] is not None and run_dir.name not in records[parent]["runs"]:
            stale += 1
            continue
        folders.append(run_dir)
    if stale:
        notes.append(f"skipped {stale} runs that their sweep's latest grid no longer holds")
    return folders, metric or METRIC_NAMES[0], notes


def _row(metrics, folder, runs_dir, **extra):
    """What ranking and the notes need of a run: its metrics, never the per-step history (a few
    hundred bytes a run), and run_id, its folder under runs_dir."""
    name = folder.relative_to(runs_dir).as_posix() if folder != Path(runs_dir) else folder.name
    return {**{k: v for k, v in metrics.items() if k != "history"}, "run_id": name, **extra}


def _status(run_dir):
    try:
        metrics = read_metrics(run_dir)
    except LinclfError:
        return None
    return metrics and metrics["status"]


def _candidate(run_dir, runs_dir, notes):
    try:
        metrics = read_metrics(run_dir)
        if not metrics or metrics["status"] != "ok" or not is_regular(run_dir / WEIGHTS):
            return None
    except LinclfError as error:
        notes.append(f"skipped a damaged run: {error}")
        return None
    return _row(metrics, run_dir, runs_dir, run_dir=run_dir)


def val_rows_key(split):
    """What fixes a run's validation rows, from its metrics' split: the data's val_size last rows
    ("tail") or a seeded sample of them ("random"); train_size never changes them."""
    split = split or {}
    return {"val_size": split.get("val_size"), "val_split": split.get("val_split", "tail")}


def find_best(runs_dir, sweep=None, metric=None, data_id=None, inputs=None):
    """The best finished run (rank) under runs_dir: (run_dir, metrics without the history, notes),
    notes saying what was skipped and why. `sweep` and `metric`: as _current_runs.

    Runs compete only when comparable: measured on the same data and validation rows
    (val_rows_key). Among several such comparisons, the runs on `data_id` (the data the caller will
    use) are taken, then those validated on the most rows (the most trustworthy measure), then the
    comparison whose newest run is newest. With `inputs`, the shape of one input the caller will
    give ((32, 32, 3) images, (D,) features), only models taking such inputs compete.
    """
    if isinstance(sweep, Path):
        runs_dir = sweep.parent
    folders, metric, notes = _current_runs(runs_dir, sweep, metric)
    entries = [entry for entry in (_candidate(p, runs_dir, notes) for p in folders) if entry]
    unmeasured = [entry for entry in entries if not isinstance(entry.get(metric), (int, float))]
    if unmeasured:  # val_size 0: no validation rows, nothing to rank by
        notes.append(f"skipped {len(unmeasured)} runs without {metric} (trained with val_size 0)")
        entries = [entry for entry in entries if entry not in unmeasured]
    if inputs is not None:
        inputs = tuple(inputs)
        fitting = [e for e in entries if input_shape(e["run_dir"]) == inputs]
        if len(fitting) < len(entries):
            notes.append(f"skipped {len(entries) - len(fitting)} runs whose models take other inputs than "
                         f"{'x'.join(map(str, inputs))}")
        entries = fitting
    if not sweep:
        entries = _one_comparison(entries, data_id, notes)
    if not entries:
        root = sweep if isinstance(sweep, Path) else Path(runs_dir) / sweep if sweep else Path(runs_dir)
        diverged = sum(1 for run_dir in _run_folders(root) if _status(run_dir) == "diverged")
        why = f"every run under {root} diverged ({diverged}); try a smaller lr" if diverged else \
            f"no finished run with {metric} under {root}; run 'linclf train' or 'linclf sweep' first"
        raise LinclfError("; ".join([why, *notes]))
    best = rank(entries, metric)[0]
    return best["run_dir"], {k: v for k, v in best.items() if k != "run_dir"}, notes


def load_best(runs_dir, sweep=None, metric=None, data_id=None, inputs=None):
    """The best run's (modelfile.Model, notes) (find_best, same arguments), for `--best` and load().
    A metrics.json edited to win (its metric, or the validation loss that breaks ties) disagrees
    with the model file's own metrics and is refused."""
    run_dir, measured, notes = find_best(runs_dir, sweep, metric, data_id, inputs)
    model = modelfile.load_model(run_dir / WEIGHTS)
    for key in (*METRIC_NAMES, "val_loss"):  # what rank_key reads
        if key in model.metrics and model.metrics[key] != measured.get(key):
            raise LinclfError(f"{run_dir}: its metrics.json says {key} {measured.get(key)} but its {WEIGHTS} "
                              f"says {model.metrics[key]}: one of them was changed; delete the run folder or "
                              f"train it again")
    return model, notes


def _one_comparison(entries, data_id, notes):
    """Keep the runs measured on one data id and one set of validation rows (see find_best)."""
    def key(entry):
        return (entry.get("data_id", "unknown"), json.dumps(val_rows_key(entry.get("split")), sort_keys=True))

    groups = {}
    for entry in entries:
        groups.setdefault(key(entry), []).append(entry)
    if not groups:
        return []
    choices = [k for k in groups if data_id is None or k[0] == data_id] or list(groups)
    if data_id is not None and not any(k[0] == data_id for k in groups):
        notes.append(f"no run was trained on this data ({data_id}); comparing runs on other data")

    def trust(k):
        val_size = json.loads(k[1])["val_size"]
        newest = max(e["run_dir"].stat().st_mtime for e in groups[k])
        return (val_size if isinstance(val_size, int) else 0, newest)

    chosen = max(choices, key=trust)
    skipped = sum(len(v) for k, v in groups.items() if k != chosen)
    if skipped:
        notes.append(f"skipped {skipped} runs measured on other data or other validation rows "
                     f"(compared: data {chosen[0]}, validation rows {chosen[1]}; --sweep NAME picks within a sweep)")
    return groups[chosen]


def list_runs(runs_dir, sweep=None, metric=None):
    """Every run folder under runs_dir (or the current runs of one sweep), finished or diverged,
    ranked best first (rank). Returns (rows, notes); a row is the run's metrics without its history,
    plus run_id (its folder under runs_dir) and val_rows (val_rows_key). Damaged runs are skipped
    and said in notes."""
    folders, metric, notes = _current_runs(runs_dir, sweep, metric)
    rows = []
    for run_dir in folders:
        try:
            metrics = read_metrics(run_dir)
        except LinclfError as error:
            notes.append(f"skipped a damaged run: {error}")
            continue
        rows.append(_row(metrics, run_dir, runs_dir, val_rows=val_rows_key(metrics.get("split"))))
    return rank(rows, metric), notes
