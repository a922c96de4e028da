"""The solver: L-BFGS to the minimum of the stated objective, for a group of members at once. Math only.

Each member k (a value of reg) minimizes, over W (D, C) and b (C,),

    f_k(W, b) = mean_i CE(x_i W + b, y_i) + 0.5 * reg_k * sum(W**2)        (the bias is free)

the loss of `softmax.softmax_loss`, on standardized inputs X (N, D). It is convex, so its minimum
is the answer and the path there does not matter: no learning rate, no epochs.

Conditioning: standardized features are often badly conditioned (pixels: the top covariance
eigenvalue is hundreds of times the mean), which slows any first-order method. The solver works in
the variables U with W = P U, a change of variables per member: P = I + V diag(p - 1) V^T, V the
top principal directions of X (`precondition.fit`, eigenvalues lambda_j) and

    p_j = min(1, sqrt((CURVATURE + reg) / (CURVATURE * lambda_j + reg)))

so that along each of those directions the curvature of f, about CURVATURE * lambda_j + reg, becomes
about CURVATURE + reg, that of a direction of unit variance. A weak reg gives p_j = 1 / sqrt(lambda_j)
(the directions rescaled to unit variance); a strong reg, whose penalty already evens out the
curvature, leaves them nearly alone. That changes the path, never the objective: f is evaluated at
W = P U, and its gradient in U is P (dW + reg W) (P is symmetric).

Each iteration takes one quasi-Newton step per member (two-loop recursion over the last MEMORY
steps, Nocedal & Wright, algorithm 7.4) and a backtracking line search on it (Armijo's sufficient
decrease, or, near the minimum where float32 rounding hides the decrease, Hager & Zhang's
approximate Wolfe test on the slope). The members'
scores come from one product X @ W_all (D, K*C) per evaluation, as in the SGD trainer. A member
stops when converged (`tol`, below) or at `max_iter` iterations and leaves the group; with a
`width`, a pending member joins in its place (so the products keep their width), otherwise the
products narrow as the group finishes.

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
WARM = 0.1           # a warm start that passes the test as it is must reach WARM x tol: passing at once
                     # proves nothing (at weak reg a neighbour's minimum does, far from this run's own)
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
    """The objectives of a group's members in the solver's variables theta (D+1, K*C): rows
    0..D-1 hold U (W = P U), row D the bias. Column j of theta belongs to the member whose
    reg_columns[j] and factor_columns[:, j] (the p - 1 of its P) it carries."""

    def __init__(self, X, y, num_classes, V):
        self.X, self.y, self.C, self.V = X, y, num_classes, V

    def precondition(self, A, factor_columns):
        """P A for A (D, K*C): A + V (factor_columns * V^T A), each column with its member's P."""
        if not self.V.shape[1]:
            return A
        return A + self.V @ (factor_columns * (self.V.T @ A))

    def evaluate(self, theta, reg_columns, factor_columns):
        """(objective (K,), gradient in theta (D+1, K*C), largest gradient entry in (W, b) (K,), W)."""
        D, K = len(theta) - 1, theta.shape[1] // self.C
        W = np.ascontiguousarray(self.precondition(theta[:D], factor_columns))
        loss, dW, db = data_term(self.X, self.y, W, theta[D], self.C)
        dW += reg_columns * W                             # the gradient in W: dW + reg W
        objective = loss + 0.5 * _member_sums(reg_columns * W * W, K)
        largest = np.maximum(np.abs(dW).reshape(D, K, -1).max(axis=(0, 2)),
                             np.abs(db).reshape(K, -1).max(axis=1))
        gradient = np.empty_like(theta)
        gradient[:D] = self.precondition(dW, factor_columns)
        gradient[D] = db
        return objective, gradient, largest, W


