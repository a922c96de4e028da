"""The one path from data to saved runs: load source -> fit pipeline -> train group -> save runs.

`train` (one configuration), `sweep` (groups, here or on a Dask cluster) and the estimators all
go through `train_group`, which validates the configurations and returns an `Outcome`; `save`
writes its runs (`train` and `sweep`; an estimator's `save` writes one the same way). On a
cluster the worker runs `train_group` and the client runs `save`.
"""
import math
import mmap
import warnings
from dataclasses import dataclass

import numpy as np

from linclf.config import PREPARED_KEYS, complete, for_data
from linclf.features import pipeline
from linclf.features import precondition
from linclf.data import sources
from linclf.training import loop, solve
from linclf.util.errors import LinclfWarning


@dataclass
class Outcome:
    """What training one group produced, everything `save` needs."""
    results: list          # loop.RunResult per configuration, in order
    pipeline: object       # the fitted pipeline.Pipeline the runs share
    class_names: list
    data_id: str
    origin: str = "this machine"  # where it was trained (a Dask worker's address), for messages


def build_pipeline(source, config):
    """The unfitted pipeline a configuration asks for on this source."""
    return pipeline.build(config, source.kind, source.train_x.shape[1:])


def in_memory(X):
    """X itself when it is in memory; a copy (same dtype) when it is backed by a file (a memory map)."""
    base = X
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return np.array(X)
        base = getattr(base, "base", None)
    return X


LBFGS_RANK = 256  # solver lbfgs: the top principal directions its change of variables rescales (at most D)


def prepare(source, config, build_features=True, progress=False, log=None):
    """Split the source as `config` says, fit its pipeline on the training split. A class with no
    training row is said in a LinclfWarning (sources.missing_classes): both faces come through here.

    Returns (loop.Prepared, fitted pipeline, preconditioner). With solver lbfgs, or sgd with
    `precondition` on, the inputs are standardized here and preconditioner is (V, factors,
    eigenvalues) of precondition.fit (sgd: the inputs preconditioned too), else None. Solver lbfgs
    holds its standardized rows in float32 (4 bytes a value): each of its passes over float16 rows
    would convert them again, which made a pass 2-3 times slower. float64 rows are standardized
    here too, in float64 before the cast to float32 (pipeline.Standardize.transform). File-backed training rows are copied into memory,
    once and in their own dtype (float16 features stay float16): gathering batches from
    file-backed pages is twice as slow once the kernel has reclaimed them; rows a random split has
    already gathered into memory are not copied again. The pipeline is fitted by
    Pipeline.fit_split; for a source on disk the feature cache (features/cache.py `memory`) stands
    in for a learned feature step's fit and encoding, built when missing if `build_features` (with
    a progress bar when `progress`), else a LinclfError says how to build it.
    """
    pipe = build_pipeline(source, config)
    key = sources.split_key(config)
    train_rows, val_rows = sources.split_rows(source.train_y, key["val_size"], key["train_size"], key["val_split"])
    note = sources.missing_classes(source.train_y, train_rows, source.class_names, key["val_split"],
                                   len(source.train_y[val_rows]))
    if note:  # the CLI prints it as one line (cli_options.Group), Python shows a UserWarning
        warnings.warn(note, LinclfWarning, stacklevel=2)
    memory = None
    if source.ref:  # a source on disk: learned features come from the feature cache
        from linclf.features import cache

        memory = cache.memory(source, config, build_features, progress, log)
    X_train, X_val = (in_memory(X) for X in pipe.fit_split(source.train_x, train_rows, val_rows, memory))
    offset, scale = pipe.scaler.fold()
    preconditioner = None
    rank = min(X_train.shape[1], LBFGS_RANK) if config["solver"] == "lbfgs" else config["precondition"]
    if rank or X_train.dtype == np.float64:  # float64 rows: centred before the cast to float32 (pipeline.Standardize)
        X_train = _standardized(X_train, pipe.scaler, source.train_x, keep_float16=config["solver"] == "sgd")
        X_val = _standardized(X_val, pipe.scaler, source.train_x)
        offset, scale = np.zeros(X_train.shape[1], np.float32), 1.0
    if rank:
        preconditioner = precondition.fit(X_train, rank, config["seed"])
        if config["solver"] == "sgd":  # sgd trains on X P; lbfgs takes P as a change of variables
            precondition.apply(X_train, *preconditioner[:2])
            precondition.apply(X_val, *preconditioner[:2])
    prepared = loop.Prepared(X_train, np.asarray(source.train_y[train_rows], np.intp), X_val,
                              np.asarray(source.train_y[val_rows], np.intp), offset, scale, source.num_classes)
    return prepared, pipe, preconditioner


