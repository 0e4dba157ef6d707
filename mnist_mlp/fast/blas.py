"""Two BLAS routines NumPy's API does not expose, taken from the BLAS NumPy itself loaded.

NumPy's ``matmul`` always overwrites its output; BLAS's ``sgemm`` computes
``C = alpha * A @ B + beta * C``, so a momentum update ``v = mu * v - lr * a.T @ dz`` costs
one matrix product and no extra pass over ``v``. ``saxpy`` (``y += a * x``) is one fused
pass where NumPy needs two.

The routines come from the OpenBLAS bundled in NumPy's own wheel (``numpy.libs`` or
``numpy/.dylibs``), through ``ctypes``: the same library and thread pool NumPy uses, so
nothing extra is installed or loaded. (SciPy's BLAS wrappers would do the job too, but
SciPy bundles a second OpenBLAS whose threads compete with NumPy's for the cores: on two
cores that made training nine times slower.) Where the bundled library is not found
(NumPy built against a system BLAS or MKL), :data:`AVAILABLE` is False and the functions
fall back to NumPy operations with the same results.
"""

from __future__ import annotations

import ctypes
import glob
import os

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_PTR = ctypes.c_void_p  # raw addresses: ctypes' typed pointer casts cost ~6 us each


def _find():
    """(sgemm, saxpy) from NumPy's bundled OpenBLAS, or None."""
    root = os.path.dirname(np.__file__)
    patterns = [
        os.path.join(root, os.pardir, "numpy.libs", "*openblas*"),
        os.path.join(root, ".dylibs", "*openblas*"),
    ]
    for path in sorted(p for pattern in patterns for p in glob.glob(pattern)):
        try:
            lib = ctypes.CDLL(path)  # already loaded by NumPy: this returns the same library
        except OSError:
            continue
        for prefix, suffix, blasint in (
            ("scipy_", "64_", ctypes.c_int64),
            ("", "64_", ctypes.c_int64),
            ("scipy_", "", ctypes.c_int32),
            ("", "", ctypes.c_int32),
        ):
            try:
                gemm = getattr(lib, f"{prefix}cblas_sgemm{suffix}")
                axpy = getattr(lib, f"{prefix}cblas_saxpy{suffix}")
            except AttributeError:
                continue
            gemm.restype = axpy.restype = None
            gemm.argtypes = [
                ctypes.c_int,
                ctypes.c_int,
                ctypes.c_int,
                blasint,
                blasint,
                blasint,
                ctypes.c_float,
                _PTR,
                blasint,
                _PTR,
                blasint,
                ctypes.c_float,
                _PTR,
                blasint,
            ]
            axpy.argtypes = [blasint, ctypes.c_float, _PTR, blasint, _PTR, blasint]
            return gemm, axpy
    return None


# Below this many elements NumPy's two passes beat one BLAS pass: a ctypes call costs ~4 us.
_SMALL = 1 << 16

_ROUTINES = None if os.environ.get("MNIST_MLP_NO_BLAS") else _find()
AVAILABLE = _ROUTINES is not None


def _check(*arrays: np.ndarray) -> None:
    # ctypes trusts us with raw pointers: a wrong dtype or layout would corrupt memory.
    for a in arrays:
        if a.dtype != np.float32 or not a.flags.c_contiguous:
            raise ValueError("BLAS routines here need C-contiguous float32 arrays")


def gemm_tn(c: np.ndarray, a: np.ndarray, b: np.ndarray, alpha: float, beta: float) -> None:
    """``c = alpha * a.T @ b + beta * c``, in place.

    Parameters
    ----------
    c : ndarray of shape (m, n), float32, C-contiguous
    a : ndarray of shape (k, m), float32, C-contiguous
    b : ndarray of shape (k, n), float32, C-contiguous
    """
    k, m = a.shape
    if b.shape[0] != k or c.shape != (m, b.shape[1]):
        raise ValueError(
            f"gemm_tn shapes do not fit: c {c.shape}, a.T {a.shape[::-1]}, b {b.shape}"
        )
    if not AVAILABLE:
        if beta == 0:  # as BLAS: c's old contents are not read (they may be uninitialised)
            np.multiply(a.T @ b, np.float32(alpha), out=c)
            return
        c *= np.float32(beta)
        c += np.float32(alpha) * (a.T @ b)
        return
    _check(c, a, b)
    n = b.shape[1]
    assert _ROUTINES is not None
    _ROUTINES[0](
        _ROW_MAJOR,
        _TRANS,
        _NO_TRANS,
        m,
        n,
        k,
        alpha,
        a.ctypes.data,
        m,
        b.ctypes.data,
        n,
        beta,
        c.ctypes.data,
        n,
    )


def axpy(y: np.ndarray, x: np.ndarray, alpha: float) -> None:
    """``y += alpha * x``, in place, for arrays of the same shape."""
    if x.shape != y.shape:
        raise ValueError(f"axpy shapes differ: {x.shape} and {y.shape}")
    if not AVAILABLE or x.size < _SMALL:
        y += np.float32(alpha) * x
        return
    _check(x, y)
    assert _ROUTINES is not None
    _ROUTINES[1](x.size, alpha, x.ctypes.data, 1, y.ctypes.data, 1)
