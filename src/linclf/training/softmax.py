"""Softmax (multinomial logistic regression) classifier: the math only, no I/O.

Shapes: X (N, D) inputs, y (N,) integer labels in 0..C-1, W (D, C) weights, b (C,) biases.
Scores are S = X @ W + b (N, C); probabilities p = softmax(S) row by row.

Loss (nats per example):

    L = -(1/N) * sum_i log p[i, y_i]  +  0.5 * reg * sum(W**2)

The bias is not regularized. Gradients: dS = (p - onehot(y)) / N, dW = X.T @ dS + reg * W,
db = sum_i dS[i]. Every softmax shifts each row by its maximum first (log-sum-exp), so huge
scores give finite losses.
"""
import numpy as np


def softmax_loss_naive(W, b, X, y, reg):
    """Loss and gradients with explicit loops over examples and classes: the slow, obvious
    reference for tests.

    W (D, C), b (C,), X (N, D), y (N,), reg >= 0. Returns (loss, dW (D, C), db (C,)).
    """
    num_train, num_classes = X.shape[0], W.shape[1]
    loss, dW, db = 0.0, np.zeros_like(W), np.zeros_like(b)
    for i in range(num_train):
        scores = np.array([X[i] @ W[:, c] + b[c] for c in range(num_classes)])
        scores -= scores.max()  # same probabilities, no overflow
        total = sum(np.exp(scores[c]) for c in range(num_classes))
        loss += np.log(total) - scores[y[i]]
        for c in range(num_classes):
            dscore = np.exp(scores[c]) / total - (1.0 if c == y[i] else 0.0)
            dW[:, c] += dscore * X[i]
            db[c] += dscore
    loss = loss / num_train + 0.5 * reg * np.sum(W * W)
    dW = dW / num_train + reg * W
    db = db / num_train
    return loss, dW, db


def softmax_loss(W, b, X, y, reg):
    """Vectorized loss and gradients; same contract and result as `softmax_loss_naive`.

    W (D, C), b (C,), X (N, D), y (N,), reg >= 0. Returns (loss, dW (D, C), db (C,)).
    """
    num_train = X.shape[0]
    scores = X @ W + b
    scores -= scores.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(scores).sum(axis=1, keepdims=True))
    log_probs = scores - log_norm
    rows = np.arange(num_train)
    loss = -log_probs[rows, y].mean() + 0.5 * reg * np.sum(W * W)
    dscores = np.exp(log_probs)
    dscores[rows, y] -= 1.0
    dscores /= num_train
    dW = X.T @ dscores + reg * W
    db = dscores.sum(axis=0)
    return loss, dW, db


def predict_proba(W, b, X):
    """Class probabilities (N, C) for inputs X (N, D); each row sums to 1."""
    return np.exp(log_softmax(X @ W + b))


def predict(W, b, X):
    """Predicted labels (N,) for inputs X (N, D): the class of highest score."""
    return np.argmax(X @ W + b, axis=1)


def log_softmax(scores):
    """Log-probabilities (N, C) of scores (N, C), stable for any scores (log-sum-exp)."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def loss_sums(scores, y):
    """Summed cross-entropy (nats) and number of correct predictions of scores (N, ..., C) against
    labels y (N,), over the N rows: two arrays of shape (...) (one value per member of a group for
    scores (N, K, C)). The one evaluation kernel: validation during training (kernels.evaluate_members)
    and `eval` (evaluate.evaluate) both use it; scores may be float32, the sums are float64. Stable
    for any scores (each row shifted by its maximum)."""
    scores = np.asarray(scores)
    labels = np.asarray(y).reshape((len(y),) + (1,) * (scores.ndim - 1))
    top = scores.max(axis=-1, keepdims=True)
    picked = np.take_along_axis(scores, labels, axis=-1)[..., 0] - top[..., 0]
    log_norm = np.log(np.exp(scores - top, dtype=np.float64).sum(axis=-1))
    correct = (scores.argmax(axis=-1) == labels[..., 0]).sum(axis=0)
    return (log_norm - picked).sum(axis=0), correct
