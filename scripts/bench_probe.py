#!/usr/bin/env python3
"""A linear probe on a real embedding: linclf's probe sweep against scikit-learn's L-BFGS.

    python scripts/bench_probe.py EMB.npz [--grid configs/probe.yaml] [--sklearn-max N] [--json]
    python scripts/bench_probe.py EMB.npz --from-npy FEATURES.npy --data-dir data   # make EMB.npz first
    python scripts/bench_probe.py EMB.npz --random-features 2048 --data-dir data    # or from pixels
    python scripts/bench_probe.py EMB.npz --python [--sklearn-max N] [--json]       # SoftmaxSweep instead

linclf: the grid (configs/probe.yaml) trained by sweep.run_sweep on `{"arrays": EMB.npz}`, timed
from opening the file to the last run saved (with --python: SoftmaxSweep(grid, **base).fit on the
memory-mapped arrays, timed from opening the file to the fitted sweep, nothing written); the best run by validation (experiments/ranking.py) is evaluated
on X_test. scikit-learn: LogisticRegression(solver="lbfgs", max_iter=1000) on the same
standardized features (the best run's stored pipeline, fitted on the same training rows), for
the grid's reg values, picked by the same validation rows; time per C.

The two losses are the same function up to a factor: linclf minimizes
    mean_i CE_i + 0.5 * reg * |W|^2,
sklearn minimizes
    C * sum_i CE_i + 0.5 * |W|^2  =  C * N * (mean_i CE_i + 0.5 / (C * N) * |W|^2),
so reg corresponds to C = 1 / (reg * N), N the number of training rows (neither penalizes b).

Targets: the whole linclf sweep in under half the time of sklearn's fit at a single C (the C
sklearn's validation picks), and linclf's best test accuracy within 0.3 points of sklearn's best.
--sklearn-max N fits sklearn only at the N grid reg values nearest (log scale) to linclf's best,
so a run takes minutes, not an hour; the report says which were fitted.

--from-npy: FEATURES.npy holds (50000 + 10000, D) rows, the CIFAR-10 cache's training images in
order then its test images (as scripts/bench_features.py --cache writes them); labels and class
names come from the cache. --random-features D: relu(standardized pixels @ R), R a fixed
(3072, D) Gaussian matrix / sqrt(3072) (seed 0), pixels standardized by the training mean/std.
"""
import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from linclf.data import cifar10
from linclf.evaluation import evaluate
from linclf.experiments import modelfile
from linclf.data import sources
from linclf.experiments import grids
from linclf.experiments import sweep


TARGET_SPEED = 0.5   # the whole sweep in under half the time of one scikit-learn fit at its chosen C
TARGET_POINTS = 0.3  # test accuracy at most 0.3 point below scikit-learn's best over the same reg values


def make_from_npy(path, features, data_dir):
    """Write EMB.npz from a (60000, D) feature .npy (train rows, then test rows) and the cache's labels."""
    cache = cifar10.load_cache(data_dir)
    X = np.load(features, mmap_mode="r")
    N, M = len(cache.train_y), len(cache.test_y)
    if X.shape[0] != N + M:
        raise SystemExit(f"{features} holds {X.shape[0]} rows; expected {N} train + {M} test")
    np.savez(path, X_train=X[:N], y_train=np.asarray(cache.train_y), X_test=X[N:], y_test=np.asarray(cache.test_y),
             class_names=np.array(cache.class_names))


def make_random_features(path, dim, data_dir, chunk=5000):
    """Write EMB.npz of relu(standardized pixels @ R / sqrt(3072)) float32 features (see the docstring)."""
    cache = cifar10.load_cache(data_dir)
    rng = np.random.default_rng(0)
    R = (rng.standard_normal((3072, dim)) / math.sqrt(3072)).astype(np.float32)
    train = cache.train_x.reshape(len(cache.train_x), -1)
    mean = train.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = np.float32(train.std(dtype=np.float64))

    def encode(images):
        flat = images.reshape(len(images), -1)
        out = np.empty((len(flat), dim), np.float32)
        for start in range(0, len(flat), chunk):
            block = (flat[start:start + chunk].astype(np.float32) - mean) / std
            np.maximum(block @ R, 0, out=out[start:start + chunk])
        return out

    np.savez(path, X_train=encode(cache.train_x), y_train=np.asarray(cache.train_y),
             X_test=encode(cache.test_x), y_test=np.asarray(cache.test_y), class_names=np.array(cache.class_names))


