"""Minibatch SGD with momentum (optionally Nesterov's) and learning-rate schedules.

Momentum is kept in the form of Sutskever et al. (2013): the velocity is the step itself,

    v = mu * v - lr * (g + l2 * w)
    w = w + v                                 (classical)
    w = w + mu * v - lr * (g + l2 * w)        (Nesterov: the step seen from the look-ahead point)

Two implementations of the same update live here. :func:`sgd_step` takes the gradients that
:func:`mnist_mlp.model.backward` returns and is the one to read. :class:`FusedSGD` is what
training uses for classical momentum: each weight gradient reaches it as the two factors of
its matrix product and BLAS multiplies them straight into the update, so the gradient is
never stored. Tests check that both give the same weights.

The optimiser's state is a dict of arrays beside the weights, so it saves into a checkpoint
and a resumed run continues exactly. Its form (:data:`FORMS`) depends on the optimiser:
velocities for :func:`sgd_step`, the previous weights for :class:`FusedSGD`, which uses that
classical momentum's velocity is exactly the last step, ``v_t = w_t - w_{t-1}``.
"""

from __future__ import annotations

import math

import numpy as np

from mnist_mlp import blas, kernels
from mnist_mlp.model import InkedColumns, Params


def init_state(params: Params) -> Params:
    """Zero velocities shaped like ``params``."""
    return {k: np.zeros_like(v) for k, v in params.items()}


def sgd_step(params: Params, grads: Params, velocity: Params, lr: float, momentum: float,
             nesterov: bool = False) -> None:
    """Update ``params`` and ``velocity`` in place; ``grads`` is used as scratch space.

    ``grads`` must already include the L2 term (``model.backward(..., l2=...)``).
    """
    lr, mu = np.float32(lr), np.float32(momentum)
    for key, w in params.items():
        g, v = grads[key], velocity[key]
        g *= -lr  # now the plain gradient step
        v *= mu
        v += g
        if nesterov:
            w += g
            w += np.multiply(v, mu, out=g)  # g is free now: scratch for mu * v
        else:
            w += v


FORMS = ("velocity", "previous")  # v_t, or w_{t-1}: the two forms of the momentum state


def other_form(params: Params, buffers: Params) -> Params:
    """Momentum buffers in the other form: previous weights from velocities, or the reverse.

    Both directions are ``w - buffer`` (``w_prev = w - v`` and ``v = w - w_prev``). In float32
    a round trip is not exact (``w - (w - v)`` rounds ``v`` to ``w``'s precision), so a run
    converts only when it starts from a state in the other form, never back and forth.
    """
    return {k: w - buffers[k] for k, w in params.items()}


class FusedSGD:
    """Classical momentum SGD that takes each gradient as the factors of its matrix product.

    With ``v_t = w_t - w_{t-1}`` the velocity drops out of the update (the "heavy-ball" form):

        w_{t+1} = (1 + mu - lr * l2) * w_t  +  (-mu * w_{t-1} - lr * g)

    BLAS's ``sgemm`` computes ``C = alpha * A @ B + beta * C``, so the bracket is one matrix
    product into the buffer that holds ``w_{t-1}`` (``beta = -mu``, ``alpha = -lr``, and
    ``g = a_prev.T @ dz``); one ``saxpy`` adds the first term; then the two buffers trade
    places. That is two passes over each weight matrix per step, where the velocity form
    needs three and NumPy's plain update six.

    Use it as the ``sink`` of :func:`mnist_mlp.model.backward`, then call :meth:`apply`::

        sgd.lr = lr
        model.backward(params, activations, masks, dz, activation, sink=sgd)
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
        :class:`~mnist_mlp.model.InkedColumns`, only the inked rows' product is taken here
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
            g = self._scratch[key][:k * n].reshape(k, n)
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
                kernels.update_inked(p, w, g, cols, v, sums, keep, self.momentum)  # the lines below, and sums
                self.column_sums[key] = sums
            else:
                cols, g, v = inked
                p *= np.float32(-self.momentum)
                p += v  # the gradient of every row, blank or not
                p[cols] += g  # the inked rows' own
                blas.axpy(p, w, keep)
            params[key], self.previous[key] = p, w


def clip_norms(params: Params, max_norm: float, previous: Params | None = None) -> None:
    """Rescale, in place, each hidden unit's incoming weight vector to norm <= ``max_norm``.

    The max-norm constraint of Srivastava et al. (2014), used with dropout: a column
    ``W[:, j]`` holds the weights into unit j. ``previous`` (:class:`FusedSGD`'s state) moves
    with the weights, so that the velocity ``w - previous`` is left as it was.
    """
    for key, w in params.items():
        if key.startswith("W"):
            norms = np.sqrt(np.einsum("ij,ij->j", w, w))  # (fan_out,)
            np.minimum(1, max_norm / np.maximum(norms, 1e-12), out=norms)
            scale = norms.astype(np.float32)
            if previous is not None:
                previous[key] += w * (scale - 1)  # the same shift as the weights get below
            w *= scale


def learning_rate(progress: float, base: float, total_epochs: int, schedule: str,
                  warmup_epochs: float = 0.0, step_every: int = 10, step_gamma: float = 0.1) -> float:
    """The learning rate at ``progress`` epochs into training (fractional within an epoch).

    Parameters
    ----------
    progress : float
        Epochs done so far, e.g. 2.5 halfway through the third epoch.
    base : float
        The peak learning rate.
    total_epochs : int
    schedule : {"constant", "step", "cosine"}
        ``step`` multiplies by ``step_gamma`` every ``step_every`` epochs; ``cosine`` decays
        from ``base`` to 0 along half a cosine over the epochs after warm-up.
    warmup_epochs : float
        Ramp linearly from 0 to ``base`` over this many epochs first (large learning rates
        with momentum can diverge in the first steps from a random start).
    """
    if warmup_epochs and progress < warmup_epochs:
        return base * progress / warmup_epochs
    if schedule == "constant":
        return base
    if schedule == "step":
        return base * step_gamma ** int(progress // step_every)
    if schedule == "cosine":
        span = max(total_epochs - warmup_epochs, 1e-9)
        t = min(max((progress - warmup_epochs) / span, 0.0), 1.0)
        return base * 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {schedule!r}")
