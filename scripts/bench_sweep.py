#!/usr/bin/env python3
"""The default grid trained batched, against the same configurations one after another, in one run.

    python scripts/bench_sweep.py [configs/grid.yaml] [--data-dir data] [--epochs N] [--json]

Reports per-epoch times of (a) the batched sweep trainer, (b) the single-run trainer over every
configuration in turn, (c) K times the float32 matmul floor of one configuration (as measured by
bench_train.py: the forward and backward products on cache-resident batches), and the test
accuracy of the configuration with the best validation accuracy. Targets: (a) at least 2x faster
than (b); (a) within 1.3x of (c); best test accuracy at least 0.41.
--epochs shortens every run for a quick look (timings per epoch stay comparable; accuracy does not).
"""
import argparse
import json
import math
import time

import numpy as np

from bench_train import matmul_floor  # scripts/ is on sys.path when run as a script
from linclf.data import cifar10
from linclf.evaluation import evaluate
from linclf.experiments import jobs
from linclf.features import precondition
from linclf.experiments import modelfile
from linclf.experiments import ranking
from linclf.experiments import runfolders
from linclf.data import sources
from linclf.experiments import grids
from linclf.training import loop


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("grid", nargs="?", default="configs/grid.yaml")
    parser.add_argument("--data-dir", default=str(cifar10.default_data_dir()))
    parser.add_argument("--epochs", type=int, help="override every run's epochs (quick look)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    spec = grids.load(args.grid)
    configs = [{**c, "epochs": args.epochs or c["epochs"]} for c in spec.configs]
    source = sources.cifar10(args.data_dir)
    prepared, pipe, preconditioner = jobs.prepare(source, configs[0])
    N, D = prepared.X_train.shape
    C, K = source.num_classes, len(configs)
    epochs = sum(c["epochs"] for c in configs) / K

    started = time.perf_counter()
    batched = []
    for members in grids.groups(configs, spec.group_size):
        batched += loop.train_group(prepared, members)
    batched_seconds = time.perf_counter() - started

    started = time.perf_counter()
    alone = [loop.train(prepared, cfg) for cfg in configs]
    sequential_seconds = time.perf_counter() - started

    B, rng = configs[0]["batch_size"], np.random.default_rng(0)
    floor = matmul_floor(rng.standard_normal((B, D)), (1e-3 * rng.standard_normal((D, C))).astype(np.float32),
                         math.ceil(N / B), repeats=3)
    ok = [r for r in batched if r.status == "ok"]
    rows = [{**r.metrics(), "run_id": runfolders.run_id(r.config, jobs.identify(source), spec.axes)} for r in ok]
    best = ok[[row["run_id"] for row in rows].index(ranking.rank(rows, spec.metric)[0]["run_id"])]
    W = best.W if preconditioner is None else precondition.to_inputs(best.W, *preconditioner)
    trained = modelfile.Model(W, best.b, pipe, source.class_names, best.config, best.metrics(), source.data_id, None)
    test_accuracy = evaluate.evaluate(trained, source.test_x, source.test_y, source.class_names)["accuracy"]
    largest_gap = max(float(np.max(np.abs(a.W - b.W))) for a, b in zip(batched, alone) if a.status == "ok")
    report = {"configurations": K, "epochs": epochs, "batched_seconds": round(batched_seconds, 2),
              "sequential_seconds": round(sequential_seconds, 2),
              "speedup_vs_sequential": round(sequential_seconds / batched_seconds, 2),
              "batched_ms_per_epoch": round(batched_seconds / epochs * 1000, 1),
              "k_times_floor_ms_per_epoch": round(K * floor * 1000, 1),
              "ratio_to_k_floor": round(batched_seconds / epochs / (K * floor), 2),
              "best_config": {k: best.config[k] for k in spec.axes},
              "best_val_accuracy": best.history["val_accuracy"][-1], "best_test_accuracy": test_accuracy,
              "diverged": K - len(ok), "max_weight_gap_batched_vs_alone": largest_gap}
    report["targets_met"] = {"speedup>=2": report["speedup_vs_sequential"] >= 2,
                             "ratio<=1.3": report["ratio_to_k_floor"] <= 1.3,
                             "test>=0.41": test_accuracy >= 0.41}
    if args.json:
        print(json.dumps(report))
        return
    print(f"{args.grid}: {K} configurations x {epochs:g} epochs on {N} images")
    print(f"  batched sweep         {batched_seconds:7.1f} s  ({report['batched_ms_per_epoch']} ms per epoch of the grid)")
    print(f"  one after another     {sequential_seconds:7.1f} s  -> batched is {report['speedup_vs_sequential']}x faster")
    print(f"  K x matmul floor      {K * floor * epochs:7.1f} s  -> batched is {report['ratio_to_k_floor']}x of it")
    print(f"  best by validation    {report['best_config']}: val {report['best_val_accuracy']:.4f}, "
          f"test {test_accuracy:.4f}")
    print(f"  batched vs alone: largest |W| difference {largest_gap:.2e}; diverged runs {report['diverged']}")
    print(f"  targets: {report['targets_met']}")


if __name__ == "__main__":
    main()
