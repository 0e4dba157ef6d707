"""The training step as it runs: :func:`mnist_mlp.model.loss_and_grads` and an SGD update,
made fast.

What is done differently from the reference in :mod:`mnist_mlp.model`, and why:

- the forward pass works in place: each layer's product is turned into its activations
  where it lies, and Z is not kept; the activations' derivatives are written in terms of
  their output A = f(Z) instead (as in scikit-learn's MLP), which saves memory and a pass;
- the softmax, the loss and its gradient are one pass over the logits (a compiled kernel
  where built), overwriting them;
- the backward pass stores no weight gradient: it hands each one to the update as the two
  factors of its matrix product (:mod:`mnist_mlp.fast.sgd`), and it skips the gradient with
  respect to the pixels, which training does not need;
- a batch with enough blank pixel columns goes in as
  :class:`~mnist_mlp.fast.inked.InkedColumns`, its products taken over the inked columns only;
- bias-and-ReLU, and the way back through the output layer and a ReLU, are compiled kernels
  (:mod:`mnist_mlp.fast.kernels`) where built.

``tests/fast/test_fast_step.py`` checks that :class:`Step` gives the reference's weights.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from mnist_mlp import data as data_mod
from mnist_mlp import model, optim
from mnist_mlp.fast import blas, kernels
from mnist_mlp.fast.inked import InkedColumns, inked_columns
from mnist_mlp.fast.sgd import BufferedSGD, FusedSGD
from mnist_mlp.step import Momentum, StepSettings

# --- activations in place, and their derivatives through the output A = f(Z) -------------------


@functools.lru_cache(maxsize=4)
def _zeros(shape: tuple[int, ...]) -> np.ndarray:
    zeros = np.zeros(shape, np.float32)
    zeros.flags.writeable = False
    return zeros


def relu(z: np.ndarray) -> np.ndarray:
    """max(z, 0), in place."""
    # Against an array of zeros rather than the scalar 0: NumPy vectorises only the
    # array-array loop of maximum, which makes it about four times faster.
    return np.maximum(z, _zeros(z.shape), out=z)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """:func:`mnist_mlp.model.sigmoid`, in place."""
    np.multiply(z, 0.5, out=z)
    np.tanh(z, out=z)
    np.multiply(z, 0.5, out=z)
    return np.add(z, 0.5, out=z)


def tanh(z: np.ndarray) -> np.ndarray:
    """tanh(z), in place."""
    return np.tanh(z, out=z)


def relu_backward(a: np.ndarray, delta: np.ndarray) -> None:
    """delta *= relu'(z): 1 where the neuron was active (a > 0), else 0."""
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


# --- the step's three parts ----------------------------------------------------------------------


@dataclass
class Cache:
    """What the fast forward pass keeps for the backward pass.

    Attributes
    ----------
    activations : list
        ``[x, A1, ..., A_{L-1}, Z_L]``: the input (an ndarray (B, 784) or InkedColumns), each
        hidden layer's output after dropout, and the logits (B, 10), which the loss overwrites
        with their gradient.
    masks : list of ndarray or None
        Per hidden layer, the dropout mask (B, n), or None.
    undropped : list of ndarray or None
        Per hidden layer, its output before dropout where the derivative needs it (sigmoid
        and tanh with dropout), else None.
    """

    activations: list
    masks: list[np.ndarray | None]
    undropped: list[np.ndarray | None]

    @property
    def logits(self) -> np.ndarray:
        return self.activations[-1]


def forward(
    params: model.Params,
    x: np.ndarray | InkedColumns,
    activation: str,
    dropout: float = 0.0,
    rng: np.random.Generator | None = None,
) -> Cache:
    """:func:`mnist_mlp.model.forward`, in place, keeping only what the backward pass needs.

    Parameters
    ----------
    params : dict of float32 arrays
    x : ndarray of shape (B, 784), float32, or InkedColumns
        The inputs, dense or with the batch's blank columns left out (the same result).
    activation, dropout, rng : as for :func:`mnist_mlp.model.forward`

    Returns
    -------
    Cache
    """
    activations: list = [x]
    masks: list[np.ndarray | None] = []
    undropped: list[np.ndarray | None] = []
    a = x
    last = model.n_layers(params)
    for l in range(1, last + 1):
        b = params[f"b{l}"]
        if isinstance(a, InkedColumns):
            z, blank = a.matmul(params[f"W{l}"])  # the product over inked pixels, and a vector
            b = b + blank  # the blank pixels' terms, added with the bias
        else:
            z = blas.matmul(a, params[f"W{l}"])  # (B, n_l)
        if l == last:
            z += b
            activations.append(z)  # logits: softmax is applied by the loss
            break
        a = add_bias_activate(z, b, activation)  # in place: z is not needed again
        mask = model.dropout_mask(a.shape, dropout, rng) if dropout > 0 else None
        kept = None
        if mask is not None:
            if activation != "relu":
                kept = a.copy()  # f'(z) from f(z): the mask's scale would change it (not ReLU's)
            a *= mask
        activations.append(a)
        masks.append(mask)
        undropped.append(kept)
    return Cache(activations, masks, undropped)


