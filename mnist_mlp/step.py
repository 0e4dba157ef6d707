"""The training step as an object: what one batch does to the network's parameters.

A *step* owns the parameters and the optimiser's state, and knows nothing of the loop that
calls it (:func:`mnist_mlp.train.fit`): given a batch, the labels, a learning rate and a random
generator (for dropout), it trains once and says the batch's loss and predictions. Two kinds
obey the same :class:`Step` protocol:

- :class:`ReferenceStep`, here: the textbook, nothing but :func:`mnist_mlp.model.forward`,
  :func:`~mnist_mlp.model.backward` and :func:`mnist_mlp.optim.sgd_step`, dense, in float32
  (or float64, as the Learn page runs it). ``training.step: reference`` trains with it.
- :class:`mnist_mlp.fast.step.Step`: the same step made fast (in-place buffers, the blank
  pixels left out, a fused update, compiled kernels), tested equal to this one.

What a step needs of the config is :class:`StepSettings`; its optimiser state is a
:class:`Momentum`, in the form its update keeps (velocities, or the previous weights).
A checkpoint written by either kind resumes in the other: the loop converts the form once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from mnist_mlp import data as data_mod
from mnist_mlp import model, optim
from mnist_mlp.config import Config
from mnist_mlp.fast import blas  # NumPy's own OpenBLAS, for its thread count


@dataclass(frozen=True)
class StepSettings:
    """The settings a step uses, and nothing else of the config.

    Attributes
    ----------
    activation : {"relu", "sigmoid", "tanh"}
    dropout : float
    momentum : float
    nesterov : bool
    l2 : float
    max_norm : float
        0: no cap on each hidden unit's incoming weights.
    label_smoothing : float
    skip_blank_pixels : bool
        Whether the fast step may leave a batch's blank pixel columns out.
    distill_temperature, distill_weight : float
        T and w of :func:`mnist_mlp.model.distillation_loss`, for a batch given soft targets.
    """

    activation: str = "relu"
    dropout: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    l2: float = 5e-4
    max_norm: float = 0.0
    label_smoothing: float = 0.0
    skip_blank_pixels: bool = True
    distill_temperature: float = 4.0
    distill_weight: float = 0.5

    @classmethod
    def of(cls, config: Config) -> StepSettings:
        t = config.training
        return cls(
            config.model.activation,
            config.model.dropout,
            t.momentum,
            t.nesterov,
            t.l2,
            t.max_norm,
            t.label_smoothing,
            t.skip_blank_pixels,
            t.distill_temperature,
            t.distill_weight,
        )


@dataclass
class Momentum:
    """The optimiser's state: one buffer per parameter, in one of two forms.

    Attributes
    ----------
    buffers : dict of arrays
        Shaped like the parameters.
    form : {"velocity", "previous"}
        Velocities ``v_t`` (:func:`mnist_mlp.optim.sgd_step`), or the weights before the last
        step ``w_{t-1}`` (:class:`mnist_mlp.fast.sgd.FusedSGD`); see :data:`mnist_mlp.optim.FORMS`.
    """

    buffers: model.Params
    form: str = "velocity"

    @classmethod
    def zeros(cls, params: model.Params) -> Momentum:
        """Zero velocities: a network that has not moved yet."""
        return cls(optim.init_state(params), "velocity")

    def to(self, form: str, params: model.Params) -> Momentum:
        """This state in ``form`` (itself if already so), for the weights ``params``."""
        if form == self.form:
            return self
        return Momentum(optim.other_form(params, self.buffers), form)


class Step(Protocol):
    """One training step on a batch; the loop's only view of the math.

    Attributes
    ----------
    params : dict of arrays
        The parameters, changed in place by each call.
    momentum : Momentum
        The optimiser's state, changed in place by each call.
    """

    params: model.Params
    momentum: Momentum

    def inputs(
        self, images: np.ndarray, rows: np.ndarray | None, n: int, scaling: tuple[float, float]
    ) -> np.ndarray | object:
        """The batch ``images[rows]`` (all of ``images`` if None; ``n`` rows) as the step's
        inputs."""
        ...

    def __call__(
        self, x, y: np.ndarray, lr: float, rng: np.random.Generator, soft: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        """Train on the batch ``x`` with labels ``y`` (B,) (and a teacher's soft targets
        ``soft`` (B, C), if given); return its mean loss and the predictions made before the
        update. A non-finite loss leaves the weights alone."""
        ...


class ReferenceStep:
    """The textbook step: forward, loss, backward, update, each by the reference functions.

    ::

        fwd   = model.forward(params, x, activation, dropout, rng)
        loss  = model.cross_entropy(fwd.logits, y, smoothing)
        grads = model.backward(params, fwd, model.cross_entropy_grad(...), activation, l2)
        optim.sgd_step(params, grads, velocity, lr, momentum, nesterov)
        optim.clip_norms(params, max_norm)                    # with training.max_norm

    Every array is new at every step: slower than :class:`mnist_mlp.fast.step.Step` (see the
    README), and as plain to read as :mod:`mnist_mlp.model`.

    Parameters
    ----------
    params : dict of arrays
        float32, or float64 (``dtype``); updated in place.
    momentum : Momentum
        In the velocity form.
    settings : StepSettings
    dtype : numpy dtype
        Of the inputs the step makes from pixels (float64 for the Learn page's exact numbers).
    """

    def __init__(
        self,
        params: model.Params,
        momentum: Momentum,
        settings: StepSettings,
        dtype: type = np.float32,
    ):
        if momentum.form != "velocity":
            raise ValueError("the reference step keeps velocities: convert with Momentum.to")
        self.params, self.momentum, self.s, self.dtype = params, momentum, settings, dtype

    def inputs(
        self, images: np.ndarray, rows: np.ndarray | None, n: int, scaling: tuple[float, float]
    ) -> np.ndarray:
        """x = pixels x scale + offset, (n, 784) in the step's dtype."""
        if self.dtype == np.float32:
            return data_mod.scale(images, None, *scaling, rows=rows)
        pixels = images if rows is None else images[rows]
        return pixels.astype(self.dtype) * scaling[0] + scaling[1]

    def __call__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        lr: float,
        rng: np.random.Generator,
        soft: np.ndarray | None = None,
    ) -> tuple[float, np.ndarray]:
        s = self.s
        # One BLAS thread: OpenBLAS sums a product's terms in another order on several threads,
        # and the textbook's products are NumPy's own (the fast step chunks its sums instead).
        with blas.threads(1):
            fwd = model.forward(self.params, x, s.activation, s.dropout, rng)
            predictions = fwd.logits.argmax(axis=1)
            loss, delta = _loss_and_delta(fwd.logits, y, s, soft)
            if not math.isfinite(loss):
                return loss, predictions
            grads, _ = model.backward(self.params, fwd, delta, s.activation, s.l2)
        optim.sgd_step(self.params, grads, self.momentum.buffers, lr, s.momentum, s.nesterov)
        if s.max_norm:
            optim.clip_norms(self.params, s.max_norm)
        return loss, predictions


def _loss_and_delta(
    logits: np.ndarray, y: np.ndarray, s: StepSettings, soft: np.ndarray | None
) -> tuple[float, np.ndarray]:
    """The loss and the output neurons' sensitivities: cross-entropy (label-smoothed), or with
    soft targets the distillation loss (:func:`mnist_mlp.model.distillation_loss`)."""
    if soft is None:
        loss = model.cross_entropy(logits, y, s.label_smoothing)
        return loss, model.cross_entropy_grad(logits, y, s.label_smoothing)
    T, w = s.distill_temperature, s.distill_weight
    loss = model.distillation_loss(logits, y, soft, T, w)
    return loss, model.distillation_grad(logits, y, soft, T, w)
