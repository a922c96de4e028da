"""The `linclf` command: parses arguments and calls library functions, nothing more."""
import json
import os
import sys
import time
from pathlib import Path

import click

from linclf import cluster, config, data, download, evaluate, plots, runs, sweep
from linclf.errors import LinclfError


class Group(click.Group):
    """A click group whose every error (usage, LinclfError, OS error) is one line and an exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as error:
            hint = ""
            if isinstance(error, click.UsageError) and error.ctx is not None:
                hint = f" (see '{error.ctx.command_path} --help')"
            click.echo(f"Error: {error.format_message()}{hint}", err=True)
            sys.exit(error.exit_code)
        except (click.Abort, KeyboardInterrupt):
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except BrokenPipeError:  # output piped into `head`, say: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LinclfError as error:
            raise click.ClickException(str(error)) from None
        except BrokenPipeError:
            raise
        except OSError as error:  # disk full, permission denied, ...
            where = f": {error.filename}" if error.filename else ""
            raise click.ClickException(f"{error.strerror or error}{where}") from None


def data_dir_option(function):
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                        default=data.default_data_dir, show_default="$LINCLF_DATA_DIR or ./data",
                        help="Folder holding the cifar-10/ cache.")(function)


def runs_dir_option(function):
    return click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path),
                        default=runs.default_runs_dir, show_default="$LINCLF_RUNS_DIR or ./runs",
                        help="Folder holding the runs.")(function)


def show_progress(quiet):
    """Progress bars only for a person at a terminal."""
    return not quiet and sys.stdout.isatty()


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="linclf")
def cli():
    """Fast, honest linear (softmax) classifiers on CIFAR-10.

    \b
    Typical session:
      linclf download                 # fetch, verify and cache CIFAR-10
      linclf train --lr 1e-3          # one run, into ./runs/train-.../
      linclf sweep configs/grid.yaml  # lr x reg grid, trained in batched passes
      linclf eval --best              # test accuracy of the best run
      linclf visualize --best         # its ten class templates
    """


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
    """
    log = (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))
    started = time.perf_counter()
    outcome = download.download(data_dir, urls, md5, from_file, force, keep_archive,
                                progress=show_progress(quiet), log=log)
    click.echo(f"{outcome} [{time.perf_counter() - started:.1f} s]")


