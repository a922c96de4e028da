#!/usr/bin/env python3
"""Naive (loops) versus vectorized softmax loss and gradient on real training images.

    python scripts/bench_loss.py [--data-dir data] [--num 5000] [--json]

Prints both timings, their ratio, and how far apart the losses and gradients are.
"""
import argparse
import json
import time

import numpy as np

from linclf.data import cifar10
from linclf.training import softmax
from linclf.features import pipeline
from linclf.training.gradient_check import relative_error


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(cifar10.default_data_dir()))
    parser.add_argument("--num", type=int, default=5000, help="training images to use")
    parser.add_argument("--reg", type=float, default=1e-3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    dataset = cifar10.load_cache(args.data_dir)
    images, labels = dataset.train_x[:args.num], np.asarray(dataset.train_y[:args.num], dtype=np.intp)
    pipe = pipeline.build({}, "images", images.shape[1:])
    pipe.fit(images)
    X = pipe.transform(images).astype(np.float64)
    rng = np.random.default_rng(0)
    W = 1e-3 * rng.standard_normal((X.shape[1], len(dataset.class_names)))
    b = np.zeros(W.shape[1])

    started = time.perf_counter()
    loss_naive, dW_naive, db_naive = softmax.softmax_loss_naive(W, b, X, labels, args.reg)
    naive_seconds = time.perf_counter() - started
    times = []
    for _ in range(5):
        started = time.perf_counter()
        loss, dW, db = softmax.softmax_loss(W, b, X, labels, args.reg)
        times.append(time.perf_counter() - started)
    vectorized_seconds = min(times)
    report = {"num_images": len(labels), "naive_seconds": round(naive_seconds, 4),
              "vectorized_seconds": round(vectorized_seconds, 5),
              "speedup": round(naive_seconds / vectorized_seconds, 1),
              "loss_naive": loss_naive, "loss_vectorized": loss, "loss_difference": abs(loss - loss_naive),
              "gradient_relative_error": relative_error(dW, dW_naive),
              "bias_gradient_relative_error": relative_error(db, db_naive)}
    if args.json:
        print(json.dumps(report))
        return
    print(f"softmax loss and gradient on {len(labels)} training images (float64, reg {args.reg:g})")
    print(f"  naive (loops)   {naive_seconds * 1000:10.1f} ms   loss {loss_naive:.10f}")
    print(f"  vectorized      {vectorized_seconds * 1000:10.1f} ms   loss {loss:.10f}")
    print(f"  speed-up        {report['speedup']:10.1f} x")
    print(f"  loss difference {report['loss_difference']:.3e}; gradient relative error "
          f"{report['gradient_relative_error']:.3e} (W), {report['bias_gradient_relative_error']:.3e} (b)")


if __name__ == "__main__":
    main()