def softmax_cross_entropy(
    logits: np.ndarray, y: np.ndarray, smoothing: float = 0.0
) -> tuple[float, np.ndarray]:
    """:func:`mnist_mlp.model.cross_entropy` and :func:`~mnist_mlp.model.cross_entropy_grad`
    in one pass.

    Parameters
    ----------
    logits : ndarray of shape (B, C)
        Overwritten with the gradient.
    y : ndarray of shape (B,), int
    smoothing : float

    Returns
    -------
    loss : float
    dz : ndarray of shape (B, C)
        (softmax(logits) - q) / B: the same array as ``logits``.
    """
    if kernels.fits(logits):
        return kernels.softmax_cross_entropy(logits, y, smoothing)  # one pass instead of ten
    n, c = logits.shape
    rows = np.arange(n)
    logits -= logits.max(axis=1, keepdims=True)  # the largest logit is 0: exp cannot overflow
    # -sum(q * log softmax) = log-sum-exp - (1 - e) * true logit - e * mean logit (q sums to 1)
    target = (1 - smoothing) * logits[rows, y].sum() + smoothing * logits.mean(axis=1).sum()
    p = np.exp(logits, out=logits)  # (B, C), unnormalised
    total = p.sum(axis=1, keepdims=True)  # (B, 1)
    loss = float(np.log(total).sum() - target) / n
    real = p.dtype.type  # float32 in training, float64 in tests
    p *= real(1 / n) / total  # softmax / B, in one pass
    if smoothing:
        p -= real(smoothing / (c * n))
    p[rows, y] -= real((1 - smoothing) / n)
    return loss, p


def distillation(
    logits: np.ndarray, y: np.ndarray, q: np.ndarray, temperature: float, weight: float
) -> tuple[float, np.ndarray]:
    """:func:`mnist_mlp.model.distillation_loss` and its gradient: the hard part by
    :func:`softmax_cross_entropy` (overwriting ``logits`` with it), the soft part on a copy of
    the (B, C) logits taken first.

    Returns
    -------
    loss : float
    dz : ndarray of shape (B, C)
        The same array as ``logits``.
    """
    real = logits.dtype.type  # float32 in training, float64 in tests
    T, w = real(temperature), real(weight)
    z = logits / T  # a copy: the hard part overwrites the logits
    hard, dz = softmax_cross_entropy(logits, y)
    log_p = model.log_softmax(z)
    soft = model.soft_divergence(q, log_p)
    dz *= 1 - w
    dz += (w * T / real(len(y))) * (np.exp(log_p) - q.astype(dz.dtype))
    return float((1 - w) * hard + w * T * T * soft), dz


def backward(
    params: model.Params, cache: Cache, dz: np.ndarray, activation: str, sgd: FusedSGD | BufferedSGD
) -> None:
    """:func:`mnist_mlp.model.backward`, handing each gradient to ``sgd`` as its factors.

    ``sgd("W2", a_prev, dz)`` stands for ``a_prev.T @ dz`` (``a_prev`` may be
    :class:`InkedColumns` for W1) and ``sgd("b2", None, dz)`` for ``dz.sum(axis=0)``; the
    L2 term is the update's business. No gradient with respect to the pixels is computed.

    Parameters
    ----------
    params : dict of float32 arrays
    cache : Cache
        From :func:`forward` on the batch.
    dz : ndarray of shape (B, 10)
        dL/dZ_L (:func:`softmax_cross_entropy`).
    activation : {"relu", "sigmoid", "tanh"}
    sgd : FusedSGD or BufferedSGD
    """
    f_prime = DERIVATIVES[activation]
    for l in range(model.n_layers(params), 0, -1):
        a_prev = cache.activations[l - 1]  # (B, n_{l-1})
        w = params[f"W{l}"]  # (n_{l-1}, n_l)
        sgd(f"W{l}", a_prev, dz)
        sgd(f"b{l}", None, dz)
        if l == 1:
            break
        mask, undropped = cache.masks[l - 2], cache.undropped[l - 2]
        if activation == "relu" and kernels.backprop_fits(dz, w, a_prev):
            dz = kernels.backprop_relu(dz, w, a_prev)  # the two lines below, in one pass
        else:
            dz = blas.matmul(dz, w, trans_b=True)  # back along the links: dL/dA_{l-1}, (B, n_{l-1})
            f_prime(a_prev if undropped is None else undropped, dz)  # now dL/dZ_{l-1}
        if mask is not None:
            dz *= mask  # dropped neurons passed nothing forward, so get nothing back


