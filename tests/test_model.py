import numpy as np
import pytest

from linclf.training import softmax
from linclf.training.gradient_check import numerical_gradient, relative_error


def random_problem(seed, N=7, D=5, C=4, scale=1.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, scale, (D, C)), rng.normal(0, 0.5, C), rng.normal(0, 1, (N, D)),
            rng.integers(0, C, N))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("reg", [0.0, 0.1, 2.5])
def test_naive_and_vectorized_agree(seed, reg):
    W, b, X, y = random_problem(seed)
    loss_naive, dW_naive, db_naive = softmax.softmax_loss_naive(W, b, X, y, reg)
    loss, dW, db = softmax.softmax_loss(W, b, X, y, reg)
    assert abs(loss - loss_naive) < 1e-6
    np.testing.assert_allclose(dW, dW_naive, atol=1e-6, rtol=0)
    np.testing.assert_allclose(db, db_naive, atol=1e-6, rtol=0)


@pytest.mark.parametrize("loss_function", [softmax.softmax_loss, softmax.softmax_loss_naive])
@pytest.mark.parametrize("reg", [0.0, 0.3])
def test_analytic_gradient_matches_numerical(loss_function, reg):
    W, b, X, y = random_problem(3)
    _, dW, db = loss_function(W, b, X, y, reg)
    numeric_W = numerical_gradient(lambda: loss_function(W, b, X, y, reg)[0], W)
    numeric_b = numerical_gradient(lambda: loss_function(W, b, X, y, reg)[0], b)
    assert relative_error(dW, numeric_W) < 1e-6
    assert relative_error(db, numeric_b) < 1e-6


def test_gradient_check_catches_a_wrong_gradient():
    W, b, X, y = random_problem(4)
    _, dW, _ = softmax.softmax_loss(W, b, X, y, 0.0)
    numeric = numerical_gradient(lambda: softmax.softmax_loss(W, b, X, y, 0.0)[0], W)
    assert relative_error(dW * 1.01, numeric) > 1e-3


def test_loss_definition_at_zero_weights():
    # all scores equal: the data loss is log(C); the L2 term is 0.5 * reg * sum(W**2)
    _, b, X, y = random_problem(5)
    loss, _, _ = softmax.softmax_loss(np.zeros((5, 4)), np.zeros(4), X, y, 1.0)
    assert loss == pytest.approx(np.log(4))
    W = np.full((5, 4), 2.0)
    loss, _, db = softmax.softmax_loss(W, np.zeros(4), X, y, 0.5)
    assert loss == pytest.approx(np.log(4) + 0.5 * 0.5 * 4.0 * 20)  # X @ W gives equal scores per row


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_logits_give_finite_loss(dtype):
    W, b, X, y = random_problem(6)
    W = (W * 1e4).astype(dtype)
    loss, dW, db = softmax.softmax_loss(W, b.astype(dtype), X.astype(dtype), y, 0.0)
    assert np.isfinite(loss) and np.all(np.isfinite(dW)) and np.all(np.isfinite(db))
    probs = softmax.predict_proba(W, b.astype(dtype), X.astype(dtype))
    assert np.all(np.isfinite(probs))


def test_probabilities_sum_to_one_and_predict_is_argmax():
    W, b, X, y = random_problem(7, N=50, scale=3.0)
    probs = softmax.predict_proba(W, b, X)
    assert probs.shape == (50, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(softmax.predict(W, b, X), probs.argmax(axis=1))


def test_cross_entropy_matches_loss_without_reg():
    W, b, X, y = random_problem(8)
    loss, _, _ = softmax.softmax_loss(W, b, X, y, 0.0)
    assert softmax.loss_sums(X @ W + b, y)[0] / len(y) == pytest.approx(loss)


def test_cross_entropy_is_exact_where_probabilities_underflow():
    """From the log-softmax: a true class 1000 nats below the others costs 1000 nats, where
    float probabilities round to 0 (and were clipped at 708 nats)."""
    scores = np.array([[0.0, 1000.0], [5.0, 0.0]])
    expected = (1000.0 + np.log1p(np.exp(-1000.0)) + np.log1p(np.exp(-5.0))) / 2
    assert softmax.loss_sums(scores, np.array([0, 0]))[0] / 2 == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("members", [1, 3])
def test_the_evaluation_kernel_equals_the_reference_loss(members):
    """softmax.loss_sums (validation and eval) gives softmax_loss's data term and the accuracy."""
    rng = np.random.default_rng(members)
    X, y = rng.normal(size=(40, 6)), rng.integers(0, 4, 40)
    Ws = [rng.normal(size=(6, 4)) * 3 for _ in range(members)]
    b = rng.normal(size=4)
    stacked = np.stack([X @ W + b for W in Ws], axis=1)  # (N, K, C)
    losses, correct = softmax.loss_sums(stacked if members > 1 else stacked[:, 0], y)
    for k, W in enumerate(Ws):
        expected = softmax.softmax_loss(W, b, X, y, 0.0)[0]
        assert np.atleast_1d(losses)[k] / len(y) == pytest.approx(expected, rel=1e-12)
        assert np.atleast_1d(correct)[k] == np.sum(softmax.predict(W, b, X) == y)
