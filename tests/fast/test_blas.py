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
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    # a product the library cannot take as it is (float64, or no contiguous rows) never reaches
    # it: NumPy computes it, chunk by chunk as the library would
    c = np.ones((3, 5), np.float64)
    blas.gemm_tn(c, a, np.ones((4, 5), np.float32), 1.0, 0.0)
    np.testing.assert_array_equal(c, a.T @ np.ones((4, 5)))
    w = np.arange(20, dtype=np.float32).reshape(5, 4)
    out = blas.matmul(a.T.copy(), w.T, trans_b=False)  # w.T: columns, not rows, contiguous
    np.testing.assert_array_equal(out, a.T @ w.T)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        blas.axpy(np.ones((1024, 784), np.float32).T, np.ones((784, 1024), np.float32), 1.0)
    with pytest.raises(ValueError, match="shapes do not fit"):
        blas.gemm_tn(np.ones((3, 6), np.float32), a, np.ones((4, 5), np.float32), 1.0, 0.0)
    with pytest.raises(ValueError, match="shapes differ"):
        blas.axpy(np.ones(3, np.float32), np.ones(4, np.float32), 1.0)


def test_products_are_the_same_on_one_and_two_threads():
    """OpenBLAS splits a sum over k between 513 and 1023 terms differently on several threads;
    the chunked product does not (the weights of a run must not depend on the thread count)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(0)
    for m, k, n in [(128, 784, 1024), (2500, 784, 64), (128, 1024, 512), (128, 600, 10)]:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        results = []
        for threads in (1, 2):
            with threadpoolctl.threadpool_limits(threads):
                results.append(
                    (blas.matmul(a, b), blas.matmul(a, np.ascontiguousarray(b.T), trans_b=True))
                )
        for one, two in zip(*results):
            np.testing.assert_array_equal(one, two)
        np.testing.assert_allclose(results[0][0], a @ b, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("k", [1, 255, 256, 257, 784, 1500])
def test_chunks_cover_the_sum_in_equal_pieces_no_longer_than_the_limit(k):
    parts = blas._chunks(k)
    assert [i for p in parts for i in range(p.start, p.stop)] == list(range(k))
    sizes = [p.stop - p.start for p in parts]
    assert max(sizes) <= blas.K_CHUNK and max(sizes) - min(sizes) <= 1 + (k % len(parts) > 0)