def nearest(values, centre, count):
    """The `count` values closest to centre on a log scale, in their order."""
    chosen = sorted(sorted(values, key=lambda v: abs(math.log(v) - math.log(centre)))[:count])
    return chosen


def sklearn_fits(X_train, y_train, X_val, y_val, X_test, y_test, regs, max_iter, log):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    import warnings

    N = len(y_train)
    fits = []
    for reg in regs:
        C = 1.0 / (reg * N)
        model = LogisticRegression(solver="lbfgs", max_iter=max_iter, C=C)
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(X_train, y_train)
        seconds = time.perf_counter() - started
        fit = {"reg": reg, "C": C, "seconds": round(seconds, 2), "iterations": int(np.max(model.n_iter_)),
               "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught),
               "val_accuracy": float(model.score(X_val, y_val)), "test_accuracy": float(model.score(X_test, y_test))}
        fits.append(fit)
        log(f"  sklearn reg {reg:.3g} (C {C:.3g}): {seconds:.1f} s, {fit['iterations']} iterations"
            f"{'' if fit['converged'] else ' (not converged)'}, val {fit['val_accuracy']:.4f}, "
            f"test {fit['test_accuracy']:.4f}")
    return fits


def python_sweep(spec, source):
    """The grid trained by linclf.SoftmaxSweep on the source's arrays (the grid's base settings as
    parameters). Returns (rows best first, like run_sweep's, the best model, its test accuracy);
    the test accuracy is timed too (it is part of what a notebook user waits for)."""
    import warnings

    from linclf import SoftmaxSweep
    from linclf.estimators import RENAMED

    base = {RENAMED.get(k, k): v for k, v in spec.configs[0].items() if k not in spec.axes}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the best on the edge of an axis: in the report
        fitted = SoftmaxSweep(grid=spec.axes, group_size=spec.group_size, metric=spec.metric, **base).fit(
            source.train_x, source.train_y)
    results = fitted.cv_results_
    rows = [{**params, **{RENAMED.get(k, k): v for k, v in params.items()}, "status": str(results["status"][i]),
             "val_accuracy": float(results["mean_test_score"][i]), "rank": int(results["rank_test_score"][i]),
             "lr_decay": base.get("lr_decay"), "run_id": f"{i:06d}"}
            for i, params in enumerate(results["params"])]
    rows.sort(key=lambda row: row["rank"])
    test = fitted.score(source.test_x, source.test_y)
    return rows, fitted.best_estimator_.model_, test


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", help="the embedding .npz (X_train, y_train, X_test, y_test)")
    parser.add_argument("--grid", default="configs/probe.yaml")
    parser.add_argument("--from-npy", metavar="FEATURES.npy", help="first write DATA from these features")
    parser.add_argument("--random-features", type=int, metavar="D", help="first write DATA: random ReLU features")
    parser.add_argument("--data-dir", default=str(cifar10.default_data_dir()), help="the CIFAR-10 cache (labels)")
    parser.add_argument("--runs-dir", help="where the sweep's runs go [default: a temporary folder]")
    parser.add_argument("--epochs", type=int, help="override the grid's epochs (a quick look)")
    parser.add_argument("--sklearn-max", type=int, default=0, metavar="N",
                        help="fit sklearn at only the N reg values nearest linclf's best (0: every one)")
    parser.add_argument("--sklearn-iter", type=int, default=1000)
    parser.add_argument("--no-sklearn", action="store_true")
    parser.add_argument("--python", action="store_true", help="train the grid with linclf.SoftmaxSweep (Python API)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (progress on stderr)")
    args = parser.parse_args()
    log = (lambda message: print(message, file=sys.stderr, flush=True)) if args.json else print

    path = Path(args.data)
    if args.from_npy or args.random_features:
        started = time.perf_counter()
        if args.from_npy:
            make_from_npy(path, args.from_npy, args.data_dir)
        else:
            make_random_features(path, args.random_features, args.data_dir)
        log(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - started:.1f} s")

    spec = grids.load(args.grid)
    if args.epochs:
        spec.configs = [{**c, "epochs": args.epochs} for c in spec.configs]
    ref = {"arrays": str(path.resolve())}
    temporary = None if args.runs_dir else tempfile.TemporaryDirectory(prefix="bench-probe-")
    runs_dir = Path(args.runs_dir or temporary.name)

    started = time.perf_counter()
    source = sources.arrays(path)
    opened = time.perf_counter() - started
    N_all, D = source.train_x.shape
    log(f"{path}: {N_all} train + {len(source.test_y)} test rows, D = {D}, {source.num_classes} classes, "
        f"{source.train_x.dtype}; opened and checked (sha256, NaN scan) in {opened:.1f} s")
    log(f"linclf{' SoftmaxSweep' if args.python else ''}: {len(spec.configs)} configurations of {args.grid} ...")
    if args.python:
        rows, trained, test = python_sweep(spec, source)
    else:
        rows = sweep.run_sweep(spec, ref, runs_dir, fresh=True, log=lambda message: None)
    linclf_seconds = time.perf_counter() - started
    best = rows[0]
    if not args.python:
        trained = modelfile.load_model(runs_dir / spec.name / best["run_id"])
        test = evaluate.evaluate_split(trained, source, "test")["accuracy"]
    diverged = sum(r["status"] != "ok" for r in rows)
    log(f"linclf: {linclf_seconds:.1f} s in all ({linclf_seconds / len(rows):.2f} s a configuration), "
        f"{diverged} diverged; best by validation: "
        f"{'' if best.get('lr') is None else 'lr ' + grids.value_text(best['lr']) + ', '}reg {best['reg']:g}: "
        f"val {best['val_accuracy']:.4f}, test {test:.4f}")
    log(f"  its validation accuracy by epoch: {trained.metrics.get('history', {}).get('val_accuracy')}; converged "
        f"{trained.metrics.get('converged')} after {trained.metrics.get('n_iter')} iterations (epochs for sgd)")
    report = {"data": str(path), "rows": [N_all, len(source.test_y)], "D": D, "dtype": str(source.train_x.dtype),
              "grid": args.grid, "epochs": spec.configs[0]["epochs"], "api": "python" if args.python else "cli",
              "linclf": {"seconds": round(linclf_seconds, 2), "open_seconds": round(opened, 2),
                         "configurations": len(rows), "diverged": diverged,
                         "best": {k: best.get(k) for k in ("lr", "reg", "lr_decay", "val_accuracy", "run_id")},
                         "unconverged": sum(r.get("converged") is False for r in rows),
                         "best_test_accuracy": test,
                         "best_val_by_epoch": trained.metrics.get("history", {}).get("val_accuracy"),
                         "by_reg": {f"{reg:g}": max((r["val_accuracy"] for r in rows
                                                     if r["reg"] == reg and r["status"] == "ok"), default=None)
                                    for reg in spec.axes.get("reg", [])}}}

    if not args.no_sklearn:
        config = {**trained.config}
        X_train, y_train = sources.split(source, "train", config)
        X_val, y_val = sources.split(source, "val", config)
        standardize = trained.pipeline.transform
        regs = spec.axes.get("reg", [config["reg"]])
        if args.sklearn_max:
            regs = nearest(regs, best["reg"], args.sklearn_max)
        log(f"sklearn: LogisticRegression(lbfgs, max_iter={args.sklearn_iter}) at {len(regs)} reg values, "
            f"C = 1 / (reg * {len(y_train)}) ...")
        fits = sklearn_fits(standardize(X_train), y_train, standardize(X_val), y_val, standardize(source.test_x),
                            source.test_y, regs, args.sklearn_iter, log)
        chosen = max(fits, key=lambda f: (f["val_accuracy"], -f["reg"]))
        gap = 100 * (test - chosen["test_accuracy"])
        report["sklearn"] = {"fits": fits, "best": chosen, "regs_fitted": regs,
                             "all_regs": len(regs) == len(spec.axes.get("reg", regs))}
        report["comparison"] = {"linclf_sweep_over_sklearn_best_c": round(linclf_seconds / chosen["seconds"], 3),
                                "linclf_sweep_over_sklearn_median_c": round(linclf_seconds / float(
                                    np.median([f["seconds"] for f in fits])), 3),
                                "test_gap_points": round(gap, 2),
                                "speed_target_met": linclf_seconds < TARGET_SPEED * chosen["seconds"],
                                "accuracy_target_met": gap >= -TARGET_POINTS}
        log(f"sklearn: best by validation reg {chosen['reg']:g} (C {chosen['C']:.3g}): val "
            f"{chosen['val_accuracy']:.4f}, test {chosen['test_accuracy']:.4f}, {chosen['seconds']:.1f} s")
        log(f"whole linclf sweep / sklearn at its chosen C: {linclf_seconds:.1f} / {chosen['seconds']:.1f} s = "
            f"{linclf_seconds / chosen['seconds']:.2f} (target < {TARGET_SPEED}); test gap {gap:+.2f} points "
            f"(target >= -{TARGET_POINTS})")
    if args.json:
        print(json.dumps(report))
    if temporary:
        temporary.cleanup()


if __name__ == "__main__":
    main()
