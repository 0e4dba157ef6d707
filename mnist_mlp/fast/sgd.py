"""The updates of the fast step, which take each weight gradient as two factors.

The fast backward pass (:func:`mnist_mlp.fast.step.backward`) never stores a weight gradient
``a_prev.T @ dz``: it hands the update the two factors, ``sgd(key, a_prev, dz)``, and the update
decides how to multiply them. Both classes here are such updates, with the same two calls:
``sgd(key, a_prev, dz)`` for each parameter, then ``sgd.apply(params)``.

- :class:`FusedSGD`, classical momentum: BLAS multiplies the factors straight into the update,
  two passes over each weight matrix a step;
- :class:`BufferedSGD`, Nesterov's momentum: the gradients are multiplied out into buffers
  and :func:`mnist_mlp.optim.sgd_step`, the reference update, applies them.
"""

from __future__ import annotations

import numpy as np

from mnist_mlp import optim
from mnist_mlp.fast import blas, kernels
from mnist_mlp.fast.inked import InkedColumns
from mnist_mlp.model import Params


class FusedSGD:
    """Classical momentum SGD that takes each gradient as the factors of its matrix product.

    With ``v_t = w_t - w_{t-1}`` the velocity drops out of the update (the "heavy-ball" form):

        w_{t+1} = (1 + mu - lr * l2) * w_t  +  (-mu * w_{t-1} - lr * g)

    BLAS's ``sgemm`` computes ``C = alpha * A @ B + beta * C``, so the bracket is one matrix
    product into the buffer that holds ``w_{t-1}`` (``beta = -mu``, ``alpha = -lr``, and
    ``g = a_prev.T @ dz``); one ``saxpy`` adds the first term; then the two buffers trade
    places. That is two passes over each weight matrix per step, where the velocity form
    needs three and NumPy's plain update six.

    Hand it to :func:`mnist_mlp.fast.step.backward`, then call :meth:`apply`::

        sgd.lr = lr
        step.backward(params, cache, dz, activation, sgd)
        sgd.apply(params)

    Parameters
    ----------
    previous : dict of float32 arrays
        The weights before the last step (a copy of the weights at the start); its arrays
        and those of ``params`` are swapped at every step, so a checkpoint saves this dict.
    momentum, l2 : float
    """

    def __init__(self, previous: Params, momentum: float, l2: float):
        self.previous, self.momentum, self.l2 = previous, float(momentum), float(l2)
        self.lr = 0.0
        self._ones = np.ones(0, np.float32)
        self._inked: dict[str, tuple] = {}  # steps begun from InkedColumns, finished by apply()
        self._scratch: dict[str, np.ndarray] = {}
        # W1.sum(axis=0) of the weights in params, where the last step wrote them (for the next
        # InkedColumns); absent where unknown.
        self.column_sums: dict[str, np.ndarray] = {}

    def __call__(self, key: str, a_prev: np.ndarray | InkedColumns | None, dz: np.ndarray) -> None:
        """Start one parameter's step: ``w_prev = -mu * w_prev - lr * a_prev.T @ dz``.

        For a bias, ``a_prev`` is None and the gradient is ``dz.sum(axis=0)``. For
        :class:`~mnist_mlp.fast.inked.InkedColumns`, only the inked rows' product is taken here
        (into scratch space); :meth:`apply` does the rest in its pass over the weights.
        """
        p = self.previous[key]
        if a_prev is None:
            g = self._column_sums(dz)
            g *= np.float32(-self.lr)
            p *= np.float32(-self.momentum)
            p += g
        elif isinstance(a_prev, InkedColumns):
            # X.T @ dz = the inked rows' product, plus offset * colsum(dz) on every row
            k, n = len(a_prev.cols), dz.shape[1]
            if self._scratch.get(key) is None or self._scratch[key].size < p.size:
                self._scratch[key] = np.zeros(p.size, np.float32)
            g = self._scratch[key][: k * n].reshape(k, n)
            blas.gemm_tn(g, a_prev.values, dz, alpha=-self.lr, beta=0.0)
            v = self._column_sums(dz)
            v *= np.float32(-self.lr * a_prev.offset)
            self._inked[key] = (a_prev.cols, g, v)
        else:
            blas.gemm_tn(p, a_prev, dz, alpha=-self.lr, beta=-self.momentum)

    def _column_sums(self, dz: np.ndarray) -> np.ndarray:
        if len(self._ones) != len(dz):
            self._ones = np.ones(len(dz), np.float32)
        return self._ones @ dz  # the column sum as a matrix-vector product: a third faster

    def apply(self, params: Params) -> None:
        """Finish every step: add ``(1 + mu - lr * l2) * w``, then swap weights and buffer."""
        for key, w in params.items():
            p = self.previous[key]
            decay = self.lr * self.l2 if key.startswith("W") else 0.0  # biases are not penalised
            keep = 1.0 + self.momentum - decay
            inked = self._inked.pop(key, None)
            self.column_sums.pop(key, None)
            if inked is None:
                blas.axpy(p, w, keep)  # p is now w_{t+1}
            elif kernels.fits(p, w, inked[1], inked[2]):
                cols, g, v = inked
                sums = np.empty(p.shape[1], np.float32)
                # the lines below, and sums
                kernels.update_inked(p, w, g, cols, v, sums, keep, self.momentum)
                self.column_sums[key] = sums
            else:
                cols, g, v = inked
                p *= np.float32(-self.momentum)
                p += v  # the gradient of every row, blank or not
                p[cols] += g  # the inked rows' own
                blas.axpy(p, w, keep)
            params[key], self.previous[key] = p, w


class BufferedSGD:
    """Nesterov's momentum: the gradients multiplied out into buffers, then
    :func:`mnist_mlp.optim.sgd_step`.

    Parameters
    ----------
    velocity : dict of float32 arrays
        The velocities, updated in place (a checkpoint saves this dict).
    momentum, l2 : float
    """

    def __init__(self, velocity: Params, momentum: float, l2: float):
        self.velocity, self.momentum, self.l2 = velocity, float(momentum), float(l2)
        self.lr = 0.0
        self.grads = {k: np.empty_like(v) for k, v in velocity.items()}

    def __call__(self, key: str, a_prev: np.ndarray | InkedColumns | None, dz: np.ndarray) -> None:
        """One parameter's gradient: ``a_prev.T @ dz``, or ``dz.sum(axis=0)`` for a bias."""
        g = self.grads[key]
        if a_prev is None:
            np.sum(dz, axis=0, out=g)
        elif isinstance(a_prev, InkedColumns):
            g[:] = a_prev.t_matmul(dz)
        else:
            blas.gemm(g, a_prev, dz, trans_a=True)

    def apply(self, params: Params) -> None:
        """Add the L2 term to the weights' gradients and take the step."""
        if self.l2:
            for key, w in params.items():
                if key.startswith("W"):
                    self.grads[key] += self.l2 * w
        optim.sgd_step(params, self.grads, self.velocity, self.lr, self.momentum, nesterov=True)
