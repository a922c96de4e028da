import multiprocessing
import os
from types import SimpleNamespace

import numpy as np
import pytest

from linclf import config, data, model, preprocess, train
from conftest import TINY


@pytest.fixture(scope="module")
def prepared(data_dir):
    return train.prepare(data.load_cache(data_dir), val_size=50)


def settings(**changes):
    return {**config.DEFAULTS, **TINY, **changes}


def test_same_seed_same_result_other_seed_other_result(prepared):
    first = train.train(prepared, settings(seed=3))
    again = train.train(prepared, settings(seed=3))
    other = train.train(prepared, settings(seed=4))
    np.testing.assert_array_equal(first.W, again.W)
    assert first.history["step_loss"] == again.history["step_loss"]
    assert not np.allclose(first.W, other.W)


def test_learns_the_synthetic_classes(prepared):
    result = train.train(prepared, settings(epochs=5))
    assert result.status == "ok" and result.W.shape == (3072, 10) and result.W.dtype == np.float32
    history = result.history
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["val_accuracy"][-1] > 0.6  # chance is 0.1
    assert len(history["epoch"]) == 5 and len(history["step_loss"]) == 5 * 10  # 150 images / 16 per step


def test_one_step_matches_the_reference_math(prepared):
    """A full-batch step with momentum 0 is W1 = W0 - lr * dW, dW from model.softmax_loss on the
    standardized inputs: checks the folded standardization of the fast trainer."""
    cfg = settings(epochs=1, batch_size=150, momentum=0.0, lr=0.05, reg=0.5, init_scale=0.01, seed=7)
    result = train.train(prepared, cfg)
    W0 = 0.01 * np.random.default_rng(7).standard_normal((3072, 10)).astype(np.float32).astype(np.float64)
    X = (prepared.X_train.astype(np.float64) - prepared.offset) * prepared.scale
    _, dW, db = model.softmax_loss(W0, np.zeros(10), X, prepared.y_train, 0.5)
    np.testing.assert_allclose(result.W, W0 - 0.05 * dW, rtol=0, atol=2e-6)
    np.testing.assert_allclose(result.b, -0.05 * db, rtol=0, atol=2e-6)


def test_momentum_and_decay_follow_the_documented_update(prepared):
    """Two full-batch steps: v1 = -lr dW(W0); v2 = mu v1 - lr*decay dW(W1)."""
    lr, mu, decay, reg = 0.02, 0.8, 0.5, 0.1
    cfg = settings(epochs=2, batch_size=150, momentum=mu, lr=lr, lr_decay=decay, reg=reg, init_scale=0.01, seed=1)
    result = train.train(prepared, cfg)
    X = (prepared.X_train.astype(np.float64) - prepared.offset) * prepared.scale
    W = 0.01 * np.random.default_rng(1).standard_normal((3072, 10)).astype(np.float32).astype(np.float64)
    b = np.zeros(10)
    _, dW, db = model.softmax_loss(W, b, X, prepared.y_train, reg)
    vW, vb = -lr * dW, -lr * db
    W, b = W + vW, b + vb
    _, dW, db = model.softmax_loss(W, b, X, prepared.y_train, reg)
    W, b = W + mu * vW - lr * decay * dW, b + mu * vb - lr * decay * db
    np.testing.assert_allclose(result.W, W, atol=5e-6, rtol=0)
    np.testing.assert_allclose(result.b, b, atol=5e-6, rtol=0)
    assert result.history["lr"] == pytest.approx([lr, lr * decay])


