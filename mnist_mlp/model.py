"""A multilayer perceptron and its backpropagation, in NumPy, meant to be read.

The network maps a batch of B images, flattened to 784 pixels, to 10 class scores:

    A0 = X                                  (B, 784)
    Z1 = A0 @ W1 + b1,   A1 = f(Z1)         (B, 1024)       one hidden layer per entry of `hidden`
    ...
    Z  = AL @ Wout + bout                   (B, 10)         the logits
    P  = softmax(Z),     loss = mean(-log P[i, y_i]) + l2/2 * sum of squared weights
                                            (label smoothing: see cross_entropy)

Training needs dloss/dW for every weight. Backpropagation gets all of them in one sweep from
the output back to the input, applying the chain rule once per layer:

    dZ    = (P - onehot(y)) / B             softmax and cross-entropy, differentiated together
    dW    = A_prev.T @ dZ + l2 * W          how the loss changes with each weight of the layer
    db    = sum of dZ over the batch
    dA_prev = dZ @ W.T                      the chain rule: pass the error back through W ...
    dZ_prev = dA_prev * f'(Z_prev)          ... and back through the activation

The first layer's dA_prev (the gradient with respect to the pixels) is not needed to train,
so training never computes it: it would cost as much as the first layer's forward pass.
(:func:`input_gradient` does, to show which pixels drive a decision.)

Blank pixels: a third of the 784 pixel columns are 0 in every image of a batch of MNIST
digits, and the two large products of a step, ``X @ W1`` and ``X.T @ dZ1``, do work for them
that adds nothing but a constant. The input is x = pixel * scale + offset, so with P the
scaled pixels (0 where blank) both products split exactly::

    X @ W1    = P[:, inked] @ W1[inked]   + offset * (column sums of W1)      a vector
    X.T @ dZ1 = scatter(P[:, inked].T @ dZ1 into the inked rows)
                                          + offset * (column sums of dZ1)     the same for every row

:class:`InkedColumns` is a batch in that form; :func:`forward` and :func:`backward` take it
in place of X, and the dense X stays the reference.

Parameters live in a dict of float32 arrays: ``W1, b1, W2, b2, ...`` with ``W`` of shape
(fan_in, fan_out), so a batch multiplies from the left. The activation functions work in
place and their derivatives are written in terms of the activation's *output*, as in
scikit-learn's MLP: then Z need not be kept, which saves memory and time.

Three steps of a ReLU network (bias and activation, the softmax loss, and the way back through
the output layer) have compiled twins in :mod:`mnist_mlp.kernels` that do the same in one
pass; they run on float32 when built. The NumPy code here is the definition.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from mnist_mlp import kernels

Params = dict[str, np.ndarray]
N_INPUTS = 28 * 28
N_CLASSES = 10


# --- activations, and their derivatives expressed through the output A = f(Z) ---------------


def relu(z: np.ndarray) -> np.ndarray:
    """max(z, 0), in place."""
    # Against an array of zeros rather than the scalar 0: NumPy vectorises only the
    # array-array loop of maximum, which makes it about four times faster.
    return np.maximum(z, _zeros(z.shape), out=z)


@functools.lru_cache(maxsize=4)
def _zeros(shape: tuple[int, ...]) -> np.ndarray:
    zeros = np.zeros(shape, np.float32)
    zeros.flags.writeable = False
    return zeros


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)), in place; written via tanh, which cannot overflow."""
    np.multiply(z, 0.5, out=z)
    np.tanh(z, out=z)
    np.multiply(z, 0.5, out=z)
    return np.add(z, 0.5, out=z)


def tanh(z: np.ndarray) -> np.ndarray:
    """tanh(z), in place."""
    return np.tanh(z, out=z)


def relu_backward(a: np.ndarray, delta: np.ndarray) -> None:
    """delta *= relu'(z): 1 where the unit was active (a > 0), else 0."""
    delta *= a > 0  # a multiply is ~15x faster than assigning through a boolean mask


def sigmoid_backward(a: np.ndarray, delta: np.ndarray) -> None:
    """delta *= sigmoid'(z) = a (1 - a)."""
    delta *= a * (1 - a)


