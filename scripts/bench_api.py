#!/usr/bin/env python3
"""SoftmaxClassifier.fit on the pixel arrays against `linclf train` with the same settings.

    python scripts/bench_api.py [--data-dir data] [--repeats 3] [--epochs 10] [--json]

Both train the same configuration (the defaults, --epochs) on the CIFAR-10 cache: the CLI path as
`linclf train` runs it (app.train_run: open the cache, fit the pipeline, train, save the run
folder), the Python path as a notebook does (load_cifar10, then SoftmaxClassifier().fit on the
arrays; nothing saved). Runs alternate, CLI first, --repeats times; the report gives each path's
median and best wall time and their ratio (target: Python at most 1.1x the CLI), and checks that
both trained the same weights.
"""
import argparse
import json
import statistics
import sys
import tempfile
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    log = (lambda message: print(message, file=sys.stderr, flush=True)) if args.json else print

    from linclf import SoftmaxClassifier, app, load_cifar10
    from linclf import config

    settings = config.complete({"epochs": args.epochs})  # solver sgd, as SoftmaxClassifier(epochs=...) below
    times = {"cli": [], "python": []}
    same = True
    with tempfile.TemporaryDirectory(prefix="bench-api-") as runs_dir:
        for repeat in range(args.repeats):
            started = time.perf_counter()
            _, result, _ = app.train_run(settings, {"cifar10": args.data_dir}, runs_dir)
            times["cli"].append(time.perf_counter() - started)
            started = time.perf_counter()
            X, y, _, _, _ = load_cifar10(args.data_dir)
            clf = SoftmaxClassifier(epochs=args.epochs).fit(X, y)
            times["python"].append(time.perf_counter() - started)
            same = same and np.array_equal(clf.model_.W, result.W)
            log(f"repeat {repeat + 1}: linclf train {times['cli'][-1]:.2f} s, SoftmaxClassifier.fit "
                f"{times['python'][-1]:.2f} s")
    report = {path: {"median": round(statistics.median(t), 3), "best": round(min(t), 3), "all": [round(v, 3) for v in t]}
              for path, t in times.items()}
    report["ratio_median"] = round(report["python"]["median"] / report["cli"]["median"], 3)
    report["ratio_best"] = round(report["python"]["best"] / report["cli"]["best"], 3)
    report["same_weights"] = bool(same)
    report["target_met"] = report["ratio_median"] <= 1.1
    log(f"SoftmaxClassifier.fit / linclf train: median {report['ratio_median']:.3f}, best {report['ratio_best']:.3f} "
        f"(target <= 1.1); same weights: {same}")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
