"""The network and its backpropagation, written as the textbook has them: the one to read.

A multilayer perceptron maps a batch of B images, each flattened to 784 pixels, to 10 class
probabilities. Read this file top to bottom: the activations, the parameters, the forward
pass, the loss, the backward pass, and the function that ties them together
(:func:`loss_and_grads`).

Words. The write-up this project grew from builds its network out of *neurons* and *links*
and calls a neuron's share of the blame for the error its *sensitivity*. Here they are arrays:

- a **neuron** of layer l is a column of A_l: ``A[:, j]`` holds neuron j's activation for
  each image of the batch (A_0 = X: the input neurons are the pixels);
- the **link** from neuron j of layer l-1 to neuron k of layer l is the weight ``W_l[j, k]``
  (so ``W_l`` has shape (fan_in, fan_out) and a batch multiplies it from the left), and
  ``b_l[k]`` is neuron k's bias;
- a neuron's **sensitivity** is dL/dz: how much the loss L changes when the neuron's input
  sum z moves. ``delta_l[:, k]`` is neuron k's sensitivity, for each image. A link's gradient
  is the activation at its start times the sensitivity at its end.

Everything here is dense NumPy that returns new arrays and leaves its inputs alone. It is the
definition: :mod:`mnist_mlp.fast` trains the same network with in-place buffers, compiled
kernels and a fused update, and its tests check it against these functions. The gradient
checks compare :func:`loss_and_grads` with finite differences (``tests/test_model.py``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

Params = dict[str, np.ndarray]
N_INPUTS = 28 * 28
N_CLASSES = 10


# --- activations f(z) and their derivatives f'(z) ---------------------------------------------


def relu(z: np.ndarray) -> np.ndarray:
    """max(z, 0)."""
    return np.maximum(z, 0)


def relu_prime(z: np.ndarray) -> np.ndarray:
    """1 where z > 0, else 0."""
    return (z > 0).astype(z.dtype)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)), written as (1 + tanh(z / 2)) / 2, which is equal and cannot overflow."""
    return 0.5 * np.tanh(0.5 * z) + 0.5


def sigmoid_prime(z: np.ndarray) -> np.ndarray:
    """sigmoid(z) (1 - sigmoid(z))."""
    s = sigmoid(z)
    return s * (1 - s)


def tanh(z: np.ndarray) -> np.ndarray:
    """tanh(z)."""
    return np.tanh(z)


def tanh_prime(z: np.ndarray) -> np.ndarray:
    """1 - tanh(z)^2."""
    return 1 - np.tanh(z) ** 2


# Adding an activation is two functions and an entry in each table.
ACTIVATIONS = {"relu": relu, "sigmoid": sigmoid, "tanh": tanh}
DERIVATIVES = {"relu": relu_prime, "sigmoid": sigmoid_prime, "tanh": tanh_prime}


# --- parameters ---------------------------------------------------------------------------------


def layer_sizes(
    hidden: list[int], n_inputs: int = N_INPUTS, n_classes: int = N_CLASSES
) -> list[int]:
    """[n_inputs, *hidden, n_classes]: [784, 1024, 10] for the default net."""
    return [n_inputs, *hidden, n_classes]


def init_params(sizes: list[int], activation: str, rng: np.random.Generator) -> Params:
    """Random weights scaled so that activations neither vanish nor explode, zero biases.

    He initialisation (variance 2/fan_in) suits ReLU, which zeroes half its inputs; Glorot
    (variance 2/(fan_in + fan_out)) suits sigmoid and tanh.

    Parameters
    ----------
    sizes : list of int
        Layer widths, input first: ``[784, 1024, 10]``.
    activation : {"relu", "sigmoid", "tanh"}
    rng : numpy.random.Generator

    Returns
    -------
    dict
        ``W{l}`` of shape (sizes[l-1], sizes[l]) and ``b{l}`` of shape (sizes[l],), float32.
    """
    params = {}
    for l, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes), start=1):
        var = 2 / fan_in if activation == "relu" else 2 / (fan_in + fan_out)
        w = rng.standard_normal((fan_in, fan_out)) * np.sqrt(var)
        params[f"W{l}"] = w.astype(np.float32)
        params[f"b{l}"] = np.zeros(fan_out, np.float32)
    return params


def n_layers(params: Params) -> int:
    """L, the number of weight layers (hidden layers + 1)."""
    return len(params) // 2


