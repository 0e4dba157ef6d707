"""One digit through the net, in numbers: forward, the output layer, backward, one step.

Pure functions of the weights and one digit, in float64, built on :mod:`mnist_mlp.model`'s
reference path, so that every number the Learn page shows is the code's own. A
:class:`mnist_mlp.learn.Session` calls them on its followed digit.
"""

from __future__ import annotations

import numpy as np

from mnist_mlp import model


def carried(params: model.Params, activation: str, x: np.ndarray, label: int) -> dict:
    """The digit ``x`` (1, 784) forward and back through the net.

    Returns
    -------
    dict
        ``z`` and ``a`` per layer (lists of (n_l,)), ``probabilities`` (10,), ``loss``,
        ``output`` (:func:`output_layer`), ``dz`` per layer (each neuron's sensitivity dL/dz),
        ``dx`` (784,) and ``grads``: dL/dparam of this digit's loss alone (no L2 term), each
        shaped as its parameter.
    """
    y = np.array([label])
    fwd = model.forward(params, x, activation)
    probs = model.softmax(fwd.logits)
    grads, deltas = model.backward(params, fwd, model.cross_entropy_grad(fwd.logits, y), activation)
    return {
        "z": [z[0] for z in fwd.z],
        "a": [a[0] for a in fwd.a[1:]] + [probs[0]],
        "probabilities": probs[0],
        "loss": model.cross_entropy(fwd.logits, y),
        "output": output_layer(fwd.logits[0], label),
        "dz": [d[0] for d in deltas],
        "dx": (deltas[0] @ params["W1"].T)[0],
        "grads": grads,
    }


def output_layer(z: np.ndarray, label: int) -> dict:
    """The output layer's arithmetic for one digit, every intermediate number kept.

    softmax: p_k = exp(z_k - m) / sum_j exp(z_j - m), where m = max z (subtracting the same m
    from every z changes no p, and keeps exp from overflowing); the loss is -ln p of the true
    class; each output's sensitivity dL/dz_k = p_k - target_k.

    Parameters
    ----------
    z : ndarray (10,)
        The output neurons' sums (the logits).
    label : int

    Returns
    -------
    dict
        ``z``, ``shift`` (m), ``exp`` (10,), ``sum_exp``, ``p`` (10,), ``target`` (10,, one-hot),
        ``loss`` and ``dz`` (10,).
    """
    shift = float(z.max())
    e = np.exp(z - shift)
    total = float(e.sum())
    p = e / total
    target = np.zeros_like(p)
    target[label] = 1.0
    return {
        "z": z,
        "shift": shift,
        "exp": e,
        "sum_exp": total,
        "p": p,
        "target": target,
        # -ln p of the true class, written so that a p too small for a float stays finite
        "loss": float(np.log(total) - (z[label] - shift)),
        "dz": p - target,
    }


def one_step(params: model.Params, grads: model.Params, lr: float, l2: float) -> model.Params:
    """Plain SGD on one digit: w - lr x dL/dw - lr x l2 x w (the L2 term on weights only).

    No momentum: the change of every parameter is exactly what the page computes from the
    gradient it shows. The descent goes against the gradient (the minus): the gradient points
    to where the loss grows.

    Parameters
    ----------
    params, grads : dict of arrays
        The weights and this digit's gradients (no L2 term), as :func:`carried` gives them.

    Returns
    -------
    dict of arrays
        New parameters; ``params`` is left as it was.
    """
    return {
        k: w - lr * grads[k] - (lr * l2 * w if k.startswith("W") else 0.0)
        for k, w in params.items()
    }


def gradient_check(loss, params: model.Params, param: str, where: tuple, eps: float) -> float:
    """A finite-difference estimate of d loss / d ``params[param][where]``.

    The centred difference D(h) = (L(w + h) - L(w - h)) / 2h, made more exact by Richardson's
    step, (4 D(h/2) - D(h)) / 3, whose error shrinks as h^4 instead of h^2.
    """

    def centred(h: float) -> float:
        shifted = {k: v.copy() for k, v in params.items()}
        shifted[param][where] += h
        up = loss(shifted)
        shifted[param][where] -= 2 * h
        return (up - loss(shifted)) / (2 * h)

    return (4 * centred(eps / 2) - centred(eps)) / 3
