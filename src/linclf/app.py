"""What each command does, as plain functions (train_run, run_sweep, build_features, choose_model,
evaluate_model, list_runs, ...): the CLI only parses arguments and prints their results.

A Python user calls these (or the estimators, linclf.estimators) instead of the shell; messages go
through a `log` callback, progress bars are on when `progress` is true.
"""
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from linclf.config import PREPARED_KEYS, resolve
from linclf import config_files
from linclf.data import sources
from linclf.experiments import cluster, grids, jobs, modelfile, ranking, runfolders
from linclf.training import loop
from linclf.util import locks, progressbars
from linclf.util.errors import LinclfError


def _quiet(message):
    pass


def data_ref(data: str | Path | None = None, data_dir: str | Path | None = None, grid_data: str | Path | None = None,
             data_dir_given: bool = False) -> dict:
    """The data source to read, as a ref (sources.open_source): the array file `data`, else the
    CIFAR-10 cache under data_dir when it was given explicitly, else `grid_data` (a grid file's
    `data:`), else the cache under data_dir (default $LINCLF_DATA_DIR or ./data). An array file's
    path is made absolute (a Dask worker opens it); a data dir stays as given (each Dask worker
    reads its own)."""
    from linclf.data import cifar10

    if data and data_dir_given:
        raise LinclfError("give --data FILE.npz or --data-dir DIR, not both")
    data = data or (None if data_dir_given else grid_data)
    if data:
        return {"arrays": str(Path(data).resolve())}
    return {"cifar10": str(data_dir if data_dir is not None else cifar10.default_data_dir())}


def visualize(model: "modelfile.Model", out: str | Path | None = None) -> Path:
    """Draw what a model (modelfile.Model) learned into `out` (default: templates.png, or
    centroids.png for a k-means model, beside its weights). Returns the path."""
    from linclf.evaluation import plots

    kind = "centroids" if model.pipeline.feature_steps else "templates"
    out = Path(out) if out is not None else model.path.parent / f"{kind}.png"
    plots.plot_model(model, out)
    return out


def train_run(config: dict, ref: dict, runs_dir: str | Path | None = None, out: str | Path | None = None,
              progress: bool = False, log: Callable[[str], None] = _quiet, warn: Callable[[str], None] = _quiet
              ) -> tuple[Path, "loop.RunResult", list[Path]]:
    """Train one resolved configuration on the data `ref` names (sources.open_source) into a run
    folder, reserved and locked while training: `out` (created, or empty), else a new
    runs_dir/train-<time>. Returns (run_dir, loop.RunResult, removed): folders a killed `train` left
    unfinished under runs_dir are removed first. A failed run that wrote nothing leaves no folder.
    `log` hears progress messages, `warn` a plot that could not be drawn (the run is saved without it).
    """
    runs_dir = Path(runs_dir) if runs_dir is not None else runfolders.default_runs_dir()
    removed = runfolders.clean_abandoned(runs_dir) if out is None and runs_dir.is_dir() else []
    run_dir = runfolders.reserve_out(out) if out is not None else runfolders.reserve_run_dir(runs_dir)
    lock = run_dir / runfolders.TRAINING_LOCK
    try:
        with locks.hold(lock, f"training in {run_dir}", wait=False):
            bar = progressbars.factory(run_dir.name, "step") if progress else None
            outcome = jobs.train_group(ref, [config], progress=bar,
                                       preparer=jobs.Preparer(progress=progress, log=log))
            jobs.save(outcome, lambda result: run_dir, warn=warn)
    except BaseException:
        lock.unlink(missing_ok=True)
        if not any(run_dir.iterdir()):
            run_dir.rmdir()  # nothing was written: leave no empty folder behind
        raise
    lock.unlink(missing_ok=True)
    return run_dir, outcome.results[0], removed


def run_sweep(spec, ref, runs_dir, scheduler=None, fresh=False, progress=False, log=_quiet, confirmed=False):
    """Train every configuration of a sweep (experiments.grids.Sweep) not yet finished, here or on
    the Dask cluster at `scheduler` (an address or local:N). Returns the result rows, best first."""
    from linclf.experiments import sweep

    if scheduler:
        return cluster.run_sweep(spec, ref, runs_dir, scheduler, fresh, progress, log, confirmed)
    return sweep.run_sweep(spec, ref, runs_dir, fresh=fresh, log=log,
                           trainer=sweep.LocalTrainer(progress=progress, log=log), confirmed=confirmed)


def feature_configs(config_file):
    """The distinct feature settings a train config or a sweep grid asks for: resolved configs."""
    raw = config_files.load_yaml(config_file)
    configs = grids.parse(raw, source=str(config_file)).configs if "grid" in raw else [resolve(config_file)]
    distinct = {}
    for cfg in configs:
        distinct.setdefault(tuple(cfg[k] for k in PREPARED_KEYS), cfg)
    wanted = [cfg for cfg in distinct.values() if cfg["features"] != "pixels"]
    if not wanted:
        raise LinclfError(f"{config_file}: asks for no learned features (set features: kmeans)")
    return wanted