def test_batched_group_equals_each_run_alone(prepared):
    configs = [settings(lr=lr, reg=reg, momentum=mu) for lr, reg, mu in
               [(1e-3, 1e-3, 0.9), (3e-3, 0.0, 0.9), (5e-4, 1e-1, 0.0), (2e-3, 1e-2, 0.5)]]
    together = train.train_group(prepared, configs)
    for cfg, joint in zip(configs, together):
        alone = train.train(prepared, cfg)
        np.testing.assert_allclose(joint.W, alone.W, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(joint.b, alone.b, rtol=1e-4, atol=1e-6)
        assert joint.history["val_accuracy"] == pytest.approx(alone.history["val_accuracy"], abs=1e-9)
        assert joint.config == cfg


def test_group_members_must_share_the_data_keys(prepared):
    with pytest.raises(ValueError, match="must share"):
        train.train_group(prepared, [settings(), settings(batch_size=32)])


def test_divergence_stops_that_run_only(prepared):
    configs = [settings(lr=1e-3), settings(lr=1e3, momentum=0.99), settings(lr=2e-3)]
    results = train.train_group(prepared, configs)
    assert [r.status for r in results] == ["ok", "diverged", "ok"]
    diverged = results[1]
    assert diverged.W is None and "diverged at epoch 1" in diverged.message and "smaller lr" in diverged.message
    for cfg, joint in zip([configs[0], configs[2]], [results[0], results[2]]):
        np.testing.assert_allclose(joint.W, train.train(prepared, cfg).W, rtol=1e-4, atol=1e-6)
    assert diverged.metrics()["status"] == "diverged"


def test_all_members_diverging_ends_cleanly(prepared):
    result = train.train(prepared, settings(lr=1e3))
    assert result.status == "diverged" and np.isfinite(result.seconds)


def test_float32_features_work_as_inputs(prepared):
    """The trainer also takes already-computed float32 features (offset 0, scale 1)."""
    features = preprocess.standardize(prepared.X_train.reshape(-1, 32, 32, 3),
                                      {"mean": prepared.offset, "std": np.float32(1 / prepared.scale)})
    val = preprocess.standardize(prepared.X_val.reshape(-1, 32, 32, 3),
                                 {"mean": prepared.offset, "std": np.float32(1 / prepared.scale)})
    as_features = train.Prepared(features, prepared.y_train, val, prepared.y_val,
                                 np.zeros(3072, np.float32), 1.0, prepared.preprocessing)
    np.testing.assert_allclose(train.train(as_features, settings()).W, train.train(prepared, settings()).W,
                               rtol=1e-3, atol=1e-5)


def test_prepared_data_is_in_memory_not_memory_mapped(prepared):
    assert not isinstance(prepared.X_train, np.memmap) and prepared.X_train.base is None
    assert prepared.X_train.dtype == np.uint8 and prepared.X_train.flags.c_contiguous


def test_the_loader_process_does_not_change_the_numbers(prepared):
    """prefetch=True loads the next batch in a second process; the arithmetic is that of prefetch=False."""
    cfg = settings(epochs=2, batch_size=32)  # 150 rows: the last batch of each epoch is short
    alone = train.train(prepared, cfg, prefetch=False)
    loaded_beside = train.train(prepared, cfg, prefetch=True)
    np.testing.assert_array_equal(alone.W, loaded_beside.W)
    np.testing.assert_array_equal(alone.b, loaded_beside.b)
    assert alone.history["step_loss"] == loaded_beside.history["step_loss"]


def loader_processes():
    return [p for p in multiprocessing.active_children() if p.name == "linclf-loader"]


def test_an_error_in_the_loader_reaches_the_caller(prepared, monkeypatch):
    def broken(self, X, index):
        raise MemoryError("no room for the batch")

    monkeypatch.setattr(train._Batch, "load", broken)
    with pytest.raises(RuntimeError, match="loading a minibatch failed: MemoryError: no room for the batch"):
        train.train(prepared, settings(), prefetch=True)
    assert not loader_processes()


def test_a_loader_that_dies_is_reported(prepared, monkeypatch):
    def dying(self, X, index):
        os._exit(3)

    monkeypatch.setattr(train._Batch, "load", dying)
    with pytest.raises(RuntimeError, match="loader process ended unexpectedly .exit code 3"):
        train.train(prepared, settings(), prefetch=True)
    assert not loader_processes()


@pytest.mark.parametrize("rows, K", [(201, 1), (7, 1), (201, 2), (33, 24)])
def test_blocked_products_equal_whole_ones(rows, K):
    """_forward/_backward cut thin products into blocks; the result is the plain product."""
    rng = np.random.default_rng(rows + K)
    A = rng.random((rows, 3072), dtype=np.float32)
    Wt = rng.standard_normal((K * 10, 3072)).astype(np.float32)
    S = np.empty((rows, K * 10), np.float32)
    train._forward(A, Wt, S)
    np.testing.assert_allclose(S, A @ Wt.T, rtol=1e-4, atol=1e-3)
    G = np.empty_like(Wt)
    train._backward(S, A, G)
    np.testing.assert_allclose(G, S.T @ A, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("length, size", [(201, 32), (3072, 497), (5, 32), (0, 8), (64, 32)])
def test_blocks_cover_the_range_once(length, size):
    blocks = train._blocks(length, size)
    covered = [i for block in blocks for i in range(length)[block]]
    assert covered == list(range(length))
    assert all(block.stop - block.start <= size for block in blocks)


@pytest.mark.parametrize("jobs", [0, 1])
def test_the_loader_stops_even_with_a_job_not_waited_for(jobs):
    """An interrupted training loop may close the loader between submit() and wait()."""
    done = train._shared((4,), np.int64)
    loader = train._ProcessLoader(lambda buffer, start, end: done.__setitem__(buffer, end))
    for job in range(jobs):
        loader.submit(job, 0, 7)
    loader.close()
    assert not loader._process.is_alive() and loader._process.exitcode == 0
    assert list(done[jobs:]) == [0] * (4 - jobs)


def test_the_loader_fills_shared_buffers_in_order():
    filled = train._shared((3, 5), np.int64)

    def load(buffer, start, end):
        filled[buffer, start:end] = np.arange(start, end) + 10 * buffer

    loader = train._ProcessLoader(load)
    try:
        for buffer, (start, end) in enumerate([(0, 2), (1, 5), (3, 4)]):
            loader.submit(buffer, start, end)
            loader.wait()
    finally:
        loader.close()
    np.testing.assert_array_equal(filled, [[0, 1, 0, 0, 0], [0, 11, 12, 13, 14], [0, 0, 0, 23, 0]])


@pytest.mark.parametrize("members, forks", [(1, True), (4, False)])
def test_by_default_only_thin_products_get_a_loader_process(prepared, monkeypatch, members, forks):
    """One run's products use one core and leave the other to the loader; wider groups' products
    use two BLAS threads, so they load in turn."""
    made = []
    real = train._ProcessLoader
    monkeypatch.setattr(train, "_ProcessLoader", lambda *args: made.append(args) or real(*args))
    monkeypatch.setattr(train, "can_prefetch", lambda: True)
    results = train.train_group(prepared, [settings(lr=1e-3 * (k + 1)) for k in range(members)])
    assert bool(made) == forks and all(r.status == "ok" for r in results)


def test_prefetch_is_off_in_daemonic_processes(monkeypatch):
    """A multiprocessing pool or Dask worker process is daemonic and may not start the loader."""
    monkeypatch.setattr(multiprocessing, "current_process", lambda: SimpleNamespace(daemon=True))
    assert not train.can_prefetch()
