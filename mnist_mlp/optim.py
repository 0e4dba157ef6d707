"""Minibatch SGD with momentum (optionally Nesterov's) and learning-rate schedules.

Momentum is kept in the form of Sutskever et al. (2013): the velocity is the step itself,

    v = mu * v - lr * (g + l2 * w)
    w = w + v                                 (classical)
    w = w + mu * v - lr * (g + l2 * w)        (Nesterov: the step seen from the look-ahead point)

:func:`sgd_step` is that update, on the gradients :func:`mnist_mlp.model.backward` returns
(the L2 term included). Training runs it through :mod:`mnist_mlp.fast.sgd`: Nesterov's as it
is, classical momentum as :class:`~mnist_mlp.fast.sgd.FusedSGD`, which multiplies each
gradient straight into the update; tests check that both give the same weights.

The optimiser's state is a dict of arrays beside the weights, so it saves into a checkpoint
and a resumed run continues exactly. Its form (:data:`FORMS`) depends on the optimiser:
velocities for :func:`sgd_step`, the previous weights for ``FusedSGD``, which uses that
classical momentum's velocity is exactly the last step, ``v_t = w_t - w_{t-1}``.
"""

from __future__ import annotations

import math

import numpy as np

from mnist_mlp.model import Params


def init_state(params: Params) -> Params:
    """Zero velocities shaped like ``params``."""
    return {k: np.zeros_like(v) for k, v in params.items()}


def sgd_step(
    params: Params,
    grads: Params,
    velocity: Params,
    lr: float,
    momentum: float,
    nesterov: bool = False,
) -> None:
    """One step of SGD with momentum: update ``params`` and ``velocity`` in place.

    Parameters
    ----------
    params, velocity : dict of arrays
        The weights and their velocities, changed in place.
    grads : dict of arrays
        dL/dparam, the L2 term included (``model.backward(..., l2=...)``).
    lr, momentum : float
    nesterov : bool
    """
    for key, w in params.items():
        g, v = grads[key], velocity[key]
        real = w.dtype.type  # float32 in training; float64 where mlp learn works in it
        rate, mu = real(lr), real(momentum)
        v *= mu
        v -= rate * g  # v = mu v - lr g
        if nesterov:
            w -= rate * g
            w += mu * v  # w = w + mu v - lr g
        else:
            w += v  # w = w + v


FORMS = ("velocity", "previous")  # v_t, or w_{t-1}: the two forms of the momentum state


def other_form(params: Params, buffers: Params) -> Params:
    """Momentum buffers in the other form: previous weights from velocities, or the reverse.

    Both directions are ``w - buffer`` (``w_prev = w - v`` and ``v = w - w_prev``). In float32
    a round trip is not exact (``w - (w - v)`` rounds ``v`` to ``w``'s precision), so a run
    converts only when it starts from a state in the other form, never back and forth.
    """
    return {k: w - buffers[k] for k, w in params.items()}


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


def learning_rate(
    progress: float,
    base: float,
    total_epochs: int,
    schedule: str,
    warmup_epochs: float = 0.0,
    step_every: int = 10,
    step_gamma: float = 0.1,
) -> float:
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


def ema_update(averaged: Params, params: Params, decay: float, steps: int) -> None:
    """One step of an exponential moving average of the weights, in place::

        avg <- d avg + (1 - d) w,   d = min(decay, (1 + t) / (10 + t))

    after step t (1, 2, ...): the smaller early decay lets the first steps' weights, still near
    their random start, fade quickly (as TensorFlow's ``num_updates``). An empty ``averaged``
    starts as a copy of ``params``.

    Parameters
    ----------
    averaged, params : dict of arrays
        The average (changed in place, or filled) and the weights after step ``steps``.
    decay : float
        In (0, 1).
    """
    if not averaged:
        averaged.update({k: v.copy() for k, v in params.items()})
        return
    d = min(decay, (1 + steps) / (10 + steps))
    for key, w in params.items():
        a = averaged[key]
        real = a.dtype.type
        a *= real(d)
        a += real(1 - d) * w