def factors(eigenvalues, regs):
    """p - 1 (r, K) of each member's change of variables (the module docstring's p_j), for the
    eigenvalues (r,) of the directions V and the members' regs (K,)."""
    lam = np.asarray(eigenvalues, dtype=np.float64)[:, None]
    reg = np.asarray(regs, dtype=np.float64)[None, :]
    p = np.minimum(1.0, np.sqrt((CURVATURE + reg) / np.maximum(CURVATURE * lam + reg, 1e-30)))
    return (p - 1.0).astype(np.float32)


class _Group:
    """The members being solved, a column block of C each, every one at its own stage: just joined
    (its start not yet evaluated) or searching along its direction. Arrays over the columns are
    (D+1 or D, k*C), over the members (k,)."""

    COLUMNS = ("theta", "g", "W", "direction")          # theta: the point reached; direction: the search's
    MEMBERS = ("f", "largest", "t", "slope", "joined", "iterations", "backtracks", "warm", "target")

    def __init__(self, members, reg_columns, factor_columns, theta, warm):
        k = len(members)
        self.members = list(members)                     # member index of each column block
        self.reg_columns, self.factor_columns, self.theta = reg_columns, factor_columns, theta
        self.g, self.W, self.direction = np.zeros_like(theta), np.zeros_like(theta[:-1]), np.zeros_like(theta)
        self.f, self.largest, self.t, self.slope = np.zeros(k), np.zeros(k), np.zeros(k, np.float32), np.zeros(k)
        self.joined = np.ones(k, dtype=bool)             # start not yet evaluated
        self.iterations, self.backtracks = np.zeros(k, dtype=int), np.zeros(k, dtype=int)
        self.warm, self.target = np.asarray(warm, dtype=bool), np.zeros(k)  # target: the largest gradient entry to reach
        self.steps, self.changes, self.rho = [], [], []  # the L-BFGS pairs, oldest first, each member's own
        # (a member's last MEMORY steps, whenever it made them; rho (k,), 0: no pair in that slot)

    def trial_points(self):
        """What the next pass evaluates: a joined member's start, a searching member's theta + t d."""
        C = self.theta.shape[1] // len(self.members)
        t = np.repeat(np.where(self.joined, 0.0, self.t), C).astype(np.float32)
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

    def join(self, other):
        """Add the members of a new group (no L-BFGS pairs yet: theirs are zero and skipped)."""
        if not self.members:
            self.__dict__.update(other.__dict__)
            return
        for name in ("reg_columns", *self.MEMBERS):
            setattr(self, name, np.concatenate([getattr(self, name), getattr(other, name)]))
        for name in self.COLUMNS:
            setattr(self, name, np.concatenate([getattr(self, name), getattr(other, name)], axis=1))
        self.factor_columns = np.concatenate([self.factor_columns, other.factor_columns], axis=1)
        self.steps = [np.concatenate([step, np.zeros_like(other.theta)], axis=1) for step in self.steps]
        self.changes = [np.concatenate([change, np.zeros_like(other.theta)], axis=1) for change in self.changes]
        self.rho = [np.concatenate([r, np.zeros(len(other.members))]) for r in self.rho]
        self.members += other.members

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

    def update(self, trial, evaluated, tol):
        """Take one pass's values at the trial points: a joined member learns its start's values; a
        searching member takes its step when f decreased enough (Armijo, or Hager & Zhang's test
        near the minimum), else halves t. Members with new values get their next direction.
        Returns which members moved (k,) (joined ones included)."""
        k = len(self.members)
        C = self.theta.shape[1] // k
        f, g, largest, W = evaluated
        slope_now = _member_sums(g * self.direction, k)
        decrease = f <= self.f + ARMIJO * self.t * self.slope
        level = (f <= self.f + NOISE * np.abs(self.f)) & (slope_now <= -(1 - 2 * ARMIJO) * self.slope)
        stepped = ~self.joined & (decrease | level)
        moved = stepped | self.joined
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
        self.target[self.joined] = np.where(self.warm & (largest <= tol), WARM * tol, tol)[self.joined]
        self.iterations[stepped] += 1
        self.backtracks[moved] = 0
        self.backtracks[~moved] += 1
        self.t[~moved] *= 0.5
        self.joined[:] = False
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


