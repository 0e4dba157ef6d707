"""``mlp learn``: a small network learning MNIST, one session at a time, in plain sight.

A session is a net of 784 inputs, one or two hidden layers of 1 to 64 neurons and 10 outputs,
trained by minibatch SGD on MNIST's training digits (all but 1,000, kept to measure a validation
accuracy every few hundred steps). Its math is the reference path of :mod:`mnist_mlp.model`
(:func:`~mnist_mlp.model.forward`, :func:`~mnist_mlp.model.backward`) and the update is
:func:`mnist_mlp.optim.sgd_step`, in float64, so what the Learn page shows is what the code
does, to the last digit.

Its *state* (:meth:`Session.state`) is what the page draws: the weights, the last batch, the
curves, and one *followed* digit carried forward and back through the net: every neuron's
input sum z and activation a, the output probabilities and loss, every neuron's sensitivity
dL/dz, the pixels' sensitivity dL/dx, and each parameter's gradient for that digit's loss.

:class:`Sessions` keeps at most :data:`MAX_SESSIONS` of them in memory and drops one left idle
for :data:`IDLE_SECONDS`. This module knows nothing of HTTP: ``serve/learn_routes.py`` puts it
on the web.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mnist_mlp import data as data_mod
from mnist_mlp import model, optim
from mnist_mlp.errors import MlpError

MAX_SESSIONS = 8
IDLE_SECONDS = 30 * 60
N_VALIDATION = 1000
VALIDATE_EVERY = 200  # steps between two measurements of the validation accuracy
MAX_STEPS = 10_000  # in one request
MAX_HISTORY = 1000  # points kept of each curve (older ones thinned out)


class LearnError(MlpError):
    """A request a learning session cannot honour (a bad setting, an unknown parameter)."""


class TooManySessions(LearnError):
    """Every place for a session is taken."""


@dataclass
class LearnConfig:
    """A session's settings; each checked, with the rule and the value in the message.

    Attributes
    ----------
    hidden : list of int
        One or two hidden layers of 1 to 64 neurons.
    activation : {"sigmoid", "tanh", "relu"}
    lr : float
        The learning rate, > 0 and <= 10.
    batch_size : int
        1 (as the write-up trained) to 256.
    momentum : float
        In [0, 1); 0 makes an update exactly -lr x the gradient.
    l2 : float
        >= 0, the weight of l2/2 x the sum of squared weights.
    seed : int
        >= 0: the initial weights and the order of the batches.
    """

    hidden: list[int] = field(default_factory=lambda: [16])
    activation: str = "sigmoid"
    lr: float = 0.5
    batch_size: int = 32
    momentum: float = 0.0
    l2: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        h = self.hidden
        if not (
            isinstance(h, list)
            and 1 <= len(h) <= 2
            and all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 64 for n in h)
        ):
            raise LearnError(f"hidden must be one or two layer sizes from 1 to 64, got {h!r}")
        if self.activation not in model.ACTIVATIONS:
            raise LearnError(
                f"activation must be one of {', '.join(model.ACTIVATIONS)}, got {self.activation!r}"
            )
        _check_number("lr", self.lr, 0, 10, low_open=True)
        if not (_is_int(self.batch_size) and 1 <= self.batch_size <= 256):
            raise LearnError(
                f"batch_size must be an integer from 1 to 256, got {self.batch_size!r}"
            )
        _check_number("momentum", self.momentum, 0, 1, high_open=True)
        _check_number("l2", self.l2, 0, math.inf)
        if not (_is_int(self.seed) and self.seed >= 0):
            raise LearnError(f"seed must be an integer >= 0, got {self.seed!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LearnConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise LearnError(f"unknown setting {unknown[0]!r}; the settings are {', '.join(known)}")
        return cls(**{k: v for k, v in values.items() if v is not None})


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_number(
    name: str, v: Any, low: float, high: float, low_open=False, high_open=False
) -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if ok:
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        span = f">= {low:g}" if high == math.inf else f"in {left}{low:g}, {high:g}{right}"
        raise LearnError(f"{name} must be {span}, got {v!r}")


# --- the data, shared by every session --------------------------------------------------------


@dataclass
class Digits:
    """MNIST's training digits: uint8 images (60000, 784), labels, and the validation split."""

    images: np.ndarray
    labels: np.ndarray
    train: np.ndarray  # indices that train
    val: np.ndarray  # the N_VALIDATION kept out

    @classmethod
    def load(cls, root: str | None = None, progress: bool = True) -> Digits:
        (images, labels), _ = data_mod.load_arrays("mnist", root, progress)
        order = data_mod.rng_for(0, data_mod.SPLIT).permutation(len(labels))
        return cls(
            images,
            labels.astype(np.intp),
            np.sort(order[N_VALIDATION:]),
            np.sort(order[:N_VALIDATION]),
        )


