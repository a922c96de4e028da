"""The solver: L-BFGS to the minimum of the stated objective, for a group of members at once. Math only.

Each member k (a value of reg) minimizes, over W (D, C) and b (C,),

    f_k(W, b) = mean_i CE(x_i W + b, y_i) + 0.5 * reg_k * sum(W**2)        (the bias is free)

the loss of `softmax.softmax_loss`, on standardized inputs X (N, D). It is convex, so its minimum
is the answer and the path there does not matter: no learning rate, no epochs.

Conditioning: standardized features are often badly conditioned (pixels: the top covariance
eigenvalue is hundreds of times the mean), which slows any first-order method. The solver works in
variables theta with (W; b) = P theta, a change of variables per member: P = I + V diag(p - 1) V^T
on W, V the top principal directions of X (`precondition.fit`, eigenvalues lambda_j), and

    p_j = min(1, sqrt((CURVATURE + reg) / (CURVATURE * lambda_j + reg)))

so that along each of those directions the curvature of f, about CURVATURE * lambda_j + reg, becomes
about CURVATURE + reg, that of a direction of unit variance. A weak reg gives p_j = 1 / sqrt(lambda_j)
(the directions rescaled to unit variance); a strong reg, whose penalty already evens out the
curvature, leaves them nearly alone. The bias, a direction of unit variance without a penalty (its
curvature about CURVATURE), is scaled by sqrt((CURVATURE + reg) / CURVATURE) to match: under a
strong reg it would otherwise be the one flat direction among steep ones (reg 100 on the probe's
embedding: 27 iterations without, 7 with). None of this changes the objective: f is evaluated at
P theta, and its gradient in theta is P (dW + reg W; db) (P is symmetric).

Each iteration takes one quasi-Newton step per member (two-loop recursion over the last MEMORY
steps, Nocedal & Wright, algorithm 7.4) and a backtracking line search on it (Armijo's sufficient
decrease, or, near the minimum where float32 rounding hides the decrease, Hager & Zhang's
approximate Wolfe test on the slope). All members start together from zero and their scores come
from one product X @ W_all (D, K*C) per pass, as in the SGD trainer. A member stops when converged
(`tol`, below) or at `max_iter` iterations and leaves the group: the products narrow as the group
finishes. One wide group beats smaller groups warm-started along the reg path: a pass costs a
fixed part (reading X) plus a part per member, and the slowest member sets the number of passes
(README, "Solver").

Convergence: the largest gradient entry (of W and b) is at most tol, scikit-learn's lbfgs test
(its `gtol`). At moderate reg the objective is then close to its minimum; at weak reg, where the
penalty's curvature is small, it may still be far: README gives the measured gaps.
"""
from dataclasses import dataclass

import numpy as np

from linclf.util import float16
from linclf.util.chunks import chunk_rows

MEMORY = 10          # L-BFGS pairs (s, y) kept per member
ARMIJO = 1e-4        # sufficient decrease: f(x + t d) <= f(x) + ARMIJO * t * g.d
BACKTRACKS = 30      # at most this many halvings of a step; a member that finds no step stops
CURVATURE = 0.25     # the largest curvature of the cross-entropy along one score, p (1 - p) <= 1/4
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
    """The objectives of a group's members in the solver's variables theta (D+1, K*C), with
    (W; b) = P theta. Column j of theta belongs to the member whose reg_columns[j] and
    factor_columns[:, j] (r+1,) it carries: the p - 1 of its P, along V's r directions and, last,
    the bias's."""

    def __init__(self, X, y, num_classes, V):
        self.X, self.y, self.C, self.V = X, y, num_classes, V

    def precondition(self, A, factor_columns):
        """P A for A (D+1, K*C): rows 0..D-1 become A + V (p - 1) V^T A, row D is scaled by its p."""
        out = A.copy()
        if self.V.shape[1]:
            out[:-1] += self.V @ (factor_columns[:-1] * (self.V.T @ A[:-1]))
        out[-1] *= 1.0 + factor_columns[-1]
        return out

    def evaluate(self, theta, reg_columns, factor_columns):
        """(objective (K,), gradient in theta (D+1, K*C), largest gradient entry in (W, b) (K,), W)."""
        D, K = len(theta) - 1, theta.shape[1] // self.C
        Wb = self.precondition(theta, factor_columns)
        W = np.ascontiguousarray(Wb[:D])
        loss, dW, db = data_term(self.X, self.y, W, Wb[D], self.C)
        dW += reg_columns * W                             # the gradient in W: dW + reg W
        objective = loss + 0.5 * _member_sums(reg_columns * W * W, K)
        largest = np.maximum(np.abs(dW).reshape(D, K, -1).max(axis=(0, 2)),
                             np.abs(db).reshape(K, -1).max(axis=1))
        return objective, self.precondition(np.vstack([dW, db]), factor_columns), largest, Wb


