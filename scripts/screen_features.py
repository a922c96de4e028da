#!/usr/bin/env python3
"""Screen k-means feature encodings and poolings on the real images (issue #18), one table.

    python scripts/screen_features.py --data-dir D [--k 1600] [--json]

One dictionary: linclf's k-means fit (mirror pairs, as configs/kmeans.yaml) on the training split
(the first 49,000 images; the last 1,000 validate, as the sweeps do). One pass over all 60,000
images computes, per patch, the squared distances z to the K centroids (the encoder's own product)
and from them every screened encoding, each pooled and folded over mirror pairs:

  triangle      max(0, mean_k(d) - d_k), d = sqrt(z)                          (linclf's encoding)
  soft          both polarities of the normalized dictionary's responses s_k = w.c_k / |c_k|:
                max(0, s_k - alpha) and max(0, -s_k - alpha) (Coates & Ng 2011, ICML), 2K channels
  soft-half     the same on half the dictionary (K/4 centroids and their mirrors): the dimension of
                triangle at half its distance products
  random-half   soft on K/2 random whitened training patches (and their mirrors): no k-means
Poolings: sums over the 3 x 3 regions (linclf's), or a pyramid 1 x 1 + 2 x 2 + 3 x 3 (the 2 x 2
halves overlap in the middle position row/column, so that they are mirror-symmetric for P = 27).
"+sqrt": the square root of the pooled sums (power normalization) before standardization.

Round three (issue #26), `--sets soft nearest --iterations 0 --nearest 0.1 0.4 --no-sqrt`: on the shipped
configs' random dictionary (K whitened training patches in mirror pairs, kmeans_iterations 0),
  soft          as above, 3 x 3 (configs/kmeans-fast.yaml's features at K = 1600)
  nearest-Q     Thiry, Arbel, Belilovsky & Oyallon 2021: 1 for each of the Q * K atoms nearest the
                patch (squared distance z), else 0; K channels, 3 x 3, folded over mirror pairs

Each feature set is stored as float16 (the screen's own memory), standardized on the training rows,
and trained with the same softmax (SoftmaxSweep: precondition 256, 20 epochs, lr x reg grid); the
table gives validation and test accuracy of the best by validation, the dimension and the encoding
seconds each set costs beyond the shared distance products (measured in this pass).
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from linclf import SoftmaxSweep, load_cifar10
from linclf.config import pool_bounds
from linclf.features import encoder, kmeans, parallel

TRAIN, VAL = 49_000, 1_000
GRID = {"lr": [0.05, 0.1], "reg": [1e-3, 3e-3]}
BASE = dict(precondition=256, epochs=20, batch_size=200, momentum=0.9, lr_decay=0.85)


def regions(P, levels):
    """Pooling matrix (R, P * P) over the levels' g x g grids and the mirror map (R,) of regions."""
    rows, mirror = [], []
    for g in levels:
        if g == 2:  # overlapping halves: [0, ceil(P/2)) and [floor(P/2), P), mirror-symmetric
            spans = [(0, (P + 1) // 2), (P // 2, P)]
        else:
            bounds = pool_bounds(P, g)
            spans = [(bounds[i], bounds[i + 1]) for i in range(g)]
        first = len(rows)
        for r, (r0, r1) in enumerate(spans):
            for c, (c0, c1) in enumerate(spans):
                mask = np.zeros((P, P), np.float32)
                mask[r0:r1, c0:c1] = 1
                rows.append(mask.ravel())
                mirror.append(first + r * g + (g - 1 - c))
    return np.array(rows), np.array(mirror)


def fold_indices(R, mirror, partner):
    """Mirror folding of pooled (R, C) flattened: feature = flat[i] + flat[j], one per pair."""
    C = len(partner)
    i = np.arange(R * C)
    j = mirror[i // C] * C + partner[i % C]
    keep = i <= j
    return i[keep], j[keep]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--k", type=int, default=1600)
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--images", type=int, default=0, help="encode and train on fewer images (0: all)")
    parser.add_argument("--iterations", type=int, default=50, help="k-means iterations (0: a random dictionary)")
    parser.add_argument("--sets", nargs="+", default=["triangle", "soft", "soft-half", "random-half"],
                        help="the encodings to screen: triangle soft soft-half random-half nearest")
    parser.add_argument("--no-sqrt", action="store_true", help="leave out the +sqrt variants")
    parser.add_argument("--nearest", type=float, nargs="+", default=[0.1, 0.4],
                        help="nearest: the fractions Q of the dictionary marked per patch")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    X_train, y_train, X_test, y_test, _ = load_cifar10(args.data_dir)
    n_train = len(X_train) if not args.images else min(args.images, len(X_train))
    images = np.concatenate([np.asarray(X_train[:n_train]), np.asarray(X_test)])
    labels_train, labels_test = y_train[:n_train], y_test
    fit_rows = n_train - VAL
    started = time.perf_counter()
    state = kmeans.fit(np.asarray(X_train[:fit_rows]), args.k, mirror=True, iterations=args.iterations,
                       num_patches=400_000)
    fit_seconds = time.perf_counter() - started
    K, F = state["centroids"].shape
    half = K // 2
    params = {"patch_size": 6, "stride": 1, "norm_eps": 10.0}
    P = encoder.num_positions(params)
    PP = P * P

    # dictionaries: the k-means centroids; a random half: K/2 random whitened patches + mirrors
    rng = np.random.default_rng(1)
    order = kmeans.mirror_order(6)
    patches = kmeans.normalize_patches(kmeans.sample_patches(np.asarray(X_train[:fit_rows]), half // 2, 6, rng))
    randoms = kmeans.whiten(patches, state["patch_mean"], state["whiten"])
    randoms = np.concatenate([randoms, randoms[:, order]])                     # (K/2, F), k + K/4 mirrors k
    sub = np.r_[0:K // 4, half:half + K // 4]                                  # half the k-means dictionary
    norms = np.linalg.norm(state["centroids"], axis=1)
    rnorms = np.linalg.norm(randoms, axis=1)

    pyramid, pyramid_mirror = regions(P, [1, 2, 3])
    grid3 = slice(1 + 4, 1 + 4 + 9)                                            # its 3 x 3 rows
    partner = lambda C: np.r_[C // 2:C, 0:C // 2]                              # noqa: E731
    polar = lambda C: np.r_[partner(C), C + partner(C)]                        # noqa: E731
    sets = {  # name: (channels, pooling rows, mirror map of rows)
        "triangle": (K, pyramid, pyramid_mirror, partner(K)),
        "soft": (2 * K, pyramid[grid3], pyramid_mirror[grid3] - 5, polar(K)),
        "soft-half": (K, pyramid[grid3], pyramid_mirror[grid3] - 5, polar(K // 2)),
        "random-half": (K, pyramid[grid3], pyramid_mirror[grid3] - 5, polar(K // 2)),
        **{f"nearest-{q:g}": (K, pyramid[grid3], pyramid_mirror[grid3] - 5, partner(K)) for q in args.nearest},
    }
    chosen = [name for name in sets if name in args.sets or (name.startswith("nearest-") and "nearest" in args.sets)]
    sets = {name: sets[name] for name in chosen}
    folds = {name: fold_indices(len(rows), mirror, part) for name, (_, rows, mirror, part) in sets.items()}
    folder = Path(tempfile.mkdtemp(prefix="linclf-screen-"))
    stores = {name: np.lib.format.open_memmap(folder / f"{name}.npy", "w+", np.float16, (len(images), len(i)))
              for name, (i, _) in folds.items()}
    seconds = {name: 0.0 for name in ["distances", *sets]}

    whitening = np.vstack([state["whiten"], -(state["patch_mean"] @ state["whiten"])]).astype(np.float32)
    weights = np.vstack([-2 * state["centroids"].T, np.ones((1, K)), (norms ** 2)[None]]).astype(np.float32)
    rweights = (randoms / rnorms[:, None]).T.astype(np.float32)
    block = 8
    alpha = np.float32(args.alpha)
    lock_seconds = __import__("threading").Lock()

    def work(index, scratch):
        first, last = index * block, min(len(images), (index + 1) * block)
        b = last - first
        clock = time.perf_counter()
        patches = np.ones((b * PP, F + 1), np.float32)
        encoder._extract(images[first:last], 6, 1, patches[:, :F])
        kmeans.normalize_patches(patches[:, :F], 10.0)
        inputs = np.ones((b * PP, F + 2), np.float32)
        np.matmul(patches, whitening, out=inputs[:, :F])
        w2 = np.einsum("ij,ij->i", inputs[:, :F], inputs[:, :F])
        inputs[:, F] = w2
        z = inputs @ weights
        spent = {"distances": time.perf_counter() - clock}

        def pool(name, act):  # act (b * PP, C)
            act = act.reshape(b, PP, -1)
            pooled = np.matmul(sets[name][1], act).reshape(b, -1)        # (b, R * C)
            i, j = folds[name]
            stores[name][first:last] = pooled[:, i] + pooled[:, j]

        if "triangle" in sets:
            clock = time.perf_counter()
            d = np.sqrt(np.maximum(z, 0))
            pool("triangle", np.maximum(d.mean(axis=1, keepdims=True) - d, 0))
            spent["triangle"] = time.perf_counter() - clock
        clock = time.perf_counter()
        s = (w2[:, None] + (norms ** 2)[None] - z) / (2 * norms[None])       # w . c / |c|
        if "soft" in sets:
            pool("soft", np.concatenate([np.maximum(s - alpha, 0), np.maximum(-s - alpha, 0)], axis=1))
            spent["soft"] = time.perf_counter() - clock
        if "soft-half" in sets:
            clock = time.perf_counter()
            s = s[:, sub]
            pool("soft-half", np.concatenate([np.maximum(s - alpha, 0), np.maximum(-s - alpha, 0)], axis=1))
            spent["soft-half"] = time.perf_counter() - clock
        if "random-half" in sets:
            clock = time.perf_counter()
            s = inputs[:, :F] @ rweights
            pool("random-half", np.concatenate([np.maximum(s - alpha, 0), np.maximum(-s - alpha, 0)], axis=1))
            spent["random-half"] = time.perf_counter() - clock
        for q in args.nearest:
            if f"nearest-{q:g}" in sets:
                clock = time.perf_counter()
                count = max(1, int(round(q * K)))
                threshold = np.partition(z, count - 1, axis=1)[:, count - 1:count]  # each patch's count-th nearest
                pool(f"nearest-{q:g}", (z <= threshold).astype(np.float32))
                spent[f"nearest-{q:g}"] = time.perf_counter() - clock
        with lock_seconds:
            for name, value in spent.items():
                seconds[name] += value

    started = time.perf_counter()
    parallel.run_blocks(-(-len(images) // block), work, parallel.default_threads())
    encode_seconds = time.perf_counter() - started
    print(f"fit {fit_seconds:.0f} s, encode pass {encode_seconds:.0f} s; thread-seconds {seconds}", flush=True)

    tri3 = np.arange(stores["triangle"].shape[1])[-(9 * K // 2):] if "triangle" in sets else None  # the 3 x 3 features come last in the pyramid's rows
    candidates = [("triangle 3x3", "triangle", tri3, False), ("triangle 3x3 +sqrt", "triangle", tri3, True),
                  ("triangle pyramid", "triangle", slice(None), False),
                  ("triangle pyramid +sqrt", "triangle", slice(None), True),
                  ("soft 3x3", "soft", slice(None), False), ("soft 3x3 +sqrt", "soft", slice(None), True),
                  ("soft-half 3x3", "soft-half", slice(None), False),
                  ("random-half 3x3", "random-half", slice(None), False),
                  *[(f"{name} 3x3", name, slice(None), False) for name in sets if name.startswith("nearest")]]
    candidates = [candidate for candidate in candidates if candidate[1] in sets and not (args.no_sqrt and candidate[3])]
    table = []
    for label, name, columns, root in candidates:
        X = np.asarray(stores[name][:, columns], dtype=np.float32)
        if root:
            np.sqrt(X, out=X)
        clock = time.perf_counter()
        model = SoftmaxSweep(grid=GRID, **BASE).fit(X[:fit_rows], labels_train[:fit_rows],
                                                    X_val=X[fit_rows:n_train], y_val=labels_train[fit_rows:])
        row = {"features": label, "dim": X.shape[1], "val": round(float(model.best_score_), 4),
               "test": round(float(model.score(X[n_train:], labels_test)), 4),
               "best": {k: model.best_params_[k] for k in GRID}, "train_seconds": round(time.perf_counter() - clock, 1),
               "encode_thread_seconds": round(seconds[name], 1)}
        del X
        table.append(row)
        print(json.dumps(row), flush=True)
    result = {"k": K, "alpha": args.alpha, "images": len(images), "fit_seconds": round(fit_seconds, 1),
              "encode_pass_seconds": round(encode_seconds, 1),
              "distance_thread_seconds": round(seconds["distances"], 1), "table": table}
    for name in stores:
        (folder / f"{name}.npy").unlink()
    folder.rmdir()
    if args.json:
        print(json.dumps(result))
        return
    print(f"K = {K}, alpha {args.alpha}: {'features':24} {'dim':>6} {'val':>7} {'test':>7}")
    for row in table:
        print(f"  {row['features']:24} {row['dim']:6} {row['val']:7.4f} {row['test']:7.4f}  {row['best']}")


if __name__ == "__main__":
    main()
