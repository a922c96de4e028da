#!/usr/bin/env python3
"""Epoch time of linclf's trainer against the float32 matmul floor, on the same batch shapes.

    python scripts/bench_train.py [--data-dir data] [--epochs 5] [--batch-size 200] [--json]

The floor is the time of the two float32 products a step cannot avoid, forward X_b @ W and
backward X_b^T @ dS, for one epoch's worth of (batch_size x 3072) batches, one numpy call each;
it is measured two ways (contiguous slices of the standardized training matrix, and one
cache-resident batch) and the lower is used. The cache-resident floor is measured again before
every training run, so that both see the same machine; the best of all is the floor. Also shown:
a plain loop (gather a uint8 batch, convert, standardize, two matmuls), and the same two products
cut into the blocks linclf uses (kernels.SMALL_PRODUCT).
Target: linclf's epoch within 1.5x of the floor.
"""
import argparse
import functools
import json
import math
import statistics
import time

import numpy as np

from linclf import config
from linclf.data import cifar10
from linclf.experiments import jobs
from linclf.training import kernels
from linclf.training import loader
from linclf.data import sources
from linclf.training import loop

TARGET = 1.5
PYTORCH_REFERENCE_MS = 300  # PyTorch CPU nn.Linear + SGD, 10 epochs, measured on this machine kind


def matmul_floor(rows, W, steps, repeats):
    """Best time of `steps` float32 forward (X_b @ W) and backward (X_b^T @ dS) products, one numpy
    call each, on one cache-resident batch X_b holding `rows` (B, D)."""
    batch = np.empty((rows.shape[0], rows.shape[1] + 16), np.float32)[:, :rows.shape[1]]  # padded rows
    batch[:] = rows
    dS = np.full((len(batch), W.shape[1]), 1e-3, np.float32)
    S, G = np.empty_like(dS), np.empty_like(W)

    def products():
        for _ in range(steps):
            np.matmul(batch, W, out=S)
            np.matmul(batch.T, dS, out=G)

    return best_of(products, repeats)


def best_of(function, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(cifar10.default_data_dir()))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=config.SOLVER_DEFAULTS["sgd"]["batch_size"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    source = sources.cifar10(args.data_dir)
    settings = config.for_data(config.complete({"epochs": args.epochs, "batch_size": args.batch_size}),
                               len(source.train_y))  # solver sgd: its epochs are what this times
    started = time.perf_counter()
    prepared, pipe, _ = jobs.prepare(source, settings)
    prepare_seconds = time.perf_counter() - started
    N, D = prepared.X_train.shape
    C, B = source.num_classes, args.batch_size
    steps = math.ceil(N / B)
    rng = np.random.default_rng(0)
    W = (1e-3 * rng.standard_normal((D, C))).astype(np.float32)
    dS = rng.standard_normal((B, C)).astype(np.float32) * 1e-3
    S, G = np.empty((B, C), np.float32), np.empty((D, C), np.float32)

    X = pipe.scaler.transform(prepared.X_train)

    def matmuls_on_slices(X):
        for start in range(0, N - B + 1, B):
            batch = X[start:start + B]
            np.matmul(batch, W, out=S)
            np.matmul(batch.T, dS, out=G)

    floor_slices = best_of(functools.partial(matmuls_on_slices, X), args.repeats)
    resident = X[:B].copy()
    del X  # 600 MB

    order = rng.permutation(N)
    gathered = np.empty((B, D), np.uint8)
    mean, scale = prepared.offset, np.float32(prepared.scale)

    def plain_loop():
        for start in range(0, N - B + 1, B):
            np.take(prepared.X_train, order[start:start + B], axis=0, out=gathered)
            batch = (gathered.astype(np.float32) - mean) * scale
            np.matmul(batch, W, out=S)
            np.matmul(batch.T, dS, out=G)

    batch = loader.Batch(B, resident, prepared.offset, prepared.scale)  # linclf's own buffer: offset row, padded
    batch.fill(resident)
    A, Wt = batch.inputs(B), np.ascontiguousarray(W.T)
    scores, gradient = np.empty((B + 1, C), np.float32), np.empty((C, D), np.float32)

    def blocked_products():
        for _ in range(steps):
            kernels.forward(A, Wt, scores)
            kernels.backward(scores, A, gradient)

    plain = best_of(plain_loop, args.repeats)
    blocked = best_of(blocked_products, args.repeats)
    floor_caches, epoch_times = [], []
    for _ in range(args.repeats):
        floor_caches.append(matmul_floor(resident, W, steps, 2))
        result = loop.train(prepared, settings)
        epoch_times += result.history["epoch_seconds"]
    floor_cache = min(floor_caches)
    floor = min(floor_slices, floor_cache)
    epoch = statistics.median(epoch_times)
    report = {"num_train": N, "batch_size": B, "steps_per_epoch": steps, "prepare_seconds": round(prepare_seconds, 3),
              "floor_ms": round(floor * 1000, 1), "floor_slices_ms": round(floor_slices * 1000, 1),
              "floor_in_cache_ms": round(floor_cache * 1000, 1), "plain_loop_ms": round(plain * 1000, 1),
              "blocked_products_ms": round(blocked * 1000, 1),
              "linclf_epoch_ms": round(epoch * 1000, 1), "linclf_epoch_best_ms": round(min(epoch_times) * 1000, 1),
              "ratio_to_floor": round(epoch / floor, 2), "target_ratio": TARGET,
              "meets_target": epoch / floor <= TARGET,
              "speedup_vs_pytorch_reference": round(PYTORCH_REFERENCE_MS / (epoch * 1000), 2),
              "val_accuracy": result.history["val_accuracy"][-1]}
    if args.json:
        print(json.dumps(report))
        return
    print(f"one epoch = {N} images in {steps} batches of {B} (median of {len(epoch_times)} epochs)")
    print(f"  float32 fwd+bwd matmuls (floor)  {report['floor_ms']:7.1f} ms  "
          f"(slices {report['floor_slices_ms']}, cache-resident {report['floor_in_cache_ms']})")
    print(f"  same products in linclf's blocks {report['blocked_products_ms']:7.1f} ms")
    print(f"  plain loop (gather, convert)     {report['plain_loop_ms']:7.1f} ms")
    print(f"  linclf epoch                     {report['linclf_epoch_ms']:7.1f} ms  "
          f"(best {report['linclf_epoch_best_ms']}) = {report['ratio_to_floor']}x the floor "
          f"(target {TARGET}x: {'met' if report['meets_target'] else 'NOT met'})")
    print(f"  vs PyTorch CPU reference ~{PYTORCH_REFERENCE_MS} ms: {report['speedup_vs_pytorch_reference']}x faster")
    print(f"  data preparation once: {prepare_seconds:.2f} s")


if __name__ == "__main__":
    main()