def predict_proba(
    params: model.Params, x: np.ndarray, activation: str, batch: int = 2048
) -> np.ndarray:
    """:func:`mnist_mlp.model.predict_proba` through the in-place :func:`forward`.

    Returns
    -------
    ndarray of shape (N, C), float32
    """
    out = np.empty((len(x), params[f"b{model.n_layers(params)}"].shape[0]), np.float32)
    for start in range(0, len(x), batch):
        out[start : start + batch] = model.softmax(
            forward(params, x[start : start + batch], activation).logits
        )
    return out


# Above this share of inked columns a batch goes through the dense products: gathering the
# inked columns and W1's rows then costs more than the products save. (Measured on MNIST
# batches of 128 given extra inked columns, dense and skipping steps interleaved: even at
# about 80%; at 67%, MNIST's own, skipping is 17% faster; at 88%, 8% slower.)
INKED_MAX = 0.8


class Step:
    """One SGD step on a batch: forward, loss, backward and update, in place.

    Classical momentum uses :class:`FusedSGD`, whose state is the previous weights; Nesterov
    momentum uses :class:`BufferedSGD`, whose state is the velocities (:meth:`form`). The
    update is skipped when the loss is not finite, so the weights stay as they were.

    With ``skip_blank_pixels`` (and classical momentum), a batch with enough blank pixel
    columns goes in as :class:`InkedColumns` (see :meth:`inputs`).

    Parameters
    ----------
    params : dict of float32 arrays
        Updated in place (FusedSGD swaps each array with its buffer, in this dict).
    momentum : Momentum
        In the form :meth:`form` names; its buffers are updated in place.
    settings : StepSettings
    max_batch : int
        The largest batch the step will see, for its buffers.
    """

    def __init__(
        self, params: model.Params, momentum: Momentum, settings: StepSettings, max_batch: int
    ):
        if momentum.form != self.form(settings):
            raise ValueError(f"this step keeps momentum as {self.form(settings)}: convert it first")
        self.params, self.momentum, self.s = params, momentum, settings
        self.sgd: FusedSGD | BufferedSGD = (
            BufferedSGD(momentum.buffers, settings.momentum, settings.l2)
            if settings.nesterov
            else FusedSGD(momentum.buffers, settings.momentum, settings.l2)
        )
        n_inputs = params["W1"].shape[0]
        self.x = np.empty((max_batch, n_inputs), np.float32)
        self.skip_blank = settings.skip_blank_pixels and isinstance(self.sgd, FusedSGD)
        self.inked_values = np.empty(max_batch * n_inputs, np.float32)
        self.inked_cols = np.empty(n_inputs, np.int64)

    @staticmethod
    def form(settings: StepSettings) -> str:
        """The momentum form this step's update keeps (:data:`mnist_mlp.optim.FORMS`)."""
        return "velocity" if settings.nesterov else "previous"

    def inputs(
        self, images: np.ndarray, rows: np.ndarray | None, n: int, scaling: tuple[float, float]
    ) -> np.ndarray | InkedColumns:
        """The batch ``images[rows]`` (all of ``images`` if None) as the network's inputs:
        its inked columns where enough are blank, else dense (n, 784) float32."""
        if self.skip_blank and images.dtype == np.uint8:  # pixels, blank where 0
            x = inked_columns(
                images,
                *scaling,
                rows=rows,
                max_share=INKED_MAX,
                values=self.inked_values,
                cols=self.inked_cols,
            )
            if x is not None:
                assert isinstance(self.sgd, FusedSGD)
                x.w_colsum = self.sgd.column_sums.get("W1")
                return x
        return data_mod.scale(images, self.x[:n], *scaling, rows=rows)

    def __call__(
        self,
        x: np.ndarray | InkedColumns,
        y: np.ndarray,
        lr: float,
        rng: np.random.Generator,
        soft: np.ndarray | None = None,
    ) -> tuple[float, np.ndarray]:
        """Train on one batch (with a teacher's soft targets (B, C), if given); returns (its mean
        loss, its predictions before the update)."""
        params, s = self.params, self.s
        cache = forward(params, x, s.activation, s.dropout, rng)
        predictions = cache.logits.argmax(axis=1)
        if soft is None:
            loss, dz = softmax_cross_entropy(cache.logits, y, s.label_smoothing)
        else:
            loss, dz = distillation(cache.logits, y, soft, s.distill_temperature, s.distill_weight)
        if not math.isfinite(loss):
            return loss, predictions
        self.sgd.lr = lr
        backward(params, cache, dz, s.activation, self.sgd)
        self.sgd.apply(params)
        if s.max_norm:
            fused = self.sgd if isinstance(self.sgd, FusedSGD) else None
            optim.clip_norms(params, s.max_norm, fused.previous if fused else None)
            if fused:
                fused.column_sums.clear()  # the weights moved
        return loss, predictions
