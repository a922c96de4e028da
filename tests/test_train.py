import multiprocessing
import os
import re
from types import SimpleNamespace

import numpy as np
import pytest

from linclf import config
from linclf.experiments import jobs
from linclf.training import kernels
from linclf.training import loader
from linclf.training import softmax
from linclf.features import pipeline
from linclf.data import sources
from linclf.training import loop
from linclf.util.errors import LinclfError
from conftest import TINY


@pytest.fixture(scope="module")
def prepared(data_dir):
    return jobs.prepare(sources.cifar10(data_dir), settings())[0]


def settings(**changes):
    return config.complete({**TINY, **changes})


def test_same_seed_same_result_other_seed_other_result(prepared):
    first = loop.train(prepared, settings(seed=3))
    again = loop.train(prepared, settings(seed=3))
    other = loop.train(prepared, settings(seed=4))
    np.testing.assert_array_equal(first.W, again.W)
    assert first.history["step_loss"] == again.history["step_loss"]
    assert not np.allclose(first.W, other.W)


def test_learns_the_synthetic_classes(prepared):
    result = loop.train(prepared, settings(epochs=5))
    assert result.status == "ok" and result.W.shape == (3072, 10) and result.W.dtype == np.float32
    history = result.history
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["val_accuracy"][-1] > 0.6  # chance is 0.1
    assert len(history["epoch"]) == 5 and len(history["step_loss"]) == 5 * 10  # 150 images / 16 per step


def test_one_step_matches_the_reference_math(prepared):
    """A full-batch step with momentum 0 is W1 = W0 - lr * dW, dW from softmax.softmax_loss on the
    standardized inputs: checks the folded standardization of the fast trainer."""
    cfg = settings(epochs=1, batch_size=150, momentum=0.0, lr=0.05, reg=0.5, init_scale=0.01, seed=7)
    result = loop.train(prepared, cfg)
    W0 = 0.01 * np.random.default_rng(7).standard_normal((3072, 10)).astype(np.float32).astype(np.float64)
    X = (prepared.X_train.astype(np.float64) - prepared.offset) * prepared.scale
    _, dW, db = softmax.softmax_loss(W0, np.zeros(10), X, prepared.y_train, 0.5)
    np.testing.assert_allclose(result.W, W0 - 0.05 * dW, rtol=0, atol=2e-6)
    np.testing.assert_allclose(result.b, -0.05 * db, rtol=0, atol=2e-6)


def test_momentum_and_decay_follow_the_documented_update(prepared):
    """Two full-batch steps: v1 = -lr dW(W0); v2 = mu v1 - lr*decay dW(W1)."""
    lr, mu, decay, reg = 0.02, 0.8, 0.5, 0.1
    cfg = settings(epochs=2, batch_size=150, momentum=mu, lr=lr, lr_decay=decay, reg=reg, init_scale=0.01, seed=1)
    result = loop.train(prepared, cfg)
    X = (prepared.X_train.astype(np.float64) - prepared.offset) * prepared.scale
    W = 0.01 * np.random.default_rng(1).standard_normal((3072, 10)).astype(np.float32).astype(np.float64)
    b = np.zeros(10)
    _, dW, db = softmax.softmax_loss(W, b, X, prepared.y_train, reg)
    vW, vb = -lr * dW, -lr * db
    W, b = W + vW, b + vb
    _, dW, db = softmax.softmax_loss(W, b, X, prepared.y_train, reg)
    W, b = W + mu * vW - lr * decay * dW, b + mu * vb - lr * decay * db
    np.testing.assert_allclose(result.W, W, atol=5e-6, rtol=0)
    np.testing.assert_allclose(result.b, b, atol=5e-6, rtol=0)
    assert result.history["lr"] == pytest.approx([lr, lr * decay])