def factors(eigenvalues, regs):
    """p - 1 (r+1, K) of each member's change of variables (the module docstring's p_j), for the
    eigenvalues (r,) of the directions V and the members' regs (K,); the last row is the bias's,
    by the same rule for a direction of unit variance without a penalty."""
    lam = np.asarray(eigenvalues, dtype=np.float64)[:, None]
    reg = np.asarray(regs, dtype=np.float64)[None, :]
    weights = np.minimum(1.0, np.sqrt((CURVATURE + reg) / np.maximum(CURVATURE * lam + reg, 1e-30)))
    bias = np.sqrt((CURVATURE + reg) / CURVATURE)        # unit variance, no penalty
    return (np.vstack([weights, bias]) - 1.0).astype(np.float32)


class _Group:
    """The members being solved, a column block of C each, every one at its own stage: starting
    (its start not yet evaluated) or searching along its direction. Arrays over the columns are
    (D+1, k*C), over the members (k,)."""

    COLUMNS = ("theta", "g", "W", "direction")          # theta: the point reached, W: there (W; b) = P theta
    MEMBERS = ("f", "largest", "t", "slope", "starting", "iterations", "backtracks")

    def __init__(self, members, reg_columns, factor_columns, theta):
        k = len(members)
        self.members = list(members)                     # member index of each column block
        self.reg_columns, self.factor_columns, self.theta = reg_columns, factor_columns, theta
        self.g, self.W, self.direction = np.zeros_like(theta), np.zeros_like(theta), np.zeros_like(theta)
        self.f, self.largest, self.t, self.slope = np.zeros(k), np.zeros(k), np.zeros(k, np.float32), np.zeros(k)
        self.starting = np.ones(k, dtype=bool)           # start not yet evaluated
        self.iterations, self.backtracks = np.zeros(k, dtype=int), np.zeros(k, dtype=int)
        self.steps, self.changes, self.rho = [], [], []  # the L-BFGS pairs, oldest first, each member's own
        # (its last MEMORY steps, whenever it made them; rho (k,), 0: no pair in that slot)

    def trial_points(self):
        """What the next pass evaluates: a starting member's start, a searching member's theta + t d."""
        C = self.theta.shape[1] // len(self.members)
        t = np.repeat(np.where(self.starting, 0.0, self.t), C).astype(np.float32)
        return self.theta + t * self.direction

    def keep(self, positions):
        """Only the members at these positions stay (the others left, converged or stopped)."""
        C = self.theta.shape[1] // max(len(self.members), 1)
        columns = np.concatenate([np.arange(p * C, (p + 1) * C) for p in positions]) if positions else np.arange(0)
        for name in self.COLUMNS:
            setattr(self, name, np.ascontiguousarray(getattr(self, name)[:, columns]))
        for name in self.MEMBERS:
            setattr(self, name, getattr(self, name)[positions])
        self.reg_columns, self.factor_columns = self.reg_columns[columns], self.factor_columns[:, columns]
        self.steps = [np.ascontiguousarray(step[:, columns]) for step in self.steps]
        self.changes = [np.ascontiguousarray(change[:, columns]) for change in self.changes]
        self.rho = [r[positions] for r in self.rho]
        self.members = [self.members[p] for p in positions]

    def _shift_in(self, stepped, columns, s, change, good, curvature):
        """Add the pairs (s, change) of the members that stepped (a pass where some did not): each
        of those drops its oldest pair, the others keep theirs, as they would alone."""
        k = len(self.members)
        if len(self.steps) < MEMORY:                  # a new oldest slot, empty (rho 0) for every member
            self.steps.insert(0, np.zeros_like(self.theta))
            self.changes.insert(0, np.zeros_like(self.theta))
            self.rho.insert(0, np.zeros(k))
        for pairs in (self.steps, self.changes):      # a member that stepped drops its oldest pair;
            for older, newer in zip(pairs, pairs[1:]):  # the others keep theirs, as they would alone
                older[:, columns] = newer[:, columns]
        for older, newer in zip(self.rho, self.rho[1:]):
            older[stepped] = newer[stepped]
        self.steps[-1][:, columns], self.changes[-1][:, columns] = s, change
        self.rho[-1][stepped] = np.where(good, 1.0 / np.where(good, curvature, 1.0), 0.0)

    def update(self, trial, evaluated):
        """Take one pass's values at the trial points: a starting member learns its start's values; a
        searching member takes its step when f decreased enough (Armijo, or Hager & Zhang's test
        near the minimum), else halves t. Members with new values get their next direction.
        Returns which members moved (k,) (starting ones included)."""
        k = len(self.members)
        C = self.theta.shape[1] // k
        f, g, largest, W = evaluated
        slope_now = _member_sums(g * self.direction, k)
        decrease = f <= self.f + ARMIJO * self.t * self.slope
        level = (f <= self.f + NOISE * np.abs(self.f)) & (slope_now <= -(1 - 2 * ARMIJO) * self.slope)
        stepped = ~self.starting & (decrease | level)
        moved = stepped | self.starting
        if stepped.any():                                 # the new L-BFGS pair of each member that stepped
            columns, m = np.repeat(stepped, C), int(stepped.sum())
            s, change = trial[:, columns] - self.theta[:, columns], g[:, columns] - self.g[:, columns]
            curvature = _member_sums(s * change, m)
            good = curvature > 1e-10 * np.sqrt(_member_sums(s * s, m) * _member_sums(change * change, m))
            if stepped.all():                             # the usual pass: every member drops its oldest pair
                self.steps.append(s), self.changes.append(change)
                self.rho.append(np.where(good, 1.0 / np.where(good, curvature, 1.0), 0.0))
                if len(self.steps) > MEMORY:
                    self.steps.pop(0), self.changes.pop(0), self.rho.pop(0)
            else:
                self._shift_in(stepped, columns, s, change, good, curvature)
        columns = np.repeat(moved, C)
        self.theta[:, columns], self.g[:, columns], self.W[:, columns] = trial[:, columns], g[:, columns], W[:, columns]
        self.f[moved], self.largest[moved] = f[moved], largest[moved]
        self.iterations[stepped] += 1
        self.backtracks[moved] = 0
        self.backtracks[~moved] += 1
        self.t[~moved] *= 0.5
        self.starting[:] = False
        if moved.any():                                   # next directions: quasi-Newton, or -g when uphill
            direction = _two_loop(self.g, self.steps, self.changes, self.rho, k)
            slope = _member_sums(self.g * direction, k)
            uphill = np.repeat(slope >= 0, C)
            direction[:, uphill] = -self.g[:, uphill]
            slope = _member_sums(self.g * direction, k)
            self.direction[:, columns], self.slope[moved] = direction[:, columns], slope[moved]
            first = moved & (self.iterations == 0)       # a member's first step: of length 1 in theta
            self.t[moved] = 1.0
            self.t[first] = 1.0 / np.sqrt(np.maximum(_member_sums(self.g * self.g, k)[first], 1e-30))
        return moved


