"""The solver: L-BFGS to the minimum of the stated objective, for a group of members at once. Math only.

Each member k (a value of reg) minimizes, over W (D, C) and b (C,),

    f_k(W, b) = mean_i CE(x_i W + b, y_i) + 0.5 * reg_k * sum(W**2)        (the bias is free)

the loss of `softmax.softmax_loss`, on standardized inputs X (N, D). It is convex, so its minimum
is the answer and the path there does not matter: no learning rate, no epochs.

Conditioning: standardized features are often badly conditioned (pixels: the top covariance
eigenvalue is hundreds of times the mean), which slows any first-order method. The solver works in
the variables U with W = P U, P = I + V diag(factors) V^T from `precondition.fit` (the top
directions of X rescaled to unit variance). That changes the path, never the objective: f is
evaluated at W = P U, and its gradient in U is P (dW + reg W) (P is symmetric).

Each iteration takes one quasi-Newton step per member (two-loop recursion over the last MEMORY
steps, Nocedal & Wright, algorithm 7.4) and a backtracking line search on it (Armijo's sufficient
decrease, or, near the minimum where float32 rounding hides the decrease, Hager & Zhang's
approximate Wolfe test on the slope). The members'
scores come from one product X @ W_all (D, K*C) per evaluation, as in the SGD trainer. A member
stops when converged (`tol`, below) or at `max_iter` iterations; a converged member leaves the
group, so the products narrow as the group finishes.

Convergence: the largest gradient entry (of W and b) is at most tol, scikit-learn's lbfgs test
(its `gtol`). On a gradient that small the objective is close to its minimum: README gives the
measured gaps.
"""
from dataclasses import dataclass

import numpy as np

from linclf.util import float16
from linclf.util.chunks import chunk_rows

MEMORY = 10          # L-BFGS pairs (s, y) kept per member
ARMIJO = 1e-4        # sufficient decrease: f(x + t d) <= f(x) + ARMIJO * t * g.d
BACKTRACKS = 30      # at most this many halvings of a step; a member that finds no step stops
NOISE = 1e-6         # f's relative rounding (float32 products): a step that changes f by less is taken
                     # when the slope along it shows progress (Hager & Zhang's approximate Wolfe test)


@dataclass
class Solution:
    """What the solver found for one member."""
    W: np.ndarray        # (D, C) float32
    b: np.ndarray        # (C,) float32
    objective: float     # f at (W, b)
    n_iter: int          # iterations taken
    converged: bool      # the gradient test passed (else max_iter, or no decrease left, stopped it)
    gradient: float      # the largest gradient entry at the end
    history: list        # the objective after each iteration
    start: np.ndarray    # (D+1, C) the solver's variables at the end (U, then b): a warm start for a neighbour


def data_term(X, y, W, b, num_classes):
    """Per-member mean cross-entropy and its gradients, for K members at once.

    X (N, D) float32 or float16 (converted in chunks), y (N,) ints in 0..C-1, W (D, K*C) float32
    (member k owns columns k*C .. k*C+C-1), b (K*C,) float32. Returns (loss (K,) float64,
    dW (D, K*C) float32, db (K*C,) float32): the data term of softmax.softmax_loss per member
    (tests/test_lbfgs.py compares them).
    """
    N, D = X.shape
    C = num_classes
    K = W.shape[1] // C
    loss = np.zeros(K)
    dW = np.zeros_like(W)
    db = np.zeros(W.shape[1])
    rows = N if X.dtype == np.float32 else chunk_rows(D, 4)
    for start in range(0, N, rows):
        block = float16.as_float32(X[start:start + rows])
        n = len(block)
        true = np.broadcast_to(y[start:start + n].reshape(n, 1, 1), (n, K, 1))
        scores = (block @ W + b).reshape(n, K, C)
        scores -= scores.max(axis=2, keepdims=True)       # log-sum-exp: finite for any scores
        picked = np.take_along_axis(scores, true, axis=2)
        np.exp(scores, out=scores)
        sums = scores.sum(axis=2, keepdims=True)
        loss += (np.log(sums, dtype=np.float64) - picked).sum(axis=(0, 2))
        scores /= sums                                    # probabilities
        np.put_along_axis(scores, true, np.take_along_axis(scores, true, axis=2) - 1.0, axis=2)
        dscores = scores.reshape(n, K * C)                # n * dLoss/dScores
        dW += block.T @ dscores
        db += dscores.sum(axis=0, dtype=np.float64)
    dW /= N
    return loss / N, dW, (db / N).astype(np.float32)