def tanh_backward(a: np.ndarray, delta: np.ndarray) -> None:
    """delta *= tanh'(z) = 1 - a^2."""
    delta *= 1 - a * a


ACTIVATIONS = {"relu": relu, "sigmoid": sigmoid, "tanh": tanh}
DERIVATIVES = {"relu": relu_backward, "sigmoid": sigmoid_backward, "tanh": tanh_backward}


def add_bias_activate(z: np.ndarray, b: np.ndarray, activation: str) -> np.ndarray:
    """f(z + b), in place, for z (B, n) and b (n,)."""
    if activation == "relu" and kernels.fits(z, b):
        return kernels.bias_relu(z, b)  # the same, in one pass instead of two
    z += b
    return ACTIVATIONS[activation](z)


# --- inputs: dense, or with a batch's blank pixel columns left out --------------------------


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
        """The dense inputs X, ndarray of shape (B, n_inputs): the reference this form stands for."""
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
        z = self.values @ w[self.cols]  # (B, K) @ (K, n); fancy indexing copies rows 3x faster than np.take
        return z, np.float32(self.offset) * self.column_sums(w)

    def t_matmul(self, dz: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``X.T @ dz``, ndarray of shape (n_inputs, n): every row gets offset * the column sums
        of dz, and the inked rows their product besides."""
        if out is None:
            out = np.empty((self.n_inputs, dz.shape[1]), dz.dtype)
        out[:] = np.float32(self.offset) * dz.sum(axis=0)
        out[self.cols] += self.values.T @ dz
        return out


# --- parameters -------------------------------------------------------------------------------


def layer_sizes(hidden: list[int]) -> list[int]:
    """[784, *hidden, 10]."""
    return [N_INPUTS, *hidden, N_CLASSES]


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
    for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        var = 2 / fan_in if activation == "relu" else 2 / (fan_in + fan_out)
        params[f"W{l}"] = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(var)).astype(np.float32)
        params[f"b{l}"] = np.zeros(fan_out, np.float32)
    return params


def n_layers(params: Params) -> int:
    return len(params) // 2


def param_shapes(sizes: list[int]) -> dict[str, tuple[int, ...]]:
    """The shape of every array :func:`init_params` makes for ``sizes``."""
    shapes = {}
    for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        shapes[f"W{l}"], shapes[f"b{l}"] = (fan_in, fan_out), (fan_out,)
    return shapes


# --- forward ----------------------------------------------------------------------------------


def forward(params: Params, x: np.ndarray, activation: str, dropout: float = 0.0,
            rng: np.random.Generator | None = None) -> tuple[list[np.ndarray], list]:
    """Run the network on a batch, keeping what backpropagation needs.

    Parameters
    ----------
    params : dict of float32 arrays
    x : ndarray of shape (B, 784), float32, or InkedColumns
        The inputs, dense or with the batch's blank columns left out (the same result).
    activation : {"relu", "sigmoid", "tanh"}
    dropout : float
        Probability of zeroing each hidden unit (inverted dropout: survivors are scaled by
        1 / (1 - dropout), so nothing changes at evaluation). Needs ``rng`` when > 0.
    rng : numpy.random.Generator, optional

    Returns
    -------
    activations : list of ndarray
        ``[x, A1, ..., AL, Z]``: the input, each hidden layer's output (after dropout), and
        the logits of shape (B, 10).
    masks : list
        Per hidden layer, the dropout scale mask of shape (B, n) or None.
    """
    activations, masks = [x], []
    a = x
    last = n_layers(params)
    for l in range(1, last + 1):
        b = params[f"b{l}"]
        if isinstance(a, InkedColumns):
            z, blank = a.matmul(params[f"W{l}"])  # the product over inked pixels, and a vector
            b = b + blank  # the blank pixels' terms, added with the bias
        else:
            z = a @ params[f"W{l}"]  # (B, n_l)
        if l == last:
            z += b
            activations.append(z)  # logits: softmax is applied by the loss
            break
        a = add_bias_activate(z, b, activation)  # in place: z is not needed again
        mask = None
        if dropout > 0:
            mask = (rng.random(a.shape, dtype=np.float32) >= dropout) * np.float32(1 / (1 - dropout))
            a *= mask
        activations.append(a)
        masks.append(mask)
    return activations, masks


def predict_proba(params: Params, x: np.ndarray, activation: str, batch: int = 2048) -> np.ndarray:
    """Class probabilities for ``x`` of shape (N, 784), in batches to bound memory.

    Returns
    -------
    ndarray of shape (N, 10), float32
    """
    out = np.empty((len(x), N_CLASSES), np.float32)
    for start in range(0, len(x), batch):
        logits = forward(params, x[start:start + batch], activation)[0][-1]
        out[start:start + batch] = softmax(logits)
    return out


# --- the loss and its gradient, together --------------------------------------------------------


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits ``z`` (B, C), in place; shifting by the max avoids overflow."""
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of ``z`` (B, C) via log-sum-exp, as a new array."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def cross_entropy(logits: np.ndarray, y: np.ndarray, smoothing: float = 0.0) -> float:
    """Mean of -log softmax(logits)[i, y_i], computed stably.

    With ``smoothing`` = e the target is (1 - e) onehot(y) + e / C instead of onehot(y)
    (label smoothing, Szegedy et al. 2016): the loss then also asks every wrong class for
    a little probability, so the net cannot drive its logits apart without end.
    """
    logp = log_softmax(logits)
    true = logp[np.arange(len(y)), y]
    if smoothing:
        true = (1 - smoothing) * true + smoothing * logp.mean(axis=1)
    return float(-true.mean())


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray,
                          smoothing: float = 0.0) -> tuple[float, np.ndarray]:
    """Loss and its gradient with respect to the logits, in one pass.

    Parameters
    ----------
    logits : ndarray of shape (B, C)
        Overwritten with the gradient.
    y : ndarray of shape (B,), int
        True classes.
    smoothing : float
        Label smoothing e in [0, 1): the target is q = (1 - e) onehot(y) + e / C
        (see :func:`cross_entropy`).

    Returns
    -------
    loss : float
        Mean cross-entropy against q.
    dz : ndarray of shape (B, C)
        (softmax(logits) - q) / B, the gradient of the mean loss. The same array as
        ``logits``.
    """
    if kernels.fits(logits):
        return kernels.softmax_cross_entropy(logits, y, smoothing)  # the same, in one pass instead of ten
    n, c = logits.shape
    rows = np.arange(n)
    logits -= logits.max(axis=1, keepdims=True)  # the largest logit is 0: exp cannot overflow
    # -sum(q * log softmax) = log-sum-exp - (1 - e) * true logit - e * mean logit (q sums to 1)
    target = (1 - smoothing) * logits[rows, y].sum() + smoothing * logits.mean(axis=1).sum()
    p = np.exp(logits, out=logits)  # (B, C), unnormalised
    total = p.sum(axis=1, keepdims=True)  # (B, 1)
    loss = float(np.log(total).sum() - target) / n
    real = p.dtype.type  # float32 in training, float64 in the gradient checks
    p *= real(1 / n) / total  # softmax / B, in one pass
    if smoothing:
        p -= real(smoothing / (c * n))
    p[rows, y] -= real((1 - smoothing) / n)
    return loss, p


