"""The fast kernels of the trainer: blocked matrix products and the fused softmax-gradient step.

How this relates to the reference maths of softmax.py: `softmax_gradient` computes, for every member
of a group at once, the data term of `softmax.softmax_loss` (loss, dW, db) on standardized inputs
(x - offset) * scale, without ever forming them. The batch buffer A (see loader.Batch) holds
-offset in row 0 and the raw rows x in rows 1..n, so with s the scale

    scores = (x - offset) s W + b       = s * (rows 1..n of A @ W + row 0 of A @ W) + b
    lr dW  = s (x - offset)^T dS lr     = A^T @ [colsum(D1); D1]      with D1 = dS * lr * s

and standardization costs two small (n, K*C) operations instead of passes over the batch. The
gradient comes out multiplied by each member's lr (the update rule's step size), which saves a
pass over the (K*C, D) weights. The tests check one and two steps against softmax.softmax_loss.
When the pipeline standardizes each feature by its own scale, the batch buffer holds the
standardized rows instead (row 0 zero, s = 1) and the same formulas hold.

Losses measured outside the training step (validation after each epoch, `eval`) come from one
kernel, softmax.loss_sums, on scores computed by `evaluate_members` here or by the model's pipeline.
"""
import functools
import math

import numpy as np

from linclf.training import loader, softmax

# OpenBLAS's AVX-512 kernels (in numpy's wheels on such CPUs) multiply without packing the operands
# when rows * columns * depth <= 1e6. A single run's thin products (K*C = 10 columns) are cut into
# blocks that fit: with the loader process busy beside it, that made an epoch 1.3x faster here.
# Wider groups are left whole (their blocks measured slower than one call).
SMALL_PRODUCT = 1_000_000
MIN_BLOCK = 64  # narrower blocks than this cost more in calls than they save: use one call instead


def thin(Wt):
    """Whether products with weights Wt (K*C, D) are cut into blocks of at least 32 rows."""
    return 32 * Wt.shape[0] * Wt.shape[1] <= SMALL_PRODUCT


@functools.lru_cache(maxsize=64)  # the same few cuts every step; computing them cost 2% of a step
def blocks(length, size):
    """Cut range(length) into equal slices of at most `size` (at least 1) items."""
    count = max(1, math.ceil(length / max(1, size)))
    edges = [length * i // count for i in range(count + 1)]
    return tuple(slice(start, stop) for start, stop in zip(edges, edges[1:]))


def forward_blocks(rows, Wt):
    """The row blocks of `forward` for a batch of `rows` rows, or None for one call."""
    return blocks(rows, SMALL_PRODUCT // Wt.size) if thin(Wt) else None


def backward_blocks(rows, width, depth):
    """The column blocks of `backward` for S (rows, width) and A (rows, depth), or None for one call.

    A large batch leaves few columns per block; below MIN_BLOCK a single call is faster (at 8,000
    rows the blocks had been 12 columns wide, at 50,000 a single column).
    """
    size = SMALL_PRODUCT // max(1, rows * width)
    return blocks(depth, size) if 32 * width * depth <= SMALL_PRODUCT and size >= min(MIN_BLOCK, depth) else None


def forward(A, Wt, out):
    """out (n, K*C) = A (n, D) @ Wt.T, in blocks of rows when Wt is thin."""
    W = Wt.T
    cuts = forward_blocks(len(A), Wt)
    if cuts is None:
        np.matmul(A, W, out=out)
        return
    for block in cuts:
        np.matmul(A[block], W, out=out[block])


def backward(S, A, out):
    """out (K*C, D) = S.T @ A for S (n, K*C) and A (n, D), in blocks of columns when thin."""
    St = S.T
    cuts = backward_blocks(S.shape[0], S.shape[1], A.shape[1])
    if cuts is None:
        np.matmul(St, A, out=out)
        return
    for block in cuts:
        np.matmul(St, A[:, block], out=out[:, block])


@functools.lru_cache(maxsize=16)
def ones(shape):
    """A read-only float32 array of ones, made once per shape."""
    array = np.ones(shape, dtype=np.float32)
    array.flags.writeable = False
    return array


def scores(raw, bias, scale):
    """The scores (n, K*C), in place in raw[1:], from raw (n+1, K*C) = batch inputs @ Wt.T."""
    S = raw[1:]
    S += raw[0] + bias / scale
    S *= scale
    return S


def softmax_gradient(state, Xa, yb, work, scale):
    """Data loss and lr-scaled gradients of every member on batch inputs Xa (n+1, D) with labels
    yb (n,). `state` is an update.GroupState; its `gradient` (K*C, D) receives lr * dW of the data
    term (transposed) and work[0] (K*C,) lr * db * s; work (at least n+1, K*C) is scratch space.
    Returns each member's mean data loss (K,) and number of correct predictions (K,).

    The softmax works on the scores as one row of C classes per (example, member) pair; its row
    reductions are an argmax and a product with ones, which numpy runs several times faster than
    max() and sum() along a short axis.
    """
    n, C, K = len(yb), state.num_classes, len(state.members)
    Sa = work[:n + 1]
    forward(Xa, state.Wt, Sa)
    S = scores(Sa, state.b, scale)                 # (n, K*C)
    pairs = S.reshape(n * K, C)                    # one row per (example, member)
    flat = S.reshape(-1)                           # indexing the flat view is 4x faster than [rows, cols]
    starts = np.arange(0, n * K * C, C)            # flat index of each row's first class
    labels = np.repeat(yb, K) if K > 1 else yb
    true = starts + labels                         # flat index of each row's true class
    top = pairs.argmax(axis=1)
    pairs -= flat[starts + top][:, None]           # shift every row by its maximum
    picked = flat[true]                            # shifted score of the true class
    np.exp(pairs, out=pairs)
    sums = pairs @ ones((C, 1))
    losses = (np.log(sums[:, 0]) - picked).reshape(n, K).sum(axis=0) / n
    correct = (top == labels).reshape(n, K).sum(axis=0)
    pairs /= sums                                  # probabilities
    flat[true] -= 1.0                              # n * dLoss/dScores
    S *= state.lr_columns * (scale / n)
    np.matmul(ones((n,)), S, out=Sa[0])            # column sums
    backward(Sa, Xa, state.gradient)               # lr * dW of the data term, transposed
    return losses, correct


def evaluate_members(state, X, y, offset, scale, chunk=1024):
    """Per-member mean data loss (K,) and accuracy (K,) on inputs (X - offset) * scale, y (N,):
    scores in chunks through the same folded products as the training step, then
    softmax.loss_sums, the one evaluation kernel."""
    K, C = len(state.members), state.num_classes
    loss, correct = np.zeros(K), np.zeros(K)
    batch = loader.Batch(max(1, min(chunk, len(y))), X, offset, scale)
    raw = np.empty((min(chunk, len(X)) + 1, len(state.Wt)), dtype=np.float32)
    for start in range(0, len(X), chunk):
        n = min(chunk, len(X) - start)
        batch.fill(X[start:start + n])
        forward(batch.inputs(n), state.Wt, raw[:n + 1])
        losses, right = softmax.loss_sums(scores(raw[:n + 1], state.b, batch.scale).reshape(n, K, C),
                                          y[start:start + n])
        loss += losses
        correct += right
    return loss / max(len(y), 1), correct / max(len(y), 1)
