"""A sweep's results shown: results.csv, the text table and the heatmap."""
import csv
import io

import numpy as np

from linclf.config import DEFAULTS
from linclf.evaluation import plots
from linclf.experiments.grids import value_text
from linclf.util.files import atomic_write_bytes

RESULT_COLUMNS = ("train_accuracy", "val_accuracy", "val_loss", "final_loss", "status", "converged", "n_iter", "seconds",
                  "run_id")


def result_row(cfg, metrics, identifier):
    """A run's row of results.csv (and of the table): its settings, its metrics, its run id."""
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


def plot_heatmap(sweep, rows, path, log=None):
    """The metric over the first two axes (lr x reg when both vary), best over any other axes.
    log(line) is told when the grid is too large for the values in its cells."""
    keys = sorted(sweep.axes, key=lambda k: {"reg": 0, "lr": 1}.get(k, 2))[:2]  # stable: then file order
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
        log(f"note: {path} shows {values.shape[0]} x {values.shape[1]} cells ({' x '.join(keys)}), "
            f"too many for their values; {path.parent / 'results.csv'} has them")
    others = [k for k in sweep.axes if k not in keys]
    title = f"{sweep.name}: {sweep.metric}" + (f" (best over {', '.join(others)})" if others else "")
    # a word axis: no log scale to judge
    numeric = all(isinstance(v, (int, float)) for v in row_values + column_values if v is not None)
    return plots.plot_heatmap(values, [value_text(v) for v in row_values],
                              [value_text(v) if v is not None else "" for v in column_values],
                              path, row_key, column_key or "", title, row_values=row_values if numeric else None,
                              column_values=column_values if numeric and column_key else None)


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
        lines.append(["*" if row["run_id"] == best_id else "", *[value_text(row[k]) for k in axes],
                      number(row["train_accuracy"], ".4f"), number(row["val_accuracy"], ".4f"),
                      number(row["final_loss"], ".4f"), row["status"], _converged(row), number(row["seconds"], ".2f"),
                      row["run_id"]])
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)]

    def render(cells):
        return "  ".join(str(c).rjust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([render(header)] + [render(line) for line in lines])