def param_shapes(sizes: list[int]) -> dict[str, tuple[int, ...]]:
    """The shape of every array :func:`init_params` makes for ``sizes``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for l, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes), start=1):
        shapes[f"W{l}"], shapes[f"b{l}"] = (fan_in, fan_out), (fan_out,)
    return shapes


# --- forward ------------------------------------------------------------------------------------


@dataclass
class Forward:
    """What the forward pass remembers for the backward pass.

    Attributes
    ----------
    a : list of ndarray
        ``[A_0, A_1, ..., A_{L-1}]``: the input X (B, 784) and each hidden layer's
        activations (B, n_l), after dropout. ``a[l - 1]`` is what layer l multiplies.
    z : list of ndarray
        ``[Z_1, ..., Z_L]``: each layer's weighted input sums (B, n_l); ``Z_L`` are the logits.
    masks : list of ndarray or None
        Per hidden layer, the dropout mask (B, n_l): 0 for a dropped neuron, else
        1 / (1 - dropout). None without dropout.
    """

    a: list[np.ndarray]
    z: list[np.ndarray]
    masks: list[np.ndarray | None]

    @property
    def logits(self) -> np.ndarray:
        """Z_L, of shape (B, 10)."""
        return self.z[-1]


def dropout_mask(
    shape: tuple[int, ...], rate: float, rng: np.random.Generator | None
) -> np.ndarray:
    """Inverted dropout: 0 with probability ``rate``, else 1 / (1 - rate), float32.

    Survivors are scaled up so that a neuron's expected output is the same with and without
    dropout: nothing changes at evaluation, when no mask is drawn.
    """
    if rng is None:
        raise ValueError("dropout needs a random generator (rng)")
    keep = rng.random(shape, dtype=np.float32) >= rate
    return keep * np.float32(1 / (1 - rate))


def forward(
    params: Params,
    x: np.ndarray,
    activation: str,
    dropout: float = 0.0,
    rng: np.random.Generator | None = None,
) -> Forward:
    """Run the network on a batch.

    Parameters
    ----------
    params : dict of arrays
    x : ndarray of shape (B, 784)
        The inputs, scaled (``data.scale``).
    activation : {"relu", "sigmoid", "tanh"}
        The hidden layers' f.
    dropout : float
        Probability of dropping each hidden neuron (see :func:`dropout_mask`); needs ``rng``.
    rng : numpy.random.Generator, optional

    Returns
    -------
    Forward
    """
    f = ACTIVATIONS[activation]
    L = n_layers(params)
    a, zs, masks = [x], [], []
    for l in range(1, L + 1):
        z = a[-1] @ params[f"W{l}"] + params[f"b{l}"]  # Z_l = A_{l-1} W_l + b_l      (B, n_l)
        zs.append(z)
        if l == L:
            break  # the logits: the loss applies softmax to them
        a_l = f(z)  # A_l = f(Z_l)                                                   (B, n_l)
        mask = dropout_mask(a_l.shape, dropout, rng) if dropout > 0 else None
        if mask is not None:
            a_l = a_l * mask  # dropped neurons pass nothing on
        a.append(a_l)
        masks.append(mask)
    return Forward(a, zs, masks)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits z (B, C): P = exp(z) / sum(exp(z)).

    Shifting each row by its largest logit changes nothing but keeps exp from overflowing.
    """
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def predict_proba(params: Params, x: np.ndarray, activation: str, batch: int = 2048) -> np.ndarray:
    """Class probabilities for ``x`` of shape (N, 784), in batches to bound memory.

    Returns
    -------
    ndarray of shape (N, 10), float32
    """
    out = np.empty((len(x), params[f"b{n_layers(params)}"].shape[0]), np.float32)
    for start in range(0, len(x), batch):
        out[start : start + batch] = softmax(
            forward(params, x[start : start + batch], activation).logits
        )
    return out


# --- the loss and its gradient --------------------------------------------------------------------


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise log softmax of z (B, C), by log-sum-exp: stable for any logits."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def targets(y: np.ndarray, n_classes: int, smoothing: float = 0.0) -> np.ndarray:
    """The distribution the loss asks for, q (B, C): onehot(y), or with label smoothing e,
    (1 - e) onehot(y) + e / C."""
    q = np.full((len(y), n_classes), smoothing / n_classes)
    q[np.arange(len(y)), y] += 1 - smoothing
    return q


