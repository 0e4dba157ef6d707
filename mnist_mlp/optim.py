"""Minibatch SGD with momentum (optionally Nesterov's) and learning-rate schedules.

The optimiser's state is a dict of arrays (one velocity per parameter), so it saves into a
checkpoint beside the weights and a resumed run continues exactly.
"""

from __future__ import annotations

import math

import numpy as np

from mnist_mlp.model import Params


def init_state(params: Params) -> Params:
    """Zero velocities shaped like ``params``."""
    return {k: np.zeros_like(v) for k, v in params.items()}


def sgd_step(params: Params, grads: Params, velocity: Params, lr: float, momentum: float,
             nesterov: bool = False) -> None:
    """Update ``params`` and ``velocity`` in place.

    With momentum ``mu`` (PyTorch's formulation, so that ``lr`` keeps its meaning when
    momentum changes):

        v = mu * v + g
        w = w - lr * v                   (classical)
        w = w - lr * (g + mu * v)        (Nesterov: step from the look-ahead point)

    ``grads`` may be overwritten.
    """
    lr = np.float32(lr)
    mu = np.float32(momentum)
    for key, w in params.items():
        g, v = grads[key], velocity[key]
        if not momentum:
            g *= lr
            w -= g
            continue
        v *= mu
        v += g
        if nesterov:
            g += mu * v
            g *= lr
            w -= g
        else:
            w -= lr * v


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
