"""A training run on disk: its folder, checkpoints and metrics file; and evaluating a checkpoint.

This module joins the loop (:mod:`mnist_mlp.train`) to the files (:mod:`mnist_mlp.checkpoint`),
so that neither needs the other. A run folder holds:

- ``config.yaml``     the resolved configuration (every key, defaults included);
- ``metrics.csv``     one row per epoch, appended as the run goes;
- ``checkpoint.npz``  the epoch with the best validation accuracy so far;
- ``last.npz``        the latest state, from which ``mlp train --resume`` continues.

``<output.dir>/latest`` links to the newest run folder.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mnist_mlp import augment, memory, metrics, train
from mnist_mlp import checkpoint as ckpt_mod
from mnist_mlp import config as config_mod
from mnist_mlp import data as data_mod
from mnist_mlp.callbacks import Callback, StopFlag, StopOnCtrlC
from mnist_mlp.errors import ConfigError, MlpError, Stopped, WriteError
from mnist_mlp.evaluation import check_same_data
from mnist_mlp.runfolder import Curves, RunFiles, link_latest

# what a resumed run may change: how long it trains, and which step (the same arithmetic)
RESUMABLE_KEYS = ("training.epochs", "training.patience", "training.step")


class TrainingInterrupted(Stopped):
    """Ctrl-C: a resumable checkpoint was written."""


@dataclass
class RunResult:
    folder: Path
    state: train.State
    test_accuracy: float
    test_loss: float


def default_folder(config: config_mod.Config, name: str) -> Path:
    return Path(config.output.dir) / name


def train_run(
    config: config_mod.Config,
    folder: Path,
    *,
    resume: str | os.PathLike | None = None,
    overrides: tuple[str, ...] = (),
    force: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    stop: StopFlag | None = None,
    callbacks: tuple[Callback, ...] = (),
    report_to: tuple[str, ...] | None = None,
) -> RunResult:
    """Train into ``folder`` (or continue the run saved in ``resume``) and test the best epoch.

    Parameters
    ----------
    config : Config
        Ignored when resuming: the checkpoint's own config is used, with ``overrides`` of
        :data:`RESUMABLE_KEYS` applied (to train for more epochs, say).
    folder : Path
        The run folder.
    resume : path-like, optional
        A checkpoint to continue from (normally ``last.npz``).
    force : bool
        Replace a run already in ``folder``; without it that is an error, so a good
        checkpoint is never overwritten by accident.
    echo : callable
        Receives one line per epoch and the final result.
    stop : StopFlag, optional
        A flag that ends the run between two steps (Ctrl-C sets it).
    callbacks : tuple of Callback
        More hooks into the loop, after the run folder's own.
    report_to : tuple of str, optional
        Trackers to send the run to (``tensorboard``, ``mlflow``), instead of the config's
        ``output.report_to``.

    Raises
    ------
    TrainingInterrupted
        After saving ``last.npz``, when stopped.
    TrainingDiverged
        When the loss becomes non-finite; checkpoints already written are left intact.
    """
    config, state = _starting_point(config, folder, resume, overrides, force)
    if report_to is not None:
        config = reporting_to(config, report_to)
    memory.check_memory(config)
    data = data_mod.for_config(config, progress)
    if resume is not None:
        check_same_data(resume, ckpt_mod.load(resume), data)
    trackers = open_trackers(config, folder, data, echo)
    files = RunFiles(folder, config, data, state.history if state else [])
    link_latest(config, folder)
    writer = _RunWriter(files, config.training.epochs, echo, resume, state)
    if state is not None:
        echo(f"resuming {resume} at epoch {state.epoch + 1}, step {state.steps}")
    state = writer.fit(config, data, state, stop, progress, (*callbacks, *trackers))
    if state.status == "early-stopped":
        echo(f"early stop: validation loss has not improved for {config.training.patience} epochs")
    writer.curves.update(state.history, final=True)
    test = _test_best(folder / "checkpoint.npz", data)
    which = (
        f"best epoch {state.best['epoch']}"
        if len(data.val)
        else f"last epoch {state.best['epoch']} (no validation split)"
    )
    finals = {"test/accuracy": test.accuracy, "test/loss": test.loss, **best_of(state)}
    unsent = end_trackers(trackers, folder, data, test.probabilities, finals, checkpoint=True)
    echo(
        f"{which}: test accuracy {100 * test.accuracy:.2f}% "
        f"(loss {test.loss:.4f}) -> {folder / 'checkpoint.npz'}"
    )
    for line in unsent:
        echo(line)
    return RunResult(folder, state, test.accuracy, test.loss)


def reporting_to(config: config_mod.Config, names: tuple[str, ...]) -> config_mod.Config:
    """``config`` sending its run to the trackers ``names`` (``--report-to``)."""
    import dataclasses

    for name in names:
        if name not in config_mod.TRACKERS:
            raise ConfigError(
                f"--report-to must be one of {', '.join(config_mod.TRACKERS)}, got {name!r}"
            )
    chosen = list(dict.fromkeys(names))
    return dataclasses.replace(config, output=dataclasses.replace(config.output, report_to=chosen))


def open_trackers(config, folder: Path, data, echo, parent: str | None = None) -> list:
    """The trackers ``output.report_to`` names (their libraries imported only then)."""
    if not config.output.report_to:
        return []
    from mnist_mlp import trackers

    return trackers.open_trackers(config.output.report_to, folder, config, data, echo, parent)


def end_trackers(
    trackers: list, folder: Path, data, probabilities, finals: dict, checkpoint: bool
) -> list[str]:
    """Tell each tracker how the run ended; what they could not send, a line each."""
    if not trackers:
        return []
    from mnist_mlp.trackers import RunEnd

    end = RunEnd(
        folder,
        folder / "checkpoint.npz" if checkpoint else None,
        probabilities,
        data.test if probabilities is not None else None,
        list(data.classes),
        finals,
    )
    for tracker in trackers:
        tracker.on_run_end(end)
    return [note for note in (t.unsent() for t in trackers) if note]


def best_of(state: train.State) -> dict[str, float]:
    """The best epoch's figures, as trackers name them (``best/epoch``, ``best/val_accuracy``)."""
    best = state.best
    out = {"best/epoch": float(best.get("epoch") or state.epoch)}
    if best.get("val_acc") is not None:
        out.update({"best/val_accuracy": best["val_acc"], "best/val_loss": best["val_loss"]})
    return out


