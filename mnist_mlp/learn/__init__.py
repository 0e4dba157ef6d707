"""``mlp learn``: a small network learning MNIST, one session at a time, in plain sight.

A session is a net of 784 inputs, one or two hidden layers of 1 to 64 neurons and 10 outputs,
trained by minibatch SGD on MNIST's training digits (all but 1,000, kept to measure a validation
accuracy every few hundred steps). Its math is the reference path of :mod:`mnist_mlp.model`
(:func:`~mnist_mlp.model.forward`, :func:`~mnist_mlp.model.backward`) and the update is
:func:`mnist_mlp.optim.sgd_step`, in float64, so what the Learn page shows is what the code
does, to the last digit.

Its *state* (:meth:`Session.state`) is what the page draws: the weights, the last batch, the
curves, the net's health (:mod:`mnist_mlp.learn.health`) and one *followed* digit carried forward
and back through the net (:mod:`mnist_mlp.learn.follow`): every neuron's input sum z and
activation a, the output layer's arithmetic (softmax, the loss, p - target), every neuron's
sensitivity dL/dz, the pixels' sensitivity dL/dx, and each parameter's gradient for that digit's
loss. :meth:`Session.step_on_followed` takes one plain SGD step on that digit alone, so that a
learner can check an update by hand.

:class:`Sessions` keeps at most :data:`MAX_SESSIONS` of them in memory, drops one left idle for
:data:`IDLE_SECONDS`, and gives the place of one unheard from for :data:`UNHEARD_SECONDS` (its
page sends heartbeats while open) to a new one. This module knows nothing of HTTP:
``serve/learn_routes.py`` puts it on the web.
"""

from __future__ import annotations

import functools
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mnist_mlp import data as data_mod
from mnist_mlp import model, train
from mnist_mlp.callbacks import Callback, StepResult, StopFlag
from mnist_mlp.learn import follow, wire
from mnist_mlp.learn import health as health_mod
from mnist_mlp.learn.settings import (  # noqa: F401  (the package's names)
    ENDLESS,
    MAX_BATCH,
    MAX_LR,
    MAX_WIDTH,
    LearnConfig,
    LearnError,
    TooManySessions,
)
from mnist_mlp.rules import is_int
from mnist_mlp.step import ReferenceStep, StepSettings

MAX_SESSIONS = 8
IDLE_SECONDS = 30 * 60
UNHEARD_SECONDS = 60  # a page sends a heartbeat every 20 s: silent this long, it has gone
N_VALIDATION = 1000
VALIDATE_EVERY = 200  # steps between two measurements of the validation accuracy
MAX_STEPS = 10_000  # in one request
MAX_HISTORY = 1000  # points kept of each curve (older ones thinned out)
HEALTH_PROBE = 256  # validation digits the net's health is measured on


class _Watch(Callback):
    """A session's hook into the loop: the batch shown, the curves, and stopping after
    ``steps`` steps."""

    def __init__(self, session: Session, steps: int):
        self.session, self.left, self.stop = session, steps, StopFlag()

    def on_step(self, state, step: StepResult) -> None:
        s = self.session
        s.batch = s.digits.train[step.index]  # positions in the file, as the page names digits
        s._losses.append(step.loss)
        if s.step - s._validated_at >= VALIDATE_EVERY:
            s._record()
        self.left -= 1
        self.stop.requested = self.left <= 0


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

    @functools.cached_property
    def data(self) -> data_mod.Data:
        """The training digits as the loop takes them (the validation ones are the session's
        own to measure, every :data:`VALIDATE_EVERY` steps)."""
        empty = data_mod.Split(self.images[:0], self.labels[:0])
        return data_mod.Data(
            "mnist",
            tuple("0123456789"),
            "",
            train=data_mod.Split(self.images[self.train], self.labels[self.train]),
            val=empty,
            test=empty,
        )


# --- a session ----------------------------------------------------------------------------------


