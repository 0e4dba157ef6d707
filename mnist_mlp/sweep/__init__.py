"""``mlp sweep``: search settings with Optuna, on one machine or on many sharing a study.

The sweep file uses the W&B spelling people know (``method``, ``metric``, ``parameters`` with
``values`` or a ``distribution``, ``early_terminate``, ``run_cap``) plus ``base``, the config
every trial starts from. Optuna does the rest (samplers, pruners, storage); this module turns
a trial into an ordinary run folder, keeps the study's count and its dead trials honest, and
writes what a person reads: ``results.csv``, ``best.yaml``, ``summary.json``.

Storage: without ``--storage``, Optuna's journal file in the sweep folder, which several local
worker processes share safely (SQLite locks up under parallel writers, as Optuna's FAQ says).
With ``--storage postgresql://...`` (any SQLAlchemy URL), workers on any number of machines
share one study; each machine runs the same command.

Designed around four known Optuna pitfalls:

- ``n_trials`` counts per worker: the cap here is the study's, counted in the storage before
  and after each ``ask()`` (a trial asked past the cap is discarded, never run);
- workers with one sampler seed suggest the same trials: each worker's seed is drawn from the
  operating system and recorded with its trials;
- Hyperband's ``max_resource="auto"`` prunes nothing until a trial completes: it is set to
  the epochs;
- a worker that dies leaves its trial RUNNING forever, and Optuna's heartbeat exists only for
  RDB storages inside ``optimize()``: workers here record a heartbeat (and their host and
  process) on every trial, and a trial whose worker is gone is marked failed before new trials
  are asked, so its budget goes to a new one.

What Optuna provides is used as it is: the samplers (grid, random, TPE), the Hyperband pruner,
the journal and RDB storages, parameter importances. What remains ours, and why:

- the sweep file (:mod:`~mnist_mlp.sweep.spec`): Optuna reads no sweep file; W&B's format is
  the one people know;
- the study-wide cap and dead-worker trials (:mod:`~mnist_mlp.sweep.study`): Optuna's
  ``MaxTrialsCallback`` and heartbeat act inside ``optimize()`` only, and its heartbeat on RDB
  storages only; workers here ask and tell, so that a trial's failure, pruning and place in the
  budget are decided in one spot (:mod:`~mnist_mlp.sweep.worker`), on the journal file too;
- worker processes: Optuna's ``n_jobs`` runs threads, which share the GIL and BLAS's cores;
- what a person reads (:mod:`~mnist_mlp.sweep.results`).

This module is the command: it starts the workers (in this process or as ``python -m
mnist_mlp.sweep`` processes, :mod:`~mnist_mlp.sweep.__main__`), waits for the other machines'
trials, and sums up.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mnist_mlp import callbacks, run
from mnist_mlp.errors import MlpError, Stopped
from mnist_mlp.sweep.results import finish, results, write_results
from mnist_mlp.sweep.spec import Parameter, Spec, load_spec
from mnist_mlp.sweep.study import (
    INSTALL_HINT,
    _boot_id,
    _counts,
    _may_ask,
    create_study,
    fail_dead_trials,
    open_storage,
    storage_url,
)
from mnist_mlp.sweep.worker import KEEP_CHECKPOINTS, Worker

__all__ = [
    "INSTALL_HINT",
    "KEEP_CHECKPOINTS",
    "Parameter",
    "Spec",
    "SweepInterrupted",
    "Worker",
    "_boot_id",
    "_counts",
    "create_study",
    "default_folder",
    "fail_dead_trials",
    "finish",
    "format_summary",
    "load_spec",
    "open_storage",
    "results",
    "storage_url",
    "sweep",
    "write_results",
]


def default_folder(spec: Spec) -> Path:
    return Path(spec.base.output.dir) / f"sweep-{spec.name}"


def sweep(
    spec_path: str | os.PathLike,
    *,
    run_cap: int | None = None,
    workers: int = 1,
    storage: str | None = None,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    seed: int | None = None,
    report_to: tuple[str, ...] | None = None,
) -> dict:
    """Run (or continue) a sweep until its study holds ``run_cap`` finished trials; return the
    summary.

    With ``workers`` > 1, that many worker processes share the study, each with its share of
    the cores for BLAS. Ctrl-C stops every worker after cutting its trial off (the trial is
    marked failed, its budget free); rerunning the same command continues the study. Each
    worker's sampler seed is drawn from the operating system, or is ``seed + i`` for worker i.

    ``report_to`` sends every trial to trackers (as its base config's ``output.report_to``
    does): each trial's TensorBoard events in its folder, and in MLflow one parent run for the
    study with a child run per trial, whichever machine runs it.

    Raises
    ------
    SweepInterrupted
        On Ctrl-C, after the workers stopped.
    """
    spec = load_spec(spec_path, run_cap, report_to)
    folder = Path(out) if out else default_folder(spec)
    folder.mkdir(parents=True, exist_ok=True)
    folder = folder.resolve()
    url = storage_url(storage, folder)
    study = create_study(spec, open_storage(url))  # once, before the workers start: no schema race
    if "mlflow" in spec.base.output.report_to:  # the parent run, before any worker needs it
        from mnist_mlp.trackers import check_installed
        from mnist_mlp.trackers.mlflow_tracker import parent_run

        check_installed(["mlflow"])
        parent_run(study, spec.name, spec.base.output.dir)
    dead = fail_dead_trials(study)
    if dead:
        log(f"marked failed trials {', '.join(map(str, dead))}: their workers had died")
    started = time.perf_counter()
    bar = _Progress(study, spec, progress)
    flag = callbacks.StopFlag()
    try:
        with callbacks.stop_on_sigint(flag):
            while True:
                if workers <= 1:
                    Worker(
                        spec,
                        folder,
                        url,
                        _new_seed() if seed is None else seed,
                        on_trial=lambda t: bar.update(),
                    ).run(flag)
                else:
                    _run_processes(spec_path, spec, folder, storage, workers, bar, flag, seed)
                if flag.requested:
                    raise KeyboardInterrupt
                if not _wait_for_others(study, spec, bar, flag):
                    break  # a trial of another worker failed: its budget is free again, run it here
    except (KeyboardInterrupt, run.TrainingInterrupted):
        bar.close()
        write_results(study, spec, folder)
        raise SweepInterrupted(
            f"stopped; the finished trials are kept in {folder} and the one cut off is marked "
            f"failed. Continue with the same command."
        ) from None
    finally:
        bar.close()
    return finish(study, spec, folder, time.perf_counter() - started)


def _wait_for_others(study, spec: Spec, bar, flag: callbacks.StopFlag, poll: float = 1.0) -> bool:
    """Wait while other workers' trials run; False when the study is done, True when a place
    came free (one of their trials failed) and this machine should run more trials."""
    while not flag.requested:
        fail_dead_trials(study)
        trials = study.get_trials(deepcopy=False)
        if _may_ask(trials, spec.run_cap):
            return True
        if not any(
            t.state.name in ("RUNNING", "WAITING") and not t.user_attrs.get("discarded")
            for t in trials
        ):
            return False
        bar.update()
        time.sleep(poll)
    raise KeyboardInterrupt


class SweepInterrupted(Stopped):
    """Ctrl-C: the study keeps its finished trials; the same command continues it."""


def _new_seed() -> int:
    return int.from_bytes(os.urandom(4), "little")


def _run_processes(
    spec_path,
    spec: Spec,
    folder: Path,
    storage: str | None,
    workers: int,
    bar,
    flag: callbacks.StopFlag,
    seed: int | None = None,
) -> None:
    """Start ``workers`` worker processes, each with its share of the cores, and wait for them."""
    cores = os.cpu_count() or 1
    threads = str(max(1, cores // workers))
    env = {
        **os.environ,
        "OPENBLAS_NUM_THREADS": threads,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    cmd = [
        sys.executable,
        "-m",
        "mnist_mlp.sweep",
        str(spec_path),
        str(folder),
        storage or "",
        str(spec.run_cap),
        ",".join(spec.base.output.report_to),
    ]
    procs = [
        subprocess.Popen(
            [*cmd, "" if seed is None else str(seed + i)], env=env, stdin=subprocess.DEVNULL
        )
        for i in range(workers)
    ]
    forwarded = False
    while any(p.poll() is None for p in procs):
        # a terminal's Ctrl-C reached them too; kill -INT of this one did not
        if flag.requested and not forwarded:
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGINT)
            forwarded = True
        bar.update()
        time.sleep(0.2 if flag.requested else 1.0)
    bar.update()
    failed = [p.returncode for p in procs if p.returncode != 0 and not flag.requested]
    if failed:
        raise MlpError(
            f"{len(failed)} of {workers} workers failed (exit codes {failed}); see their messages "
            "above"
        )


class _Progress:
    """A tqdm line on stderr: trials done, pruned, failed, best so far."""

    def __init__(self, study, spec: Spec, enabled: bool):
        from tqdm import tqdm

        self.study, self.spec = study, spec
        self.bar = tqdm(
            total=spec.run_cap,
            desc=f"sweep {spec.name}",
            unit="trial",
            disable=None if enabled else True,
            leave=True,
        )
        self.update()

    def update(self) -> None:
        counts = _counts(self.study)
        done = counts["complete"] + counts["pruned"]
        self.bar.n = min(done, self.spec.run_cap)
        best = None
        with contextlib.suppress(ValueError):
            best = self.study.best_value
        self.bar.set_postfix(
            pruned=counts["pruned"],
            failed=counts["fail"],
            running=counts["running"],
            best="-" if best is None else f"{best:.4f}",
            refresh=False,
        )
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def format_summary(s: dict) -> str:
    """The summary as a few lines for a person."""
    t = s["trials"]
    lines = [
        f"sweep {s['name']}: {t['complete']} complete, {t['pruned']} pruned, {t['fail']} failed; "
        f"{s['epochs_run']} epochs in {s['wall_seconds']:.0f} s"
    ]
    best = s.get("best")
    if best:
        test = best.get("test_accuracy")
        lines.append(
            f"best trial {best['number']}: {s['metric']} {best['value']:.4f}"
            + (f", test accuracy {100 * test:.2f}%" if test is not None else "")
            + f"  ({', '.join(f'{k}={json.dumps(v)}' for k, v in best['params'].items())})"
        )
        if best.get("note"):
            lines.append(best["note"])
        c = s.get("committee")
        if c and c.get("test_accuracy") is not None:
            lines.append(
                f"the committee of {len(c['members'])} members: validation "
                f"{100 * c['val_accuracy']:.2f}%, test accuracy {100 * c['test_accuracy']:.2f}% "
                f"({c['test_errors']} test digits wrong)"
            )
    else:
        lines.append("no trial completed")
    folder = Path(s["folder"])
    lines.append(
        f"wrote {folder / 'results.csv'}, {folder / 'best.yaml' if best else ''}"
        f"{', ' if best else ''}{folder / 'summary.json'}"
    )
    return "\n".join(lines)
