"""util/float16.py: float16 rows to float32 exactly as numpy casts them, fast."""
import numpy as np
import pytest

from linclf.training import loader
from linclf.util import float16


def every_float16():
    """All 65,536 bit patterns: zeros, subnormals, normals, infinities and NaNs of both signs."""
    return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).reshape(256, 256)


def test_every_float16_value_converts_as_numpy_casts_it():
    values = every_float16()
    got = float16.to_float32(values)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), values.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("rows,cols,padding", [(1, 7, 0), (5, 33, 16), (0, 4, 3)])
def test_conversion_into_padded_rows_and_from_strided_columns(rows, cols, padding):
    rng = np.random.default_rng(rows + cols)
    values = rng.normal(size=(rows, 2 * cols)).astype(np.float16)[:, ::2]  # inner stride 2 values
    out = np.full((rows, cols + padding), np.nan, np.float32)
    float16.to_float32(values, out[:, :cols])
    np.testing.assert_array_equal(out[:, :cols], values.astype(np.float32))
    assert np.isnan(out[:, cols:]).all()  # the padding is left alone


@pytest.mark.parametrize("scale", ["scalar", "per feature"])
def test_a_batch_of_float16_rows_equals_the_batch_of_the_same_rows_in_float32(scale):
    rng = np.random.default_rng(3)
    X16 = rng.normal(size=(50, 20)).astype(np.float16)
    offset = rng.normal(size=20).astype(np.float32)
    factor = 0.5 if scale == "scalar" else rng.uniform(0.5, 2, size=20).astype(np.float32)
    batches = []
    for X in (X16, X16.astype(np.float32)):
        batch = loader.Batch(10, X, offset, factor)
        batch.load(X, np.array([3, 1, 4, 1, 5, 9, 2, 6]))
        batches.append(batch.inputs(8).copy())
    np.testing.assert_array_equal(batches[0], batches[1])