class Session:
    """One net learning, with its followed digit. Not thread-safe: :class:`Sessions` locks it.

    Its steps go through the training loop (:func:`mnist_mlp.train.fit`) with the reference
    step (:class:`mnist_mlp.step.ReferenceStep`) in float64, so the page's numbers are
    :mod:`mnist_mlp.model`'s to the last digit.
    """

    def __init__(self, config: LearnConfig, digits: Digits):
        self.id = secrets.token_urlsafe(9)
        self.config, self.digits = config, digits
        self.scale, self.offset = data_mod.SCALE, data_mod.OFFSET
        self.training = config.training_config()
        self.run = train.new_state(self.training, dtype=np.float64)
        self.step_fn = ReferenceStep(
            self.run.params, self.run.momentum, StepSettings.of(self.training), np.float64
        )
        self.batch = np.zeros(0, np.intp)
        self.history: dict[str, list] = {"step": [], "loss": [], "val_acc": []}
        self._losses: list[float] = []
        self._validated_at = -VALIDATE_EVERY
        self.follow_index: int | None = 0
        self.follow_pixels = digits.images[0].astype(np.float64)
        self.follow_label = int(digits.labels[0])
        self.one_steps = 0  # steps on the followed digit alone
        self.compute_seconds = 0.0  # the last advance() took: the page sizes its requests by it
        self.last_update: dict | None = None
        self.last_used = time.monotonic()
        self.lock = threading.Lock()
        self._record()

    @property
    def params(self) -> model.Params:
        return self.run.params

    @property
    def velocity(self) -> model.Params:
        return self.run.momentum.buffers

    @property
    def step(self) -> int:
        """Steps taken."""
        return self.run.steps

    def inputs(self, pixels: np.ndarray) -> np.ndarray:
        """x = pixel x scale + offset, float64, (B, 784) from pixels 0..255."""
        return pixels.astype(np.float64) * self.scale + self.offset

    def advance(self, steps: int) -> None:
        """Take ``steps`` SGD steps, one batch each, through the training digits in order."""
        if not (is_int(steps) and 1 <= steps <= MAX_STEPS):
            raise LearnError(f"steps must be an integer from 1 to {MAX_STEPS}, got {steps!r}")
        watch = _Watch(self, steps)
        self.last_update = None  # it described the weights before these steps
        began = time.perf_counter()
        try:
            train.fit(
                self.training,
                self.digits.data,
                self.run,
                callbacks=[watch],
                stop=watch.stop,
                progress=False,
                step=self.step_fn,
            )
        except train.TrainingDiverged as diverged:
            self._record(validate=False)
            raise LearnError(
                f"the loss became {diverged.loss:g} at step {self.step + 1}: lr={self.config.lr:g} "
                "is too high for this net; the weights are kept as they were; reset with a "
                "smaller lr"
            ) from None
        if self._losses:
            self._record(validate=False)
        self.compute_seconds = time.perf_counter() - began

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
        self.last_update = None  # it was about the digit followed before
        if index is not None:
            if not (is_int(index) and 0 <= index < len(self.digits.labels)):
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

    def _x(self) -> np.ndarray:
        return self.inputs(self.follow_pixels[None])

    def followed(self) -> dict:
        """The followed digit forward and back (:func:`mnist_mlp.learn.follow.carried`), as
        JSON-able values: z, a, probabilities, loss, the output layer's arithmetic, dz, dx,
        grads."""
        carried = follow.carried(self.params, self.config.activation, self._x(), self.follow_label)
        return {
            "index": self.follow_index,
            "label": self.follow_label,
            "pixels": self.follow_pixels.reshape(28, 28),
            **carried,
        }

    def followed_grads(self) -> model.Params:
        """dL/dparam of the followed digit's loss (no L2 term), by backprop."""
        return follow.carried(self.params, self.config.activation, self._x(), self.follow_label)[
            "grads"
        ]

    def loss_of_followed(self, params: model.Params) -> float:
        logits = model.forward(params, self._x(), self.config.activation).logits
        return model.cross_entropy(logits, np.array([self.follow_label]))

    def step_on_followed(self) -> dict:
        """One plain SGD step on the followed digit alone (:func:`follow.one_step`): no momentum,
        the L2 term apart; the batch, the curves and the momentum are left as they were.

        Returns
        -------
        dict
            What the update was and did: ``lr``, ``l2``, and ``before`` and ``after`` each with
            the followed digit's ``loss`` and ``probabilities``; also kept as ``last_update``
            in the state, with the parameters before (``params_before``, for the page to show
            any weight's change), until the session trains or follows another digit.
        """
        c = self.config
        before = follow.carried(self.params, c.activation, self._x(), self.follow_label)
        old = {k: v.copy() for k, v in self.params.items()}
        new = follow.one_step(self.params, before["grads"], c.lr, c.l2)
        for k, w in self.params.items():
            w[...] = new[k]  # in place: the loop's state and the step share these arrays
        after = follow.carried(self.params, c.activation, self._x(), self.follow_label)
        self.last_update = {
            "lr": c.lr,
            "l2": c.l2,
            "index": self.follow_index,
            "label": self.follow_label,
            "before": {"loss": before["loss"], "probabilities": before["probabilities"]},
            "after": {"loss": after["loss"], "probabilities": after["probabilities"]},
            "grads": before["grads"],
            "params_before": old,
        }
        self.one_steps += 1
        return self.last_update

    def gradcheck(self, param: str, index: list[int], eps: float = 1e-4) -> dict:
        """Backprop's gradient of one parameter against a finite difference of the followed
        digit's loss, in float64 (:func:`follow.gradient_check`)."""
        if param not in self.params:
            raise LearnError(f"param must be one of {', '.join(self.params)}, got {param!r}")
        shape = self.params[param].shape
        if not (
            isinstance(index, list)
            and len(index) == len(shape)
            and all(is_int(i) and 0 <= i < s for i, s in zip(index, shape))
        ):
            raise LearnError(
                f"index must be {len(shape)} integers within {list(shape)} for {param}, got "
                f"{index!r}"
            )
        where = tuple(index)
        backprop = float(self.followed_grads()[param][where])
        numeric = follow.gradient_check(self.loss_of_followed, self.params, param, where, eps)
        scale = max(abs(backprop), abs(numeric), 1e-300)
        return {
            "param": param,
            "index": index,
            "backprop": backprop,
            "numeric": numeric,
            "rel_error": abs(backprop - numeric) / scale,
            "eps": eps,
        }

    def health(self) -> dict:
        """:func:`mnist_mlp.learn.health.health` on :data:`HEALTH_PROBE` digits kept out of
        training: the same digits every time, whatever the batch size (with batches of one, a
        ReLU silent for the last digit is not dead)."""
        probe = self.digits.val[:HEALTH_PROBE]
        x = self.inputs(self.digits.images[probe])
        return health_mod.health(self.params, self.config.activation, x, self.digits.labels[probe])

    def state(self, compact: bool = False) -> dict:
        """Everything the page draws, as JSON-able values at full float precision (NaN and
        infinities of a blown-up net as None: :func:`mnist_mlp.learn.wire.plain`).

        ``compact``: the arrays of the weights (and of ``last_update``) packed as float64 bytes
        in base64 (:func:`mnist_mlp.learn.wire.packed`), and no per-digit weight gradients:
        each is its input's activation times the sensitivity at its end (``follow.a``,
        ``follow.dz``; dL/dW1 = x outer dz1, x = pixels x scale + offset), which the page
        computes as the textbook writes it. About 4x smaller for a 784-64-64-10 net.
        """
        with np.errstate(all="ignore"):  # a blown-up net overflows: the state says so
            follow_state = self.followed()
            update = self.last_update
            params: Any = self.params
            if compact:
                follow_state.pop("grads")
                params = {k: wire.packed(v) for k, v in params.items()}
                if update is not None:
                    update = {k: v for k, v in update.items() if k != "grads"}
                    update["params_before"] = {
                        k: wire.packed(v) for k, v in update["params_before"].items()
                    }
            return wire.plain(
                {
                    "id": self.id,
                    "step": self.step,
                    "config": asdict(self.config),
                    "input": {"scale": self.scale, "offset": self.offset},
                    "params": params,
                    "batch": self.batch,
                    "history": self.history,
                    "follow": follow_state,
                    "health": self.health(),
                    "one_steps": self.one_steps,
                    "last_update": update,
                    "compute_seconds": self.compute_seconds,
                }
            )


