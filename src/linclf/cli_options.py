"""The `linclf` command's parts: its click Group (every error one line and an exit code), the
options several commands share, and what the commands print through (warn, echo_json, format_number)."""
import json
import math
import os
import signal
import sys
import warnings
from pathlib import Path

import click
from click.core import ParameterSource

from linclf import config
from linclf.util.errors import LinclfError, LinclfWarning


def _terminated(signum, frame):
    raise KeyboardInterrupt("Terminated.")


class Group(click.Group):
    """A click group whose every error (usage, LinclfError, OS error) is one line and an exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        signal.signal(signal.SIGTERM, _terminated)  # `kill`: stop as Ctrl-C does, saying what was kept
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as error:
            hint = ""
            if isinstance(error, click.UsageError) and error.ctx is not None:
                hint = f" (see '{error.ctx.command_path} --help')"
            click.echo(f"Error: {error.format_message()}{hint}", err=True)
            sys.exit(error.exit_code)
        except (click.Abort, KeyboardInterrupt) as interrupt:  # Ctrl-C; a message says what was kept
            cause = interrupt.__cause__ if isinstance(interrupt, click.Abort) else interrupt
            click.echo(str(cause or "") or "Interrupted.", err=True)
            sys.exit(130)
        except BrokenPipeError:  # output piped into `head`, say: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx):
        with warnings.catch_warnings():
            shown = warnings.showwarning

            def show(message, category, *args, **kwargs):  # linclf's own warnings: one line each
                if issubclass(category, LinclfWarning):
                    warn(f"warning: {message}")
                else:
                    shown(message, category, *args, **kwargs)

            warnings.showwarning = show
            try:
                return super().invoke(ctx)
            except LinclfError as error:
                raise click.ClickException(str(error)) from None
            except BrokenPipeError:
                raise
            except OSError as error:  # disk full, permission denied, ...
                where = f": {error.filename}" if error.filename else ""
                raise click.ClickException(f"{error.strerror or error}{where}") from None
            except MemoryError:
                raise click.ClickException("out of memory; try a smaller group_size, batch_size or data") from None


def _default_data_dir():
    from linclf.data import cifar10  # imported when a default is needed, so --help stays fast

    return cifar10.default_data_dir()


def _default_runs_dir():
    from linclf.experiments import runfolders

    return runfolders.default_runs_dir()


def data_dir_option(function):
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                        default=_default_data_dir, show_default="$LINCLF_DATA_DIR or ./data",
                        help="Folder holding the cifar-10/ cache.")(function)


def runs_dir_option(function):
    return click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path),
                        default=_default_runs_dir, show_default="$LINCLF_RUNS_DIR or ./runs",
                        help="Folder holding the runs.")(function)


def strict_json(value):
    """value with every NaN or infinity replaced by None: the output is always strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def echo_json(value):
    click.echo(json.dumps(strict_json(value), allow_nan=False))


def data_option(function):
    return click.option("--data", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.npz", help=(
        "Use arrays you bring instead of CIFAR-10: an .npz (np.savez) holding X_train (N, D) and "
        "X_test (M, D) float16/32/64 features, y_train (N,) and y_test (M,) integer labels 0..C-1, "
        "and optionally class_names (C,) strings (C = len(class_names), else the largest label + 1). "
        "No NaN/inf, no object arrays. Uncompressed members are read row by row as needed."))(function)


def data_ref(data_dir, data=None, default_data=None):
    """The data source a command reads (app.data_ref), knowing whether --data-dir was given."""
    from linclf import app

    given = click.get_current_context().get_parameter_source("data_dir") == ParameterSource.COMMANDLINE
    return app.data_ref(data, data_dir, default_data, data_dir_given=given)


def setting_options(function):
    """One --flag per training setting (config.SETTINGS), with its meaning and default."""
    for key in reversed(list(config.SETTINGS)):
        default, rule, meaning = config.SETTINGS[key]
        kind = click.Choice(rule) if isinstance(rule[0], str) else str
        solver = next((name for name, defaults in config.SOLVER_DEFAULTS.items() if key in defaults), None)
        default_value = f"{config.SOLVER_DEFAULTS[solver][key]:g}" if solver else default
        default_text = "" if default is None and solver is None else f" [default: {default_value}]"
        function = click.option(f"--{key.replace('_', '-')}", key, type=kind, metavar=None if kind is not str else
                                ("INT" if rule[0] is int else "NUMBER"),
                                help=f"{meaning[0].upper()}{meaning[1:]}.{default_text}")(function)
    return function


def chosen_model(weights, best, runs_dir, sweep_name, metric, data_id, log, inputs=None):
    """app.choose_model, its notes told to log(line)."""
    from linclf import app

    trained, notes = app.choose_model(weights, best, runs_dir, sweep_name, metric, data_id, inputs)
    for note in notes:
        log(f"note: {note}")
    return trained


def best_options(best="Use the best run under --runs-dir (see --sweep, --metric).", weights=True):
    """--best (help `best`; None: no --best), --runs-dir, --sweep and --metric: which run is best
    (the one ranking), for eval, visualize, predict and runs; `weights`: a [WEIGHTS.npz] argument."""
    def decorate(function):
        when = "With --best: " if best else ""
        function = click.option("--metric", type=click.Choice(config.METRIC_NAMES),
                                help=f"{when}{'r' if best else 'R'}ank by this [default: the sweep's metric, else "
                                     f"val_accuracy].")(function)
        function = click.option("--sweep", help=f"{when}{'o' if best else 'O'}nly this sweep's current runs.")(function)
        function = runs_dir_option(function)
        if best:
            function = click.option("--best", is_flag=True, help=best)(function)
        if weights:
            function = click.argument("weights", metavar="[WEIGHTS.npz]", required=False,
                                      type=click.Path(path_type=Path))(function)
        return function
    return decorate


def warn(message):
    click.echo(message, err=True)


def config_path(name):
    """The config file a name stands for (config_files.find), saying which one when a file here and a
    packaged config share the name."""
    from linclf import config_files

    path = config_files.find(name)
    note = config_files.which_note(name, path)
    if note:
        warn(note)
    return path


def quiet_or_warn(quiet):
    return (lambda message: None) if quiet else warn


def format_number(value, spec=".4f"):
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"
