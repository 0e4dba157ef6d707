"""The compiled kernels against the NumPy code they stand in for, and their argument checks."""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnist_mlp import data
from mnist_mlp.fast import inked, kernels, step


@pytest.fixture(autouse=True)
def built():
    if kernels.AVAILABLE:
        return
    if os.environ.get("MNIST_MLP_NO_KERNELS"):
        pytest.skip("MNIST_MLP_NO_KERNELS is set")
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if (shutil.which("cc") or shutil.which("gcc")) and headers.exists():
        pytest.fail(
            "a C compiler and Python's headers are here but mnist_mlp.fast._kernels was not "
            "built: see the output of `pip install -e .` (or `make install`)"
        )
    pytest.skip(
        "no C compiler or no Python headers, so the kernels were not built: mnist_mlp "
        "runs its NumPy code"
    )


@pytest.fixture
def numpy_only(monkeypatch):
    """A switch: after calling it, the NumPy code the kernels stand in for runs."""
    return lambda: monkeypatch.setattr(kernels, "AVAILABLE", False)


def _rng(*seed):
    return np.random.default_rng(list(seed))


@pytest.mark.parametrize("rows, cols", [(128, 1024), (3, 5), (1, 1), (2, 37)])
def test_bias_relu_equals_numpy(rows, cols):
    rng = _rng(rows, cols)
    z, b = (
        rng.standard_normal((rows, cols), dtype=np.float32),
        rng.standard_normal(cols, dtype=np.float32),
    )
    expected = np.maximum(z + b, 0)
    assert kernels.bias_relu(z, b) is z
    np.testing.assert_array_equal(z, expected)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 70), n=st.integers(1, 300), k=st.integers(1, 70), seed=st.integers(0, 2**16)
)
def test_backprop_relu_equals_the_product_and_the_mask(rows, n, k, seed):
    rng = _rng(seed)
    dz = rng.standard_normal((rows, k), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)
    a = np.maximum(rng.standard_normal((rows, n), dtype=np.float32), 0)  # about half exactly 0
    got = kernels.backprop_relu(dz, w, a)
    expected = (dz.astype(np.float64) @ w.T) * (a > 0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.sqrt(k))
    assert np.all(got[a == 0] == 0)


def test_backprop_relu_at_the_training_shape_matches_numpy_float32():
    rng = _rng(1)
    dz, w = (
        rng.standard_normal((128, 10), dtype=np.float32),
        rng.standard_normal((1024, 10), dtype=np.float32),
    )
    a = np.maximum(rng.standard_normal((128, 1024), dtype=np.float32), 0)
    expected = dz @ w.T
    step.relu_backward(a, expected)
    np.testing.assert_allclose(kernels.backprop_relu(dz, w, a), expected, rtol=1e-5, atol=1e-6)


def test_the_backprop_kernel_is_chosen_only_where_it_is_the_faster(monkeypatch):
    dz, w, a = (
        np.zeros((4, 10), np.float32),
        np.zeros((64, 10), np.float32),
        np.zeros((4, 64), np.float32),
    )
    assert kernels.backprop_fits(dz, w, a) == kernels.WIDE
    assert not kernels.backprop_fits(
        np.zeros((4, 64), np.float32), np.zeros((64, 64), np.float32), a
    )
    assert not kernels.backprop_fits(dz.astype(np.float64), w, a)
    monkeypatch.setattr(kernels, "WIDE", False)  # a CPU without AVX2: NumPy is faster there
    assert not kernels.backprop_fits(dz, w, a)