def solve(X, y, regs, num_classes, tol, max_iter, preconditioner=None, callback=None, starts=None, width=None,
          schedule=None):
    """Minimize f_k for each reg_k in regs (K,) on standardized X (N, D) float32 (float16 works,
    converted in chunks at every pass: several times slower) and labels y (N,) in 0..C-1.
    Returns a list of K Solutions.

    Each member starts from W = 0, b = 0, or from starts[k] (a Solution: its W and b) where that is
    not None: a warm start, held to WARM x tol when it passes the test as it is (at weak reg a
    neighbour's minimum does, far from this run's own). At most `width` members are solved at once (None: all): when one leaves, the next
    joins, member k after member k-1, or the member schedule(pending, solutions) -> (k, start)
    picks, with its start (a Solution or None), from the pending member indices given the
    Solutions found so far (None where not yet). Every pass over X evaluates one point of every
    member (its start, or a trial step), so a member that backtracks or joins costs its columns of
    a pass, not a pass. `preconditioner` is (V (D, r), eigenvalues (r,)) of precondition.fit, or
    None (P = I). callback(finished, objectives (active,)), when given, is called after every pass
    with the number of members finished so far.
    """
    D, C, K = X.shape[1], num_classes, len(regs)
    V, eigenvalues = preconditioner if preconditioner is not None else (np.zeros((D, 0), np.float32), np.zeros(0))
    problem = _Problem(X, y, C, V)
    all_factors = factors(eigenvalues, regs)
    solutions, pending, histories = [None] * K, list(range(K)), {}
    width = K if width is None else max(1, int(width))
    group = None

    def joining(count):
        """A _Group of the next `count` pending members (in order, or as `schedule` picks) at their starts."""
        chosen = {}
        for _ in range(min(count, len(pending))):
            k, start = schedule(pending, solutions) if schedule is not None else (
                pending[0], starts[pending[0]] if starts else None)
            pending.remove(k)
            chosen[k] = start
        members = list(chosen)
        reg_columns = np.repeat(np.asarray([regs[k] for k in members], dtype=np.float32), C)
        factor_columns = np.repeat(all_factors[:, members], C, axis=1)
        theta = np.zeros((D + 1, len(members) * C), dtype=np.float32)
        for position, start in enumerate(chosen.values()):
            if start is not None:                        # U = P^-1 W: P^-1 = I + V diag(1 / p - 1) V^T
                columns = slice(position * C, (position + 1) * C)
                inverse = 1.0 / (1.0 + factor_columns[:, columns]) - 1.0
                theta[:D, columns] = start.W + V @ (inverse * (V.T @ start.W))
                theta[D, columns] = start.b
        return _Group(members, reg_columns, factor_columns, theta, [start is not None for start in chosen.values()])

    while pending or (group is not None and group.members):
        free = width - (len(group.members) if group is not None else 0)
        if pending and free > 0:
            if group is None:
                group = joining(free)
            else:
                group.join(joining(free))
        trial = group.trial_points()
        moved = group.update(trial, problem.evaluate(trial, group.reg_columns, group.factor_columns), tol)
        for position in np.flatnonzero(moved):
            histories.setdefault(group.members[position], []).append(float(group.f[position]))
        converged = group.largest <= tol
        ended = (moved & (group.largest <= group.target)) | (group.iterations >= max_iter) | (group.backtracks > BACKTRACKS)
        for position in np.flatnonzero(ended):
            member = group.members[position]
            columns = slice(position * C, (position + 1) * C)
            solutions[member] = Solution(group.W[:, columns].copy(), group.theta[D, columns].copy(),
                                         float(group.f[position]), int(group.iterations[position]),
                                         bool(converged[position]), float(group.largest[position]), histories[member])
        if ended.any():
            group.keep([p for p in range(len(group.members)) if not ended[p]])
        if callback is not None:
            callback(K - len(pending) - len(group.members), group.f)
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