def cross_entropy(logits: np.ndarray, y: np.ndarray, smoothing: float = 0.0) -> float:
    """L = mean over the batch of -sum_c q_c log P_c, with q = :func:`targets`.

    Without smoothing that is the mean of -log P[i, y_i]. Label smoothing (Szegedy et al.
    2016) also asks every wrong class for a little probability, so the net cannot drive its
    logits apart without end.
    """
    q = targets(y, logits.shape[1], smoothing)
    return float(-(q * log_softmax(logits)).sum(axis=1).mean())


def cross_entropy_grad(logits: np.ndarray, y: np.ndarray, smoothing: float = 0.0) -> np.ndarray:
    """dL/dZ_L = (P - q) / B: the output neurons' sensitivities, of shape (B, C).

    Softmax and cross-entropy differentiated together give this short form; the 1 / B is
    the mean over the batch.
    """
    q = targets(y, logits.shape[1], smoothing).astype(logits.dtype)
    return (softmax(logits) - q) / len(y)


def soft_targets(teacher_probs: np.ndarray, temperature: float) -> np.ndarray:
    """A teacher's probabilities P (B, C) softened at temperature T: softmax(log P / T), which
    is softmax(teacher logits / T) when P = softmax(teacher logits)."""
    return softmax(np.log(np.maximum(teacher_probs, 1e-30)) / temperature)


def distillation_loss(
    logits: np.ndarray, y: np.ndarray, q: np.ndarray, temperature: float, weight: float
) -> float:
    """Hinton et al. (2015): the hard labels' cross-entropy and the soft targets' at temperature
    T, mixed by ``weight`` w; the soft part times T^2, so its gradient keeps its size as T grows::

        L = (1 - w) CE(y, softmax(z)) + w T^2 KL(q || softmax(z / T))

    ``q`` (B, C): the teacher's soft targets (:func:`soft_targets`). KL(q || p) is the soft
    cross-entropy less the targets' own entropy: the same gradient, and 0 when the student
    answers as the teacher does (the cross-entropy alone would stay near T^2 H(q), about 12 for
    T = 4, however well the student learns).
    """
    T = temperature
    hard = cross_entropy(logits, y)
    soft = soft_divergence(q, log_softmax(logits / T))
    return (1 - weight) * hard + weight * T * T * soft


def soft_divergence(q: np.ndarray, log_p: np.ndarray) -> float:
    """KL(q || p) per row, averaged: sum q (ln q - ln p), with 0 ln 0 = 0. q, log_p: (B, C)."""
    q = q.astype(np.float64)
    q_log_q = np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0)
    return float((q_log_q - q * log_p).sum(axis=1).mean())


def distillation_grad(
    logits: np.ndarray, y: np.ndarray, q: np.ndarray, temperature: float, weight: float
) -> np.ndarray:
    """dL/dZ_L of :func:`distillation_loss`, (B, C): each part's (P - target) / B, the soft one
    through z / T (a factor 1 / T, which T^2 makes T)::

        dL/dz = (1 - w) (softmax(z) - onehot(y)) / B + w T (softmax(z / T) - q) / B
    """
    T = temperature
    hard = cross_entropy_grad(logits, y)
    soft = (softmax(logits / T) - q.astype(logits.dtype)) / len(y)
    return (1 - weight) * hard + weight * T * soft


def l2_penalty(params: Params, l2: float) -> float:
    """l2/2 * the sum of squared weights (biases are not penalised)."""
    return 0.5 * l2 * sum(float(np.vdot(w, w)) for k, w in params.items() if k.startswith("W"))


# --- backward -----------------------------------------------------------------------------------


def sensitivities(
    params: Params, fwd: Forward, delta: np.ndarray, activation: str
) -> list[np.ndarray]:
    """Every layer's sensitivities, from the output back: the chain rule once per layer.

    A neuron j of a hidden layer feeds every neuron k of the next through the link W[j, k], so
    its sensitivity is what flows back along those links, times its own slope::

        delta_{l-1} = (delta_l @ W_l.T) * mask_{l-1} * f'(Z_{l-1})          (B, n_{l-1})

    (a dropped neuron passed nothing forward, so it gets nothing back).

    Parameters
    ----------
    params : dict of arrays
    fwd : Forward
        From :func:`forward` on the same batch.
    delta : ndarray of shape (B, 10)
        dL/dZ_L, the output neurons' sensitivities (:func:`cross_entropy_grad`).
    activation : {"relu", "sigmoid", "tanh"}

    Returns
    -------
    list of ndarray
        ``[delta_1, ..., delta_L]``, ``delta_l`` of shape (B, n_l) = dL/dZ_l.
    """
    f_prime = DERIVATIVES[activation]
    deltas = [delta]
    for l in range(n_layers(params), 1, -1):
        # dL/dA_{l-1}: the sensitivities sent back along the links
        back = deltas[0] @ params[f"W{l}"].T
        mask = fwd.masks[l - 2]
        if mask is not None:
            back = back * mask
        deltas.insert(0, back * f_prime(fwd.z[l - 2]))  # dL/dZ_{l-1} = dL/dA_{l-1} * f'(Z_{l-1})
    return deltas


