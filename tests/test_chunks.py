"""Float temporaries are bounded in bytes, not in rows: wide rows get fewer rows per chunk."""
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest

from linclf.data import sources
from linclf.evaluation import evaluate
from linclf.features import kmeans, pipeline, precondition

BUDGET = 1 << 16  # 64 KiB of temporaries per chunk instead of 32 MiB, so that a small test can tell


def wide(rows=256, width=2048):
    return np.random.default_rng(0).standard_normal((rows, width)).astype(np.float32)  # 2 MiB


def model(width):
    scaler = pipeline.Standardize("standardize", {"mean": np.zeros(width, np.float32),
                                                  "std": np.ones(width, np.float32)})
    return SimpleNamespace(pipeline=pipeline.Pipeline([scaler], (width,), "features"), path="m.npz",
                           W=np.ones((width, 3), np.float32), b=np.zeros(3, np.float32))


CASES = {
    "standardization moments": (lambda X: pipeline._moments(X), 2048 * 8 * 4),
    "feature scan": (lambda X: sources.check_features("X", X, "x.npz"), 2048 * 8),
    "preconditioning": (lambda X: precondition.apply(X, np.eye(2048, 4, dtype=np.float32),
                                                     np.ones(4, np.float32)), 2048 * 4 * 4),
    "scores": (lambda X: evaluate.scores(model(X.shape[1]), X), 2048 * 4 * 4),
    "whitening": (lambda X: kmeans.fit_whitening(X.reshape(-1, 128)), 128 * 128 * 8 * 8),  # 4,096 patches
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_float_temporaries_stay_within_the_byte_budget_for_wide_rows(monkeypatch, case):
    from linclf.util import chunks

    monkeypatch.setattr(chunks, "CHUNK_BYTES", BUDGET)
    function, own = CASES[case]  # own: what the result itself takes
    X = wide()
    tracemalloc.start()
    try:
        function(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * BUDGET + own, f"{peak:,} bytes for {X.nbytes:,} bytes of rows"


@pytest.mark.parametrize("width,itemsize,rows", [(2048, 8, 4), (1, 8, 8192), (10**9, 4, 1)])
def test_chunk_rows(monkeypatch, width, itemsize, rows):
    from linclf.util import chunks

    monkeypatch.setattr(chunks, "CHUNK_BYTES", BUDGET)
    assert chunks.chunk_rows(width, itemsize) == rows
