"""What a caller of the training loop adds to it: hooks after each step and each epoch.

:func:`mnist_mlp.train.fit` runs epochs of steps and nothing else; everything a caller wants
besides (a progress bar, a metrics file, checkpoints, Optuna's pruning, a tracker, stopping on
Ctrl-C) is a :class:`Callback`, a plain object with up to five methods, called in order:

==================  ============================================================================
``on_fit_start``    before the first step (also when resuming)
``on_epoch_start``  before an epoch's first step (or the first step left of it, when resuming)
``on_step``         after each step, with the batch's :class:`StepResult`
``on_epoch_end``    after each epoch, with its row of :data:`mnist_mlp.train.COLUMNS` and
                    whether it is the best so far; an exception raised here ends training
``on_fit_end``      when the loop returns or raises (always: a place to close files and bars)
==================  ============================================================================

A callback stops training by setting the loop's :class:`StopFlag` (given to it by the
caller); the loop then returns between two steps with a state that resumes exactly.
Keras's ``Callback`` and Lightning's hooks have the same shape.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mnist_mlp.train import State


class StopFlag:
    """Set by a callback, a signal handler or a test to end training between two steps."""

    def __init__(self):
        self.requested = False


@dataclass
class StepResult:
    """One step, as a callback sees it.

    Attributes
    ----------
    index : ndarray of shape (B,)
        The training examples of the batch (positions in ``data.train``).
    loss : float
        The batch's mean loss, before the update.
    correct : int
        Examples the network classified right, before the update.
    lr : float
        The learning rate of the step.
    """

    index: np.ndarray
    loss: float
    correct: int
    lr: float


class Callback:
    """A hook into the loop; override what you need (every method does nothing here)."""

    def on_fit_start(self, state: State) -> None:
        """Before the first step."""

    def on_epoch_start(self, state: State, n_steps: int) -> None:
        """Before the epoch's first step left; ``n_steps`` steps make a whole epoch."""

    def on_step(self, state: State, step: StepResult) -> None:
        """After each step (``state.steps`` counts it already)."""

    def on_epoch_end(self, state: State, row: dict, is_best: bool) -> None:
        """After each epoch: ``row`` has :data:`mnist_mlp.train.COLUMNS`."""

    def on_fit_end(self, state: State) -> None:
        """When the loop ends, however it ends."""


class OnEpoch(Callback):
    """A function ``f(state, row, is_best)`` called after each epoch, as a callback."""

    def __init__(self, function):
        self.function = function

    def on_epoch_end(self, state: State, row: dict, is_best: bool) -> None:
        self.function(state, row, is_best)


class ProgressBar(Callback):
    """A tqdm bar per epoch on stderr, showing the running loss and the learning rate.

    Parameters
    ----------
    epochs : int
        The epochs of the fit, for the bar's "epoch 3/20".
    bar_class : tqdm class, optional
        ``tqdm.auto.tqdm`` in a notebook; plain tqdm, off where stderr is not a terminal, if None.
    """

    def __init__(self, epochs: int, bar_class: Any = None):
        if bar_class is None:
            from tqdm import tqdm

            bar_class, self.disable = tqdm, None
        else:
            self.disable = False
        self.bar_class, self.bar = bar_class, None
        self.epochs = epochs

    def on_epoch_start(self, state: State, n_steps: int) -> None:
        self.bar = self.bar_class(
            total=n_steps,
            initial=state.epoch_steps,
            desc=f"epoch {state.epoch + 1}/{self.epochs}",
            unit="batch",
            leave=False,
            disable=self.disable,
            mininterval=0.25,
        )

    def on_step(self, state: State, step: StepResult) -> None:
        if self.bar is None:
            return
        if state.epoch_steps % 20 == 1:
            t = state.totals
            self.bar.set_postfix(
                loss=f"{t.loss_sum / t.seen:.4f}", lr=f"{step.lr:.4g}", refresh=False
            )
        self.bar.update()

    def on_epoch_end(self, state: State, row: dict, is_best: bool) -> None:
        self._close()

    def on_fit_end(self, state: State) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@contextlib.contextmanager
def stop_on_sigint(flag: StopFlag):
    """While inside, the first Ctrl-C sets ``flag``; a second one interrupts at once. Signals
    land in the main thread only: elsewhere this does nothing."""
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


class StopOnCtrlC(Callback):
    """Ctrl-C during training sets ``flag``: the loop stops after the current step, resumably
    (:func:`stop_on_sigint` for the time of one fit)."""

    def __init__(self, flag: StopFlag):
        self.flag = flag
        self.inside: contextlib.ExitStack | None = None

    def on_fit_start(self, state: State) -> None:
        self.inside = contextlib.ExitStack()
        self.inside.enter_context(stop_on_sigint(self.flag))

    def on_fit_end(self, state: State) -> None:
        if self.inside is not None:
            self.inside.close()
            self.inside = None