# --- backward ---------------------------------------------------------------------------------


def backward(params: Params, activations: list[np.ndarray], masks: list, dz: np.ndarray,
             activation: str, l2: float = 0.0, out: Params | None = None,
             sink: Callable | None = None) -> Params | None:
    """Gradients of the loss with respect to every parameter.

    Parameters
    ----------
    params : dict of float32 arrays
    activations, masks : as returned by :func:`forward`
    dz : ndarray of shape (B, 10)
        Gradient of the loss with respect to the logits (:func:`softmax_cross_entropy`).
    activation : {"relu", "sigmoid", "tanh"}
    l2 : float
        Weight of the penalty l2/2 * sum(W**2) on weights (not biases).
    out : dict of arrays, optional
        Buffers shaped like ``params`` to write the gradients into.
    sink : callable, optional
        Instead of computing the gradients, hand each one over as the factors of its
        matrix product: ``sink("W2", a_prev, dz)`` for ``a_prev.T @ dz`` (``a_prev`` may be
        :class:`InkedColumns` for W1) and
        ``sink("b2", None, dz)`` for ``dz.sum(axis=0)``, so that an optimiser can fold the
        product straight into its update (see :class:`mnist_mlp.optim.FusedSGD`). ``l2``
        is then the optimiser's business.

    Returns
    -------
    dict or None
        Gradients under the same keys as ``params`` (``out`` itself if given); None with ``sink``.
    """
    f_prime = DERIVATIVES[activation]
    grads = None
    if sink is None:
        grads = out if out is not None else {k: np.empty_like(v) for k, v in params.items()}
    for l in range(n_layers(params), 0, -1):
        a_prev = activations[l - 1]  # (B, n_{l-1})
        w = params[f"W{l}"]  # (n_{l-1}, n_l)
        if sink is not None:
            sink(f"W{l}", a_prev, dz)
            sink(f"b{l}", None, dz)
        else:
            if isinstance(a_prev, InkedColumns):
                dw = a_prev.t_matmul(dz, out=grads[f"W{l}"])
            else:
                dw = np.matmul(a_prev.T, dz, out=grads[f"W{l}"])  # (n_{l-1}, n_l)
            if l2:
                dw += l2 * w
            np.sum(dz, axis=0, out=grads[f"b{l}"])  # (n_l,)
        if l == 1:
            break  # no gradient with respect to the pixels is needed
        if activation == "relu" and kernels.backprop_fits(dz, w, a_prev):
            dz = kernels.backprop_relu(dz, w, a_prev)  # the two lines below, in one pass
        else:
            dz = dz @ w.T  # chain rule through the weights: dloss/dA_{l-1}, (B, n_{l-1})
            f_prime(a_prev, dz)  # chain rule through the activation: now dloss/dZ_{l-1}
        if masks[l - 2] is not None:
            dz *= masks[l - 2]  # dropped units passed nothing forward, so get nothing back
    return grads


