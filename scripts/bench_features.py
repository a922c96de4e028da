#!/usr/bin/env python3
"""Learned k-means features end to end, through linclf's own code, against the distance-product floor.

    python scripts/bench_features.py [configs/kmeans.yaml] [--data-dir data] [--floor-images 6000]
                                     [--converged] [--json]

From the cached images to the best model, each step timed in one run:
  1. the feature cache (cache.build, as `linclf features` runs it): k-means on the training
     split (patches, whitening, k-means), then every image encoded, in chunks;
  2. the sweep of the grid (sweep.run_sweep, as `linclf sweep` runs it) on the cached features;
  3. `eval --best`: the best run by the one ranking, its test accuracy through the model's stored
     pipeline (raw test images -> whitening, centroids, standardization -> softmax).
The encoding alone (the fitted feature step on --floor-images training images) is timed too and
scaled to all images. The floor is
the float32 distance products of the encoding alone: the same (block * P * P, F + 2)
@ (F + 2, K) products the encoding runs, on as many threads, measured in this run on
--floor-images images and scaled to all (0: all of them). Targets (issue #18): steps 1 + 2 within
2.5x the floor; the encoding alone within 1.5x; best test accuracy >= --target-accuracy (0.77 for
the headline configs/kmeans.yaml); peak resident memory <= --target-rss GB (6; 2.5 for
configs/kmeans-fast.yaml). --converged trains the best configuration again with twice its epochs
(after the timed steps) and reports the test accuracy it moves: converged when at most 0.2 point.

The run works on a private copy of the cache (a temporary data dir) so that the feature cache is
built from scratch; --reuse uses --data-dir itself (a second run then reuses its features).
"""
import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from linclf import app
from linclf.data import cifar10
from linclf.evaluation import evaluate
from linclf.features import cache
from linclf.experiments import jobs
from linclf.features import encoder, parallel
from linclf.experiments import modelfile
from linclf.experiments import ranking
from linclf.data import sources
from linclf.experiments import grids
from linclf.experiments import sweep