class Sessions:
    """At most ``limit`` sessions in memory; one idle for ``idle`` seconds is dropped, and one
    unheard from for ``unheard`` seconds gives its place to a new one when all are taken."""

    def __init__(
        self,
        digits: Digits | None = None,
        limit: int = MAX_SESSIONS,
        idle: float = IDLE_SECONDS,
        root: str | None = None,
        unheard: float = UNHEARD_SECONDS,
    ):
        self._digits, self.limit, self.idle, self.root = digits, limit, idle, root
        self.unheard = unheard
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
        """A new session; when every place is taken, the one unheard from longest takes its
        place if it has been silent for :data:`UNHEARD_SECONDS` (its page has gone)."""
        digits = self.digits
        session = Session(config, digits)  # outside the lock: it measures its first accuracy
        with self._lock:
            self._drop_idle()
            if len(self._sessions) >= self.limit:
                oldest = min(self._sessions.values(), key=lambda s: s.last_used)
                if time.monotonic() - oldest.last_used < self.unheard:
                    raise TooManySessions(
                        f"{self.limit} learning sessions are open, the most this server keeps; "
                        f"close one (DELETE /api/learn/ID) or wait: a session whose page has "
                        f"gone is reclaimed after {self.unheard:g} s"
                    )
                del self._sessions[oldest.id]
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