def input_gradient(params: Params, x: np.ndarray, activation: str, classes: np.ndarray) -> np.ndarray:
    """Sensitivity: how much each input moves the logit of a chosen class.

    The same backward sweep as :func:`backward`, started from the logit of ``classes[i]``
    alone (dZ = onehot) instead of the loss, and carried one step further than training
    needs: through the first layer's weights back to the pixels, dX = dZ1 @ W1.T.

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
    activations, _ = forward(params, x.copy(), activation)  # forward works in place on its layers
    dz = np.zeros_like(activations[-1])  # (B, 10)
    dz[np.arange(len(x)), classes] = 1
    for l in range(n_layers(params), 0, -1):
        da = dz @ params[f"W{l}"].T  # (B, n_{l-1})
        if l == 1:
            return da
        DERIVATIVES[activation](activations[l - 1], da)
        dz = da
    raise AssertionError("unreachable: a network has at least one layer")


def loss_and_grads(params: Params, x: np.ndarray, y: np.ndarray, activation: str,
                   l2: float = 0.0, dropout: float = 0.0, rng: np.random.Generator | None = None,
                   out: Params | None = None, smoothing: float = 0.0) -> tuple[float, Params, np.ndarray]:
    """One forward and backward pass (``out``: optional gradient buffers, see :func:`backward`;
    ``smoothing``: label smoothing, see :func:`cross_entropy`).

    Returns
    -------
    loss : float
        Mean cross-entropy of the batch (without the L2 penalty, which :func:`l2_penalty` gives).
    grads : dict
        Gradient of cross-entropy + L2 penalty for every parameter.
    predictions : ndarray of shape (B,)
        The predicted classes, taken before the update.
    """
    activations, masks = forward(params, x, activation, dropout, rng)
    logits = activations[-1]
    predictions = logits.argmax(axis=1)
    loss, dz = softmax_cross_entropy(logits, y, smoothing)
    return loss, backward(params, activations, masks, dz, activation, l2, out), predictions


def l2_penalty(params: Params, l2: float) -> float:
    """l2/2 * the sum of squared weights (biases are not penalised)."""
    return 0.5 * l2 * sum(float(np.vdot(w, w)) for k, w in params.items() if k.startswith("W"))
