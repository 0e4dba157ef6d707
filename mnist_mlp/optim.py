"""Minibatch SGD with momentum (optionally Nesterov's) and learning-rate schedules.

Momentum is kept in the form of Sutskever et al. (2013): the velocity is the step itself,

    v = mu * v - lr * (g + l2 * w)
    w = w + v                                 (classical)
    w = w + mu * v - lr * (g + l2 * w)        (Nesterov: the step seen from the look-ahead point)

The optimiser's state is a dict of arrays (one velocity per parameter), so it saves into a
checkpoint beside the weights and a resumed run continues exactly.

Two implementations of the same update live here. :func:`sgd_step` takes the gradients that
:func:`mnist_mlp.model.backward` returns and is the one to read. :class:`FusedSGD` is what
training uses: each weight gradient reaches it as the two factors of its matrix product,
and BLAS multiplies them straight into the velocity (``sgemm`` computes
``C = alpha * A @ B + beta * C``; see :mod:`mnist_mlp.blas`), so the gradient is never
stored and the update costs two passes over each weight matrix instead of six. For the
784x1024 layer that is about a tenth of an epoch. Tests check that both give the same weights.
"""

from __future__ import annotations

import math

import numpy as np

from mnist_mlp import blas
from mnist_mlp.model import Params


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


class FusedSGD:
    """Classical momentum SGD that takes each gradient as the factors of its matrix product.

    Use it as the ``sink`` of :func:`mnist_mlp.model.backward`, then call :meth:`apply`::

        sgd.lr = lr
        model.backward(params, activations, masks, dz, activation, sink=sgd)
        sgd.apply(params)

    Parameters
    ----------
    velocity : dict of float32 arrays
        Updated in place (the same arrays a checkpoint saves).
    momentum, l2 : float
    """

    def __init__(self, velocity: Params, momentum: float, l2: float):
        self.velocity, self.momentum, self.l2 = velocity, float(momentum), float(l2)
        self.lr = 0.0

    def __call__(self, key: str, a_prev: np.ndarray | None, dz: np.ndarray) -> None:
        """Fold one gradient into its velocity: ``v = mu * v - lr * a_prev.T @ dz``.

        For a bias, ``a_prev`` is None and the gradient is ``dz.sum(axis=0)``.
        """
        v = self.velocity[key]
        if a_prev is None:
            v *= np.float32(self.momentum)
            v -= np.float32(self.lr) * dz.sum(axis=0)
        else:
            blas.gemm_tn(v, a_prev, dz, alpha=-self.lr, beta=self.momentum)

    def apply(self, params: Params) -> None:
        """Add the L2 term to each weight's velocity, then step: ``w += v``."""
        for key, w in params.items():
            v = self.velocity[key]
            if self.l2 and key.startswith("W"):
                blas.axpy(v, w, -self.lr * self.l2)  # v -= lr * l2 * w
            blas.axpy(w, v, 1.0)  # w += v


def clip_norms(params: Params, max_norm: float) -> None:
    """Rescale, in place, each hidden unit's incoming weight vector to norm <= ``max_norm``.

    The max-norm constraint of Srivastava et al. (2014), used with dropout: a column
    ``W[:, j]`` holds the weights into unit j.
    """
    for key, w in params.items():
        if key.startswith("W"):
            norms = np.sqrt(np.einsum("ij,ij->j", w, w))  # (fan_out,)
            np.minimum(1, max_norm / np.maximum(norms, 1e-12), out=norms)
            w *= norms.astype(np.float32)


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