@pytest.mark.parametrize("scale", [1.0, 1e4])  # 1e4: logits far beyond exp's float32 range
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropy_equals_numpy(numpy_only, scale, smoothing):
    rng = _rng(2)
    logits = rng.standard_normal((64, 10), dtype=np.float32) * np.float32(scale)
    y = rng.integers(0, 10, 64).astype(np.uint8)  # any integer type will do
    loss, grad = kernels.softmax_cross_entropy(logits.copy(), y, smoothing)
    numpy_only()
    expected_loss, expected_grad = step.softmax_cross_entropy(logits.copy(), y, smoothing)
    assert np.isfinite(loss)
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("with_rows", [True, False])
def test_scale_pixels_equals_numpy(numpy_only, with_rows):
    rng = _rng(3)
    images = rng.integers(0, 256, (50, 784), dtype=np.uint8)
    rows = rng.permutation(50)[:17] if with_rows else None
    out = np.empty((17 if with_rows else 50, 784), np.float32)
    got = data.scale(images, out, 0.02, -0.4, rows=rows)
    assert got is out
    numpy_only()
    expected = data.scale(images, None, 0.02, -0.4, rows=rows)
    # C may fuse pixel * scale + offset into one rounding where NumPy rounds twice
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("with_rows", [True, False])
@pytest.mark.parametrize("blank", [0, 300, 784])
def test_gather_inked_equals_numpy(numpy_only, with_rows, blank):
    rng = _rng(4, blank)
    images = rng.integers(0, 256, (40, 784), dtype=np.uint8) * (rng.random((40, 784)) < 0.3)
    images = images.astype(np.uint8)
    images[:, rng.permutation(784)[:blank]] = 0
    images[0, np.flatnonzero(images.any(axis=0) == 0)[blank:]] = 7  # the others inked somewhere
    rows = rng.permutation(40)[:13] if with_rows else None
    got = inked.inked_columns(images, 0.02, -0.4, rows=rows)
    numpy_only()
    expected = inked.inked_columns(images, 0.02, -0.4, rows=rows)
    batch = images if rows is None else images[rows]
    np.testing.assert_array_equal(got.cols, np.flatnonzero(batch.any(axis=0)))
    np.testing.assert_array_equal(got.cols, expected.cols)
    np.testing.assert_array_equal(got.values, expected.values)  # the same float32 product
    assert got.values.flags.c_contiguous and got.values.shape == (len(batch), len(got.cols))
    if rows is None:
        assert len(got.cols) == 784 - blank


def test_gather_inked_finds_k_but_gathers_nothing_past_max_k():
    images = np.zeros((4, 784), np.uint8)
    images[1, :500] = 3
    values, cols = np.full(4 * 784, -1.0, np.float32), np.zeros(784, np.int64)
    assert kernels.gather_inked(images, values, cols, 1.0, max_k=499) == 500
    assert (values == -1).all()  # nothing written
    assert inked.inked_columns(images, max_share=499 / 784) is None


def test_update_inked_equals_numpy_and_sums_like_numpy():
    rng = _rng(5)
    p, w = (
        rng.standard_normal((784, 96), dtype=np.float32),
        rng.standard_normal((784, 96), dtype=np.float32),
    )
    cols = np.sort(rng.permutation(784)[:300])
    g, v = (
        rng.standard_normal((300, 96), dtype=np.float32),
        rng.standard_normal(96, dtype=np.float32),
    )
    expected = 0.99 * w - 0.9 * p + v
    expected[cols] += g
    s = np.empty(96, np.float32)
    kernels.update_inked(p, w, g, cols, v, s, 0.99, 0.9)
    np.testing.assert_allclose(p, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(s, p.sum(axis=0))  # row by row, in order, as NumPy sums axis 0


def test_wrong_arrays_raise_instead_of_corrupting_memory():
    z, b = np.zeros((4, 8), np.float32), np.zeros(8, np.float32)
    with pytest.raises(ValueError, match="z: expected 32 items of format 'f'"):
        kernels.bias_relu(z.astype(np.float64), b)
    with pytest.raises(ValueError, match="b: expected 8 items"):
        kernels._c.bias_relu(z, b[:4], 4, 8)  # past the wrapper's shape check: C checks too
    with pytest.raises(ValueError, match="shapes do not fit"):
        kernels.bias_relu(z, b.reshape(2, 4))
    with pytest.raises((ValueError, BufferError)):
        kernels.bias_relu(np.zeros((4, 16), np.float32)[:, ::2], b)  # not contiguous
    frozen = z.copy()
    frozen.flags.writeable = False
    with pytest.raises((ValueError, BufferError)):
        kernels.bias_relu(frozen, b)
    with pytest.raises(ValueError, match="shapes do not fit"):
        kernels.backprop_relu(np.zeros((4, 10), np.float32), np.zeros((8, 3), np.float32), z)


def test_labels_and_rows_out_of_range_are_refused():
    with pytest.raises(ValueError, match="need a row and a class"):
        kernels.softmax_cross_entropy(np.zeros((0, 10), np.float32), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match=r"y\[1\] = 10 is not a class in 0..9"):
        kernels.softmax_cross_entropy(np.zeros((2, 10), np.float32), np.array([3, 10]))
    images, out = np.zeros((5, 4), np.uint8), np.zeros((2, 4), np.float32)
    with pytest.raises(IndexError, match=r"image 5, not one of 0\.\.4"):
        kernels.scale_pixels(images, out, 1.0, 0.0, rows=np.array([0, 5]))
    with pytest.raises(IndexError, match="image -1"):
        kernels.scale_pixels(images, out, 1.0, 0.0, rows=np.array([-1, 0]))
