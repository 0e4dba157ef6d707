"""Is the net still learning? Divergence, saturated neurons and dead ReLUs, measured on a batch
of digits (a session's probe of kept-out digits), so that the Learn page can say in words what
went wrong and what to try.

- **diverged**: the batch's mean loss is not finite or above :data:`DIVERGED_LOSS` (a net that
  guesses at random scores ln 10 = 2.3; one that has blown up scores hundreds or more).
- **saturated**: a sigmoid or tanh neuron whose f'(z) is below :data:`NEGLIGIBLE` of its
  largest value for every digit of the batch: |z| so large that no gradient passes through
  it, so it stops learning (sigmoid |z| > 6.0, tanh |z| > 3.0).
- **dead**: a ReLU that no digit of the batch activates (z <= 0 for all): its f' is 0
  everywhere, and it may never come back.
"""

from __future__ import annotations

import numpy as np

from mnist_mlp import model

DIVERGED_LOSS = 20.0
NEGLIGIBLE = 0.01  # of f'(z)'s largest value (sigmoid 1/4, tanh 1)
LARGEST_SLOPE = {"sigmoid": 0.25, "tanh": 1.0, "relu": 1.0}


def slope(activation: str, z: np.ndarray) -> np.ndarray:
    """f'(z), the same shape as z."""
    if activation == "sigmoid":
        s = model.sigmoid(z)
        return s * (1 - s)
    if activation == "tanh":
        return 1 - np.tanh(z) ** 2
    return (z > 0).astype(z.dtype)


def health(params: model.Params, activation: str, x: np.ndarray, labels: np.ndarray) -> dict:
    """The net's health on a batch ``x`` (B, 784) with ``labels`` (B,).

    Returns
    -------
    dict
        ``diverged`` (bool), ``loss`` (the batch's mean loss, or None if not finite),
        ``saturated`` and ``dead`` (lists of the hidden neurons' indices, one list per hidden
        layer) and ``rule``: the thresholds in words.
    """
    n_hidden = len(params) // 2 - 1
    if len(x) == 0:
        return _verdict(None, [[]] * n_hidden, [[]] * n_hidden, activation)
    with np.errstate(all="ignore"):  # a blown-up net overflows: that is what is measured
        fwd = model.forward(params, x, activation)
        loss = model.cross_entropy(fwd.logits, labels)
    saturated: list[list[int]] = []
    dead: list[list[int]] = []
    for z in fwd.z[:-1]:
        flat = (slope(activation, z) < NEGLIGIBLE * LARGEST_SLOPE[activation]).all(axis=0)
        if activation == "relu":
            dead.append(np.flatnonzero(flat).tolist())
            saturated.append([])
        else:
            saturated.append(np.flatnonzero(flat).tolist())
            dead.append([])
    return _verdict(loss, saturated, dead, activation)


def _verdict(loss, saturated: list, dead: list, activation: str) -> dict:
    finite = loss is not None and bool(np.isfinite(loss))
    return {
        "diverged": loss is not None and (not finite or loss > DIVERGED_LOSS),
        "loss": float(loss) if finite else None,
        "saturated": saturated,
        "dead": dead,
        "rule": (
            "dead: a ReLU that none of the digits activates (z <= 0 for all)"
            if activation == "relu"
            else f"saturated: f'(z) below {NEGLIGIBLE:g} of its largest value for every one of "
            "the digits"
        ),
    }