@pytest.mark.slow
def test_batched_group_equals_each_run_alone(prepared):
    configs = [settings(lr=lr, reg=reg, momentum=mu) for lr, reg, mu in
               [(1e-3, 1e-3, 0.9), (3e-3, 0.0, 0.9), (5e-4, 1e-1, 0.0), (2e-3, 1e-2, 0.5)]]
    together = loop.train_group(prepared, configs)
    for cfg, joint in zip(configs, together):
        alone = loop.train(prepared, cfg)
        np.testing.assert_allclose(joint.W, alone.W, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(joint.b, alone.b, rtol=1e-4, atol=1e-6)
        assert joint.history["val_accuracy"] == pytest.approx(alone.history["val_accuracy"], abs=1e-9)
        assert joint.config == cfg


def test_group_members_must_share_the_data_keys(prepared):
    with pytest.raises(ValueError, match="must share"):
        loop.train_group(prepared, [settings(), settings(batch_size=32)])


def test_divergence_stops_that_run_only(prepared):
    configs = [settings(lr=1e-3), settings(lr=1e3, momentum=0.99), settings(lr=2e-3)]
    results = loop.train_group(prepared, configs)
    assert [r.status for r in results] == ["ok", "diverged", "ok"]
    diverged = results[1]
    assert diverged.W is None and "diverged at epoch 1" in diverged.message and "smaller lr" in diverged.message
    for cfg, joint in zip([configs[0], configs[2]], [results[0], results[2]]):
        np.testing.assert_allclose(joint.W, loop.train(prepared, cfg).W, rtol=1e-4, atol=1e-6)
    assert diverged.metrics()["status"] == "diverged"


def test_all_members_diverging_ends_cleanly(prepared):
    result = loop.train(prepared, settings(lr=1e3))
    assert result.status == "diverged" and np.isfinite(result.seconds)


def standardized(prepared):
    scaler = pipeline.Standardize("pixels", {"mean": prepared.offset, "std": np.float32(1 / prepared.scale)})
    return scaler.transform(prepared.X_train), scaler.transform(prepared.X_val)


def test_float32_features_work_as_inputs(prepared):
    """The trainer also takes already-computed float32 features (offset 0, scale 1)."""
    features, val = standardized(prepared)
    as_features = loop.Prepared(features, prepared.y_train, val, prepared.y_val, np.zeros(3072, np.float32), 1.0)
    np.testing.assert_allclose(loop.train(as_features, settings()).W, loop.train(prepared, settings()).W,
                               rtol=1e-3, atol=1e-5)


def test_a_per_feature_scale_standardizes_in_the_batch(prepared):
    """A (D,) scale (per-feature standardization) gives the numbers of pre-standardized inputs."""
    features, val = standardized(prepared)
    per_feature = loop.Prepared(prepared.X_train, prepared.y_train, prepared.X_val, prepared.y_val,
                                 prepared.offset, np.full(3072, prepared.scale, np.float32))
    as_features = loop.Prepared(features, prepared.y_train, val, prepared.y_val, np.zeros(3072, np.float32), 1.0)
    np.testing.assert_allclose(loop.train(per_feature, settings()).W, loop.train(as_features, settings()).W,
                               rtol=1e-5, atol=1e-7)


def reference_sgd(prepared, configs):
    """An independent float64 version of the documented algorithm: the same random stream (initial W,
    then one permutation per epoch), softmax.softmax_loss on standardized inputs, momentum, L2, decay."""
    X = (prepared.X_train.astype(np.float64) - prepared.offset) * prepared.scale
    y, (N, D), C = prepared.y_train, X.shape, prepared.num_classes
    first = configs[0]
    rng = np.random.default_rng(first["seed"])
    init = rng.standard_normal((D, C)).astype(np.float32).astype(np.float64)
    orders = [rng.permutation(N) for _ in range(first["epochs"])]
    out = []
    for cfg in configs:
        W, b = np.float32(cfg["init_scale"]) * init, np.zeros(C)
        vW, vb, lr = np.zeros_like(W), np.zeros(C), cfg["lr"]
        for order in orders:
            for start in range(0, N, cfg["batch_size"]):
                rows = order[start:start + cfg["batch_size"]]
                _, dW, db = softmax.softmax_loss(W, b, X[rows], y[rows], cfg["reg"])
                vW, vb = cfg["momentum"] * vW - lr * dW, cfg["momentum"] * vb - lr * db
                W, b = W + vW, b + vb
            lr *= cfg["lr_decay"]
        out.append((W, b))
    return out


def test_minibatch_sgd_matches_an_independent_float64_reference(prepared):
    """Three members with their own lr, reg, momentum, lr_decay and init_scale, three epochs of
    150 rows in batches of 32 (the last one short)."""
    configs = [settings(epochs=3, batch_size=32, seed=5, lr=lr, reg=reg, momentum=mu, lr_decay=decay, init_scale=s)
               for lr, reg, mu, decay, s in [(2e-3, 1e-2, 0.9, 0.5, 1e-3), (5e-3, 0.0, 0.5, 0.9, 1e-2),
                                             (1e-3, 0.3, 0.0, 1.0, 0.0)]]
    results = loop.train_group(prepared, configs, prefetch=False)
    for result, (W, b) in zip(results, reference_sgd(prepared, configs)):
        assert result.status == "ok"
        np.testing.assert_allclose(result.W, W, rtol=0, atol=2e-5 * max(1.0, np.abs(W).max()))
        np.testing.assert_allclose(result.b, b, rtol=0, atol=2e-5 * max(1.0, np.abs(b).max()))


def test_validation_metrics_equal_eval_on_the_saved_model(data_dir, tmp_path):
    """The trainer's own validation numbers and `eval --split val` on the saved model agree."""
    from linclf.evaluation import evaluate
    from linclf.experiments import modelfile

    source = sources.cifar10(data_dir)
    outcome = jobs.train_group(source, [settings(epochs=2)])
    folder, = jobs.save(outcome, lambda result: tmp_path / "run")
    report = evaluate.evaluate_split(modelfile.load_model(folder), source, "val")
    history = outcome.results[0].history
    assert report["accuracy"] == pytest.approx(history["val_accuracy"][-1], abs=1e-6)
    assert report["cross_entropy"] == pytest.approx(history["val_loss"][-1], rel=1e-4, abs=1e-6)


def test_the_loader_is_forked_before_the_progress_bar_starts_a_thread(prepared, monkeypatch):
    """Forking a process that runs threads (tqdm's monitor) is unsafe: the bar comes after the fork."""
    import threading

    from tqdm import tqdm

    threads_at_fork = []
    real = loader.ProcessLoader

    def recording(*args):
        threads_at_fork.append(threading.active_count())
        return real(*args)

    monkeypatch.setattr(loader, "ProcessLoader", recording)
    monkeypatch.setattr(tqdm, "monitor_interval", 10)
    before = threading.active_count()
    bars = []
    loop.train(prepared, settings(), prefetch=True,
                progress=lambda total: bars.append(tqdm(total=total, file=__import__("io").StringIO())) or bars[-1])
    assert threads_at_fork == [before] and bars


def test_prepared_data_is_in_memory_not_memory_mapped(prepared):
    assert not isinstance(prepared.X_train, np.memmap) and prepared.X_train.base is None
    assert prepared.X_train.dtype == np.uint8 and prepared.X_train.flags.c_contiguous


def test_the_loader_process_does_not_change_the_numbers(prepared):
    """prefetch=True loads the next batch in a second process; the arithmetic is that of prefetch=False."""
    cfg = settings(epochs=2, batch_size=32)  # 150 rows: the last batch of each epoch is short
    alone = loop.train(prepared, cfg, prefetch=False)
    loaded_beside = loop.train(prepared, cfg, prefetch=True)
    np.testing.assert_array_equal(alone.W, loaded_beside.W)
    np.testing.assert_array_equal(alone.b, loaded_beside.b)
    assert alone.history["step_loss"] == loaded_beside.history["step_loss"]


def loader_processes():
    return [p for p in multiprocessing.active_children() if p.name == "linclf-loader"]


def test_an_error_in_the_loader_reaches_the_caller(prepared, monkeypatch):
    def broken(self, X, index):
        raise MemoryError("no room for the batch")

    monkeypatch.setattr(loader.Batch, "load", broken)
    with pytest.raises(RuntimeError, match="loading a minibatch failed: MemoryError: no room for the batch"):
        loop.train(prepared, settings(), prefetch=True)
    assert not loader_processes()


@pytest.mark.slow
def test_a_loader_that_dies_is_reported(prepared, monkeypatch):
    def dying(self, X, index):
        os._exit(3)

    monkeypatch.setattr(loader.Batch, "load", dying)
    with pytest.raises(RuntimeError, match="loader process ended unexpectedly .exit code 3"):
        loop.train(prepared, settings(), prefetch=True)
    assert not loader_processes()


@pytest.mark.parametrize("rows, K", [(201, 1), (7, 1), (201, 2), (33, 24)])
def test_blocked_products_equal_whole_ones(rows, K):
    """_forward/_backward cut thin products into blocks; the result is the plain product."""
    rng = np.random.default_rng(rows + K)
    A = rng.random((rows, 3072), dtype=np.float32)
    Wt = rng.standard_normal((K * 10, 3072)).astype(np.float32)
    S = np.empty((rows, K * 10), np.float32)
    kernels.forward(A, Wt, S)
    np.testing.assert_allclose(S, A @ Wt.T, rtol=1e-4, atol=1e-3)
    G = np.empty_like(Wt)
    kernels.backward(S, A, G)
    np.testing.assert_allclose(G, S.T @ A, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("length, size", [(201, 32), (3072, 497), (5, 32), (0, 8), (64, 32)])
def test_blocks_cover_the_range_once(length, size):
    blocks = kernels.blocks(length, size)
    covered = [i for block in blocks for i in range(length)[block]]
    assert covered == list(range(length))
    assert all(block.stop - block.start <= size for block in blocks)


@pytest.mark.parametrize("jobs", [0, 1])
def test_the_loader_stops_even_with_a_job_not_waited_for(jobs):
    """An interrupted training loop may close the loader between submit() and wait()."""
    done = loader.shared((4,), np.int64)
    feeder = loader.ProcessLoader(lambda buffer, start, end: done.__setitem__(buffer, end))
    for job in range(jobs):
        feeder.submit(job, 0, 7)
    feeder.close()
    assert not feeder._process.is_alive() and feeder._process.exitcode == 0
    assert list(done[jobs:]) == [0] * (4 - jobs)


def test_the_loader_fills_shared_buffers_in_order():
    filled = loader.shared((3, 5), np.int64)

    def load(buffer, start, end):
        filled[buffer, start:end] = np.arange(start, end) + 10 * buffer

    feeder = loader.ProcessLoader(load)
    try:
        for buffer, (start, end) in enumerate([(0, 2), (1, 5), (3, 4)]):
            feeder.submit(buffer, start, end)
            feeder.wait()
    finally:
        feeder.close()
    np.testing.assert_array_equal(filled, [[0, 1, 0, 0, 0], [0, 11, 12, 13, 14], [0, 0, 0, 23, 0]])


@pytest.mark.parametrize("members, forks", [(1, True), pytest.param(4, False, marks=pytest.mark.slow)])
def test_by_default_only_thin_products_get_a_loader_process(prepared, monkeypatch, members, forks):
    """One run's products use one core and leave the other to the loader; wider groups' products
    use two BLAS threads, so they load in turn."""
    made = []
    real = loader.ProcessLoader
    monkeypatch.setattr(loader, "ProcessLoader", lambda *args: made.append(args) or real(*args))
    monkeypatch.setattr(loader, "can_prefetch", lambda: True)
    results = loop.train_group(prepared, [settings(lr=1e-3 * (k + 1)) for k in range(members)])
    assert bool(made) == forks and all(r.status == "ok" for r in results)


def test_prefetch_is_off_in_daemonic_processes(monkeypatch):
    """A multiprocessing pool or Dask worker process is daemonic and may not start the loader."""
    monkeypatch.setattr(multiprocessing, "current_process", lambda: SimpleNamespace(daemon=True))
    assert not loader.can_prefetch()


class CountingNumpy:
    """numpy, with its matmul calls counted."""

    def __init__(self):
        self.calls = 0

    def __getattr__(self, name):
        return getattr(np, name)

    def matmul(self, *args, **kwargs):
        self.calls += 1
        return np.matmul(*args, **kwargs)


@pytest.mark.parametrize("rows", [201, 8001])
def test_backward_blocks_never_degrade_into_narrow_products(rows, monkeypatch):
    """At large batch sizes the column blocks had shrunk to 12 columns (256 calls at 8,000 rows)."""
    counting = CountingNumpy()
    monkeypatch.setattr(kernels, "np", counting)
    S = np.ones((rows, 10), np.float32)
    A = np.ones((rows, 3072), np.float32)
    out = np.empty((10, 3072), np.float32)
    kernels.backward(S, A, out)
    assert counting.calls <= 3072 // kernels.MIN_BLOCK
    np.testing.assert_allclose(out, rows)


class Interrupting:
    """A checkpoint kept in memory that raises KeyboardInterrupt once `after` epochs are saved."""

    def __init__(self, after=None):
        self.snapshot, self.after, self.told = None, after, []

    def load(self):
        return self.snapshot

    def resumed(self, epoch):
        self.told.append(f"resumed after epoch {epoch}")

    def refused(self, reason):
        self.told.append(f"refused: {reason}")

    def save(self, snapshot, epoch):
        self.snapshot = {"facts": __import__("json").loads(__import__("json").dumps(snapshot["facts"])),
                         "arrays": {k: v.copy() for k, v in snapshot["arrays"].items()}}
        if epoch == self.after:
            raise KeyboardInterrupt


@pytest.mark.parametrize("after", [1, 2])
def test_an_interrupted_group_resumes_bit_identically(prepared, after):
    """Stopped after an epoch, restarted from the snapshot: the same weights, biases and histories,
    a diverged member included."""
    configs = [settings(epochs=3, batch_size=32, lr=lr, lr_decay=0.8) for lr in (1e-3, 1e3, 3e-3)]
    whole = loop.train_group(prepared, configs, prefetch=False)
    checkpoint = Interrupting(after)
    with pytest.raises(KeyboardInterrupt):
        loop.train_group(prepared, configs, prefetch=False, checkpoint=checkpoint)
    checkpoint.after = None
    resumed = loop.train_group(prepared, configs, prefetch=False, checkpoint=checkpoint)
    assert [r.status for r in resumed] == [r.status for r in whole] == ["ok", "diverged", "ok"]
    for a, b in zip(whole, resumed):
        assert a.message == b.message
        assert {k: v for k, v in a.history.items() if k != "epoch_seconds"} == \
            {k: v for k, v in b.history.items() if k != "epoch_seconds"}
        if a.status == "ok":
            np.testing.assert_array_equal(a.W, b.W)
            np.testing.assert_array_equal(a.b, b.b)


def test_a_snapshot_of_other_configurations_is_ignored(prepared):
    checkpoint = Interrupting(1)
    with pytest.raises(KeyboardInterrupt):
        loop.train_group(prepared, [settings(lr=1e-3)], prefetch=False, checkpoint=checkpoint)
    checkpoint.after = None
    other = loop.train_group(prepared, [settings(lr=2e-3)], prefetch=False, checkpoint=checkpoint)[0]
    np.testing.assert_array_equal(other.W, loop.train(prepared, settings(lr=2e-3), prefetch=False).W)


def damage(snapshot, change):
    """Apply one hand edit to a snapshot's facts (a dict of changes) or arrays (a function)."""
    if callable(change):
        change(snapshot)
    else:
        snapshot["facts"].update(change)


def set_array(name, value):
    return lambda snapshot: snapshot["arrays"].__setitem__(name, value(snapshot["arrays"][name]))


def set_history(member, key, value):
    return lambda snapshot: snapshot["facts"]["histories"][member].__setitem__(key, value)


@pytest.mark.parametrize("change, reason", [
    ({"epochs_done": 2}, r"history of member 0 does not fit: it holds 1 epochs, epochs_done is 2"),
    ({"epochs_done": 9}, r"epochs_done must be an integer in 1\.\.3, got 9"),
    ({"epochs_done": "one"}, r"epochs_done must be an integer"),
    ({"rng": {"bit_generator": "PCG64"}}, r"random generator"),
    ({"rng": "not a state"}, r"random generator"),
    ({"rng": np.random.default_rng(7).bit_generator.state}, r"random generator"),
    ({"members": [0, 1]}, r"members"),
    ({"members": [5]}, r"members"),
    ({"members": "0"}, r"members"),
    ({"stopped": {"0": "gone"}}, r"members"),
    ({"stopped": []}, r"stopped"),
    ({"histories": {"a": 1}}, r"histories"),
    ({"histories": [{}, {}]}, r"histor"),
    ({"seconds": -5}, r"seconds"),
    ({"configs": []}, r"configurations"),
    (set_history(0, "val_loss", []), r"histor"),
    (set_history(0, "val_accuracy", ["high"]), r"histor"),
    (set_history(0, "step_loss", [0.1]), r"histor"),
    (set_array("Wt", lambda a: a * np.float32(1e30)), r"validation loss"),
    (set_array("Wt", lambda a: a * np.float32(3)), r"validation loss"),
    (set_array("b", lambda a: a + np.eye(len(a), dtype=np.float32)[0]), r"validation loss"),
    (set_array("Wt", lambda a: np.full_like(a, np.nan)), r"Wt .*finite"),
    (set_array("velocity_W", lambda a: np.full_like(a, np.inf)), r"velocity_W .*finite"),
    (set_array("Wt", lambda a: a[:, :100]), r"Wt .*shape"),
    (set_array("Wt", lambda a: a.astype(np.float16)), r"Wt .*float32"),
    (set_array("b", lambda a: a.astype(np.int64)), r"b .*float32"),
    (set_array("lr", lambda a: a * np.float32(2)), r"lr .*configurations"),
    (set_array("momentum", lambda a: a * 0), r"momentum .*configurations"),
    (lambda snapshot: snapshot["arrays"].pop("reg"), r"reg"),
])
def test_a_snapshot_that_does_not_fit_its_group_is_refused_before_anything_is_applied(prepared, change, reason):
    """A hand-edited snapshot never gives a traceback or a wrong run: the group starts over (the
    same results as a fresh start) and the checkpoint is told why, in one line."""
    configs = [settings(epochs=3, batch_size=32, lr=1e-3), settings(epochs=3, batch_size=32, lr=1e3)]
    fresh = loop.train_group(prepared, configs, prefetch=False)
    checkpoint = Interrupting(1)
    with pytest.raises(KeyboardInterrupt):
        loop.train_group(prepared, configs, prefetch=False, checkpoint=checkpoint)
    checkpoint.after = None
    damage(checkpoint.snapshot, change)
    resumed = loop.train_group(prepared, configs, prefetch=False, checkpoint=checkpoint)
    assert [r.status for r in resumed] == [r.status for r in fresh] == ["ok", "diverged"]
    np.testing.assert_array_equal(resumed[0].W, fresh[0].W)
    assert resumed[0].history["val_loss"] == fresh[0].history["val_loss"]
    told, = checkpoint.told
    assert told.startswith("refused: ") and "\n" not in told
    assert re.search(reason, told), told


def test_a_fitting_snapshot_is_said_to_resume_before_training_goes_on(prepared, monkeypatch):
    configs = [settings(epochs=3, batch_size=32)]
    checkpoint = Interrupting(1)
    with pytest.raises(KeyboardInterrupt):
        loop.train_group(prepared, configs, prefetch=False, checkpoint=checkpoint)
    checkpoint.after = None
    steps = []
    real = kernels.softmax_gradient
    monkeypatch.setattr(kernels, "softmax_gradient", lambda *args: steps.append(list(checkpoint.told)) or real(*args))
    loop.train_group(prepared, configs, prefetch=False, checkpoint=checkpoint)
    assert steps[0] == ["resumed after epoch 1"]


@pytest.mark.parametrize("change, message", [
    ({"lr": -1.0}, r"configuration: lr must be a number in \(0, 1000\], got -1"),
    ({"lrr": 1.0}, r"configuration: unknown key 'lrr' \(did you mean 'lr'\?\)"),
    ({"kmeans_k": 8}, r"kmeans_k apply only with features: kmeans"),
])
def test_the_one_training_path_validates_its_configurations(data_dir, change, message):
    with pytest.raises(LinclfError, match=message):
        jobs.train_group(sources.cifar10(data_dir), [{**TINY, **change}])