def backward(
    params: Params, fwd: Forward, delta: np.ndarray, activation: str, l2: float = 0.0
) -> tuple[Params, list[np.ndarray]]:
    """Gradients of the loss with respect to every parameter.

    Each link's gradient is its input's activation times the sensitivity of the neuron it
    feeds, summed over the batch; a bias is a link from a neuron that is always 1::

        dL/dW_l = A_{l-1}.T @ delta_l + l2 * W_l                          (n_{l-1}, n_l)
        dL/db_l = sum of delta_l over the batch                           (n_l,)

    Parameters
    ----------
    params, fwd, delta, activation : as for :func:`sensitivities`
    l2 : float
        Weight of the penalty l2/2 * sum(W**2) on the weights.

    Returns
    -------
    grads : dict of arrays
        Under the same keys and of the same shapes as ``params``.
    deltas : list of ndarray
        ``[delta_1, ..., delta_L]`` (:func:`sensitivities`).
    """
    deltas = sensitivities(params, fwd, delta, activation)
    grads = {}
    for l, d in enumerate(deltas, start=1):
        grads[f"W{l}"] = fwd.a[l - 1].T @ d + l2 * params[f"W{l}"]
        grads[f"b{l}"] = d.sum(axis=0)
    return grads, deltas


def loss_and_grads(
    params: Params,
    x: np.ndarray,
    y: np.ndarray,
    activation: str,
    l2: float = 0.0,
    dropout: float = 0.0,
    rng: np.random.Generator | None = None,
    smoothing: float = 0.0,
) -> tuple[float, Params, np.ndarray]:
    """One forward and backward pass: what one step of training computes.

    Parameters
    ----------
    params : dict of arrays
    x : ndarray of shape (B, 784)
    y : ndarray of shape (B,), int
        The true classes.
    activation : {"relu", "sigmoid", "tanh"}
    l2, dropout, rng, smoothing : see :func:`backward`, :func:`forward` and :func:`cross_entropy`

    Returns
    -------
    loss : float
        Mean cross-entropy of the batch (without the L2 penalty, which :func:`l2_penalty` gives).
    grads : dict
        Gradient of cross-entropy + L2 penalty for every parameter.
    predictions : ndarray of shape (B,)
        The predicted classes, taken before any update.
    """
    fwd = forward(params, x, activation, dropout, rng)
    loss = cross_entropy(fwd.logits, y, smoothing)
    grads, _ = backward(params, fwd, cross_entropy_grad(fwd.logits, y, smoothing), activation, l2)
    return loss, grads, fwd.logits.argmax(axis=1)


def input_gradient(
    params: Params, x: np.ndarray, activation: str, classes: np.ndarray
) -> np.ndarray:
    """The pixels' sensitivity: how much each input moves the logit of a chosen class.

    The same backward sweep, started from the logit of ``classes[i]`` alone (dZ_L = onehot)
    instead of the loss, and carried one step further than training needs: along the first
    layer's links back to the pixels, dX = delta_1 @ W_1.T.

    Parameters
    ----------
    params : dict of arrays
    x : ndarray of shape (B, 784)
        Inputs as the network sees them (scaled).
    activation : {"relu", "sigmoid", "tanh"}
    classes : ndarray of shape (B,), int
        The class whose logit to differentiate, per row.

    Returns
    -------
    ndarray of shape (B, 784), dtype of ``x``
        d logit[i, classes[i]] / d x[i]. A pixel's raw value p enters as x = p * scale + offset,
        so d logit / d p is this times ``scale``: the offset does not change it.
    """
    fwd = forward(params, x, activation)
    onehot = np.zeros_like(fwd.logits)  # (B, 10)
    onehot[np.arange(len(x)), classes] = 1
    return sensitivities(params, fwd, onehot, activation)[0] @ params["W1"].T
