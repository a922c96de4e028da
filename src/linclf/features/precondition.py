"""Preconditioning for SGD: the top principal directions of the inputs rescaled to unit variance. Math only.

Standardized features can still be badly conditioned: k-means features of CIFAR-10 have a top
covariance eigenvalue near 870 against a mean of 1, so SGD's step size is held down by a few
directions while the rest of the spectrum learns slowly. With the top k eigenpairs (lambda_j, v_j)
of the training inputs' covariance,

    P = I + V diag(f) V^T,   f_j = min(1, 1 / sqrt(lambda_j)) - 1,

is symmetric and maps each of those directions with lambda_j > 1 to unit variance (the others are
left alone). SGD trains W_z on Z = X P; the scores Z W_z = X (P W_z), so the saved model is the
plain linear model W = P W_z (`to_inputs`) on the same standardized X: eval and predict never see
P. The L2 penalty applies to W_z: in the rescaled directions it weighs lambda_j times more
than on W.

The eigenpairs come from a seeded randomized subspace iteration (Halko, Martinsson & Tropp 2011):
a few passes of X^T X over a (D, k + 16) block, then the small eigenproblem of (X Q)^T (X Q), all
float32 products. Inputs may be float16 (the feature cache's rows): each row block is converted to
float32 for its products, and `apply` writes its result back rounded to float16.
"""
import numpy as np

from linclf.util import float16
from linclf.util.chunks import chunk_rows

OVERSAMPLE = 16   # extra columns of the random block: the top k come out accurate
POWER_STEPS = 2   # subspace iterations
FIT_ROWS = 16384  # the eigenpairs come from at most this many rows (every ceil(N / FIT_ROWS)-th):
                  # the top directions of 49,000 rows, 3x faster (what SGD needs is their scale)
# row blocks: chunk_rows(D, 4), so a (rows, D) float32 temporary stays within util.chunks.CHUNK_BYTES


def _gram_times(X, Q):
    """X^T (X Q) for X (N, D), Q (D, m), in row blocks: (D, m) float32."""
    out = np.zeros((X.shape[1], Q.shape[1]), dtype=np.float32)
    rows = chunk_rows(X.shape[1], 4)
    for start in range(0, len(X), rows):
        block = float16.as_float32(X[start:start + rows])
        out += block.T @ (block @ Q)
    return out


def fit(X, k, seed=0):
    """The preconditioner of standardized training inputs X (N, D) float32 or float16 (centred: the mean of
    each column about 0): (V (D, r) float32 orthonormal, factors (r,) float32, eigenvalues (r,)),
    r = min(k, D, n) top eigenpairs of S^T S / n, S the n <= FIT_ROWS rows X[::ceil(N / FIT_ROWS)].
    Deterministic for a seed."""
    X = X[::-(-len(X) // FIT_ROWS) or 1]
    N, D = X.shape
    r = min(int(k), D, N)
    m = min(r + OVERSAMPLE, D, N)
    rng = np.random.default_rng(seed)
    Q = _gram_times(X, rng.standard_normal((D, m)).astype(np.float32))
    for _ in range(POWER_STEPS):
        Q, _ = np.linalg.qr(Q)
        Q = _gram_times(X, Q.astype(np.float32))
    Q, _ = np.linalg.qr(Q)
    Q = Q.astype(np.float32)
    small = np.zeros((m, m))
    rows = chunk_rows(D, 4)
    for start in range(0, N, rows):               # (X Q)^T (X Q) = Q^T X^T X Q, an m x m eigenproblem
        B = float16.as_float32(X[start:start + rows]) @ Q
        small += (B.T @ B).astype(np.float64)
    values, vectors = np.linalg.eigh((small + small.T) / 2)
    order = np.argsort(values)[::-1][:r]
    values = np.maximum(values[order], 0.0) / max(N, 1)
    V = (Q @ vectors[:, order].astype(np.float32)).astype(np.float32)
    factors = (np.minimum(1.0, 1.0 / np.sqrt(np.maximum(values, 1e-30))) - 1.0).astype(np.float32)
    return V, factors, values


def apply(X, V, factors):
    """X <- X P in place, for X (N, D) float32 or float16 (writable) and P = I + V diag(factors) V^T.
    Returns X."""
    rows = chunk_rows(X.shape[1], 4)
    for start in range(0, len(X), rows):
        block = float16.as_float32(X[start:start + rows])  # X's own rows when float32
        block += ((block @ V) * factors) @ V.T
        if X.dtype != np.float32:
            X[start:start + rows] = block
    return X


def to_inputs(W, V, factors):
    """The weights on the unpreconditioned inputs: P W for W (D, C) trained on X P. Returns (D, C) float32."""
    return (W + V @ (factors[:, None] * (V.T @ W))).astype(np.float32)
