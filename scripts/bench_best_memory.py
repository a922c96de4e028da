#!/usr/bin/env python3
"""Peak memory of `linclf eval --best` against `linclf runs` over a runs dir of many runs.

    python scripts/bench_best_memory.py [--runs 10000] [--epochs 100] [--dir DIR] [--json]

Builds a runs dir of --runs finished run folders quickly: one run is trained by `linclf train`
(solver sgd for --epochs epochs on a tiny seeded array file, so its metrics.json carries a long
per-epoch history, as a real sweep's runs do), then copied: every copy has its own metrics.json
(only `seconds` differs, which no ranking reads) and hard links to the run's weights.npz and
config.yaml. So every run is valid, and the one --best picks (ties: the first run id) has a
metrics.json that agrees with its weights.npz, as ranking.load_best checks. Then each command runs
in a subprocess and its peak resident memory is read from wait4; the report gives both and their
ratio (target: eval --best at most 2x linclf runs).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def linclf(*args):
    return [sys.executable, "-m", "linclf", *map(str, args)]


def peak_rss(command):
    """(peak resident memory in MB, exit status) of command run to its end in a subprocess."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)  # the rusage of this child alone
    process.returncode = os.waitstatus_to_exitcode(status)
    error = process.stderr.read().decode()
    process.stderr.close()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}): {error.strip()}")
    return usage.ru_maxrss / 1024, process.returncode  # ru_maxrss is in KiB on Linux


def build_runs(folder, runs, epochs):
    """A runs dir of `runs` valid copies of one trained run; returns (runs dir, data file)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    X = (rng.normal(size=(3, 8))[labels] + rng.normal(size=(300, 8))).astype(np.float32)
    data = folder / "tiny.npz"
    np.savez(data, X_train=X, y_train=labels, X_test=X[:50], y_test=labels[:50])
    first = folder / "first"
    subprocess.run(linclf("train", "--data", data, "--out", first, "--epochs", epochs, "--batch-size", 10,
                          "--lr", "1e-2", "--quiet"), check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((first / "metrics.json").read_text())
    runs_dir = folder / "runs"
    for index in range(runs):
        run_dir = runs_dir / "bench" / f"run-{index:05d}"
        run_dir.mkdir(parents=True)
        for name in ("weights.npz", "config.yaml"):
            os.link(first / name, run_dir / name)
        (run_dir / "metrics.json").write_text(json.dumps({**metrics, "seconds": index / 1000}) + "\n")
    return runs_dir, data


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=100, help="the trained run's epochs: its history's length")
    parser.add_argument("--dir", help="build the runs dir here (default: a temporary folder, removed after)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-best-") as temporary:
        folder = Path(args.dir or temporary)
        folder.mkdir(parents=True, exist_ok=True)
        runs_dir, data = build_runs(folder, args.runs, args.epochs)
        size = sum(p.stat().st_size for p in runs_dir.rglob("metrics.json"))
        runs_mb, _ = peak_rss(linclf("runs", "--runs-dir", runs_dir, "--json"))
        best_mb, _ = peak_rss(linclf("eval", "--best", "--runs-dir", runs_dir, "--data", data, "--json", "--no-plots"))
    report = {"runs": args.runs, "metrics_json_mb": round(size / 2**20, 1), "runs_peak_mb": round(runs_mb, 1),
              "eval_best_peak_mb": round(best_mb, 1), "ratio": round(best_mb / runs_mb, 2), "target": 2.0}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.runs} runs ({report['metrics_json_mb']} MB of metrics.json): linclf runs peaks at "
              f"{report['runs_peak_mb']} MB, eval --best at {report['eval_best_peak_mb']} MB: "
              f"{report['ratio']}x (target at most 2x)")
    return 0 if report["ratio"] <= report["target"] else 1


if __name__ == "__main__":
    sys.exit(main())
