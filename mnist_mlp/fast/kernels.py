"""Compiled versions of a few small passes of a training step, where they are built.

Two matrix products take about four fifths of a training step, and OpenBLAS already runs
them at the machine's limit. The rest is a dozen passes over the hidden layer's (B, 1024)
floats or the (B, 10) logits, each one or more NumPy calls, and NumPy cannot fuse two passes
into one. ``_kernels.c`` does, for four of them (microseconds per batch of 128 inside a
training step on the two-core development machine, NumPy -> compiled):

- :func:`bias_relu`: ``max(z + b, 0)``, two passes in one (67 -> 22);
- :func:`backprop_relu`: ``(dz @ w.T) * (a > 0)`` for a thin ``w`` (the output layer's 10
  columns, where BLAS is slow), masked before the result leaves the registers (130 -> 70;
  used only on x86-64 CPUs with AVX2 and FMA, see :data:`WIDE`);
- :func:`softmax_cross_entropy`: the loss and its gradient in one pass over the logits,
  where NumPy makes ten small calls (55 -> 15);
- :func:`scale_pixels`: a batch's uint8 pixels gathered from the training set and
  standardised to float32 in one pass, fetching rows from memory ahead (90 -> 44);
- :func:`gather_inked`: the columns inked somewhere in a batch and their scaled pixels, for
  the step that leaves blank pixels out (:class:`mnist_mlp.model.InkedColumns`);
- :func:`update_inked`: that step's first-layer update, the blank rows' gradient added as
  one vector, and the new weights' column sums, in one pass over the weights;
- :func:`distort`: a batch's random distortions (:mod:`mnist_mlp.augment`), each digit's
  elastic fields blurred and its pixels resampled while they stay in the cache, where NumPy
  goes through a dozen (B, 784) temporaries (an epoch's 55,000 digits in one thread, the
  random draws included: 1.0 -> 0.44 s).

The NumPy code in :mod:`mnist_mlp.fast.step`, :mod:`mnist_mlp.fast.inked`, :mod:`mnist_mlp.data`
and :mod:`mnist_mlp.augment` stays the definition; tests check that both agree (and the fast
step against :mod:`mnist_mlp.model`, the reference).

``pip install`` compiles ``_kernels.c`` (see ``setup.py``) when a C compiler is at hand and
carries on without it when not. :data:`AVAILABLE` says whether it was built; the environment
variable ``MNIST_MLP_NO_KERNELS=1`` turns it off, to compare or to rule it out.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import numpy as np

_c: Any
try:
    _c = importlib.import_module("mnist_mlp.fast._kernels")
except ImportError:  # not compiled: no C compiler when installed, or a source checkout
    _c = None

if os.environ.get("MNIST_MLP_NO_KERNELS"):
    _c = None
AVAILABLE = _c is not None

# backprop_relu beats BLAS for a thin w only (against NumPy at batch 128, 1024 rows): 2x faster
# at 10 columns inside a training step (7x alone), 3x alone at 32, slower at 128. And only where
# its 8-float vectors are native (x86-64 with AVX2 and FMA): elsewhere it is many times slower.
THIN = 32
WIDE = AVAILABLE and bool(_c.WIDE_VECTORS)


def fits(*arrays: np.ndarray) -> bool:
    """Whether the kernels are built and can take these arrays (C-ordered float32)."""
    return AVAILABLE and all(a.dtype == np.float32 and a.flags.c_contiguous for a in arrays)


def backprop_fits(dz: np.ndarray, w: np.ndarray, a: np.ndarray) -> bool:
    """Whether :func:`backprop_relu` is the faster way for these arrays, here."""
    return WIDE and w.shape[1] <= THIN and fits(dz, w, a)


def bias_relu(z: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``z = max(z + b, 0)`` in place, for z (B, n) and b (n,); returns z."""
    rows, cols = z.shape
    if b.shape != (cols,):
        raise ValueError(f"bias_relu shapes do not fit: z {z.shape}, b {b.shape}")
    _c.bias_relu(z, b, rows, cols)
    return z