# --- a session ----------------------------------------------------------------------------------


class Session:
    """One net learning, with its followed digit. Not thread-safe: :class:`Sessions` locks it."""

    def __init__(self, config: LearnConfig, digits: Digits):
        self.id = secrets.token_urlsafe(9)
        self.config, self.digits = config, digits
        self.scale, self.offset = data_mod.SCALE, data_mod.OFFSET
        sizes = model.layer_sizes(config.hidden)
        params = model.init_params(
            sizes, config.activation, data_mod.rng_for(config.seed, data_mod.INIT)
        )
        self.params = {k: v.astype(np.float64) for k, v in params.items()}
        self.velocity = optim.init_state(self.params)
        self.step = 0
        self.batch = np.zeros(0, np.intp)
        self._epoch, self._epoch_order = -1, self.batch  # the order of the current epoch
        self.history: dict[str, list] = {"step": [], "loss": [], "val_acc": []}
        self._losses: list[float] = []
        self._validated_at = -VALIDATE_EVERY
        self.follow_index: int | None = 0
        self.follow_pixels = digits.images[0].astype(np.float64)
        self.follow_label = int(digits.labels[0])
        self.last_used = time.monotonic()
        self.lock = threading.Lock()
        self._record()

    def inputs(self, pixels: np.ndarray) -> np.ndarray:
        """x = pixel x scale + offset, float64, (B, 784) from pixels 0..255."""
        return pixels.astype(np.float64) * self.scale + self.offset

    def _order(self, epoch: int) -> np.ndarray:
        rng = data_mod.rng_for(self.config.seed, data_mod.EPOCH, epoch)
        return self.digits.train[rng.permutation(len(self.digits.train))]

    def advance(self, steps: int) -> None:
        """Take ``steps`` SGD steps, one batch each, through the training digits in order."""
        if not (_is_int(steps) and 1 <= steps <= MAX_STEPS):
            raise LearnError(f"steps must be an integer from 1 to {MAX_STEPS}, got {steps!r}")
        c, n = self.config, len(self.digits.train)
        per_epoch = math.ceil(n / c.batch_size)
        for _ in range(steps):
            epoch, b = divmod(self.step, per_epoch)
            if self._epoch != epoch:
                self._epoch, self._epoch_order = epoch, self._order(epoch)
            self.batch = self._epoch_order[b * c.batch_size : (b + 1) * c.batch_size]
            x = self.inputs(self.digits.images[self.batch])
            with np.errstate(all="ignore"):
                loss, grads, _ = model.loss_and_grads(
                    self.params, x, self.digits.labels[self.batch], c.activation, c.l2
                )
            if not (math.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values())):
                self._record(validate=False)
                raise LearnError(
                    f"the loss became {loss:g} at step {self.step + 1}: lr={c.lr:g} is too high "
                    "for "
                    f"this net; the weights are kept as they were; reset with a smaller lr"
                )
            optim.sgd_step(self.params, grads, self.velocity, c.lr, c.momentum)
            self.step += 1
            self._losses.append(loss)
            if self.step - self._validated_at >= VALIDATE_EVERY:
                self._record()
        if self._losses:
            self._record(validate=False)

    def validation_accuracy(self) -> float:
        x = self.inputs(self.digits.images[self.digits.val])
        predicted = model.forward(self.params, x, self.config.activation).logits.argmax(axis=1)
        return float(np.mean(predicted == self.digits.labels[self.digits.val]))

    def _record(self, validate: bool = True) -> None:
        """A point of the curves: the mean loss of the steps since the last, the accuracy now."""
        h = self.history
        loss = float(np.mean(self._losses)) if self._losses else None
        acc = None
        if validate:
            acc = self.validation_accuracy()
            self._validated_at = self.step
        if h["step"] and h["step"][-1] == self.step:  # the same step: complete that point
            h["loss"][-1] = h["loss"][-1] if loss is None else loss
            h["val_acc"][-1] = h["val_acc"][-1] if acc is None else acc
        else:
            h["step"].append(self.step)
            h["loss"].append(loss)
            h["val_acc"].append(acc)
        self._losses = []
        if len(h["step"]) > MAX_HISTORY:  # thin out the older half, keep every measurement
            keep = [
                i
                for i in range(len(h["step"]))
                if i >= MAX_HISTORY // 2 or i % 2 == 0 or h["val_acc"][i] is not None
            ]
            for k in h:
                h[k] = [h[k][i] for i in keep]

    def follow(
        self, index: int | None = None, pixels: np.ndarray | None = None, label: int | None = None
    ) -> None:
        """Follow training digit ``index``, or ``pixels`` (28x28, 0..255) labelled ``label``."""
        if index is not None:
            if not (_is_int(index) and 0 <= index < len(self.digits.labels)):
                raise LearnError(
                    f"index must be a training digit from 0 to {len(self.digits.labels) - 1}, got "
                    f"{index!r}"
                )
            self.follow_index = index
            self.follow_pixels = self.digits.images[index].astype(np.float64)
            self.follow_label = int(self.digits.labels[index])
            return
        if pixels is None:
            raise LearnError("give index (a training digit) or an image with its label")
        if not (isinstance(label, int) and not isinstance(label, bool) and 0 <= label <= 9):
            raise LearnError(f"label must be the digit drawn, 0 to 9, got {label!r}")
        self.follow_index = None
        self.follow_pixels = np.asarray(pixels, np.float64).reshape(784)
        self.follow_label = int(label)

    def followed(self) -> dict:
        """The followed digit forward and back: z, a, probabilities, loss, dz, dx, grads."""
        c = self.config
        x = self.inputs(self.follow_pixels[None])
        y = np.array([self.follow_label])
        fwd = model.forward(self.params, x, c.activation)
        probs = model.softmax(fwd.logits)
        loss = model.cross_entropy(fwd.logits, y)
        grads, deltas = model.backward(
            self.params, fwd, model.cross_entropy_grad(fwd.logits, y), c.activation
        )
        dx = deltas[0] @ self.params["W1"].T
        return {
            "index": self.follow_index,
            "label": self.follow_label,
            "pixels": self.follow_pixels.reshape(28, 28).tolist(),
            "z": [z[0].tolist() for z in fwd.z],
            "a": [a[0].tolist() for a in fwd.a[1:]] + [probs[0].tolist()],
            "probabilities": probs[0].tolist(),
            "loss": loss,
            "dz": [d[0].tolist() for d in deltas],
            "dx": dx[0].tolist(),
            "grads": {k: g.tolist() for k, g in grads.items()},
        }

    def loss_of_followed(self, params: model.Params) -> float:
        x = self.inputs(self.follow_pixels[None])
        logits = model.forward(params, x, self.config.activation).logits
        return model.cross_entropy(logits, np.array([self.follow_label]))

    def gradcheck(self, param: str, index: list[int], eps: float = 1e-4) -> dict:
        """Backprop's gradient of one parameter against a finite difference of the followed
        digit's loss, in float64.

        The centred difference D(h) = (L(w + h) - L(w - h)) / 2h, made more exact by Richardson's
        step, (4 D(h/2) - D(h)) / 3, whose error shrinks as h^4 instead of h^2.
        """
        if param not in self.params:
            raise LearnError(f"param must be one of {', '.join(self.params)}, got {param!r}")
        shape = self.params[param].shape
        if not (
            isinstance(index, list)
            and len(index) == len(shape)
            and all(_is_int(i) and 0 <= i < s for i, s in zip(index, shape))
        ):
            raise LearnError(
                f"index must be {len(shape)} integers within {list(shape)} for {param}, got "
                f"{index!r}"
            )
        where = tuple(index)
        backprop = float(self.followed_grads()[param][where])

        def centred(h: float) -> float:
            shifted = {k: v.copy() for k, v in self.params.items()}
            shifted[param][where] += h
            up = self.loss_of_followed(shifted)
            shifted[param][where] -= 2 * h
            return (up - self.loss_of_followed(shifted)) / (2 * h)

        numeric = (4 * centred(eps / 2) - centred(eps)) / 3
        scale = max(abs(backprop), abs(numeric), 1e-300)
        return {
            "param": param,
            "index": index,
            "backprop": backprop,
            "numeric": numeric,
            "rel_error": abs(backprop - numeric) / scale,
            "eps": eps,
        }

    def followed_grads(self) -> model.Params:
        """dL/dparam of the followed digit's loss (no L2 term), by backprop."""
        c = self.config
        x = self.inputs(self.follow_pixels[None])
        y = np.array([self.follow_label])
        fwd = model.forward(self.params, x, c.activation)
        grads, _ = model.backward(
            self.params, fwd, model.cross_entropy_grad(fwd.logits, y), c.activation
        )
        return grads

    def state(self) -> dict:
        """Everything the page draws, as JSON-able values at full float precision."""
        return {
            "id": self.id,
            "step": self.step,
            "config": asdict(self.config),
            "input": {"scale": self.scale, "offset": self.offset},
            "params": {k: v.tolist() for k, v in self.params.items()},
            "batch": self.batch.tolist(),
            "history": self.history,
            "follow": self.followed(),
        }


