"""The `linclf` command: parses arguments and calls library functions (helpers: cli_options.py).

Each command imports what it needs when it runs, so `--help` and `--version` answer at once.
"""
import sys
import time
from pathlib import Path

import click

from linclf import __version__
from linclf.cli_options import (Group, best_options, chosen_model, config_path, data_dir_option, data_option, data_ref,
                                echo_json, format_number, quiet_or_warn, runs_dir_option, setting_options, warn)
from linclf.util.errors import LinclfError


def show_progress(quiet):
    """Progress on stderr unless --quiet: a bar at a terminal, lines elsewhere (tests replace this)."""
    return not quiet


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             invoke_without_command=True)
@click.version_option(version=__version__, prog_name="linclf")
@click.pass_context
def cli(ctx):
    """Fast, honest linear (softmax) classifiers on CIFAR-10.

    \b
    Typical session:
      linclf download                 # fetch, verify and cache CIFAR-10
      linclf train --lr 1e-3          # one run, into ./runs/train-.../
      linclf sweep grid               # lr x reg grid of SGD (configs/grid.yaml), in batched passes
      linclf runs                     # every run, best first
      linclf eval --best              # test accuracy of the best run
      linclf visualize --best         # its ten class templates
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@cli.command("download")
@data_dir_option
@click.option("--url", "urls", multiple=True, metavar="URL",
              help="Archive address; repeat for mirrors, tried in order. "
                   "[default: $LINCLF_CIFAR10_URL or the official URL]")
@click.option("--md5", help="Expected md5 of the archive. [default: $LINCLF_CIFAR10_MD5 or the official one]")
@click.option("--from-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Use an archive already on disk instead of downloading.")
@click.option("--force", is_flag=True, help="Rebuild the cache even if it is there.")
@click.option("--keep-archive", is_flag=True, help="Keep cifar-10-python.tar.gz after building the cache.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or messages, only the result.")
def download_command(data_dir, urls, md5, from_file, force, keep_archive, quiet):
    """Download, verify and cache CIFAR-10 (resumable; safe extraction).

    The md5 is checked before anything is unpickled. An interrupted download leaves
    <data-dir>/cifar-10-python.tar.gz.part, which the next run resumes.

    \b
    Examples:
      linclf download
      linclf download --url http://127.0.0.1:8765/cifar-10-python.tar.gz --md5 <md5>
      linclf download --from-file ~/Downloads/cifar-10-python.tar.gz
    """
    from linclf.data import download

    started = time.perf_counter()
    outcome = download.download(data_dir, urls, md5, from_file, force, keep_archive,
                                progress=show_progress(quiet), log=quiet_or_warn(quiet))
    click.echo(f"{outcome} [{time.perf_counter() - started:.1f} s]")


@cli.command("train")
@click.argument("config_file", metavar="[CONFIG.yaml]", required=False,
                type=click.Path(dir_okay=False, path_type=Path))
@setting_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Run folder to write (default: a new folder under --runs-dir).")
@data_option
@data_dir_option
@runs_dir_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def train_command(config_file, out, data, data_dir, runs_dir, quiet, as_json, **flags):
    """Train one softmax classifier: to the minimum of its objective, or by SGD on a schedule.

    The objective is mean cross-entropy + 0.5 reg |W|^2 (the bias is free). Solver lbfgs (the
    default) stops at its minimum, to --tol; solver sgd runs minibatch SGD for --epochs with
    --lr decayed by --lr-decay, and is chosen as soon as one of its settings is given.
    Settings come from the defaults, overridden by CONFIG.yaml, overridden by the flags; see
    configs/train.yaml for every key. Writes weights.npz, config.yaml, metrics.json and loss.png.

    \b
    Examples:
      linclf train                                      # the minimum at reg 1e-3
      linclf train --reg 1e-2 --tol 1e-5 --json
      linclf train --lr 3e-3 --epochs 30 --lr-decay 0.85   # solver sgd
      linclf train --data embeddings.npz --reg 1e-4     # a linear probe on your features
    """
    from linclf import app, config

    resolved = config.resolve(config_path(config_file) if config_file else None, flags)
    run_dir, result, removed = app.train_run(resolved, data_ref(data_dir, data), runs_dir, out,
                                             progress=show_progress(quiet), log=quiet_or_warn(quiet), warn=warn)
    for folder in removed:
        warn(f"removed {folder}, left unfinished by a killed run")
    metrics = result.metrics()
    if as_json:
        echo_json({"run_dir": str(run_dir), **{k: v for k, v in metrics.items() if k != "history"}})
    elif result.status == "ok":
        click.echo(f"{run_dir}: train accuracy {metrics['train_accuracy']:.4f}, "
                   f"val accuracy {format_number(metrics['val_accuracy'])}, loss {metrics['final_loss']:.4f}, "
                   f"{metrics['seconds']:.1f} s"
                   + (f", converged in {result.n_iter} iterations" if result.converged else ""))
    if result.converged is False:
        warn(f"warning: not converged: {result.message}; raise --max-iter or --tol")
    if result.status != "ok":
        click.echo(f"Error: {run_dir}: {result.message}", err=True)
        return 3
    return 0


@cli.command("sweep")
@click.argument("grid_file", metavar="GRID.yaml", type=click.Path(dir_okay=False, path_type=Path))
@data_option
@data_dir_option
@runs_dir_option
@click.option("--fresh", is_flag=True, help="Delete this sweep's earlier runs and start over.")
@click.option("--scheduler", envvar="DASK_SCHEDULER_ADDRESS", metavar="ADDRESS",
              help="Train the groups on a Dask cluster: a scheduler address (tcp://host:8786) or local:N "
                   "for N worker processes here. [env: DASK_SCHEDULER_ADDRESS; needs linclf[dask]]")
@click.option("--yes", is_flag=True, help="Go ahead with more than 1,000 configurations to train.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or messages.")
@click.option("--json", "as_json", is_flag=True, help="Print the results (best first) as JSON.")
def sweep_command(grid_file, data, data_dir, runs_dir, fresh, scheduler, yes, quiet, as_json):
    """Grid-search train settings (a reg path, lr x reg, any key) from a YAML grid file.

    Configurations that share their data settings (split, pipeline, solver, epochs or tol, seed)
    are trained together in one batched group: solver lbfgs solves each to its minimum, solver
    sgd runs the schedule. Each run goes to <runs-dir>/<name>/<run-id>/; results.csv (best first),
    sweep.json and heatmap.png sit beside them. Run the same command again to finish an
    interrupted sweep; a changed grid trains only its new configurations.

    The grid file may name its data (`data: embeddings.npz`, relative to the grid file's
    folder); --data or --data-dir on the command line override it.

    \b
    Examples:
      linclf sweep configs/quick.yaml
      linclf sweep configs/grid.yaml --json
      linclf sweep configs/grid.yaml --scheduler local:2
      linclf sweep configs/probe.yaml --data embeddings.npz   # linear probe: a solved reg path
    """
    from linclf import app
    from linclf.experiments import grids, reports

    spec = grids.load(config_path(grid_file))
    rows = app.run_sweep(spec, data_ref(data_dir, data, spec.data), runs_dir, scheduler, fresh, show_progress(quiet),
                         quiet_or_warn(quiet or as_json), yes)
    folder, ok = runs_dir / spec.name, bool(rows) and rows[0]["status"] == "ok"
    heatmap = folder / "heatmap.png"
    if as_json:
        echo_json({"name": spec.name, "metric": spec.metric, "folder": str(folder), "results": rows,
                   "notes": grids.edge_notes(spec, rows[0]) if ok else []})
        return 0 if ok else 3
    click.echo(reports.format_table(rows, spec))
    click.echo(f"results: {folder / 'results.csv'}" + (f"  heatmap: {heatmap}" if ok and heatmap.is_file() else ""))
    if ok:
        click.echo(f"best ({spec.metric} {rows[0][spec.metric]:.4f}): {folder / rows[0]['run_id']}")
        for note in grids.edge_notes(spec, rows[0]):
            warn(f"note: {note}")
        return 0
    click.echo("Error: every run diverged; try a smaller lr", err=True)
    return 3


@cli.command("features")
@click.argument("config_file", metavar="CONFIG.yaml", type=click.Path(dir_okay=False, path_type=Path))
@data_dir_option
@click.option("--scheduler", envvar="DASK_SCHEDULER_ADDRESS", metavar="ADDRESS",
              help="Encode the images in chunks as tasks on a Dask cluster (address or local:N). Every "
                   "worker reads the images from its own --data-dir. [needs linclf[dask]]")
@click.option("--export", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the features to an .npz (X_train, y_train, X_test, y_test, class_names) "
                   "that 'linclf train --data' and other tools can read.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or messages.")
def features_command(config_file, data_dir, scheduler, export, quiet):
    """Build the learned features a config or a sweep grid asks for (features: kmeans), ahead.

    The features of every image are cached under <data-dir>/features/, keyed by the data and the
    feature settings, built in chunks with a progress bar; an interrupted build resumes, and train,
    sweep and eval reuse them at once. Cluster workers need them in their own data dir.

    \b
    Examples:
      linclf features configs/kmeans.yaml
      linclf features configs/kmeans.yaml --scheduler local:2
      linclf features kmeans-fast --export kmeans1600.npz
    """
    from linclf import app

    for folder, train_features, test_features, seconds in app.build_features(
            config_path(config_file), data_ref(data_dir), scheduler, export, progress=show_progress(quiet),
            log=quiet_or_warn(quiet)):
        click.echo(f"{folder}: {train_features.shape[1]} features of {len(train_features)} training and "
                   f"{len(test_features)} test images [{seconds:.1f} s]")
        if export:
            click.echo(f"exported to {export}")


@cli.command("eval")
@best_options()
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.npz",
              help="Evaluate a model trained with --data on an array file: the one it was trained on, "
                   "or another with the same D and classes (X_test/y_test; --split val or train: "
                   "X_train/y_train split as in training).")
@data_dir_option
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for confusion.png [default: beside the weights].")
@click.option("--no-plots", is_flag=True, help="Do not draw confusion.png.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def eval_command(weights, best, runs_dir, sweep, metric, split, data, data_dir, plots_dir, no_plots, as_json):
    """Evaluate a trained model: accuracy, cross-entropy, per-class accuracy, confusion matrix.

    The numbers are printed first; then confusion.png is drawn beside the weights (or in --plots).
    A plot that cannot be written is reported, and the numbers stand.

    \b
    Examples:
      linclf eval runs/mine/weights.npz
      linclf eval --best --sweep softmax-grid --json
      linclf eval runs/mine --split val --no-plots
      linclf eval --best --data embeddings.npz     # best probe on that file's data
    """
    from linclf import app
    from linclf.evaluation import evaluate

    report, trained, notes = app.evaluate_model(data_ref(data_dir, data), weights, best, runs_dir, sweep, metric, split,
                                                arrays_given=bool(data))
    for note in notes:
        warn(f"note: {note}")
    if not as_json:
        if best:
            val = trained.metrics.get("val_accuracy")
            shown = f" (val accuracy {val:.4f})" if isinstance(val, float) else ""
            click.echo(f"best run: {trained.path.parent}{shown}")
        click.echo(evaluate.format_report(report))
    drawn = None if no_plots else app.confusion_plot(report, trained, plots_dir, warn)  # after the numbers
    if as_json:
        echo_json({**report, "confusion_png": str(drawn) if drawn else None})
    elif drawn:
        click.echo(f"confusion matrix: {drawn}")


@cli.command("visualize")
@best_options()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG to write (default: templates.png or centroids.png beside the weights).")
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.npz",
              help="With --best: the runs on this data file compete (as in 'eval --best --data').")
@data_dir_option
def visualize_command(weights, best, runs_dir, sweep, metric, out, data, data_dir):
    """Render what a model learned: class templates (pixel models) or k-means centroids.

    \b
    Examples:
      linclf visualize --best
      linclf visualize runs/mine/weights.npz --out templates.png
    """
    from linclf import app

    data_id = app.best_inputs(data, data_dir)[0] if best else None
    trained = chosen_model(weights, best, runs_dir, sweep, metric, data_id, warn)
    click.echo(str(app.visualize(trained, out)))


@cli.command("predict")
@click.argument("inputs", metavar="[MODEL] [IMAGE|FOLDER]...", nargs=-1, type=click.Path(path_type=Path))
@best_options(best="Use the best run under --runs-dir (see --sweep, --metric); then every argument is an input.",
              weights=False)
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.npz",
              help="Predict the rows of an array in this .npz (a model trained with --data); with "
                   "--best and a whole data file (X_train, y_train, ...), only runs on its data compete.")
@click.option("--array", "array_name", default="X_test", show_default=True, metavar="NAME",
              help="With --data: the (N, D) float array to predict.")
@click.option("--top", type=click.IntRange(1), default=3, show_default=True, help="Classes shown per input.")
@data_dir_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or notes.")
@click.option("--json", "as_json", is_flag=True, help="Print the predictions (and errors) as JSON.")
def predict_command(inputs, best, runs_dir, sweep, metric, data, array_name, top, data_dir, quiet, as_json):
    """Predict the classes of images (PNG or JPEG, any size) or of an array's rows.

    Each image is converted to RGB and brought to the model's size (32x32): centre-cropped when
    its aspect ratio differs, then resized, with a note on stderr. It then goes through the
    model's stored input pipeline, exactly as in eval. A folder stands for the .png/.jpg/.jpeg
    files in it, sorted by name. An input that cannot be predicted gets one line on stderr;
    the others are still predicted, and the exit status is then 1.

    \b
    Examples:
      linclf predict runs/mine cat.png dog.jpg
      linclf predict --best --sweep softmax-grid photos/ --top 1
      linclf predict --best --data embeddings.npz --array X_test --json
    """
    from linclf import app
    from linclf.data import sources
    from linclf.evaluation import predict

    inputs = list(inputs)
    weights = None if best else (inputs.pop(0) if inputs else None)
    if data and inputs:
        raise LinclfError("give images or --data FILE.npz, not both")
    if not data and not inputs:
        raise LinclfError("give images (or folders of images) to predict, or --data FILE.npz")
    data_id = shape = None
    if best:  # the same choice as eval --best; rows of features never pick a model of images
        data_id, shape = app.best_inputs(data, data_dir, array_name if data else None, images=not data)
    trained = chosen_model(weights, best, runs_dir, sweep, metric, data_id, quiet_or_warn(quiet), shape)
    top = min(top, len(trained.class_names))
    predictions, errors, bar = [], [], None
    if data:
        where = f"{Path(data)}: {array_name}"
        results = predict.predict_rows(trained, sources.feature_array(data, array_name), where, top)
    else:
        paths, errors = predict.expand(inputs)
        errors = [{"input": str(path), "error": message} for path, message in errors]
        predict.image_size(trained)  # a model that takes no images: one line, before any file is read
        if show_progress(quiet) and len(paths) >= 50:
            from tqdm import tqdm
            bar = tqdm(total=len(paths), desc="images", unit="image", leave=False, dynamic_ncols=True)
        note = None if quiet else (lambda message: (bar.write(f"note: {message}", file=sys.stderr) if bar
                                                    else warn(f"note: {message}")))
        results = predict.predict_images(trained, paths, top, note, bar)
    try:
        for entry in results:
            if "error" in entry:
                errors.append(entry)
            elif as_json:
                predictions.append(entry)
            else:
                label = entry["input"] if "input" in entry else f"row {entry['row']}"
                classes = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in entry["top"])
                click.echo(f"{label}: {classes}")
    finally:
        if bar is not None:
            bar.close()
    if as_json:
        echo_json({"model": str(trained.path), "predictions": predictions, "errors": errors})
    for entry in errors:
        warn(f"Error: {entry['error']}")
    return 1 if errors else 0


@cli.command("runs")
@best_options(best=None, weights=False)
@click.option("--json", "as_json", is_flag=True, help="Print the runs (best first) as JSON.")
def runs_command(runs_dir, sweep, metric, as_json):
    """List the runs of a runs dir, best first: what 'eval --best' chooses from.

    Every finished or diverged run (a sweep's runs that its latest grid dropped are left out),
    ranked by the one ranking. Runs are comparable when they share their data and validation
    rows: the table shows both, and '--best' compares only those of one kind.

    \b
    Examples:
      linclf runs
      linclf runs --sweep softmax-grid --json
    """
    from linclf import app

    rows, notes = app.list_runs(runs_dir, sweep, metric)
    for note in notes:
        warn(f"note: {note}")
    if as_json:
        echo_json({"runs_dir": str(runs_dir), "runs": rows})
        return 0
    if not rows:
        click.echo(f"no runs under {runs_dir}")
        return 0
    header = ["run", "status", "val_acc", "train_acc", "val_loss", "seconds", "data", "val rows"]
    lines = [[row["run_id"], row["status"], format_number(row.get("val_accuracy")), format_number(row.get("train_accuracy")),
              format_number(row.get("val_loss")), format_number(row.get("seconds"), ".1f"), str(row.get("data_id", "unknown")),
              f"{row['val_rows']['val_size']} {row['val_rows']['val_split']}"] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines)]
    for cells in [header, *lines]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip())
    return 0


def main():
    cli(prog_name="linclf")
