"""A batch with the pixel columns that are blank in all its images left out.

A third of the 784 pixel columns are 0 in every image of a batch of 128 MNIST digits, and the
step's two large products, ``X @ W1`` and ``X.T @ dZ1``, do work for them that adds nothing but
a constant. The input is x = pixel * scale + offset, so with P the scaled pixels (0 where
blank) both products split exactly::

    X @ W1    = P[:, inked] @ W1[inked]   + offset * (column sums of W1)      a vector
    X.T @ dZ1 = scatter(P[:, inked].T @ dZ1 into the inked rows)
                                          + offset * (column sums of dZ1)     the same for every row

:class:`InkedColumns` is a batch in that form; the fast step (:mod:`mnist_mlp.fast.step`)
takes it in place of X, and :meth:`InkedColumns.dense` gives back the X it stands for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mnist_mlp.data import OFFSET, SCALE
from mnist_mlp.fast import blas, kernels
from mnist_mlp.model import N_INPUTS


@dataclass
class InkedColumns:
    """A batch's inputs with the pixel columns that are blank in every image left out.

    Stands for the dense inputs ``X = pixels * scale + offset`` of shape (B, n_inputs), whose
    blank columns all equal ``offset`` (see the module docstring).

    Attributes
    ----------
    values : ndarray of shape (B, K), float32
        ``pixels * scale`` of the K columns inked in some image of the batch.
    cols : ndarray of shape (K,), intp
        Those columns, ascending.
    offset : float
    n_inputs : int
        The dense width, 784.
    w_colsum : ndarray of shape (n_1,), optional
        The column sums of W1, ``W1.sum(axis=0)``, when the caller keeps them (the optimiser
        does, as it writes W1); computed when None.
    """

    values: np.ndarray
    cols: np.ndarray
    offset: float
    n_inputs: int = N_INPUTS
    w_colsum: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.values)

    def dense(self) -> np.ndarray:
        """The dense inputs X, ndarray of shape (B, n_inputs): what this form stands for."""
        x = np.full((len(self.values), self.n_inputs), self.offset, self.values.dtype)
        x[:, self.cols] += self.values
        return x

    def column_sums(self, w: np.ndarray) -> np.ndarray:
        """``w.sum(axis=0)``, row by row in order (so a kept copy and a fresh one are equal)."""
        return self.w_colsum if self.w_colsum is not None else w.sum(axis=0)

    def matmul(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``X @ w`` as (the product over the inked rows (B, n), the blank terms (n,)).

        The blank terms are the same for every row of the batch: a vector to add like a bias.
        """
        # fancy indexing copies the rows 3x faster than np.take
        z = blas.matmul(self.values, w[self.cols])  # (B, K) @ (K, n)
        return z, np.float32(self.offset) * self.column_sums(w)

    def t_matmul(self, dz: np.ndarray) -> np.ndarray:
        """``X.T @ dz``, ndarray of shape (n_inputs, n): every row gets offset * the column sums
        of dz, and the inked rows their product besides."""
        out = np.empty((self.n_inputs, dz.shape[1]), dz.dtype)
        out[:] = np.float32(self.offset) * dz.sum(axis=0)
        inked = np.empty((len(self.cols), dz.shape[1]), dz.dtype)
        blas.gemm(inked, self.values, dz, trans_a=True)
        out[self.cols] += inked
        return out


def inked_columns(
    images: np.ndarray,
    scale: float = SCALE,
    offset: float = OFFSET,
    rows: np.ndarray | None = None,
    max_share: float = 1.0,
    values: np.ndarray | None = None,
    cols: np.ndarray | None = None,
) -> InkedColumns | None:
    """A batch of uint8 pixels (n, d) as :class:`InkedColumns`: the inputs with the columns
    blank in every image left out.

    Parameters
    ----------
    images : ndarray of shape (N, d), uint8
    scale, offset : float
        As for :func:`mnist_mlp.data.scale`.
    rows : ndarray of shape (B,), int, optional
        As for :func:`mnist_mlp.data.scale`: the batch is ``images[rows]``.
    max_share : float
        When more than this share of the d columns is inked, return None: the dense inputs
        (:func:`mnist_mlp.data.scale`) are then the faster way.
    values, cols : ndarray, optional
        Scratch space for the compiled path: float32 of size >= B * d, int64 of size d.

    Returns
    -------
    InkedColumns or None
    """
    d = images.shape[1]
    n = len(images) if rows is None else len(rows)
    max_k = int(max_share * d)
    if kernels.AVAILABLE and images.dtype == np.uint8 and images.flags.c_contiguous:
        values = np.empty(n * d, np.float32) if values is None else values
        cols = np.empty(d, np.int64) if cols is None else cols
        # the lines below, in one pass
        k = kernels.gather_inked(images, values, cols, scale, rows, max_k)
        return (
            None if k > max_k else InkedColumns(values[: n * k].reshape(n, k), cols[:k], offset, d)
        )
    batch = images if rows is None else images[rows]
    inked = np.flatnonzero(np.bitwise_or.reduce(batch, axis=0))  # (K,): columns inked somewhere
    if len(inked) > max_k:
        return None
    # fancy indexing on axis 1 gives Fortran order
    picked = batch[:, inked].astype(np.float32, order="C")
    picked *= np.float32(scale)
    return InkedColumns(picked, inked, offset, d)
