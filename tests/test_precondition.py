"""Preconditioned SGD (precondition.py): the maths, and training through it gives plain models."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from linclf import config
from linclf.evaluation import evaluate
from linclf.experiments import jobs
from linclf.features import precondition
from linclf.experiments import modelfile
from linclf.experiments import runfolders
from linclf.data import sources
from linclf.cli import cli
from linclf.config import DEFAULTS


def correlated(num, dim=40, seed=0):
    """Centred rows (num, dim) float32 with a covariance spectrum from 400 down to 0.01."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    spectrum = np.geomspace(400, 0.01, dim)
    X = rng.normal(size=(num, dim)) * np.sqrt(spectrum) @ basis.T
    return (X - X.mean(axis=0)).astype(np.float32)


@pytest.mark.parametrize("k", [1, 5, 12])
def test_fit_finds_the_top_eigenpairs(k):
    X = correlated(3000)
    V, factors, values = precondition.fit(X, k, seed=0)
    exact, vectors = np.linalg.eigh(X.astype(np.float64).T @ X / len(X))
    exact, vectors = exact[::-1][:k], vectors[:, ::-1][:, :k]
    np.testing.assert_allclose(values, exact, rtol=1e-3)
    np.testing.assert_allclose(np.abs(np.sum(V * vectors, axis=0)), 1.0, atol=1e-3)  # same directions
    np.testing.assert_allclose(V.T @ V, np.eye(k), atol=1e-4)
    np.testing.assert_allclose(factors, np.minimum(1, 1 / np.sqrt(exact)) - 1, rtol=1e-3, atol=1e-6)


def test_apply_whitens_the_top_directions_and_leaves_small_ones():
    X = correlated(4000)
    V, factors, values = precondition.fit(X, 10, seed=0)
    Z = precondition.apply(X.copy(), V, factors)
    variances = np.var(Z @ V, axis=0)
    big = values > 1
    np.testing.assert_allclose(variances[big], 1.0, rtol=1e-2)
    np.testing.assert_allclose(variances[~big], values[~big], rtol=1e-2)


def test_fit_is_deterministic_for_a_seed_and_caps_k():
    X = correlated(500, dim=8)
    first, second = precondition.fit(X, 50, seed=3), precondition.fit(X, 50, seed=3)
    assert first[0].shape == (8, 8)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_to_inputs_gives_the_same_scores_on_the_raw_inputs():
    X = correlated(300)
    V, factors, _ = precondition.fit(X, 6, seed=0)
    W = np.random.default_rng(1).normal(size=(40, 3)).astype(np.float32)
    Z = precondition.apply(X.copy(), V, factors)
    np.testing.assert_allclose(X @ precondition.to_inputs(W, V, factors), Z @ W, rtol=1e-4, atol=1e-3)


def probe_file(path, num=1500, dim=40):
    """A badly conditioned 3-class embedding like pooled k-means features: one strong factor common
    to every feature (top eigenvalue about 0.95 * dim after standardization, the others about 0.05)
    and the classes in the small feature-own parts."""
    rng = np.random.default_rng(5)
    rows = num + 500
    labels = rng.integers(0, 3, size=rows)
    own = rng.normal(size=(rows, dim)) * 0.22 + rng.normal(size=(3, dim))[labels] * 0.15
    X = (rng.normal(size=(rows, 1)) + own) * np.linspace(1, 30, dim) + 7
    np.savez(path, X_train=X[:num].astype(np.float32), y_train=labels[:num],
             X_test=X[num:].astype(np.float32), y_test=labels[num:])
    return path


def settings(**changes):
    return {**DEFAULTS, "epochs": 3, "batch_size": 50, "val_size": 300, "lr": 0.05, "reg": 1e-4, **changes}


def test_preconditioning_converges_faster_on_ill_conditioned_features(tmp_path):
    source = sources.arrays(probe_file(tmp_path / "emb.npz"))
    best = {}
    for k in (0, 20):  # the best final training loss over a wide lr range, diverged runs aside
        configs = [settings(precondition=k, lr=lr) for lr in (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)]
        results = jobs.train_group(source, configs).results
        best[k] = min(r.history["train_loss"][-1] for r in results if r.status == "ok")
    assert best[20] < 0.7 * best[0], best


def test_a_preconditioned_run_saves_a_plain_model_that_eval_reproduces(tmp_path):
    source = sources.arrays(probe_file(tmp_path / "emb.npz"))
    config = settings(precondition=20)
    assert jobs.prepare(source, config)[2] is not None  # the run below is preconditioned
    outcome = jobs.train_group(source, [config])
    result = outcome.results[0]
    [folder] = jobs.save(outcome, lambda r: tmp_path / "run")
    model = modelfile.load_model(folder)
    assert [step.name for step in model.pipeline.steps] == ["standardize"]
    scored = evaluate.evaluate_split(model, source, "val")
    assert scored["accuracy"] == pytest.approx(result.history["val_accuracy"][-1], abs=1e-9)
    assert scored["cross_entropy"] == pytest.approx(result.history["val_loss"][-1], rel=1e-4)
    assert model.config["precondition"] == 20


