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

import contextlib
import ctypes
import glob
import os

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_PTR = ctypes.c_void_p  # raw addresses: ctypes' typed pointer casts cost ~6 us each


def _library_paths() -> list[str]:
    """Where NumPy's wheel bundles its OpenBLAS (Linux, macOS)."""
    root = os.path.dirname(np.__file__)
    patterns = [
        os.path.join(root, os.pardir, "numpy.libs", "*openblas*"),
        os.path.join(root, ".dylibs", "*openblas*"),
    ]
    return sorted(p for pattern in patterns for p in glob.glob(pattern))


def _find():
    """(sgemm, saxpy) from NumPy's bundled OpenBLAS, or None."""
    for path in _library_paths():
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


# A product's sum over k is cut into chunks of at most this many terms, each one BLAS call
# accumulating into the result. OpenBLAS cuts k into blocks of its own (GEMM_Q: 512 floats for
# SkylakeX, 384 for Haswell and Zen), and where k lies between one and two blocks it cuts it
# differently on one thread and on several: x @ W1 (k = 784) gave other float32 sums on 1 and 2
# threads, so the same run ended with other weights. A chunk no longer than any block is summed
# in one piece, in the same order on any number of threads.
K_CHUNK = 256


def _chunks(k: int) -> list[slice]:
    """``range(k)`` in equal slices of at most :data:`K_CHUNK`."""
    n = -(-k // K_CHUNK)
    size = -(-k // n) if n else 0
    return [slice(i, min(i + size, k)) for i in range(0, k, size)] if k else []


def gemm(
    c: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    alpha: float = 1.0,
    beta: float = 0.0,
    trans_a: bool = False,
    trans_b: bool = False,
) -> None:
    """``c = alpha * op(a) @ op(b) + beta * c`` in place, op(x) = ``x.T`` where asked, its sum
    over k taken in chunks (:data:`K_CHUNK`), so the result is the same on any thread count.

    Parameters
    ----------
    c : ndarray of shape (m, n), float32, C-contiguous
    a : ndarray of shape (m, k), or (k, m) with ``trans_a``; float32, rows contiguous
        (a slice of columns of a larger array will do)
    b : ndarray of shape (k, n), or (n, k) with ``trans_b``; float32, rows contiguous
    """
    m, k = a.shape[::-1] if trans_a else a.shape
    kb, n = b.shape[::-1] if trans_b else b.shape
    if kb != k or c.shape != (m, n):
        raise ValueError(f"gemm shapes do not fit: c {c.shape}, op(a) {(m, k)}, op(b) {(kb, n)}")
    if not k:
        c *= np.float32(beta)
        return
    for i, part in enumerate(_chunks(k)):
        a_part = a[part] if trans_a else a[:, part]
        b_part = b[:, part] if trans_b else b[part]
        _gemm(c, a_part, b_part, alpha, beta if i == 0 else 1.0, trans_a, trans_b)


def _gemm(c, a, b, alpha: float, beta: float, trans_a: bool, trans_b: bool) -> None:
    """One BLAS call (or NumPy's product where the bundled BLAS is not found)."""
    if not AVAILABLE or not _rows_contiguous(c, a, b):
        product = (a.T if trans_a else a) @ (b.T if trans_b else b)
        if beta == 0:  # as BLAS: c's old contents are not read (they may be uninitialised)
            np.multiply(product, np.float32(alpha), out=c)
        else:
            c *= np.float32(beta)
            c += np.float32(alpha) * product
        return
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    assert _ROUTINES is not None
    _ROUTINES[0](
        _ROW_MAJOR,
        _TRANS if trans_a else _NO_TRANS,
        _TRANS if trans_b else _NO_TRANS,
        m,
        n,
        k,
        alpha,
        a.ctypes.data,
        a.strides[0] // 4,
        b.ctypes.data,
        b.strides[0] // 4,
        beta,
        c.ctypes.data,
        c.strides[0] // 4,
    )


def _rows_contiguous(*arrays: np.ndarray) -> bool:
    """float32 matrices whose rows are contiguous and evenly spaced, as BLAS takes them."""
    return all(
        x.dtype == np.float32
        and x.ndim == 2
        and x.strides[1] == 4
        and x.strides[0] % 4 == 0
        and x.strides[0] >= 4 * max(x.shape[1], 1)
        for x in arrays
    )


def gemm_tn(c: np.ndarray, a: np.ndarray, b: np.ndarray, alpha: float, beta: float) -> None:
    """``c = alpha * a.T @ b + beta * c``, in place (:func:`gemm` with ``trans_a``).

    Parameters
    ----------
    c : ndarray of shape (m, n), float32, C-contiguous
    a : ndarray of shape (k, m), float32, C-contiguous
    b : ndarray of shape (k, n), float32, C-contiguous
    """
    gemm(c, a, b, alpha, beta, trans_a=True)


def matmul(
    a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None, trans_b: bool = False
) -> np.ndarray:
    """``a @ b`` (``a @ b.T`` with ``trans_b``) for float32 matrices, the same on any thread
    count (:func:`gemm`).

    Returns
    -------
    ndarray of shape (m, n), float32: ``out`` if given.
    """
    right = b.T if trans_b else b
    if a.dtype != np.float32 or b.dtype != np.float32:
        return np.matmul(a, right, out=out)  # not a training product (float64 in tests)
    if out is None:
        out = np.empty((a.shape[0], right.shape[1]), np.float32)
    gemm(out, a, b, trans_b=trans_b)
    return out


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


def _thread_routines():
    """(get, set) of the bundled OpenBLAS's thread count, or None."""
    if not AVAILABLE:
        return None
    for path in _library_paths():
        lib = ctypes.CDLL(path)
        for prefix, suffix in (("scipy_", "64_"), ("", "64_"), ("scipy_", ""), ("", "")):
            try:
                get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")
                put = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}")
            except AttributeError:
                continue
            get.restype, put.restype, put.argtypes = ctypes.c_int, None, [ctypes.c_int]
            return get, put
    return None


_THREADS = _thread_routines()


def thread_count() -> int | None:
    """How many threads BLAS runs with now (joblib's workers and sweeps limit them); None where
    the bundled OpenBLAS is not found."""
    return None if _THREADS is None else int(_THREADS[0]())


@contextlib.contextmanager
def threads(n: int):
    """Run BLAS on ``n`` threads inside (where the bundled OpenBLAS is found), then as before."""
    if _THREADS is None:
        yield
        return
    get, put = _THREADS
    before = get()
    if before == n:
        yield
        return
    put(n)
    try:
        yield
    finally:
        put(before)