@cli.command("train")
@click.argument("config_file", metavar="[CONFIG.yaml]", required=False,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--lr", type=str, help="Learning rate (overrides the YAML).")
@click.option("--reg", type=str, help="L2 regularization strength.")
@click.option("--epochs", type=str, help="Passes over the training split.")
@click.option("--batch-size", type=str, help="Images per SGD step.")
@click.option("--momentum", type=str, help="Momentum, in [0, 1).")
@click.option("--lr-decay", type=str, help="lr multiplier applied after each epoch.")
@click.option("--seed", type=str, help="Random seed for initialization and shuffling.")
@click.option("--train-size", type=str, help="Use only this many training images (0 = all).")
@click.option("--val-size", type=str, help="Hold out this many training images for validation.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Run folder to write (default: a new folder under --runs-dir).")
@data_dir_option
@runs_dir_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def train_command(config_file, out, data_dir, runs_dir, quiet, as_json, **flags):
    """Train one softmax classifier by minibatch SGD.

    Settings come from the defaults, overridden by CONFIG.yaml, overridden by the flags; see
    configs/train.yaml for every key. Writes weights.npz, config.yaml, metrics.json and loss.png.
    """
    resolved = config.resolve(config_file, flags)
    run_dir = out or runs.new_run_name(runs_dir)
    result = runs.fit_and_save(resolved, data_dir, run_dir, progress=show_progress(quiet))
    metrics = result.metrics()
    if as_json:
        click.echo(json.dumps({"run_dir": str(run_dir), **{k: v for k, v in metrics.items() if k != "history"}}))
    elif result.status == "ok":
        click.echo(f"{run_dir}: train accuracy {metrics['train_accuracy']:.4f}, "
                   f"val accuracy {metrics['val_accuracy']:.4f}, loss {metrics['final_loss']:.4f}, "
                   f"{metrics['seconds']:.1f} s")
    if result.status != "ok":
        click.echo(f"Error: {run_dir}: {result.message}", err=True)
        return 3
    return 0


@cli.command("sweep")
@click.argument("grid_file", metavar="GRID.yaml", type=click.Path(dir_okay=False, path_type=Path))
@data_dir_option
@runs_dir_option
@click.option("--fresh", is_flag=True, help="Delete this sweep's earlier runs and start over.")
@click.option("--scheduler", envvar="DASK_SCHEDULER_ADDRESS", metavar="ADDRESS",
              help="Train the groups on a Dask cluster: a scheduler address (tcp://host:8786) or local:N "
                   "for N worker processes here. [env: DASK_SCHEDULER_ADDRESS; needs linclf[dask]]")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or messages.")
@click.option("--json", "as_json", is_flag=True, help="Print the results (best first) as JSON.")
def sweep_command(grid_file, data_dir, runs_dir, fresh, scheduler, quiet, as_json):
    """Grid-search train settings (lr x reg, and any other key) from a YAML grid file.

    Configurations that share epochs, batch size, seed and split sizes are trained together in one
    batched pass. Each run goes to <runs-dir>/<name>/<run-id>/; results.csv and heatmap.png sit
    beside them. Run the same command again to finish an interrupted sweep.
    """
    log = (lambda message: None) if quiet or as_json else (lambda message: click.echo(message, err=True))
    spec = sweep.load(grid_file)
    try:
        if scheduler:
            rows = cluster.run_sweep(spec, data_dir, runs_dir, scheduler, fresh, show_progress(quiet), log)
        else:
            rows = sweep.run_sweep(spec, data_dir, runs_dir, fresh=fresh, progress=show_progress(quiet), log=log)
    except KeyboardInterrupt:
        click.echo("Finished runs are kept; run the same command again to train the rest.", err=True)
        raise
    if as_json:
        click.echo(json.dumps({"name": spec.name, "metric": spec.metric, "folder": str(runs_dir / spec.name),
                               "results": rows}))
        return
    click.echo(sweep.format_table(rows, spec))
    folder = runs_dir / spec.name
    click.echo(f"results: {folder / 'results.csv'}  heatmap: {folder / 'heatmap.png'}")
    if rows and rows[0]["status"] == "ok":
        click.echo(f"best ({spec.metric} {rows[0][spec.metric]:.4f}): {folder / rows[0]['run_id']}")


def _model_from(weights, best, runs_dir, sweep):
    if weights and best:
        raise LinclfError("give either WEIGHTS.npz or --best, not both")
    if best:
        run_dir, _ = runs.find_best(runs_dir, sweep)
        return runs.load_model(run_dir / runs.WEIGHTS)
    if not weights:
        raise LinclfError("give WEIGHTS.npz or --best")
    return runs.load_model(weights)


def best_options(function):
    function = click.option("--sweep", help="With --best: look only in this sweep's folder.")(function)
    function = runs_dir_option(function)
    function = click.option("--best", is_flag=True,
                            help="Use the run with the best validation accuracy under --runs-dir.")(function)
    return click.argument("weights", metavar="[WEIGHTS.npz]", required=False,
                          type=click.Path(path_type=Path))(function)


@cli.command("eval")
@best_options
@click.option("--split", type=click.Choice(evaluate.SPLITS), default="test", show_default=True)
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def eval_command(weights, best, runs_dir, sweep, split, data_dir, as_json):
    """Evaluate a trained model: accuracy, cross-entropy, per-class accuracy, confusion matrix.

    Also writes confusion.png beside the weights.
    """
    trained = _model_from(weights, best, runs_dir, sweep)
    report = evaluate.evaluate_split(trained, data_dir, split)
    report["weights"] = str(trained.path)
    report["run_dir"] = str(trained.path.parent)
    report["val_accuracy"] = trained.metrics.get("val_accuracy")
    figure = plots.plot_confusion(report["confusion"], report["class_names"], trained.path.parent / "confusion.png",
                                  title=f"{trained.path.parent.name}: {split}, accuracy {report['accuracy']:.3f}")
    report["confusion_png"] = str(figure)
    if as_json:
        click.echo(json.dumps(report))
    else:
        if best:
            click.echo(f"best run: {trained.path.parent} "
                       f"(val accuracy {trained.metrics.get('val_accuracy', float('nan')):.4f})")
        click.echo(evaluate.format_report(report))
        click.echo(f"confusion matrix: {figure}")


@cli.command("visualize")
@best_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG to write (default: templates.png beside the weights).")
def visualize_command(weights, best, runs_dir, sweep, out):
    """Render the ten class templates (columns of W) as a 2 x 5 grid of 32x32 images."""
    trained = _model_from(weights, best, runs_dir, sweep)
    out = out or trained.path.parent / "templates.png"
    plots.plot_templates(trained.W, trained.class_names, out, title=f"class templates: {trained.path.parent.name}")
    click.echo(str(out))


def main():
    cli(prog_name="linclf")
