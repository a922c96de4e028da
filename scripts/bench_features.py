#!/usr/bin/env python3
"""k-means features (linclf.kmeans) on CIFAR-10: time against the distance-product floor, and accuracy.

    python scripts/bench_features.py [--data-dir data] [--k 1600] [--stride 1] [--iterations 50]
        [--patches 400000] [--epochs 30] [--lr 1e-3 3e-3] [--reg 1e-3 3e-3] [--sklearn 0.01] [--json]

Steps, each timed: `kmeans.fit` on the training split (patches, whitening, k-means), `kmeans.encode`
of train + val + test into one preallocated float32 array, per-dimension standardization fitted
on the training split (in place), and an lr x reg grid trained in one `linclf.train.train_group`
call; the best validation accuracy picks the model whose test accuracy is reported.

The floor is the float32 distance products of the encoding alone: the same (block * P * P, F + 2)
@ (F + 2, K) products, as many as the encoding runs (or --floor-images worth, scaled), on the same
threads, measured in the same run. Targets: the whole pipeline (fit + encode + standardize + grid)
within 3.5x the floor; peak RSS <= 4 GB for K = 1600.

--cache FILE saves the raw features (and labels) as .npy after computing them, or loads them when
FILE exists (then fit/encode are not timed): try trainer settings without encoding again.
--sklearn C [C ...] also fits sklearn's L-BFGS LogisticRegression on the same standardized
features (reference only; sklearn is not a linclf dependency; reg = 1 / (C * N) in linclf's terms).
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import numpy as np

from linclf import config, data, kmeans, train

TARGET = 3.5


def rss_gb():
    """Peak resident set size so far of this process and of its waited-for children, in GB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6      # KiB on Linux
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
    return own, children


