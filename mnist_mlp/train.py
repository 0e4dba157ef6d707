"""The training loop: minibatch SGD over shuffled epochs, validation, early stopping.

:func:`fit` is the one loop every caller trains through (``mlp train``, a sweep's trials,
:class:`mnist_mlp.MLPClassifier`, a learning session of ``mlp learn``). It drives a *step*
(:mod:`mnist_mlp.step`: the textbook :class:`~mnist_mlp.step.ReferenceStep` or the fast
:class:`mnist_mlp.fast.step.Step`, by ``training.step``) over the batches of each epoch,
measures the epoch on the validation split, keeps the best epoch and early stopping's count,
and tells its callbacks (:mod:`mnist_mlp.callbacks`), where the callers' own work happens:
progress bars, files, checkpoints, pruning. It stops cleanly between two steps when asked
to, returning a state that resumes exactly: the same weights as a run never interrupted.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mnist_mlp import data as data_mod
from mnist_mlp import distill, metrics, model, optim
from mnist_mlp.callbacks import Callback, ProgressBar, StepResult, StopFlag
from mnist_mlp.config import Config
from mnist_mlp.errors import MlpError
from mnist_mlp.step import Momentum, ReferenceStep, Step, StepSettings

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


class TrainingDiverged(MlpError):
    """The loss became NaN or infinite; ``loss`` is the value it became."""

    def __init__(self, message: str, loss: float = math.nan):
        super().__init__(message)
        self.loss = loss


@dataclass
class Totals:
    """The running sums of the epoch under way."""

    loss_sum: float = 0.0  # of each batch's mean loss x its size
    correct: int = 0
    seen: int = 0


# field -> its key in a checkpoint's metadata (the names files have had since version 1)
SAVED_AS = {
    "epoch": "epoch",
    "steps": "step",
    "epoch_steps": "batch",
    "epoch_rng": "rng",
    "history": "history",
    "best": "best",
    "lowest_val_loss": "best_val_loss",
    "epochs_without_improvement": "since_improved",
    "status": "status",
}


@dataclass
class State:
    """Where a run stands: everything needed to continue it exactly.

    Attributes
    ----------
    params : dict of arrays
    momentum : Momentum
        The optimiser's state (its buffers and their form).
    epoch : int
        Epochs completed.
    steps : int
        Optimiser steps taken in all.
    epoch_steps : int
        Steps taken in the current, unfinished epoch (0 between epochs).
    totals : Totals
        The current epoch's running loss, correct predictions and examples seen.
    epoch_rng : dict or None
        The bit-generator state of the current epoch's random stream (dropout), when
        ``epoch_steps`` > 0.
    history : list of dict
        One row per finished epoch (see :data:`COLUMNS`).
    best : dict
        The epoch that model selection keeps: its ``epoch``, ``val_acc`` and ``val_loss`` (the
        highest validation accuracy; the lower loss between equals).
    lowest_val_loss : float or None
        What early stopping watches.
    epochs_without_improvement : int
        Epochs since ``lowest_val_loss`` last fell.
    status : str
        "running", "completed", "early-stopped" or "interrupted".
    averaged : dict of arrays
        The moving average of the weights (``training.ema``), or empty.
    """

    params: model.Params
    momentum: Momentum
    epoch: int = 0
    steps: int = 0
    epoch_steps: int = 0
    totals: Totals = field(default_factory=Totals)
    epoch_rng: dict | None = None
    history: list = field(default_factory=list)
    best: dict = field(default_factory=dict)
    lowest_val_loss: float | None = None
    epochs_without_improvement: int = 0
    status: str = "running"
    averaged: model.Params = field(default_factory=dict)

    def finished(self, epochs: int) -> bool:
        """Whether the run has done all ``epochs`` (and stands between two epochs)."""
        return self.epoch >= epochs and not self.epoch_steps

    @property
    def evaluated(self) -> model.Params:
        """The weights validation measures and the best checkpoint keeps: the moving average
        when there is one (``training.ema``), else the weights as trained."""
        return self.averaged or self.params

    def meta(self) -> dict:
        """The JSON-able part, for a checkpoint."""
        t = self.totals
        return {
            **{key: getattr(self, name) for name, key in SAVED_AS.items()},
            "totals": [t.loss_sum, t.correct, t.seen],
            "momentum_form": self.momentum.form,
        }

    @classmethod
    def from_meta(
        cls,
        params: model.Params,
        momentum: model.Params,
        meta: dict,
        averaged: model.Params | None = None,
    ) -> State:
        """The state a checkpoint holds; with no ``momentum`` saved, zero velocities."""
        saved = {name: meta[key] for name, key in SAVED_AS.items() if key in meta}
        totals = Totals(*meta.get("totals", [0.0, 0, 0]))
        buffers = (
            Momentum(momentum, meta.get("momentum_form", "velocity"))
            if momentum
            else Momentum.zeros(params)
        )
        return cls(params, buffers, totals=totals, averaged=dict(averaged or {}), **saved)


def new_state(
    config: Config,
    n_inputs: int = model.N_INPUTS,
    n_classes: int = model.N_CLASSES,
    dtype: type = np.float32,
) -> State:
    """Freshly initialised parameters and zero velocities, from ``training.seed``, for a net of
    ``n_inputs`` inputs and ``n_classes`` outputs (MNIST's 784 and 10 by default)."""
    sizes = model.layer_sizes(config.model.hidden, n_inputs, n_classes)
    params = model.init_params(
        sizes, config.model.activation, data_mod.rng_for(config.training.seed, data_mod.INIT)
    )
    params = {k: v.astype(dtype, copy=False) for k, v in params.items()}
    return State(params, Momentum.zeros(params))


def make_step(config: Config, state: State, max_batch: int, dtype: type = np.float32) -> Step:
    """The step ``training.step`` names, over ``state``'s parameters and momentum (converted,
    once, to the form that step keeps: a checkpoint of either kind resumes in the other)."""
    settings = StepSettings.of(config)
    if config.training.step == "reference":
        state.momentum = state.momentum.to("velocity", state.params)
        return ReferenceStep(state.params, state.momentum, settings, dtype)
    from mnist_mlp.fast import step as fast_step

    state.momentum = state.momentum.to(fast_step.Step.form(settings), state.params)
    return fast_step.Step(state.params, state.momentum, settings, max_batch)


def fit(
    config: Config,
    data: data_mod.Data,
    state: State | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    stop: StopFlag | None = None,
    progress: bool | Callable = True,
    augment: Callable | None = None,
    step: Step | None = None,
) -> State:
    """Train (or continue training) the network described by ``config`` on ``data``.

    Parameters
    ----------
    config : Config
    data : Data
        Uses ``data.train`` for the steps and ``data.val`` (if not empty) for the epoch
        metrics, model selection and early stopping.
    state : State, optional
        Where to continue from; a fresh state from ``training.seed`` if omitted.
    callbacks : sequence of Callback
        Told of each step and epoch, in order (:mod:`mnist_mlp.callbacks`).
    stop : StopFlag, optional
        Checked after every step; when set, the returned state has status "interrupted".
    progress : bool or callable
        True: a tqdm bar per epoch on stderr (off anyway when stderr is not a terminal). A
        tqdm class instead (``tqdm.auto.tqdm`` in a notebook): bars of that kind, always shown.
    augment : callable, optional
        ``augment(images_uint8 (B, 784), rng) -> images_uint8``, applied to each training
        batch (see :class:`mnist_mlp.augment.Augmenter`).
    step : Step, optional
        The step to drive, over ``state``'s parameters; :func:`make_step` of the config's
        ``training.step`` if omitted.

    Returns
    -------
    State

    Raises
    ------
    TrainingDiverged
        When the loss stops being finite; nothing is reported for the failing epoch, so the
        checkpoints already written stay as they were.
    """
    state = state or new_state(config, data.train.images.shape[1], len(data.classes))
    step = step or make_step(config, state, min(config.training.batch_size, len(data.train)))
    state.status = "running"
    hooks = list(callbacks)
    if progress:
        bar_class = progress if callable(progress) else None
        hooks.insert(0, ProgressBar(config.training.epochs, bar_class))
    loop = _Loop(config, data, state, step, hooks, stop or StopFlag(), augment)
    for hook in hooks:
        hook.on_fit_start(state)
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging loss is said, once
            loop.run()
    finally:
        for hook in hooks:
            hook.on_fit_end(state)
    return state


class _Loop:
    """One fit's epochs: decide what to run, run the steps, close the epoch."""

    def __init__(self, config, data, state, step, hooks, stop, augment):
        self.t, self.config, self.data = config.training, config, data
        self.state, self.step, self.hooks = state, step, hooks
        self.stop, self.augment = stop, augment
        self.n_steps = math.ceil(len(data.train) / self.t.batch_size)
        self.teacher = distill.teacher_for(config, data.classes)

    def run(self) -> None:
        state = self.state
        while state.epoch < self.t.epochs:
            finished, lr, seconds = self._epoch()
            if not finished:
                state.status = "interrupted"
                return
            self._close_epoch(lr, seconds)
            if self.t.patience and state.epochs_without_improvement >= self.t.patience:
                state.status = "early-stopped"
                return
            if self.stop.requested and state.epoch < self.t.epochs:
                state.status = "interrupted"
                return
        state.status = "completed"

    def _epoch(self) -> tuple[bool, float, float]:
        """The steps of the current epoch (from where it stopped); whether it finished, the
        last learning rate and the seconds taken."""
        state, t, train = self.state, self.t, self.data.train
        epoch = state.epoch
        rng = data_mod.rng_for(t.seed, data_mod.EPOCH, epoch)
        order = rng.permutation(len(train)) if t.shuffle else np.arange(len(train))
        if state.epoch_steps:  # resuming inside this epoch: continue the same random stream
            rng.bit_generator.state = state.epoch_rng
        else:
            state.totals = Totals()
        for hook in self.hooks:
            hook.on_epoch_start(state, self.n_steps)
        started, lr = time.perf_counter(), t.lr
        with _Batches(train, order, t.batch_size, self.augment, t.seed, epoch) as batches:
            for b in range(state.epoch_steps, self.n_steps):
                lr = self._lr(epoch + b / self.n_steps)
                self._step(batches.get(b), lr, rng, b)
                if self.stop.requested and state.epoch_steps < self.n_steps:
                    state.epoch_rng = rng.bit_generator.state
                    return False, lr, time.perf_counter() - started
        return True, lr, time.perf_counter() - started

    def _lr(self, progress: float) -> float:
        t = self.t
        return optim.learning_rate(
            progress, t.lr, t.epochs, t.schedule, t.warmup_epochs, t.step_every, t.step_gamma
        )

    def _step(self, batch: tuple, lr: float, rng: np.random.Generator, b: int) -> None:
        idx, images, rows = batch
        state, train = self.state, self.data.train
        x = self.step.inputs(images, rows, len(idx), self.data.scaling)
        y = train.labels[idx].astype(np.intp)
        # the teacher sees the batch as the student does, distortions included
        if self.teacher is None:
            loss, predictions = self.step(x, y, lr, rng)
        else:
            soft = self.teacher(images if rows is None else images[rows])
            loss, predictions = self.step(x, y, lr, rng, soft)
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"the loss became {loss} at epoch {state.epoch + 1}, step {b + 1}: the learning "
                f"rate (training.lr={self.t.lr:g}) is probably too high; try {self.t.lr / 10:g}, "
                "or add training.warmup_epochs",
                loss,
            )
        correct = int(np.count_nonzero(predictions == y))
        state.steps += 1
        if self.t.ema:
            optim.ema_update(state.averaged, state.params, self.t.ema, state.steps)
        state.epoch_steps = b + 1
        state.totals.loss_sum += loss * len(idx)
        state.totals.correct += correct
        state.totals.seen += len(idx)
        result = StepResult(idx, loss, correct, lr)
        for hook in self.hooks:
            hook.on_step(state, result)

    def _close_epoch(self, lr: float, seconds: float) -> None:
        """The epoch's row (validation measured), model selection, then the callbacks."""
        state, t = self.state, self.state.totals
        row = {
            "epoch": state.epoch + 1,
            "train_loss": t.loss_sum / t.seen,
            "train_acc": t.correct / t.seen,
            "val_loss": None,
            "val_acc": None,
            "lr": lr,
            "seconds": seconds,
        }
        if len(self.data.val):
            m = metrics.evaluate(
                state.evaluated,
                self.config.model.activation,
                self.data.val,
                scaling=self.data.scaling,
            )
            row["val_loss"], row["val_acc"] = m.loss, m.accuracy
        state.epoch += 1
        state.epoch_steps, state.epoch_rng, state.totals = 0, None, Totals()
        state.history.append(row)
        is_best = _select(state, row)
        for hook in self.hooks:
            hook.on_epoch_end(state, row, is_best)


