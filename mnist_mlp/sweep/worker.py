"""A worker: asks the study for trials and runs each as an ordinary run folder, until the cap."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_mlp import config as config_mod
from mnist_mlp import data as data_mod
from mnist_mlp import memory, run
from mnist_mlp.callbacks import Callback, StopFlag
from mnist_mlp.errors import MlpError
from mnist_mlp.sweep.results import write_results
from mnist_mlp.sweep.spec import Spec
from mnist_mlp.sweep.study import (
    DatabaseUnreachable,
    _boot_id,
    _budget_used,
    _Heartbeat,
    _may_ask,
    _optuna,
    _worker,
    create_study,
    fail_dead_trials,
    open_storage,
    retry_grid_point,
)

KEEP_CHECKPOINTS = 3  # trials whose checkpoint.npz is kept: the best few


@dataclass
class Worker:
    """Runs trials of one study until the study has ``run_cap`` of them, in this process."""

    spec: Spec
    folder: Path
    storage_url: str
    seed: int
    progress: bool = False
    on_trial: Callable[[Any], None] = lambda trial: None
    _data: dict = field(default_factory=dict)

    def run(self, stop: StopFlag | None = None) -> None:
        optuna = _optuna()
        study = create_study(self.spec, open_storage(self.storage_url), sampler_seed=self.seed)
        stop = stop or StopFlag()
        while not stop.requested:
            fail_dead_trials(study)
            if not _may_ask(study.get_trials(deepcopy=False), self.spec.run_cap):
                return
            trial = study.ask()
            earlier = [
                t for t in _budget_used(study.get_trials(deepcopy=False)) if t.number < trial.number
            ]
            if len(earlier) >= self.spec.run_cap:  # another worker took the last place meanwhile
                trial.set_user_attr("discarded", "asked past run_cap by a worker racing another")
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                return
            self._run_trial(study, trial, stop)

    def _run_trial(self, study, trial, stop) -> None:
        folder = self.folder / "trials" / str(trial.number)
        # Who runs it, in one write (each write to a journal file is an fsync): a trial is
        # checked by its process once this is there, and by its age until then.
        trial.set_user_attr(
            "worker",
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "boot": _boot_id(),
                "sampler_seed": self.seed,
                "folder": str(folder),
            },
        )
        started = time.perf_counter()
        watch = _Report(trial, self.spec, pruning=self.spec.hyperband is not None)
        try:
            config = self.spec.config_for({p.key: p.suggest(trial) for p in self.spec.parameters})
            memory.check_memory(config)
            watch.epochs = config.training.epochs
            with _Heartbeat(trial):
                run.trial_run(
                    config,
                    folder,
                    self._data_for(config),
                    callbacks=(watch,),
                    progress=self.progress,
                    stop=stop,
                    parent=study.user_attrs.get("mlflow_parent_run"),
                )
        except BaseException as exc:  # each ending is told to the study, in _ended
            self._ended(study, trial, folder, exc, watch, started)
        else:
            trial.set_user_attr("run", watch.run(started))
            study.tell(trial, watch.best)
        self._keep_best_checkpoints(study)
        write_results(study, self.spec, self.folder)
        self.on_trial(trial)

    def _ended(self, study, trial, folder: Path, exc: BaseException, watch, started) -> None:
        """Tell the study how a trial that did not complete ended; re-raise what must go on."""
        optuna = _optuna()
        _drop_checkpoints(folder)
        if isinstance(exc, optuna.TrialPruned):
            trial.set_user_attr("run", watch.run(started))
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return
        if isinstance(exc, DatabaseUnreachable):
            # nothing more can be written; the trial stays RUNNING until a worker finds this one
            # gone (fail_dead_trials) and gives its place to a new trial
            raise exc
        if isinstance(exc, (run.TrainingInterrupted, KeyboardInterrupt)):
            trial.set_user_attr("failed_because", "interrupted (Ctrl-C)")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            retry_grid_point(study, trial.number)
            raise exc
        if not isinstance(exc, Exception):
            raise exc
        # The trial's own failure (a loss that diverged, say) uses up its place, unlike a trial
        # cut off or whose worker died: else a sampler fond of a bad region would never stop.
        trial.set_user_attr("failed_because", f"{type(exc).__name__}: {exc}"[:500])
        trial.set_user_attr("charged", True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if not isinstance(exc, MlpError):
            raise exc

    def _data_for(self, config: config_mod.Config):
        d = config.data
        # everything the loaded images depend on: a committee's members differ by their view alone
        view = (d.normalise.kind, d.normalise.width)
        key = (d.dataset, d.validation, config.training.seed, d.subset, d.dir, view)
        if key not in self._data:
            self._data.clear()  # one dataset at a time: a sweep over seeds should not pile them up
            self._data[key] = data_mod.for_config(config, progress=False)
        return self._data[key]

    def _keep_best_checkpoints(self, study) -> None:
        from optuna.trial import TrialState

        if self.spec.committee:  # every member's checkpoint is the committee's
            return
        done = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None
        ]
        done.sort(key=lambda t: t.value, reverse=self.spec.goal == "maximize")
        for t in done[KEEP_CHECKPOINTS:]:
            folder = _worker(t).get("folder")
            if folder and _worker(t).get("host") == socket.gethostname():
                _drop_checkpoints(Path(folder))


class _Report(Callback):
    """A trial's epochs told to Optuna: the metric, and, with a pruner, whether to stop."""

    def __init__(self, trial, spec: Spec, pruning: bool):
        self.trial, self.spec, self.pruning = trial, spec, pruning
        self.sign = 1 if spec.goal == "maximize" else -1
        self.best: float | None = None
        self.epochs_run, self.epochs = 0, 0

    def on_epoch_end(self, state, row: dict, is_best: bool) -> None:
        value = row[self.spec.metric]
        self.epochs_run = int(row["epoch"])
        if self.best is None or self.sign * value > self.sign * self.best:
            self.best = value
        if not self.pruning:
            return  # each report is a write to the storage; only a pruner reads them
        self.trial.report(value, self.epochs_run)
        # After the last epoch there is nothing left to save: the trial completes.
        if self.epochs_run < self.epochs and self.trial.should_prune():
            raise _optuna().TrialPruned(f"pruned after epoch {row['epoch']}")

    def run(self, started: float) -> dict:
        return {"seconds": time.perf_counter() - started, "epochs": self.epochs_run}


def _drop_checkpoints(folder: Path) -> None:
    for name in ("checkpoint.npz", "last.npz"):
        with contextlib.suppress(OSError):
            (folder / name).unlink()