def _member_sums(A, K):
    """Per-member sums (K,) float64 of an array (rows, K*C)."""
    return A.reshape(len(A), K, -1).sum(axis=(0, 2), dtype=np.float64)


class _Problem:
    """The objectives of a group's members in the solver's variables theta (D+1, K*C): rows
    0..D-1 hold U (W = P U), row D the bias."""

    def __init__(self, X, y, num_classes, V, factors):
        self.X, self.y, self.C = X, y, num_classes
        self.V, self.factors = V, factors

    def precondition(self, A):
        """P A for A (D, K*C): A + V diag(factors) V^T A."""
        if not self.V.shape[1]:
            return A
        return A + self.V @ (self.factors[:, None] * (self.V.T @ A))

    def evaluate(self, theta, reg_columns):
        """(objective (K,), gradient in theta (D+1, K*C), largest gradient entry in (W, b) (K,), W)."""
        D, K = len(theta) - 1, theta.shape[1] // self.C
        W = np.ascontiguousarray(self.precondition(theta[:D]))
        loss, dW, db = data_term(self.X, self.y, W, theta[D], self.C)
        dW += reg_columns * W                             # the gradient in W: dW + reg W
        objective = loss + 0.5 * _member_sums(reg_columns * W * W, K)
        largest = np.maximum(np.abs(dW).reshape(D, K, -1).max(axis=(0, 2)),
                             np.abs(db).reshape(K, -1).max(axis=1))
        gradient = np.empty_like(theta)
        gradient[:D] = self.precondition(dW)
        gradient[D] = db
        return objective, gradient, largest, W