def _standardized(X, scaler, source_rows, keep_float16=False):
    """scaler.transform(X) (N, D), written over X in its own dtype when X is a writable copy (its
    memory not shared with the source's rows `source_rows`), so the rows are held once: float32, or
    float16 (the feature cache's rows) when `keep_float16` and X holds the rows the scaler was
    fitted on (their standardized values are at most sqrt(N) in size, well within float16's range,
    where other rows, such as validation rows, may lie beyond it); else a new float32 array."""
    X = pipeline.flatten(X)
    shared = isinstance(source_rows, np.ndarray) and np.may_share_memory(X, source_rows)  # FileRows: read copies
    own = ((X.dtype == np.float32 or (keep_float16 and X.dtype == np.float16)) and X.flags.writeable
           and X.flags.c_contiguous and not shared)
    return scaler.transform(X, out=X if own else None)


# what `prepare` reads of a configuration: the prepared split, standardized and preconditioned by these
PREPARE_KEYS = (*PREPARED_KEYS, "solver", "precondition", "seed")


class Preparer:
    """`prepare`, remembering the last split: consecutive groups on one split share it."""

    def __init__(self, build_features=True, progress=False, log=None):
        self.build_features, self.progress, self.log = build_features, progress, log
        self._key, self._value = None, None

    def __call__(self, source, config):
        key = (source.data_id, *(config[k] for k in PREPARE_KEYS))
        if key != self._key:
            self._key, self._value = None, None  # let the old arrays go first
            self._value = prepare(source, config, self.build_features, self.progress, self.log)
            self._key = key
        return self._value


def train_group(source, configs, progress=None, prefetch=None, preparer=prepare, checkpoint=None):
    """Load -> fit -> train for configurations that share config.DATA_KEYS; returns an Outcome.

    `source` is a sources.Source or a ref dict (opened here: a Dask worker's own data); progress,
    prefetch and checkpoint are loop.train_group's (solver sgd; solver lbfgs takes progress only:
    its groups start over when interrupted). Each configuration is completed and validated here
    (config.complete, val_size for this data): the solvers trust what they get."""
    if isinstance(source, dict):
        source = sources.open_source(source)
    configs = [for_data(complete(cfg, "configuration"), len(source.train_y))
               for cfg in configs]
    prepared, pipe, preconditioner = preparer(source, configs[0])
    if configs[0]["solver"] == "lbfgs":
        results = solve.solve_group(prepared, configs, preconditioner, progress=progress)
    else:
        results = loop.train_group(prepared, configs, progress=progress, prefetch=prefetch, checkpoint=checkpoint)
    sources.check_unchanged(source)  # rewritten in place while we read it: trained on a mix
    if preconditioner is not None and configs[0]["solver"] == "sgd":  # W on the standardized inputs, as eval sees them
        for result in results:
            if result.W is not None:
                result.W = precondition.to_inputs(result.W, *preconditioner[:2])
    return Outcome(results, pipe, list(source.class_names), source.data_id)


def save(outcome, run_dir_for, warn=None, replace=False):
    """Write every run of an Outcome to run_dir_for(result) (runfolders.save_run); returns the folders.
    warn(line) is told of a plot that could not be drawn; `replace` lets a run folder whose
    metrics.json exists (a damaged one the sweep trains again) be written over."""
    from linclf.experiments import runfolders

    return [runfolders.save_run(run_dir_for(result), result, outcome.pipeline, outcome.class_names, outcome.data_id,
                                replace=replace, warn=warn) for result in outcome.results]


def identify(source):
    """(data id, class names, pipeline-kind info) of a source or ref: what a client needs to name runs."""
    if isinstance(source, dict):
        source = sources.open_source(source)
    return {"data_id": source.data_id, "class_names": list(source.class_names), "kind": source.kind,
            "input_shape": list(source.train_x.shape[1:]), "num_train": int(len(source.train_y)),
            "dim": int(math.prod(source.train_x.shape[1:]))}
