"""Solver lbfgs: its data term against the reference loss, and its answer against the optimum."""
import numpy as np
import pytest

from linclf.features import precondition
from linclf.training import lbfgs, softmax


def problem(num=200, dim=6, classes=3, seed=0, scale=1.0):
    """Overlapping classes (the optimum is not at infinity) in standardized features."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, num)
    X = rng.normal(size=(num, dim)) * scale + np.eye(classes, dim)[y]
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X.astype(np.float32), y


def objective(W, b, X, y, reg):
    return softmax.softmax_loss(np.float64(W), np.float64(b), np.float64(X), y, reg)[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_data_term_is_the_reference_loss_of_every_member(dtype):
    X, y = problem(num=50, dim=5, classes=4)
    X = X.astype(dtype)
    rng = np.random.default_rng(1)
    W = rng.normal(size=(5, 3 * 4)).astype(np.float32)
    b = rng.normal(size=3 * 4).astype(np.float32)
    loss, dW, db = lbfgs.data_term(X, y, W, b, 4)
    for k in range(3):
        columns = slice(4 * k, 4 * k + 4)
        ref_loss, ref_dW, ref_db = softmax.softmax_loss(np.float64(W[:, columns]), np.float64(b[columns]),
                                                        X.astype(np.float64), y, 0.0)
        np.testing.assert_allclose(loss[k], ref_loss, rtol=1e-5)
        np.testing.assert_allclose(dW[:, columns], ref_dW, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(db[columns], ref_db, rtol=1e-4, atol=1e-6)


def test_data_term_is_finite_for_huge_scores():
    X, y = problem(num=20, dim=3)
    loss, dW, _ = lbfgs.data_term(X, y, np.full((3, 3), 1e4, np.float32), np.zeros(3, np.float32), 3)
    assert np.isfinite(loss).all() and np.isfinite(dW).all()


@pytest.mark.parametrize("reg", [1e-3, 1e-1])
@pytest.mark.parametrize("rank", [0, 3])
def test_solves_to_scikit_learns_optimum(reg, rank):
    """The objective at the answer is scikit-learn lbfgs's at tol 1e-10 with C = 1 / (reg N)."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    X, y = problem(scale=3.0)
    reference = linear_model.LogisticRegression(C=1 / (reg * len(y)), tol=1e-10, max_iter=10_000).fit(X, y)
    optimum = objective(reference.coef_.T, reference.intercept_, X, y, reg)
    preconditioner = precondition.fit(X, rank)[::2] if rank else None  # (V, eigenvalues)
    solution = lbfgs.solve(X, y, [reg], 3, 1e-5, 1000, preconditioner)[0]
    assert solution.converged and solution.gradient <= 1e-5
    assert objective(solution.W, solution.b, X, y, reg) == pytest.approx(optimum, rel=1e-6)
    assert solution.objective == pytest.approx(optimum, rel=1e-5)
    assert solution.history[0] == pytest.approx(np.log(3), rel=1e-6)  # W = 0, b = 0: uniform
    steps = zip(solution.history, solution.history[1:])  # every step decreases f, or keeps it within rounding
    assert all(after <= before + lbfgs.NOISE * abs(before) for before, after in steps)