def solve(X, y, regs, num_classes, tol, max_iter, preconditioner=None, callback=None, starts=None):
    """Minimize f_k for each reg_k in regs (K,) on standardized X (N, D) float32 or float16 and
    labels y (N,) in 0..C-1, starting from W = 0, b = 0, or from starts[k] (a Solution's `start`,
    found with the same preconditioner) where that is not None. `preconditioner` is (V (D, r),
    factors (r,)) from precondition.fit, or None. callback(iteration, objectives (active,)), when
    given, is called after every iteration. Returns a list of K Solutions.
    """
    D, C, K = X.shape[1], num_classes, len(regs)
    V, factors = preconditioner if preconditioner is not None else (np.zeros((D, 0), np.float32),
                                                                     np.zeros(0, np.float32))
    problem = _Problem(X, y, C, V, factors)
    solutions = [None] * K
    active = list(range(K))                              # member index of each column block
    reg_columns = np.repeat(np.asarray(regs, dtype=np.float32), C)
    theta = np.zeros((D + 1, K * C), dtype=np.float32)
    for k, start in enumerate(starts or []):
        if start is not None:
            theta[:, k * C:(k + 1) * C] = start
    f, g, largest, W = problem.evaluate(theta, reg_columns)
    histories = [[float(value)] for value in f]
    steps, changes, rho = [], [], []                     # the L-BFGS pairs, oldest first; rho (k,)
    iteration = 0

    def finish(positions, converged):
        nonlocal theta, g, f, largest, W, reg_columns, active, steps, changes, rho
        for position in positions:
            member = active[position]
            columns = slice(position * C, (position + 1) * C)
            solutions[member] = Solution(W[:, columns].copy(), theta[D, columns].copy(), float(f[position]),
                                         iteration, bool(converged[position]), float(largest[position]),
                                         histories[member], theta[:, columns].copy())
        keep = [p for p in range(len(active)) if p not in positions]
        columns = np.concatenate([np.arange(p * C, (p + 1) * C) for p in keep]) if keep else np.arange(0)
        theta, g, W = (np.ascontiguousarray(a[:, columns]) for a in (theta, g, W))
        reg_columns = reg_columns[columns]
        f, largest = f[keep], largest[keep]
        steps = [np.ascontiguousarray(s[:, columns]) for s in steps]
        changes = [np.ascontiguousarray(c[:, columns]) for c in changes]
        rho = [r[keep] for r in rho]
        active = [active[p] for p in keep]

    done = largest <= tol
    if done.any():
        finish(list(np.flatnonzero(done)), done)
    while active and iteration < max_iter:
        iteration += 1
        k = len(active)
        direction = _two_loop(g, steps, changes, rho, k)
        slope = _member_sums(g * direction, k)
        uphill = slope >= 0                               # memory gone bad: a gradient step instead
        if uphill.any():
            columns = np.repeat(uphill, C)
            direction[:, columns] = -g[:, columns]
            slope = _member_sums(g * direction, k)
        t = np.ones(k, dtype=np.float32)
        if not steps:                                     # first step: of length 1 in theta
            t[:] = 1.0 / np.sqrt(np.maximum(_member_sums(g * g, k), 1e-30))
        new_theta, new_f, new_g, new_largest, new_W = (np.empty_like(theta), np.empty_like(f), np.empty_like(g),
                                                       np.empty_like(largest), np.empty_like(W))
        pending = np.arange(k)
        for _ in range(BACKTRACKS + 1):
            columns = np.concatenate([np.arange(p * C, (p + 1) * C) for p in pending])
            trial = theta[:, columns] + np.repeat(t[pending], C) * direction[:, columns]
            tf, tg, tl, tW = problem.evaluate(trial, reg_columns[columns])
            new_theta[:, columns], new_g[:, columns], new_W[:, columns] = trial, tg, tW
            new_f[pending], new_largest[pending] = tf, tl
            decrease = tf <= f[pending] + ARMIJO * t[pending] * slope[pending]
            new_slope = _member_sums(tg * direction[:, columns], len(pending))
            level = (tf <= f[pending] + NOISE * np.abs(f[pending])) & (new_slope <= -(1 - 2 * ARMIJO) * slope[pending])
            failed = ~(decrease | level)
            pending = pending[failed]
            if not len(pending):
                break
            t[pending] *= 0.5
        stuck = np.zeros(k, dtype=bool)
        stuck[pending] = True                             # no step found: the last trial is not taken
        keep_old = np.repeat(stuck, C)
        new_theta[:, keep_old], new_g[:, keep_old], new_W[:, keep_old] = (
            theta[:, keep_old], g[:, keep_old], W[:, keep_old])
        new_f[stuck], new_largest[stuck] = f[stuck], largest[stuck]
        s, change = new_theta - theta, new_g - g
        curvature = _member_sums(s * change, k)
        good = curvature > 1e-10 * np.sqrt(_member_sums(s * s, k) * _member_sums(change * change, k))
        steps.append(s)
        changes.append(change)
        rho.append(np.where(good, 1.0 / np.where(good, curvature, 1.0), 0.0))  # 0: the pair is skipped
        if len(steps) > MEMORY:
            steps.pop(0), changes.pop(0), rho.pop(0)
        theta, f, g, largest, W = new_theta, new_f, new_g, new_largest, new_W
        for position, member in enumerate(active):
            histories[member].append(float(f[position]))
        if callback is not None:
            callback(iteration, f)
        converged = largest <= tol
        ended = converged | stuck
        if iteration >= max_iter:
            ended[:] = True
        if ended.any():
            finish(list(np.flatnonzero(ended)), converged)
    return solutions


def _two_loop(g, steps, changes, rho, k):
    """-H g for every member (Nocedal & Wright, algorithm 7.4): H the L-BFGS inverse Hessian of
    the pairs (steps, changes), scaled by gamma = s.y / y.y of the newest pair a member kept."""
    C = g.shape[1] // k
    q = g.astype(np.float32, copy=True)
    alphas = []
    for s, change, r in zip(reversed(steps), reversed(changes), reversed(rho)):
        alpha = r * _member_sums(s * q, k)
        q -= np.repeat(alpha, C).astype(np.float32) * change
        alphas.append(alpha)
    gamma, found = np.ones(k), np.zeros(k, dtype=bool)
    for change, r in zip(reversed(changes), reversed(rho)):
        newest = (r > 0) & ~found
        if newest.any():
            gamma[newest] = 1.0 / (r[newest] * _member_sums(change * change, k)[newest])
            found |= newest
        if found.all():
            break
    q *= np.repeat(gamma, C).astype(np.float32)
    for (s, change, r), alpha in zip(zip(steps, changes, rho), reversed(alphas)):
        beta = r * _member_sums(change * q, k)
        q += np.repeat(alpha - beta, C).astype(np.float32) * s
    return -q