def backprop_relu(dz: np.ndarray, w: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``(dz @ w.T) * (a > 0)`` as a new array: back through a layer and the ReLU before it.

    Parameters
    ----------
    dz : ndarray of shape (B, k), float32
        Gradient at the layer's output.
    w : ndarray of shape (n, k), float32
        The layer's weights; fast for k up to :data:`THIN`.
    a : ndarray of shape (B, n), float32
        The layer's input, the ReLU's output.

    Returns
    -------
    ndarray of shape (B, n), float32
    """
    rows, k = dz.shape
    n = w.shape[0]
    if w.shape[1] != k or a.shape != (rows, n):
        raise ValueError(
            f"backprop_relu shapes do not fit: dz {dz.shape}, w {w.shape}, a {a.shape}"
        )
    out = np.empty((rows, n), np.float32)
    _c.backprop_relu(out, dz, w, a, rows, n, k)
    return out


def softmax_cross_entropy(
    logits: np.ndarray, y: np.ndarray, smoothing: float = 0.0
) -> tuple[float, np.ndarray]:
    """:func:`mnist_mlp.model.softmax_cross_entropy`: (mean loss, gradient), in place in
    ``logits``."""
    rows, k = logits.shape
    y = np.ascontiguousarray(y, np.int64)
    if y.shape != (rows,):
        raise ValueError(f"{rows} rows of logits but labels of shape {y.shape}")
    return _c.softmax_cross_entropy(logits, y, rows, k, smoothing), logits


def scale_pixels(
    images: np.ndarray, out: np.ndarray, scale: float, offset: float, rows: np.ndarray | None = None
) -> np.ndarray:
    """``out = images[rows] * scale + offset`` (all of ``images`` if ``rows`` is None).

    Parameters
    ----------
    images : ndarray of shape (N, d), uint8
    out : ndarray of shape (B, d), float32
        B = len(rows), or N.
    rows : ndarray of shape (B,), int, optional
        Each in 0 .. N - 1 (no negative indices from the end).

    Returns
    -------
    out
    """
    n_out, d = out.shape
    if images.shape[1:] != (d,):
        raise ValueError(f"images of shape {images.shape} do not fit out of shape {out.shape}")
    if rows is not None:
        rows = np.ascontiguousarray(rows, np.int64)
    elif len(images) != n_out:
        raise ValueError(f"{len(images)} images for {n_out} rows of out")
    _c.scale_pixels(out, images, rows, n_out, len(images), d, scale, offset)
    return out


def gather_inked(
    images: np.ndarray,
    values: np.ndarray,
    cols: np.ndarray,
    scale: float,
    rows: np.ndarray | None = None,
    max_k: int | None = None,
) -> int:
    """The columns inked in some image of a batch, and those pixels * scale.

    Parameters
    ----------
    images : ndarray of shape (N, d), uint8
    values : ndarray of shape (B * d,), float32
        Receives the (B, K) values, row-major, in its first B * K items.
    cols : ndarray of shape (d,), int64
        Receives the K inked columns, ascending, in its first K items.
    rows : ndarray of shape (B,), int, optional
        The batch's rows of ``images`` (all of ``images`` if None).
    max_k : int, optional
        When more than this many columns are inked, only K is found (nothing gathered).

    Returns
    -------
    int
        K.
    """
    d = images.shape[1]
    n_out = len(images) if rows is None else len(rows)
    if rows is not None:
        rows = np.ascontiguousarray(rows, np.int64)
    return _c.gather_inked(
        values[: n_out * d],
        cols,
        images,
        rows,
        n_out,
        len(images),
        d,
        scale,
        d if max_k is None else max_k,
    )


def update_inked(
    p: np.ndarray,
    w: np.ndarray,
    g: np.ndarray,
    cols: np.ndarray,
    v: np.ndarray,
    s: np.ndarray,
    decay: float,
    mu: float,
) -> None:
    """``p = decay * w - mu * p + v``, plus ``g[c]`` on row ``cols[c]``; ``s = p.sum(axis=0)``.

    Parameters
    ----------
    p, w : ndarray of shape (n_in, n), float32
    g : ndarray of shape (K, n), float32
    cols : ndarray of shape (K,), int64, ascending
    v, s : ndarray of shape (n,), float32
    """
    n_in, n = p.shape
    _c.update_inked(p, w, g, np.ascontiguousarray(cols, np.int64), v, s, n_in, n, len(g), decay, mu)


def distort(
    images: np.ndarray, inverse: np.ndarray, field: np.ndarray | None, g: np.ndarray, alpha: float
) -> np.ndarray:
    """:meth:`mnist_mlp.augment.Augmenter` 's resampling, for a whole batch in one call.

    Parameters
    ----------
    images : ndarray of shape (B, 784), uint8
    inverse : ndarray of shape (B, 6), float32
        Per image the inverse affine map's rows (a, b, c, d) and the shift (y, x):
        the source of output pixel p is ``[[a, b], [c, d]] @ (p - centre - shift) + centre``.
    field : ndarray of shape (2, B, 28, 28), float32, or None
        Uniform [0, 1) draws for the elastic displacements (the dy fields, then the dx fields); each
        becomes ``alpha * g @ (2 u - 1) @ g.T``. None: no elastic part.
    g : ndarray of shape (28, 28), float32
        The Gaussian blurring matrix (:func:`mnist_mlp.augment.gaussian_matrix`).

    Returns
    -------
    ndarray of shape (B, 784), uint8
    """
    n = len(images)
    out = np.empty((n, images.shape[1]), np.uint8)
    field = None if field is None else np.ascontiguousarray(field, np.float32)
    _c.distort(
        out,
        np.ascontiguousarray(images),
        np.ascontiguousarray(inverse, np.float32),
        field,
        np.ascontiguousarray(g, np.float32),
        alpha,
        n,
    )
    return out