def _starting_point(
    config: config_mod.Config,
    folder: Path,
    resume: str | os.PathLike | None,
    overrides: tuple[str, ...],
    force: bool,
) -> tuple[config_mod.Config, train.State | None]:
    """The config and state a run starts from: the checkpoint's when resuming, else a new run
    (refused where ``folder`` already holds one, unless ``force``)."""
    if resume is None:
        if not force and ((folder / "checkpoint.npz").exists() or (folder / "last.npz").exists()):
            raise MlpError(
                f"{folder} already holds a run; continue it with --resume {folder / 'last.npz'}, "
                f"train into another folder with --out DIR, or replace it with --force"
            )
        return config, None
    saved = ckpt_mod.load(resume)
    config = _resume_config(saved.config, overrides)
    state = train.State.from_meta(saved.params, saved.momentum, saved.meta, saved.averaged)
    if state.finished(config.training.epochs):
        raise MlpError(
            f"{resume} already finished its {config.training.epochs} epochs; to train "
            f"longer, add --set training.epochs=N with N > {state.epoch}"
        )
    return config, state


def _test_best(path: Path, data: data_mod.Data) -> metrics.Metrics:
    """The best checkpoint on the test set, the result recorded in it (so that what serves or
    exports it can say how good it is without the test set at hand)."""
    best = ckpt_mod.load(path)
    test = metrics.evaluate(best.params, best.activation, data.test, scaling=best.scaling)
    best.meta["test"] = {"accuracy": test.accuracy, "loss": test.loss, "n": len(data.test)}
    ckpt_mod.save(path, best)
    return test


class _RunWriter(Callback):
    """A run's files kept current by the loop: a row of ``metrics.csv``, ``last.npz``, the best
    ``checkpoint.npz``, a line and the curves after every epoch; ``last.npz`` when stopped."""

    def __init__(self, files, epochs: int, echo, resume, state: train.State | None):
        self.files, self.epochs, self.echo = files, epochs, echo
        self.curves = Curves(files.folder)
        # the newest checkpoint on disk to resume from, should a write fail
        self.good = {"path": resume, "epoch": state.epoch if state is not None else None}

    def on_epoch_end(self, state: train.State, row: dict, is_best: bool) -> None:
        self.files.append(row)
        self.files.save("last.npz", state)
        self.good.update(path=self.files.folder / "last.npz", epoch=state.epoch)
        if is_best:
            self.files.save_best(state)
        self.echo(_epoch_line(row, self.epochs, is_best))
        self.curves.update(state.history)

    def fit(self, config, data, state, stop, progress, callbacks) -> train.State:
        """Train; a failed write names the last good checkpoint, a stop saves ``last.npz``."""
        try:
            state = _fit(config, data, state, (self, *callbacks), stop, progress)
            if state.status == "interrupted":
                self.files.save("last.npz", state)
        except WriteError as exc:
            if self.good["path"] is None:
                raise WriteError(f"{exc}; no checkpoint of this run was written yet") from None
            raise WriteError(
                f"{exc}; the last good checkpoint is {self.good['path']} (epoch "
                f"{self.good['epoch']}): make room, then resume with: mlp train --resume "
                f"{self.good['path']}"
            ) from None
        if state.status == "interrupted":
            last = self.files.folder / "last.npz"
            raise TrainingInterrupted(
                f"interrupted at epoch {state.epoch + 1}, step {state.steps}; saved {last}. "
                f"Resume with: mlp train --resume {last}"
            )
        return state


