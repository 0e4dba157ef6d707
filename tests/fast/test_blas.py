"""The BLAS routines reached through ctypes, against NumPy, with and without the library."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_mlp.fast import blas


@pytest.fixture(params=["library", "fallback"])
def mode(request, monkeypatch):
    if request.param == "fallback":
        monkeypatch.setattr(blas, "AVAILABLE", False)
    elif not blas.AVAILABLE:
        pytest.skip("NumPy's bundled OpenBLAS was not found (NumPy built against another BLAS)")
    return request.param


@pytest.mark.parametrize("k, m, n", [(1, 1, 1), (128, 784, 1024), (7, 33, 10), (32, 1024, 10)])
def test_gemm_tn_matches_numpy(mode, k, m, n):
    rng = np.random.default_rng(k)
    a, b = rng.random((k, m), dtype=np.float32), rng.random((k, n), dtype=np.float32)
    c = rng.random((m, n), dtype=np.float32)
    expected = -0.3 * (a.T.astype(np.float64) @ b) + 0.9 * c
    blas.gemm_tn(c, a, b, alpha=-0.3, beta=0.9)
    np.testing.assert_allclose(c, expected, rtol=1e-4, atol=1e-4)


# through the library, and NumPy below its size
@pytest.mark.parametrize("shape", [(784, 1024), (1024, 10)])
def test_axpy_matches_numpy(mode, shape):
    rng = np.random.default_rng(0)
    x, y = rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)
    expected = y + np.float32(-0.25) * x
    blas.axpy(y, x, -0.25)
    np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_unsafe_arguments_are_refused_before_reaching_the_library():
    if not blas.AVAILABLE:
        pytest.skip("no library to protect")
    a = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        blas.gemm_tn(np.ones((3, 5), np.float64), a, np.ones((4, 5), np.float32), 1.0, 0.0)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        blas.axpy(np.ones((1024, 784), np.float32).T, np.ones((784, 1024), np.float32), 1.0)
    with pytest.raises(ValueError, match="shapes do not fit"):
        blas.gemm_tn(np.ones((3, 6), np.float32), a, np.ones((4, 5), np.float32), 1.0, 0.0)
    with pytest.raises(ValueError, match="shapes differ"):
        blas.axpy(np.ones(3, np.float32), np.ones(4, np.float32), 1.0)