TARGET_RATIO, TARGET_ENCODING, CONVERGED_POINTS = 2.5, 1.5, 0.2


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def distance_floor(num_images, k, patch_size, stride, block=encoder.ENCODE_BLOCK, threads=None):
    """Seconds of the encoding's distance products alone for num_images images."""
    threads = parallel.default_threads() if threads is None else threads
    F = patch_size * patch_size * 3
    P = encoder.num_positions({"patch_size": patch_size, "stride": stride})
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((F + 2, k)).astype(np.float32)
    inputs = rng.standard_normal((block * P * P, F + 2)).astype(np.float32)

    def work(index, scratch):
        if "out" not in scratch:
            scratch["out"] = np.empty((block * P * P, k), dtype=np.float32)
        np.matmul(inputs, weights, out=scratch["out"])

    started = time.perf_counter()
    with parallel.BlasLimit(threads):
        parallel.run_blocks(-(-num_images // block), work, threads)
    return time.perf_counter() - started


def private_data_dir(data_dir):
    """A temporary data dir holding the cache (hard links where possible): no feature cache yet."""
    root = Path(tempfile.mkdtemp(prefix="linclf-bench-features-"))
    source, target = cifar10.cache_path(data_dir), cifar10.cache_path(root)
    target.mkdir()
    for name in cifar10.CACHE_FILES:
        try:
            os.link(source / name, target / name)
        except OSError:
            shutil.copy2(source / name, target / name)
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("grid", nargs="?", default="configs/kmeans.yaml")
    parser.add_argument("--data-dir", default=str(cifar10.default_data_dir()))
    parser.add_argument("--floor-images", type=int, default=6000)
    parser.add_argument("--reuse", action="store_true", help="use --data-dir's feature cache")
    parser.add_argument("--target-accuracy", type=float, default=0.77)
    parser.add_argument("--target-rss", type=float, default=6.0, help="GB")
    parser.add_argument("--converged", action="store_true", help="train the best again with twice its epochs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    spec = grids.load(args.grid)
    data_dir = Path(args.data_dir) if args.reuse else private_data_dir(args.data_dir)
    runs_dir = Path(tempfile.mkdtemp(prefix="linclf-bench-runs-"))
    try:
        source = sources.cifar10(data_dir)
        cfg = spec.configs[0]
        step = jobs.build_pipeline(source, cfg).feature_steps[0]
        num_images = len(source.train_y) + len(source.test_y)
        sample = num_images if args.floor_images <= 0 else min(args.floor_images, num_images)
        floor = distance_floor(sample, cfg["kmeans_k"], cfg["patch_size"], cfg["stride"]) * num_images / sample

        started = time.perf_counter()
        state = cache.build(source, step, cfg, progress=False, log=lambda message: None)[0]
        build_seconds = time.perf_counter() - started
        # the encoding alone, on the floor's images, with the fitted state
        images = np.asarray(source.train_x[:sample])
        started = time.perf_counter()
        encoder.encode(images, state, step._encoding())
        encoding = {"fused": (time.perf_counter() - started) * num_images / sample}
        started = time.perf_counter()
        rows = sweep.run_sweep(spec, source.ref, runs_dir, log=lambda message: None)
        sweep_seconds = time.perf_counter() - started

        started = time.perf_counter()
        best_dir, best, _ = ranking.find_best(runs_dir, spec.name)
        model = modelfile.load_model(best_dir)
        report = evaluate.evaluate_split(model, source, "test")
        eval_seconds = time.perf_counter() - started
        total = build_seconds + sweep_seconds
        result = {"grid": args.grid, "k": cfg["kmeans_k"], "stride": cfg["stride"], "configurations": len(rows),
                  "floor_seconds": round(floor, 1), "feature_build_seconds": round(build_seconds, 1),
                  "sweep_seconds": round(sweep_seconds, 1), "total_seconds": round(total, 1),
                  "ratio_to_floor": round(total / floor, 2), "eval_seconds": round(eval_seconds, 1),
                  "encoding_seconds": {k: round(v, 1) for k, v in encoding.items()},
                  "encoding_ratio_to_floor": {k: round(v / floor, 2) for k, v in encoding.items()},
                  "best": {k: best["run_id"] if k == "run_id" else best.get(k)
                           for k in ("run_id", "val_accuracy", "train_accuracy")},
                  "test_accuracy": report["accuracy"], "peak_rss_gb": round(peak_rss_gb(), 2)}
        result["targets_met"] = {
            f"ratio<={TARGET_RATIO}": result["ratio_to_floor"] <= TARGET_RATIO,
            f"encoding<={TARGET_ENCODING}": min(result["encoding_ratio_to_floor"].values()) <= TARGET_ENCODING,
            f"test>={args.target_accuracy}": result["test_accuracy"] >= args.target_accuracy,
            f"rss<={args.target_rss}GB": result["peak_rss_gb"] <= args.target_rss}
        if args.converged:  # after the timed steps: the best configuration with twice its epochs
            longer = dict(model.config, epochs=2 * model.config["epochs"])
            started = time.perf_counter()
            longer_dir, _, _ = app.train_run(longer, source.ref, runs_dir=runs_dir)
            longer_test = evaluate.evaluate_split(modelfile.load_model(longer_dir), source, "test")["accuracy"]
            moved = 100 * (longer_test - report["accuracy"])
            result["twice_the_epochs"] = {"epochs": longer["epochs"], "test_accuracy": longer_test,
                                          "moved_points": round(moved, 2),
                                          "seconds": round(time.perf_counter() - started, 1)}
            result["targets_met"][f"converged<={CONVERGED_POINTS}pt"] = abs(moved) <= CONVERGED_POINTS
    finally:
        shutil.rmtree(runs_dir, ignore_errors=True)
        if not args.reuse:
            shutil.rmtree(data_dir, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.grid}: K={result['k']}, stride {result['stride']}, {result['configurations']} configurations")
    print(f"  distance products alone (floor)  {floor:7.1f} s")
    print(f"  feature cache (k-means, encode)  {build_seconds:7.1f} s")
    print(f"  sweep on the cached features     {sweep_seconds:7.1f} s")
    print(f"  total                            {total:7.1f} s = {result['ratio_to_floor']}x the floor "
          f"(target {TARGET_RATIO}x)")
    print(f"  best {result['best']['run_id']}: val {result['best']['val_accuracy']:.4f}, "
          f"test {result['test_accuracy']:.4f} (eval through the stored pipeline: {eval_seconds:.1f} s)")
    print(f"  encoding alone {result['encoding_ratio_to_floor']} x the floor")
    if args.converged:
        longer = result["twice_the_epochs"]
        print(f"  {longer['epochs']} epochs: test {longer['test_accuracy']:.4f} ({longer['moved_points']:+.2f} points)")
    print(f"  peak resident memory {result['peak_rss_gb']} GB; targets: {result['targets_met']}")


if __name__ == "__main__":
    main()
