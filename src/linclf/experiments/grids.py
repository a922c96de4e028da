"""Grid files: a sweep's grid (YAML, as in README "Sweeps") checked and expanded into its configurations.

Keys: name (the sweep's folder under the runs dir), metric (what "best" maximizes), base (train keys
for every configuration), grid (the axes of a cartesian product: a list, or {min, max, num, scale:
log|linear}), group_size (at most this many configurations trained together: a memory bound) and
data (an array file, relative to the grid file's folder; --data and --data-dir override it).
sweep.py trains the configurations (in `groups`), reports.py shows the results.
"""
import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linclf import config
from linclf.config import DATA_KEYS
from linclf.config_files import load_yaml
from linclf.util.errors import LinclfError, short_repr

SWEEP_KEYS = ("name", "metric", "base", "grid", "group_size", "data")
VALIDATION_KEYS = ("val_size", "val_split")  # which rows validate: the same for every run a sweep ranks
MOST_CONFIGURATIONS = 100_000  # no grid may expand to more
METRICS = config.METRIC_NAMES
RANGE_KEYS = ("min", "max", "num", "scale")


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
            raise LinclfError(f"{prefix}.num must be an integer in [1, 1000], got {short_repr(num)}")
        if scale not in ("log", "linear"):
            raise LinclfError(f"{prefix}.scale must be log or linear, got {short_repr(scale)}")
        if low > high:
            raise LinclfError(f"{prefix}: min ({low:g}) must not exceed max ({high:g})")
        if scale == "log" and low <= 0:
            raise LinclfError(f"{prefix}: a log range needs min > 0, got {low:g}")
        values = np.geomspace(low, high, num) if scale == "log" else np.linspace(low, high, num)
        values = [float(f"{v:.6g}") for v in values]
    else:
        raise LinclfError(f"{prefix} must be a list of values or {{min, max, num, scale}}, got {short_repr(spec)}")
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
                          f"got {short_repr(name)}")
    metric = spec.get("metric", config.SWEEP_DEFAULTS["metric"])
    if metric not in METRICS:
        raise LinclfError(f"{source}: metric must be one of {', '.join(METRICS)}, got {short_repr(metric)}")
    group_size = spec.get("group_size", config.SWEEP_DEFAULTS["group_size"])
    if isinstance(group_size, bool) or not isinstance(group_size, int) or not 1 <= group_size <= 1024:
        raise LinclfError(f"{source}: group_size must be an integer in [1, 1024], got {short_repr(group_size)}")
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
        if key in VALIDATION_KEYS:
            raise LinclfError(f"{source}: {key} cannot be a grid axis: runs validated on other rows are not "
                              f"comparable, so no ranking could pick among them; put it in base (one sweep a value)")
        axes[key] = _axis_values(key, values, source)
    count = math.prod(len(values) for values in axes.values())
    if count > MOST_CONFIGURATIONS:
        raise LinclfError(f"{source}: the grid expands to {count:,} configurations; at most "
                          f"{MOST_CONFIGURATIONS:,} are allowed")
    configs = [config.complete({**base, **dict(zip(axes, point))}, source)
               for point in itertools.product(*axes.values())]
    check_validated(configs, metric, source)
    data = spec.get("data")
    if data is not None and (not isinstance(data, str) or not data.strip()):
        raise LinclfError(f"{source}: data must be the path of an .npz file, got {short_repr(data)}")
    return Sweep(name, metric, axes, configs, group_size, Path(data) if data else None)


def check_validated(configs, metric, source, num_train=None):
    """Refuse configurations a sweep ranked by val_accuracy could not rank: no validation rows
    (val_size 0, or the default's none for fewer than 10 rows: config.val_rows)."""
    if metric != "val_accuracy" or not any(cfg["val_size"] == 0 for cfg in configs):
        return
    rows = f" (this data has {num_train} training rows: the default holds out a tenth, none below 10)" \
        if num_train is not None else ""
    raise LinclfError(f"{source}: a sweep ranks its runs by val_accuracy: val_size must be at least 1{rows}")


def load(path):
    """The grid file at path; its `data` path, when relative, is relative to the file's folder."""
    spec = parse(load_yaml(path), source=str(path))
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


def value_text(value):
    """A grid value as text: numbers in %g."""
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def edge_notes(sweep, best):
    """Lines saying which numeric axes (of 3 or more values) the best row `best` sits on the edge
    of: the best setting may lie beyond the grid there."""
    notes = []
    for key, values in sweep.axes.items():
        numeric = [v for v in values if isinstance(v, (int, float))]
        if len(numeric) < 3 or len(numeric) != len(values) or best.get(key) not in (min(values), max(values)):
            continue
        end = "largest" if best[key] == max(values) else "smallest"
        notes.append(f"the best {key}, {value_text(best[key])}, is the {end} value of the grid's {key} axis: "
                     f"a better one may lie beyond it; widen the axis")
    return notes