class _Batches:
    """The images of each batch, distorted if augmenting; the next one prepared meanwhile.

    Each batch's distortions come from a random stream of its own, (seed, epoch, batch), so
    they do not depend on what dropout drew, a resumed run redraws the very same ones, and
    preparing batch b + 1 in a background thread while batch b trains changes nothing but
    the time it takes. Without augmentation there is nothing worth overlapping.
    """

    def __init__(
        self,
        split: data_mod.Split,
        order: np.ndarray,
        batch_size: int,
        augment: Callable | None,
        seed: int,
        epoch: int,
    ):
        self.split, self.order, self.size = split, order, batch_size
        self.augment, self.seed, self.epoch = augment, seed, epoch
        self.n = math.ceil(len(order) / batch_size)
        self.pool: ThreadPoolExecutor | None = None
        self.pending: Future | None = None
        self.pending_b = -1  # the batch `pending` will deliver
        if augment is not None:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(1, thread_name_prefix="mnist_mlp-batches")

    def _make(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        idx = self.order[b * self.size : (b + 1) * self.size]
        if self.augment is None:
            return idx, self.split.images, idx  # gathered while scaled (data.scale)
        rng = data_mod.rng_for(self.seed, data_mod.AUGMENT, self.epoch, b)
        return idx, self.augment(self.split.images[idx], rng), None

    def get(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Batch ``b``: (indices, uint8 images, rows), its images being ``images[rows]`` (all if
        None)."""
        if self.pool is None:
            return self._make(b)
        result = (
            self.pending.result()
            if self.pending is not None and self.pending_b == b
            else self._make(b)
        )
        self.pending_b = b + 1
        self.pending = self.pool.submit(self._make, b + 1) if b + 1 < self.n else None
        return result

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _select(state: State, row: dict) -> bool:
    """Update model selection (validation accuracy) and early stopping (validation loss);
    whether this epoch is the best so far."""
    if row["val_acc"] is None:  # no validation set: the latest epoch is the best we know
        state.best = {"epoch": row["epoch"], "val_acc": None, "val_loss": None}
        return True
    if state.lowest_val_loss is None or row["val_loss"] < state.lowest_val_loss:
        state.lowest_val_loss, state.epochs_without_improvement = row["val_loss"], 0
    else:
        state.epochs_without_improvement += 1
    best = state.best
    if (
        not best
        or row["val_acc"] > best["val_acc"]
        or (row["val_acc"] == best["val_acc"] and row["val_loss"] < best["val_loss"])
    ):
        state.best = {"epoch": row["epoch"], "val_acc": row["val_acc"], "val_loss": row["val_loss"]}
        return True
    return False
