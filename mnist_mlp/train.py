"""The training loop: minibatch SGD over shuffled epochs, validation, early stopping.

:func:`fit` owns the loop and nothing else. It reports each finished epoch to a callback,
which is where a caller saves checkpoints and writes metrics (see :mod:`mnist_mlp.run`), and
it stops cleanly between two steps when asked to (Ctrl-C), returning a state that resumes
exactly: the same weights as a run that was never interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mnist_mlp import data as data_mod
from mnist_mlp import model, optim
from mnist_mlp.config import Config
from mnist_mlp.errors import ConfigError, MlpError
from mnist_mlp.fast import step as fast_step

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor


class TrainingDiverged(MlpError):
    """The loss became NaN or infinite."""


@dataclass
class State:
    """Where a run stands: everything needed to continue it exactly.

    Attributes
    ----------
    params : dict of float32 arrays
    momentum : dict of float32 arrays
        The optimiser's momentum buffers, shaped like ``params``.
    momentum_form : {"velocity", "previous"}
        What ``momentum`` holds: velocities (Nesterov's momentum) or the weights before the
        last step (classical momentum; see :class:`~mnist_mlp.fast.sgd.FusedSGD`).
    epoch : int
        Epochs completed.
    step : int
        Optimiser steps taken in all.
    batch : int
        Steps taken in the current, unfinished epoch (0 between epochs).
    totals : list of float
        Sum of batch losses x batch sizes, correct predictions and examples seen so far in
        the current epoch.
    rng : dict or None
        Bit-generator state of the current epoch's random stream, when ``batch`` > 0.
    history : list of dict
        One row per finished epoch (see :data:`COLUMNS`).
    best : dict
        ``epoch``, ``val_acc`` and ``val_loss`` of the best epoch so far (by validation accuracy).
    best_val_loss : float or None
        Lowest validation loss so far (for early stopping).
    since_improved : int
        Epochs since validation loss last improved (for early stopping).
    status : str
        "running", "completed", "early-stopped" or "interrupted".
    """

    params: model.Params
    momentum: model.Params
    momentum_form: str = "velocity"
    epoch: int = 0
    step: int = 0
    batch: int = 0
    totals: list = field(default_factory=lambda: [0.0, 0, 0])
    rng: dict | None = None
    history: list = field(default_factory=list)
    best: dict = field(default_factory=dict)
    best_val_loss: float | None = None
    since_improved: int = 0
    status: str = "running"

    _JSON_FIELDS = (
        "momentum_form",
        "epoch",
        "step",
        "batch",
        "totals",
        "rng",
        "history",
        "best",
        "best_val_loss",
        "since_improved",
        "status",
    )

    def meta(self) -> dict:
        """The JSON-able part, for a checkpoint."""
        return {k: getattr(self, k) for k in self._JSON_FIELDS}

    @classmethod
    def from_meta(cls, params: model.Params, momentum: model.Params, meta: dict) -> State:
        """The state a checkpoint holds; with no ``momentum`` saved, zero velocities."""
        state = cls(params, momentum, **{k: meta[k] for k in cls._JSON_FIELDS if k in meta})
        if not momentum:
            state.momentum, state.momentum_form = optim.init_state(params), "velocity"
        return state


COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


class StopFlag:
    """Set by a signal handler (or a test) to end training between two steps."""

    def __init__(self):
        self.requested = False


@contextlib.contextmanager
def stop_on_sigint(flag: StopFlag):
    """While inside, the first Ctrl-C sets ``flag``; a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def memory_estimate(config: Config) -> dict[str, int]:
    """Bytes a training run of ``config`` holds at its peak, by part (an estimate, within ~20%).

    Returns
    -------
    dict
        ``weights``: parameters, optimiser state and one weight-sized scratch buffer (3 sets);
        ``batch``: a batch's activations, dropout masks and gradients, and evaluation's larger
        batches; ``data``: the uint8 images of the dataset (60,000 + 10,000 of 784 bytes).
    """
    sizes = model.layer_sizes(config.model.hidden)
    n_params = sum(a * b + b for a, b in itertools.pairwise(sizes))
    width = sum(sizes)
    return {
        "weights": 4 * 3 * n_params,
        "batch": 4 * (3 * config.training.batch_size * width + 2 * 2500 * width),
        "data": 70000 * model.N_INPUTS,
    }


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation on this machine (None where unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config: Config, available: int | None = None) -> None:
    """Refuse, before allocating anything, a config whose run will not fit in memory.

    Raises
    ------
    ConfigError
        Naming the key that asks for the most, the estimate and what is available.
    """
    available = available_memory() if available is None else available
    parts = memory_estimate(config)
    need = sum(parts.values())
    if available is None or need <= available:
        return
    # The layers are to blame if even a batch of one would not fit; else the batch size.
    one = dataclasses.replace(config, training=dataclasses.replace(config.training, batch_size=1))
    key, value = (
        ("model.hidden", config.model.hidden)
        if sum(memory_estimate(one).values()) > available
        else ("training.batch_size", config.training.batch_size)
    )
    raise ConfigError(
        f"{key}={value}: training would need about {_size(need)} of memory (weights and optimiser "
        f"state {_size(parts['weights'])}, batch buffers {_size(parts['batch'])}), but "
        f"{_size(available)} is available; choose a smaller {key}"
    )


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def new_state(
    config: Config, n_inputs: int = model.N_INPUTS, n_classes: int = model.N_CLASSES
) -> State:
    """Freshly initialised parameters and zero velocities, from ``training.seed``, for a net of
    ``n_inputs`` inputs and ``n_classes`` outputs (MNIST's 784 and 10 by default)."""
    sizes = model.layer_sizes(config.model.hidden, n_inputs, n_classes)
    params = model.init_params(
        sizes, config.model.activation, data_mod.rng_for(config.training.seed, data_mod.INIT)
    )
    return State(params, optim.init_state(params))


@dataclass
class Metrics:
    """Loss, accuracy and predictions of a network on one split.

    Attributes
    ----------
    loss : float
        Mean cross-entropy.
    accuracy : float
        In [0, 1].
    probabilities : ndarray of shape (n, 10), float32
    predictions : ndarray of shape (n,)
    """

    loss: float
    accuracy: float
    probabilities: np.ndarray
    predictions: np.ndarray


def evaluate(
    params: model.Params,
    activation: str,
    split: data_mod.Split,
    batch: int = 2500,
    scaling: tuple[float, float] = (data_mod.SCALE, data_mod.OFFSET),
) -> Metrics:
    """Run the network over a whole split (no dropout, no augmentation).

    ``scaling`` is the (scale, offset) the network was trained with (a checkpoint's
    ``scaling``).
    """
    n = len(split)
    probs = np.empty((n, params[f"b{model.n_layers(params)}"].shape[0]), np.float32)
    x = np.empty((min(batch, n), params["W1"].shape[0]), np.float32)
    for start in range(0, n, batch):
        chunk = split.images[start : start + batch]
        xb = data_mod.scale(chunk, x[: len(chunk)], *scaling)
        probs[start : start + batch] = fast_step.predict_proba(params, xb, activation, batch)
    labels = split.labels.astype(np.intp)
    true_p = probs[np.arange(n), labels]
    loss = float(-np.mean(np.log(np.maximum(true_p, 1e-30))))
    predictions = probs.argmax(axis=1)
    return Metrics(
        loss, float(np.mean(predictions == labels)) if n else math.nan, probs, predictions
    )


EpochCallback = Callable[[State, dict, bool], None]


def fit(
    config: Config,
    data: data_mod.Data,
    state: State | None = None,
    *,
    on_epoch: EpochCallback | None = None,
    stop: StopFlag | None = None,
    progress: bool | Callable = True,
    augment: Callable | None = None,
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
    on_epoch : callable, optional
        ``on_epoch(state, row, is_best)`` after each epoch; ``row`` has :data:`COLUMNS`.
    stop : StopFlag, optional
        Checked after every step; when set, the returned state has status "interrupted".
    progress : bool or callable
        True: a tqdm bar per epoch on stderr (off anyway when stderr is not a terminal). A
        tqdm class instead (``tqdm.auto.tqdm`` in a notebook): bars of that kind, always shown.
    augment : callable, optional
        ``augment(images_uint8 (B, 784), rng) -> images_uint8``, applied to each training
        batch (see :class:`mnist_mlp.augment.Augmenter`).

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
    stop = stop or StopFlag()
    state.status = "running"
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging loss is reported below, once
        return _loop(config, data, state, on_epoch, stop, progress, augment)


def _loop(config, data, state, on_epoch, stop, progress, augment) -> State:
    from tqdm import tqdm

    bar_class, disable = (
        (progress, False) if callable(progress) else (tqdm, None if progress else True)
    )

    t = config.training
    train = data.train
    n, batch_size = len(train), t.batch_size
    n_batches = math.ceil(n / batch_size)
    step = fast_step.Step(config, state, min(batch_size, n))
    while state.epoch < t.epochs:
        epoch = state.epoch
        rng = data_mod.rng_for(t.seed, data_mod.EPOCH, epoch)
        order = rng.permutation(n) if t.shuffle else np.arange(n)
        if state.batch:  # resuming inside this epoch: continue the same random stream
            rng.bit_generator.state = state.rng
        else:
            state.totals = [0.0, 0, 0]
        started = time.perf_counter()
        lr = t.lr
        bar = bar_class(
            total=n_batches,
            initial=state.batch,
            desc=f"epoch {epoch + 1}/{t.epochs}",
            unit="batch",
            leave=False,
            disable=disable,
            mininterval=0.25,
        )
        batches = _Batches(train, order, batch_size, augment, t.seed, epoch)
        with bar, batches:
            for b in range(state.batch, n_batches):
                idx, images, rows = batches.get(b)
                xb = step.inputs(images, rows, len(idx), data.scaling)
                yb = train.labels[idx].astype(np.intp)
                lr = optim.learning_rate(
                    epoch + b / n_batches,
                    t.lr,
                    t.epochs,
                    t.schedule,
                    t.warmup_epochs,
                    t.step_every,
                    t.step_gamma,
                )
                loss, predictions = step(xb, yb, lr, rng)
                if not math.isfinite(loss):
                    raise TrainingDiverged(
                        f"the loss became {loss} at epoch {epoch + 1}, step {b + 1}: the learning "
                        "rate "
                        f"(training.lr={t.lr:g}) is probably too high; try {t.lr / 10:g}, or add "
                        f"training.warmup_epochs"
                    )
                state.step += 1
                state.batch = b + 1
                state.totals[0] += loss * len(idx)
                state.totals[1] += int(np.count_nonzero(predictions == yb))
                state.totals[2] += len(idx)
                if b % 20 == 0:
                    bar.set_postfix(
                        loss=f"{state.totals[0] / state.totals[2]:.4f}",
                        lr=f"{lr:.4g}",
                        refresh=False,
                    )
                bar.update()
                if stop.requested and state.batch < n_batches:
                    state.rng = rng.bit_generator.state
                    state.status = "interrupted"
                    return state
        row = _finish_epoch(config, data, state, lr, time.perf_counter() - started)
        is_best = _is_best(state, row)
        if on_epoch:
            on_epoch(state, row, is_best)
        if t.patience and state.since_improved >= t.patience:
            state.status = "early-stopped"
            return state
        if stop.requested and state.epoch < t.epochs:
            state.status = "interrupted"
            return state
    state.status = "completed"
    return state


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


def _finish_epoch(
    config: Config, data: data_mod.Data, state: State, lr: float, seconds: float
) -> dict:
    loss_sum, correct, seen = state.totals
    row = {
        "epoch": state.epoch + 1,
        "train_loss": loss_sum / seen,
        "train_acc": correct / seen,
        "val_loss": None,
        "val_acc": None,
        "lr": lr,
        "seconds": 0.0,
    }
    if len(data.val):
        metrics = evaluate(state.params, config.model.activation, data.val, scaling=data.scaling)
        row["val_loss"], row["val_acc"] = metrics.loss, metrics.accuracy
    row["seconds"] = seconds
    state.epoch += 1
    state.batch, state.rng, state.totals = 0, None, [0.0, 0, 0]
    state.history.append(row)
    return row


def _is_best(state: State, row: dict) -> bool:
    """Update model selection (validation accuracy) and early stopping (validation loss)."""
    if row["val_acc"] is None:  # no validation set: the latest epoch is the best we know
        state.best = {"epoch": row["epoch"], "val_acc": None, "val_loss": None}
        return True
    if state.best_val_loss is None or row["val_loss"] < state.best_val_loss:
        state.best_val_loss, state.since_improved = row["val_loss"], 0
    else:
        state.since_improved += 1
    best = state.best
    if (
        not best
        or row["val_acc"] > best["val_acc"]
        or (row["val_acc"] == best["val_acc"] and row["val_loss"] < best["val_loss"])
    ):
        state.best = {"epoch": row["epoch"], "val_acc": row["val_acc"], "val_loss": row["val_loss"]}
        return True
    return False