def test_binary_problems_match_scikit_learn_at_twice_the_c():
    """Two softmax rows share the penalty: the optimum has W = [-w/2, w/2], so 0.5 reg |W|^2 =
    0.25 reg |w|^2, scikit-learn's one-row model at C = 2 / (reg N)."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    X, y = problem(classes=2, scale=2.0)
    reg = 1e-2
    solution = lbfgs.solve(X, y, [reg], 2, 1e-7, 1000)[0]
    reference = linear_model.LogisticRegression(C=2 / (reg * len(y)), tol=1e-10, max_iter=10_000).fit(X, y)
    np.testing.assert_allclose(solution.W[:, 1] - solution.W[:, 0], reference.coef_[0], rtol=1e-3, atol=1e-4)


def test_members_solved_together_are_solved_as_alone():
    X, y = problem(num=300, dim=8, classes=4, scale=2.0)
    regs = [1e-4, 1e-2, 1.0]
    together = lbfgs.solve(X, y, regs, 4, 1e-5, 1000)
    for reg, solution in zip(regs, together):
        alone = lbfgs.solve(X, y, [reg], 4, 1e-5, 1000)[0]
        assert solution.converged and solution.n_iter == alone.n_iter
        np.testing.assert_allclose(solution.W, alone.W, rtol=1e-3, atol=1e-4)
    # members converge after different numbers of iterations: each left the group when it did
    assert len({solution.n_iter for solution in together}) == 3


def test_max_iter_stops_a_run_unconverged():
    X, y = problem(scale=3.0)
    solution = lbfgs.solve(X, y, [1e-4], 3, 1e-8, 3)[0]
    assert not solution.converged and solution.n_iter == 3 and len(solution.history) == 4
    assert solution.gradient > 1e-8


def test_a_start_already_at_the_minimum_takes_no_iteration():
    X = np.zeros((10, 3), np.float32)
    y = np.array([0, 1] * 5)
    solution = lbfgs.solve(X, y, [1e-3], 2, 1e-4, 100)[0]
    assert solution.converged and solution.n_iter == 0


@pytest.mark.parametrize("eigenvalue, reg, expected", [
    (100.0, 0.0, 0.1),                    # a weak reg: the direction rescaled to unit variance
    (100.0, 1e6, 1.0),                    # a reg that dwarfs the curvature: left alone
    (100.0, 0.25, np.sqrt(0.5 / 25.25)),  # between: curvature 0.25 * 100 + 0.25 brought to 0.25 + 0.25
    (0.5, 0.0, 1.0),                      # below unit variance: never stretched
])
def test_each_members_change_of_variables_evens_out_its_curvature(eigenvalue, reg, expected):
    assert lbfgs.factors([eigenvalue], [reg])[0, 0] + 1 == pytest.approx(expected, rel=1e-4)


def test_a_badly_conditioned_problem_under_a_strong_reg_takes_few_iterations():
    X, y = problem(num=400, dim=12, scale=1.0)
    X[:, :3] *= 30.0  # three directions with a variance near 900
    V, _, values = precondition.fit(X, 3)
    reg = 10.0
    fitted = lbfgs.solve(X, y, [reg], 3, 1e-5, 1000, (V, values))[0]
    blind = (0.25 + reg) * values / 0.25 - reg / 0.25  # eigenvalues that make p = 1 / sqrt(lambda) at this reg
    unit_variance = lbfgs.solve(X, y, [reg], 3, 1e-5, 1000, (V, blind))[0]  # what a reg-blind rescaling does
    assert fitted.converged and unit_variance.converged
    assert fitted.objective == pytest.approx(unit_variance.objective, rel=1e-5)
    assert fitted.n_iter < unit_variance.n_iter / 2


@pytest.mark.parametrize("reg", [10.0, 100.0])
def test_under_a_strong_reg_the_bias_is_scaled_like_the_weights(reg):
    """Unbalanced classes give the free bias weight; under a strong reg it would be the one flat
    direction among steep ones (19 and 26 iterations here without its scaling)."""
    X, y = problem(num=400, dim=12, scale=1.0)
    y = np.where(np.random.default_rng(1).random(len(y)) < 0.7, 0, y)
    solution = lbfgs.solve(X, y, [reg], 3, 1e-6, 1000)[0]
    assert solution.converged and np.abs(solution.b).max() > 1.0 and solution.n_iter <= 12


def test_a_member_keeps_its_own_pairs_while_others_step_and_it_backtracks():
    """A pass where some members step and others backtrack must not cost the latter a pair of
    their memory: each member's steps are the ones it takes alone (more than MEMORY iterations,
    with backtracks at different passes)."""
    X, y = problem(num=400, dim=20, classes=5)
    X[:, :4] *= np.float32(8.0)  # badly conditioned: dozens of iterations, some backtracking
    regs = [1e-5, 1e-3, 1e-1]
    together = lbfgs.solve(X, y, regs, 5, 1e-6, 2000)
    for reg, solution in zip(regs, together):
        alone = lbfgs.solve(X, y, [reg], 5, 1e-6, 2000)[0]
        assert solution.n_iter == alone.n_iter > lbfgs.MEMORY
        np.testing.assert_allclose(solution.W, alone.W, rtol=1e-5, atol=1e-7)