class Sessions:
    """At most ``limit`` sessions in memory; one idle for ``idle`` seconds is dropped."""

    def __init__(
        self,
        digits: Digits | None = None,
        limit: int = MAX_SESSIONS,
        idle: float = IDLE_SECONDS,
        root: str | None = None,
    ):
        self._digits, self.limit, self.idle, self.root = digits, limit, idle, root
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    @property
    def digits(self) -> Digits:
        with self._lock:
            if self._digits is None:
                self._digits = Digits.load(self.root, progress=False)
            return self._digits

    def _drop_idle(self) -> None:
        now = time.monotonic()
        for key, s in list(self._sessions.items()):
            if now - s.last_used > self.idle:
                del self._sessions[key]

    def create(self, config: LearnConfig) -> Session:
        digits = self.digits
        with self._lock:
            self._drop_idle()
            if len(self._sessions) >= self.limit:
                raise TooManySessions(
                    f"{self.limit} learning sessions are open, the most this server keeps; close "
                    f"one (DELETE /api/learn/ID) or wait: one idle for {self.idle / 60:g} minutes "
                    f"is closed"
                )
            session = Session(config, digits)
            self._sessions[session.id] = session
            return session

    def get(self, key: str) -> Session:
        with self._lock:
            self._drop_idle()
            session = self._sessions.get(key)
            if session is None:
                raise KeyError(key)
            session.last_used = time.monotonic()
            return session

    def delete(self, key: str) -> None:
        with self._lock:
            if self._sessions.pop(key, None) is None:
                raise KeyError(key)

    def __len__(self) -> int:
        with self._lock:
            self._drop_idle()
            return len(self._sessions)