def test_precondition_is_a_train_flag_saved_with_the_run(tmp_path):
    emb = probe_file(tmp_path / "emb.npz")
    result = CliRunner().invoke(cli, ["train", "--data", str(emb), "--epochs", "2", "--val-size", "300",
                                      "--precondition", "8", "--runs-dir", str(tmp_path / "runs"), "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    model = modelfile.load_model(json.loads(result.output)["run_dir"])
    assert model.config["precondition"] == 8
    bad = CliRunner().invoke(cli, ["train", "--data", str(emb), "--precondition", "-1"])
    assert bad.exit_code != 0 and "precondition" in bad.output


def test_precondition_names_runs(tmp_path):
    identity = jobs.identify(sources.arrays(probe_file(tmp_path / "emb.npz")))
    plain = config.complete({"lr": 0.1})
    assert runfolders.run_id({**plain, "precondition": 8}, identity) != runfolders.run_id(plain, identity)


@pytest.mark.parametrize("val_split", ["tail", "random"])
def test_preconditioning_in_place_never_touches_the_sources_own_rows(tmp_path, val_split):
    """A compressed file is read into memory, and a tail split is then a view of the source's rows:
    standardizing and preconditioning must work on a copy of those."""
    X = correlated(600, dim=12).astype(np.float32) + 3
    labels = np.random.default_rng(0).integers(0, 3, size=600)
    path = tmp_path / "small.npz"
    np.savez_compressed(path, X_train=X[:500], y_train=labels[:500], X_test=X[500:], y_test=labels[500:])
    source = sources.arrays(path)
    before = np.array(source.train_x)
    prepared, _, preconditioner = jobs.prepare(source, settings(val_size=100, val_split=val_split, precondition=4))
    assert preconditioner is not None and prepared.X_train.dtype == np.float32
    np.testing.assert_array_equal(source.train_x, before)


def test_float16_inputs_give_the_float32_result_rounded_once():
    """The feature cache's float16 rows: fitted from the same values, applied in float32 and rounded."""
    X16 = correlated(300).astype(np.float16)
    X32 = X16.astype(np.float32)
    V16, f16, values16 = precondition.fit(X16, 5, seed=1)
    V32, f32, values32 = precondition.fit(X32, 5, seed=1)
    np.testing.assert_array_equal(values16, values32)
    np.testing.assert_array_equal(V16, V32)
    out16 = precondition.apply(X16.copy(), V16, f16)
    assert out16.dtype == np.float16
    np.testing.assert_array_equal(out16, precondition.apply(X32.copy(), V32, f32).astype(np.float16))


def test_fit_uses_at_most_fit_rows_evenly_spaced_rows(monkeypatch):
    X = correlated(400)
    whole = precondition.fit(X[::4], 5, seed=2)  # 100 rows: under the cap
    monkeypatch.setattr(precondition, "FIT_ROWS", 100)
    capped = precondition.fit(X, 5, seed=2)
    for mine, theirs in zip(capped, whole):
        np.testing.assert_array_equal(mine, theirs)
    assert not np.allclose(precondition.fit(X[1:], 5, seed=2)[2], whole[2])  # other rows, other values


def test_float16_training_rows_are_standardized_in_place_and_validation_rows_far_out_stay_finite(tmp_path):
    """The scaler's own rows fit float16 once standardized (at most sqrt(N) in size); a validation
    value far beyond a near-constant training column does not (1e5 standard deviations): it goes
    to float32, never to inf."""
    from linclf.features import pipeline

    rng = np.random.default_rng(0)
    X_train = rng.normal(size=(1000, 4)).astype(np.float16)
    X_train[:, 0] = 0
    X_train[0, 0] = 0.001
    X_val = X_train[:3].copy()
    X_val[:, 0] = 3.0
    scaler = pipeline.Standardize("standardize").fit(X_train)
    expected = scaler.transform(X_train.astype(np.float32)).astype(np.float16)
    train = jobs._standardized(X_train, scaler, np.zeros(1), keep_float16=True)
    assert np.shares_memory(train, X_train) and train.dtype == np.float16
    np.testing.assert_array_equal(train, expected)
    val = jobs._standardized(X_val, scaler, np.zeros(1))
    assert val.dtype == np.float32 and np.isfinite(val).all() and val[:, 0].max() > 65504
