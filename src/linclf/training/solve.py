"""Solver lbfgs for a group of configurations: each run's minimum (lbfgs.py), measured and recorded.

The counterpart of loop.train_group (solver sgd): the same Prepared data in, one RunResult per
configuration out. Configurations trained together share config.DATA_KEYS (so tol and max_iter)
and may differ in reg. Inputs come standardized (jobs.prepare: offset 0, scale 1), with the
preconditioner the solver uses as its change of variables ((V, factors, eigenvalues) of
precondition.fit: the solver reads V and the eigenvalues).

A run's history: the objective after each iteration ("objective", iteration 0 the start) and the
largest gradient entry at the end ("gradient"); the validation loss and accuracy and the training
objective at the minimum as one-entry lists ("val_loss", "val_accuracy", "train_loss"), and
"final_train_accuracy", the keys RunResult.metrics reads.
"""
import time
from types import SimpleNamespace

import numpy as np

from linclf.training import lbfgs
from linclf.util import interrupts
from linclf.training.kernels import evaluate_members
from linclf.training.loop import RunResult, _rounded


def solve_group(prepared, configs, preconditioner=None, progress=None):
    """Minimize each configuration's objective on prepared (standardized) data. Returns one
    RunResult per configuration, in order. progress(total, unit), when given, makes a bar counting
    finished runs (update(n), set_postfix(**values), close())."""
    first = configs[0]
    C = prepared.num_classes
    started = time.perf_counter()
    bar = progress(len(configs), "run") if progress is not None else None

    def report(finished, objectives):
        interrupts.check()  # a safe point: a signal noted while watching stops here
        if bar is not None and len(objectives):
            bar.update(finished - bar.n)
            bar.set_postfix(objective=f"{float(np.min(objectives)):.4f}", running=len(objectives))

    try:
        directions = None if preconditioner is None else (preconditioner[0], preconditioner[2])
        solutions = lbfgs.solve(prepared.X_train, prepared.y_train, [c["reg"] for c in configs], C, first["tol"],
                                first["max_iter"], directions, callback=report)
        if bar is not None:
            bar.update(len(configs) - bar.n)
    finally:
        if bar is not None:
            bar.close()
    weights = SimpleNamespace(members=list(range(len(configs))), num_classes=C,
                              Wt=np.ascontiguousarray(np.concatenate([s.W.T for s in solutions])),
                              b=np.concatenate([s.b for s in solutions]))
    offset, scale = np.zeros(prepared.X_train.shape[1], np.float32), 1.0
    _, train_accuracy = evaluate_members(weights, prepared.X_train, prepared.y_train, offset, scale)
    if len(prepared.y_val):
        val_loss, val_accuracy = evaluate_members(weights, prepared.X_val, prepared.y_val, offset, scale)
    else:  # val_size 0: no validation rows, no validation metrics
        val_loss = val_accuracy = np.full(len(configs), np.nan)
    seconds = (time.perf_counter() - started) / len(configs)
    results = []
    for k, (config, solution) in enumerate(zip(configs, solutions)):
        history = {"objective": [round(value, 8) for value in solution.history],
                   "gradient": float(f"{solution.gradient:.4g}"),
                   "train_loss": [round(solution.objective, 8)], "val_loss": [_rounded(val_loss[k])],
                   "val_accuracy": [_rounded(val_accuracy[k])],
                   "final_train_accuracy": round(float(train_accuracy[k]), 6)}
        message = "" if solution.converged else (
            f"stopped after {solution.n_iter} iterations (max_iter) with a largest gradient entry of "
            f"{solution.gradient:.3g} > tol {config['tol']:g}" if solution.n_iter >= config["max_iter"] else
            f"stopped after {solution.n_iter} iterations: no further decrease in float32 (largest gradient "
            f"entry {solution.gradient:.3g} > tol {config['tol']:g})")
        results.append(RunResult(config, "ok", solution.W, solution.b, message, history, seconds,
                                 converged=solution.converged, n_iter=solution.n_iter))
    return results