def trial_run(
    config: config_mod.Config,
    folder: Path,
    data: data_mod.Data,
    *,
    callbacks: tuple[Callback, ...] = (),
    progress: bool = False,
    stop: StopFlag | None = None,
    parent: str | None = None,
) -> train.State:
    """A sweep's trial: train into ``folder`` and keep only what choosing among trials needs.

    Unlike :func:`train_run`: no test at the end (trials are chosen on validation only, and the
    winner tested once), no ``last.npz`` (a cut-off trial is rerun, not resumed), no
    ``runs/latest`` link and no ``curves.png`` (``mlp report`` draws the best trials'), and the
    best epoch is written once, when the trial ends, not at every improvement. A run already in
    ``folder`` is replaced. The caller checks the memory (:func:`mnist_mlp.memory.check_memory`)
    before loading ``data``.

    Parameters
    ----------
    config : Config
    folder : Path
    data : Data
        The dataset, already loaded for this config (a sweep's trials share it).
    callbacks : tuple of Callback
        After the trial's own (its row written): Optuna's report and pruning, whose
        ``TrialPruned`` ends the trial there.
    progress : bool
    stop : StopFlag, optional
    parent : str, optional
        The sweep's MLflow run, whose child this trial is (with ``output.report_to: [mlflow]``).

    Raises
    ------
    TrainingInterrupted
        When stopped; nothing is kept to resume from.
    TrainingDiverged
        When the loss becomes non-finite.
    """
    files = RunFiles(folder, config, data, [])
    trackers = open_trackers(config, folder, data, to_stderr, parent)
    keeper = _KeepBest(files)
    state = _fit(config, data, None, (keeper, *callbacks, *trackers), stop, progress)
    if state.status == "interrupted":
        raise TrainingInterrupted(f"interrupted at epoch {state.epoch + 1}, step {state.steps}")
    if keeper.best is not None:
        files.write("checkpoint.npz", *keeper.best)
    for line in end_trackers(trackers, folder, data, None, best_of(state), checkpoint=False):
        to_stderr(line)
    return state


def to_stderr(line: str) -> None:
    """``print`` to stderr: where a run's notes go when no one gave an ``echo``."""
    import sys

    print(line, file=sys.stderr)


class _KeepBest(Callback):
    """A trial's rows written as they come, its best epoch held in memory until it ends."""

    def __init__(self, files: RunFiles):
        self.files = files
        self.best: tuple[dict, dict] | None = None

    def on_epoch_end(self, state: train.State, row: dict, is_best: bool) -> None:
        self.files.append(row)
        if is_best:  # without its momentum: a trial is never resumed
            params = {k: v.copy() for k, v in state.evaluated.items()}
            self.best = (params, copy.deepcopy(state.meta()))


def _fit(
    config: config_mod.Config,
    data: data_mod.Data,
    state: train.State | None,
    callbacks: tuple[Callback, ...],
    stop: StopFlag | None,
    progress: bool,
) -> train.State:
    """:func:`mnist_mlp.train.fit` with the config's distortions, Ctrl-C ending it between steps."""
    flag = stop or StopFlag()
    return train.fit(
        config,
        data,
        state,
        callbacks=(StopOnCtrlC(flag), *callbacks),
        stop=flag,
        progress=progress,
        augment=augment.for_config(config.data.augment),
    )


def _resume_config(saved: config_mod.Config, overrides: tuple[str, ...]) -> config_mod.Config:
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key not in RESUMABLE_KEYS:
            raise ConfigError(
                f"--set {item}: only {', '.join(RESUMABLE_KEYS)} can change when resuming; "
                f"start a new run to change {key}"
            )
    return config_mod.apply_overrides(saved, overrides)


def _epoch_line(row: dict, epochs: int, is_best: bool) -> str:
    width = len(str(epochs))
    val = (
        "val loss   -    acc   -   "
        if row["val_acc"] is None
        else f"val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:6.2f}%"
    )
    return (
        f"epoch {row['epoch']:>{width}}/{epochs}  train loss {row['train_loss']:.4f} "
        f"acc {100 * row['train_acc']:6.2f}%  {val}  lr {row['lr']:.4g}  "
        f"{row['seconds']:.1f}s{'  *' if is_best else ''}"
    )