def solve(X, y, regs, num_classes, tol, max_iter, preconditioner=None, callback=None):
    """Minimize f_k for each reg_k in regs (K,) on standardized X (N, D) float32 (float16 works,
    converted in chunks at every pass: several times slower) and labels y (N,) in 0..C-1, every
    member from W = 0, b = 0. Returns a list of K Solutions.

    The members are solved together: each pass over X evaluates one point of every member still
    running (its start, or a trial step), so a member that backtracks costs its columns of a pass,
    not a pass. `preconditioner` is (V (D, r), eigenvalues (r,)) of precondition.fit, or None
    (P = I but for the bias). callback(finished, objectives (running,)), when given, is called
    after every pass with the number of members finished so far.
    """
    D, C, K = X.shape[1], num_classes, len(regs)
    V, eigenvalues = preconditioner if preconditioner is not None else (np.zeros((D, 0), np.float32), np.zeros(0))
    problem = _Problem(X, y, C, V)
    group = _Group(list(range(K)), np.repeat(np.asarray(regs, dtype=np.float32), C),
                   np.repeat(factors(eigenvalues, regs), C, axis=1), np.zeros((D + 1, K * C), dtype=np.float32))
    solutions, histories = [None] * K, [[] for _ in range(K)]
    while group.members:
        trial = group.trial_points()
        moved = group.update(trial, problem.evaluate(trial, group.reg_columns, group.factor_columns))
        for position in np.flatnonzero(moved):
            histories[group.members[position]].append(float(group.f[position]))
        converged = group.largest <= tol
        ended = (moved & converged) | (group.iterations >= max_iter) | (group.backtracks > BACKTRACKS)
        for position in np.flatnonzero(ended):
            member = group.members[position]
            columns = slice(position * C, (position + 1) * C)
            solutions[member] = Solution(group.W[:D, columns].copy(), group.W[D, columns].copy(),
                                         float(group.f[position]), int(group.iterations[position]),
                                         bool(converged[position]), float(group.largest[position]), histories[member])
        if ended.any():
            group.keep([p for p in range(len(group.members)) if not ended[p]])
        if callback is not None:
            callback(K - len(group.members), group.f)
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
