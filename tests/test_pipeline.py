"""Data sources and input pipelines."""
import numpy as np
import pytest

from linclf.features import pipeline
from linclf.data import sources
from linclf.util.errors import LinclfError


@pytest.fixture(scope="module")
def source(data_dir):
    return sources.cifar10(data_dir)


def test_pixel_standardization_is_fitted_on_train(source):
    images, _ = sources.split(source, "train", {"val_size": 50, "train_size": 0})
    pipe = pipeline.build({}, "images", (32, 32, 3))
    features = pipe.fit(images)
    pixels = images.reshape(len(images), -1).astype(np.float64)
    mean, std = pipe.scaler.arrays["mean"], pipe.scaler.arrays["std"]
    np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=1e-6)
    assert std == pytest.approx((pixels - pixels.mean(axis=0)).std(), rel=1e-6)
    assert features.dtype == np.uint8  # the raw rows: the trainer folds the standardization in
    X = pipe.transform(images)
    assert X.dtype == np.float32 and X.shape == (150, 3072)
    assert abs(X.mean()) < 1e-5 and X.std() == pytest.approx(1.0, rel=1e-4)


def test_per_feature_standardization_and_a_constant_feature():
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, [1.0, 5.0, 0.0], size=(400, 3)).astype(np.float32)
    pipe = pipeline.build({}, "features", (3,))
    pipe.fit(X)
    Z = pipe.transform(X)
    np.testing.assert_allclose(Z[:, :2].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(Z[:, :2].std(axis=0), 1, rtol=1e-4)
    assert np.all(Z[:, 2] == 0) and pipe.scaler.arrays["std"][2] == 1.0


def test_a_pipeline_round_trips_through_its_arrays(source):
    pipe = pipeline.build({}, "images", (32, 32, 3))
    pipe.fit(source.train_x[:100])
    text, arrays = pipe.to_arrays()
    again = pipeline.Pipeline.from_arrays(text, arrays, "model")
    np.testing.assert_array_equal(again.transform(source.test_x[:7]), pipe.transform(source.test_x[:7]))
    assert again.params() == pipe.params() and again.input_shape == (32, 32, 3)


def test_inputs_of_the_wrong_shape_are_refused():
    pipe = pipeline.build({}, "features", (8,))
    with pytest.raises(LinclfError, match="the model takes inputs of shape 8, got 9"):
        pipe.check_inputs(np.zeros((2, 9)))


@pytest.mark.parametrize("labels, message", [
    (np.array([0, 1, 10]), r"y: labels must be in 0..9, got values 0..10"),
    (np.array([0, -1]), r"labels must be in 0..9, got values -1..0"),
    (np.array([0.0, 1.5]), r"must hold integer labels, got dtype float64"),
    (np.array(["1", "2"]), r"must hold integer labels"),
    (np.zeros((2, 2), int), r"must be a 1-D array of labels"),
])
def test_labels_are_checked_where_they_enter(labels, message):
    with pytest.raises(LinclfError, match=message):
        sources.check_labels("y", labels, 10)


def test_a_random_validation_split_is_stratified_and_seeded():
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])  # sorted by class, as dumps often are
    train, val = sources.split_rows(labels, 20, val_split="random")
    assert np.bincount(labels[val]).tolist() == [8, 6, 4, 2]
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 100
    np.testing.assert_array_equal(val, sources.split_rows(labels, 20, val_split="random")[1])
    tail_train, tail_val = sources.split_rows(labels, 20)
    assert set(labels[tail_val]) == {2, 3}  # what the tail split would have done
    with pytest.raises(LinclfError, match=r"train_size must be at most 80 with val_size 20, got 81"):
        sources.split_rows(labels, 20, train_size=81)