def build_features(config_file, ref, scheduler=None, export=None, progress=False, log=_quiet):
    """Build (or find) the cached features every feature setting of config_file asks for, encoding
    the chunks on a Dask cluster when `scheduler` is given; `export` writes them to an .npz (one
    setting only). Yields (cache folder, train features (N, F), test features (M, F), seconds so far)
    per setting."""
    from linclf.features import cache

    wanted = feature_configs(config_file)
    if export and len(wanted) > 1:
        raise LinclfError(f"{config_file} asks for {len(wanted)} feature settings; --export takes one")
    if export:
        cache.check_export(export)  # before any work
    source = sources.open_source(ref)
    started = time.perf_counter()
    with cluster.connect(scheduler) if scheduler else contextlib.nullcontext() as client:
        for cfg in wanted:
            step = jobs.build_pipeline(source, cfg).feature_steps[0]
            encoder = cluster.chunk_encoder(client, ref, step) if client is not None else None
            _, train_features, test_features = cache.build(source, step, cfg, progress=progress, log=log,
                                                           encode_chunks=encoder)
            name, _ = cache.key(source, step, cfg)
            if export:
                cache.export(export, source, train_features, test_features)
            yield cache.cache_root(source) / name, train_features, test_features, time.perf_counter() - started


def best_inputs(data=None, data_dir=None, array_name=None, images=False):
    """What `--best` compares runs on for a command that reads `data` (an .npz) or else the CIFAR-10
    cache under data_dir: (data id or None, shape of one input or None). With `array_name` the rows
    of that array are what the model will get, with `images` 32x32 RGB images: then only models
    taking such inputs compete. A file of inputs alone (no labels) has no data id."""
    from linclf.data import cifar10

    if data is None:
        try:
            data_id = sources.cifar10(data_dir).data_id
        except LinclfError:  # no cache there
            data_id = None
        return data_id, (cifar10.IMAGE_SHAPE if images else None)
    shape = sources.feature_array(data, array_name).shape[1:] if array_name is not None else None
    try:
        return sources.arrays(data).data_id, shape  # a whole data file: its runs compete
    except LinclfError:
        if array_name is None:
            raise
        return None, shape  # a file of inputs only: the runs on any data of this width compete


def choose_model(weights: str | Path | None = None, best: bool = False, runs_dir: str | Path | None = None,
                 sweep: str | None = None, metric: str | None = None, data_id: str | None = None,
                 inputs: tuple | None = None) -> tuple["modelfile.Model", list[str]]:
    """The model to use: the weights file (or run folder) `weights`, or with `best` the best run
    under runs_dir (ranking.find_best with sweep, metric, data_id and inputs). Returns (modelfile.Model,
    notes), notes saying what --best skipped and why."""
    if weights and best:
        raise LinclfError("give either WEIGHTS.npz or --best, not both")
    if best:
        runs_dir = Path(runs_dir) if runs_dir is not None else runfolders.default_runs_dir()
        return ranking.load_best(runs_dir, sweep, metric, data_id, inputs)
    if not weights:
        raise LinclfError("give WEIGHTS.npz or --best")
    return modelfile.load_model(weights), []


def evaluate_model(ref, weights=None, best=False, runs_dir=None, sweep=None, metric=None, split="test",
                   arrays_given=False):
    """Evaluate a model (choose_model) on a split ("test", "val", "train") of the data `ref` names.
    Returns (report, model, notes). With --best, the runs on that data compete. `arrays_given`
    says the data was named by the user (else a model that takes features asks for it)."""
    from linclf.evaluation import evaluate

    try:
        source, missing = sources.open_source(ref), None
    except LinclfError as error:  # say first what is wrong with the model, then with the data
        source, missing = None, error
    trained, notes = choose_model(weights, best, runs_dir, sweep, metric, source and source.data_id,
                                  source and source.train_x.shape[1:])
    if missing and not arrays_given and trained.pipeline.input_kind == "features":
        raise LinclfError(f"{trained.path} takes {evaluate.describe_inputs(trained.pipeline)}: "
                          f"give its data with --data FILE.npz")
    if missing:
        raise missing
    report = evaluate.evaluate_split(trained, source, split)
    report.update(weights=str(trained.path), run_dir=str(trained.path.parent),
                  val_accuracy=trained.metrics.get("val_accuracy"))
    return report, trained, notes


def confusion_plot(report, trained, folder=None, log=_quiet):
    """Draw confusion.png of an evaluate_model report into folder (default: beside the weights).
    Returns its path, or None when it cannot be written (logged): numbers are never lost to a plot."""
    from linclf.evaluation import plots

    folder = Path(folder or trained.path.parent)
    try:
        return plots.plot_confusion(report["confusion"], report["class_names"], folder / "confusion.png",
                                    title=f"{trained.path.parent.name}: {report['split']}, "
                                          f"accuracy {report['accuracy']:.3f}")
    except plots.PLOT_ERRORS as error:
        reason = getattr(error, "strerror", None) or error
        log(f"warning: cannot write {folder / 'confusion.png'} ({reason}); use --plots DIR or --no-plots")
        return None


def list_runs(runs_dir: str | Path | None = None, sweep: str | None = None, metric: str | None = None
              ) -> tuple[list[dict], list[str]]:
    """ranking.list_runs under runs_dir (default $LINCLF_RUNS_DIR or ./runs): (rows best first, notes)."""
    runs_dir = Path(runs_dir) if runs_dir is not None else runfolders.default_runs_dir()
    return ranking.list_runs(runs_dir, sweep, metric)