def distance_floor(num_images, k, F, P, block, threads):
    """Seconds of the encoding's distance products alone for num_images images: one
    (block * P * P, F + 2) @ (F + 2, k) float32 product per block, on `threads` threads like encode."""
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((F + 2, k)).astype(np.float32)
    inputs = rng.standard_normal((block * P * P, F + 2)).astype(np.float32)

    def work(index, scratch):
        if "out" not in scratch:
            scratch["out"] = np.empty((block * P * P, k), dtype=np.float32)
        np.matmul(inputs, weights, out=scratch["out"])

    started = time.perf_counter()
    kmeans._run_blocks(-(-num_images // block), work, threads)
    return time.perf_counter() - started


def standardize(features, train_rows, eps=0.01, chunk=4096):
    """In place: (x - mean) / sqrt(var + eps) per dimension, fitted on features[:train_rows]
    (float64 sums, chunk by chunk); returns (mean, std) float32."""
    D = features.shape[1]
    total, square = np.zeros(D), np.zeros(D)
    for start in range(0, train_rows, chunk):
        block = features[start:min(train_rows, start + chunk)].astype(np.float64)
        total += block.sum(axis=0)
        square += np.einsum("ij,ij->j", block, block)
    mean = total / train_rows
    var = np.maximum(square / train_rows - mean * mean, 0)
    std = np.sqrt(var + eps)
    mean32, inverse = mean.astype(np.float32), (1 / std).astype(np.float32)
    for start in range(0, len(features), chunk):
        block = features[start:start + chunk]
        block -= mean32
        block *= inverse
    return mean32, std.astype(np.float32)


def accuracy(W, b, X, y, chunk=4096):
    correct = 0
    for start in range(0, len(y), chunk):
        correct += int(((X[start:start + chunk] @ W + b).argmax(axis=1) == y[start:start + chunk]).sum())
    return correct / len(y)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(data.default_data_dir()))
    parser.add_argument("--k", type=int, default=1600, help="centroids")
    parser.add_argument("--patch-size", type=int, default=6)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=50, help="k-means iterations at most")
    parser.add_argument("--tol", type=float, default=0.0, help="k-means: stop below this relative gain")
    parser.add_argument("--patches", type=int, default=400_000, help="patches sampled for k-means")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="default: kmeans.default_threads()")
    parser.add_argument("--block", type=int, default=kmeans.ENCODE_BLOCK, help="images per encoding block")
    parser.add_argument("--flip", action="store_true", help="also train on mirrored training images")
    parser.add_argument("--val-size", type=int, default=config.DEFAULTS["val_size"])
    parser.add_argument("--train-size", type=int, default=0, help="0: all (49,000 with val 1,000)")
    parser.add_argument("--floor-images", type=int, default=0,
                        help="images the floor is measured on and scaled from (0: as many as encoded)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3, 3e-3])
    parser.add_argument("--reg", type=float, nargs="+", default=[1e-3, 3e-3])
    parser.add_argument("--lr-decay", type=float, nargs="+", default=[0.9])
    parser.add_argument("--momentum", type=float, nargs="+", default=[0.9])
    parser.add_argument("--init-scale", type=float, default=config.DEFAULTS["init_scale"])
    parser.add_argument("--sklearn", type=float, nargs="*", default=[], metavar="C",
                        help="also fit sklearn L-BFGS LogisticRegression with these C")
    parser.add_argument("--sklearn-iter", type=int, default=300)
    parser.add_argument("--cache", default=None, help="raw features .npy: load if present, else save")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    threads = kmeans.default_threads() if args.threads is None else args.threads
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else \
        (lambda *a: print(*a, flush=True))
    report = {"args": vars(args), "threads": threads}
    ds = data.load_cache(args.data_dir)
    train_x, train_y = data.split(ds, "train", args.val_size, args.train_size)
    val_x, val_y = data.split(ds, "val", args.val_size, args.train_size)
    test_x, test_y = data.split(ds, "test", args.val_size, args.train_size)
    params = {"patch_size": args.patch_size, "stride": args.stride, "norm_eps": kmeans.DEFAULT_PARAMS["norm_eps"]}
    D = kmeans.feature_dim(params, args.k)
    n_train = len(train_y) * (2 if args.flip else 1)
    pieces = [(train_x, False)] + ([(train_x, True)] if args.flip else []) + [(val_x, False), (test_x, False)]
    total_rows = sum(len(images) for images, _ in pieces)
    labels = np.concatenate([train_y] * (2 if args.flip else 1) + [val_y, test_y]).astype(np.intp)
    timings = {}

    if args.cache and os.path.exists(args.cache):
        started = time.perf_counter()
        features = np.load(args.cache)
        if features.shape != (total_rows, D):
            raise SystemExit(f"{args.cache} holds {features.shape}, this run needs {(total_rows, D)}")
        timings["load_cache"] = time.perf_counter() - started
        log(f"loaded {features.shape} features from {args.cache} in {timings['load_cache']:.1f} s")
    else:
        started = time.perf_counter()
        state = kmeans.fit(train_x, args.k, patch_size=args.patch_size, num_patches=args.patches,
                           iterations=args.iterations, seed=args.seed, tol=args.tol, threads=threads)
        timings["fit"] = time.perf_counter() - started
        inertia = state["inertia"]
        report["kmeans"] = {"iterations_run": len(inertia), "inertia_first": float(inertia[0]),
                            "inertia_last": float(inertia[-1]),
                            "inertia_gain_last": float((inertia[-2] - inertia[-1]) / inertia[-2]) if len(inertia) > 1 else None}
        log(f"fit (patches + whitening + k-means, {len(inertia)} iterations): {timings['fit']:.1f} s; "
            f"inertia {inertia[0]:.4g} -> {inertia[-1]:.4g}")
        features = np.empty((total_rows, D), dtype=np.float32)
        started = time.perf_counter()
        row = 0
        for images, flip in pieces:
            kmeans.encode(images, state, params, out=features, start=row, flip=flip, block=args.block, threads=threads)
            row += len(images)
        timings["encode"] = time.perf_counter() - started
        log(f"encode {total_rows} images -> ({total_rows}, {D}): {timings['encode']:.1f} s "
            f"({timings['encode'] / total_rows * 1e3:.2f} ms an image)")
        floor_images = args.floor_images or total_rows
        P = kmeans.num_positions(params)
        floor = distance_floor(floor_images, args.k, args.patch_size ** 2 * 3, P, args.block, threads)
        timings["floor"] = floor * total_rows / floor_images
        timings["floor_measured"] = floor
        log(f"floor: distance products alone for {floor_images} images {floor:.1f} s"
            + (f", scaled to {total_rows}: {timings['floor']:.1f} s" if floor_images != total_rows else "")
            + f"; encode / floor = {timings['encode'] / timings['floor']:.2f}")
        if args.cache:
            started = time.perf_counter()
            np.save(args.cache, features)
            log(f"saved features to {args.cache} ({time.perf_counter() - started:.1f} s, not counted)")

    started = time.perf_counter()
    standardize(features, n_train)
    timings["standardize"] = time.perf_counter() - started
    X_train, X_val, X_test = features[:n_train], features[n_train:n_train + len(val_y)], features[n_train + len(val_y):]
    y_train, y_val, y_test = labels[:n_train], labels[n_train:n_train + len(val_y)], labels[n_train + len(val_y):]

    prepared = train.Prepared(X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val,
                              offset=np.zeros(D, np.float32), scale=1.0, preprocessing={})
    configs = [{**config.DEFAULTS, "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                "val_size": args.val_size, "lr": lr, "reg": reg, "lr_decay": decay, "momentum": momentum,
                "init_scale": args.init_scale}
               for lr in args.lr for reg in args.reg for decay in args.lr_decay for momentum in args.momentum]
    started = time.perf_counter()
    results = train.train_group(prepared, configs, data.NUM_CLASSES)
    timings["sweep"] = time.perf_counter() - started
    rows = []
    for result in results:
        c = result.config
        entry = {"lr": c["lr"], "reg": c["reg"], "lr_decay": c["lr_decay"], "momentum": c["momentum"],
                 "status": result.status}
        if result.status == "ok":
            history = result.history
            entry.update(val_accuracy=history["val_accuracy"][-1], best_epoch_val=max(history["val_accuracy"]),
                         train_accuracy=history.get("final_train_accuracy"), train_loss=history["train_loss"][-1],
                         val_curve=history["val_accuracy"])
        rows.append(entry)
    ok = [i for i, r in enumerate(rows) if r["status"] == "ok"]
    best = max(ok, key=lambda i: rows[i]["val_accuracy"]) if ok else None
    if best is not None:
        rows[best]["test_accuracy"] = accuracy(results[best].W, results[best].b, X_test, y_test)
    log(f"sweep: {len(configs)} configurations x {args.epochs} epochs (batch {args.batch_size}): "
        f"{timings['sweep']:.1f} s")
    for i, r in sorted(enumerate(rows), key=lambda item: -item[1].get("val_accuracy", -1)):
        mark = "*" if i == best else " "
        if r["status"] == "ok":
            log(f" {mark} lr {r['lr']:<8g} reg {r['reg']:<8g} decay {r['lr_decay']:<5g} mom {r['momentum']:<5g} val {r['val_accuracy']:.4f} "
                f"(best epoch {r['best_epoch_val']:.4f}) train {r['train_accuracy']:.4f} loss {r['train_loss']:.4f}"
                + (f"  test {r['test_accuracy']:.4f}" if i == best else ""))
        else:
            log(f" {mark} lr {r['lr']:<8g} reg {r['reg']:<8g} decay {r['lr_decay']:<5g} mom {r['momentum']:<5g} {r['status']}")
    report["sweep"] = rows
    if best is not None:
        report["best"] = {k: rows[best][k] for k in ("lr", "reg", "lr_decay", "momentum", "val_accuracy", "test_accuracy")}

    pipeline = sum(timings.get(key, 0.0) for key in ("fit", "encode", "standardize", "sweep"))
    timings["pipeline"] = pipeline
    if "floor" in timings:
        report["ratios"] = {"encode_over_floor": timings["encode"] / timings["floor"],
                            "pipeline_over_floor": pipeline / timings["floor"], "target": TARGET}
        log(f"pipeline (fit + encode + standardize + sweep): {pipeline:.1f} s = "
            f"{pipeline / timings['floor']:.2f} x floor {timings['floor']:.1f} s (target {TARGET}x)")

    if args.sklearn:
        try:
            from sklearn.linear_model import LogisticRegression
        except ImportError:
            log("sklearn not installed: no L-BFGS reference")
        else:
            report["sklearn"] = []
            for C in args.sklearn:
                started = time.perf_counter()
                model = LogisticRegression(C=C, max_iter=args.sklearn_iter)
                model.fit(X_train, y_train)
                seconds = time.perf_counter() - started
                entry = {"C": C, "reg_equivalent": 1 / (C * n_train), "seconds": seconds,
                         "iterations": int(np.max(model.n_iter_)),
                         "val_accuracy": float(model.score(X_val, y_val)), "test_accuracy": float(model.score(X_test, y_test))}
                report["sklearn"].append(entry)
                log(f"sklearn L-BFGS C {C:g} (reg {entry['reg_equivalent']:.3g}): val {entry['val_accuracy']:.4f} "
                    f"test {entry['test_accuracy']:.4f} ({entry['iterations']} iterations, {seconds:.0f} s)")

    own, children = rss_gb()
    report["peak_rss_gb"] = {"self": own, "children": children}
    report["timings_s"] = timings
    log(f"peak RSS: {own:.2f} GB (loader process {children:.2f} GB)")
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
