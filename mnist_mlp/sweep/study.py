"""The study in its storage: opening it, counting its trials against the cap, and failing the
trials whose worker died (each worker's heartbeat)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

from mnist_mlp.errors import MlpError
from mnist_mlp.sweep.spec import Spec

INSTALL_HINT = (
    "mlp sweep needs Optuna: pip install 'mnist-mlp[sweep]' (optuna, plus psycopg for PostgreSQL)"
)
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0  # a RUNNING trial of another host with no heartbeat for this long is dead
# A worker waits this long for a database that stopped answering (a restart, a network cut),
# retrying with backoff, before it stops with one line; the same command then resumes.
OUTAGE_S = float(os.environ.get("MNIST_MLP_DB_OUTAGE_S", "120"))


class DatabaseUnreachable(MlpError):
    """The study's database did not answer for longer than :data:`OUTAGE_S`."""


def _optuna():
    try:
        import optuna
    except ImportError:
        raise MlpError(INSTALL_HINT) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage_url(url: str | None, folder: Path) -> str:
    """What Optuna is given: the journal file in ``folder``, or ``url`` (psycopg 3 for
    PostgreSQL)."""
    if url is None:
        return f"journal:{folder / 'study.journal'}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def open_storage(url: str):
    """An Optuna storage for :func:`storage_url`'s answer."""
    optuna = _optuna()
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.split(":", 1)[1]))
    if url.startswith("sqlite"):
        raise MlpError(
            "--storage sqlite:// locks up with several workers writing at once (Optuna's FAQ); "
            "leave --storage out for the journal file on one machine, or use postgresql://"
        )
    tries = 8
    try:
        for attempt in range(tries):
            try:
                # No Optuna heartbeat: it works inside optimize() only; workers record their own.
                # A connection is tested before each use (one the server dropped in a restart is
                # replaced), and each worker holds at most a few.
                storage = optuna.storages.RDBStorage(
                    url,
                    engine_kwargs={
                        "pool_pre_ping": True,
                        "pool_size": 2,
                        "max_overflow": 2,
                        "pool_recycle": 600,
                        "connect_args": _connect_args(url),
                    },
                )
                return _retrying(storage, _redact(url))
            except Exception as exc:
                # workers creating the tables at the same moment: all but one lose
                if attempt == tries - 1 or not _is_creation_race(exc):
                    raise
                time.sleep(0.2 * (attempt + 1))
    except ImportError as exc:
        raise MlpError(
            f"--storage {_redact(url)}: a database driver is missing ({exc}); "
            f"pip install 'mnist-mlp[sweep]'"
        ) from None
    except Exception as exc:  # sqlalchemy's errors: a bad URL, a server that does not answer
        raise MlpError(
            f"--storage {_redact(url)}: cannot open it ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0]})"
        ) from None


def _connect_args(url: str) -> dict:
    """For PostgreSQL: a query on a link gone silent (a cut cable drops packets; nothing
    answers) fails after 15 s instead of TCP's minutes, and so is retried like a refusal."""
    if not url.startswith("postgresql"):
        return {}
    return {
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": 15_000,
    }


def _is_disconnection(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is out of reach (not that a query was wrong)."""
    try:
        from sqlalchemy import exc as sa
    except ImportError:  # pragma: no cover - sqlalchemy comes with optuna
        return False
    seen: BaseException | None = exc
    while seen is not None:  # Optuna wraps a failed commit in StorageInternalError
        if isinstance(seen, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError)):
            return True
        if isinstance(seen, sa.PendingRollbackError):  # a connection lost mid-transaction
            return True
        if isinstance(seen, sa.DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _retrying(storage, where: str):
    """``storage`` with each of its methods retried, with backoff, while the database is out
    of reach, for up to :data:`OUTAGE_S` seconds; then :class:`DatabaseUnreachable`.

    A write whose answer was lost may have been made: a trial's final state written twice is
    refused by Optuna as already finished, which here counts as done.
    """
    from optuna.exceptions import UpdateFinishedTrialError

    def wrap(name: str, method):
        def call(*args, **kwargs):
            deadline, delay, retried = time.monotonic() + OUTAGE_S, 0.2, False
            while True:
                try:
                    return method(*args, **kwargs)
                except UpdateFinishedTrialError:
                    if retried and name == "set_trial_state_values":
                        return True  # the first attempt went through before its answer was lost
                    raise
                except Exception as exc:
                    if not _is_disconnection(exc):
                        raise
                    if time.monotonic() + delay > deadline:
                        raise DatabaseUnreachable(
                            f"the study's database ({where}) has not answered for "
                            f"{OUTAGE_S:g} s ({type(exc).__name__}); this worker stops; run the "
                            f"same command again once it is back: finished trials are kept"
                        ) from None
                    time.sleep(delay)
                    delay, retried = min(delay * 2, 5.0), True

        return call

    # the private methods too: Optuna's cache in front of the storage calls some of them
    for name in dir(type(storage)):
        if not name.startswith("__") and callable(getattr(storage, name)):
            setattr(storage, name, wrap(name, getattr(storage, name)))
    return storage


def _redact(url: str) -> str:
    head, sep, tail = url.partition("@")
    if not sep:
        return url
    scheme, _, credentials = head.partition("://")
    user, colon, _ = credentials.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{tail}"


def _grid_sampler(optuna):
    """Optuna's GridSampler, made fit for several ask-and-tell workers:

    - its grid is numbered in one order for every worker: Optuna shuffles the points by the
      sampler's seed, and workers with their own seeds then disagreed on which point a trial's
      number meant (a point run twice, another never);
    - the worker's seed only picks among the points not yet run;
    - its ``after_trial`` no longer stops an ``optimize()`` loop once every point was tried
      (``Study.stop``), which outside that loop raised RuntimeError at the end of every grid
      sweep; the workers stop at ``run_cap``.
    """
    from optuna.samplers._lazy_random_state import LazyRandomState

    class Grid(optuna.samplers.GridSampler):
        def __init__(self, search_space, seed=None):
            super().__init__(search_space, seed=0)  # the same order everywhere
            self._rng = LazyRandomState(seed)

        def after_trial(self, study, trial, state, values) -> None:
            return None

    return Grid


def create_study(spec: Spec, storage, sampler_seed: int | None = None, tries: int = 8):
    """Create the study, or load it if another worker did (retrying the schema race of RDBs)."""
    optuna = _optuna()
    if spec.method == "grid":
        sampler = _grid_sampler(optuna)(spec.grid(), seed=sampler_seed)
    elif spec.method == "random":
        sampler = optuna.samplers.RandomSampler(seed=sampler_seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=sampler_seed)
    if spec.hyperband:
        pruner = optuna.pruners.HyperbandPruner(
            min_resource=spec.hyperband["min_iter"],
            max_resource=spec.base.training.epochs,
            reduction_factor=spec.hyperband["eta"],
        )
    else:
        pruner = optuna.pruners.NopPruner()
    for attempt in range(tries):
        try:
            study = optuna.create_study(
                storage=storage,
                sampler=sampler,
                pruner=pruner,
                study_name=spec.name,
                direction=spec.goal,
                load_if_exists=True,
            )
            break
        except Exception as exc:  # two workers creating the tables or the study at once
            if attempt == tries - 1 or not _is_creation_race(exc):
                raise
            time.sleep(0.2 * (attempt + 1))
    if study.direction.name.lower() != spec.goal:
        raise MlpError(
            f"study {spec.name!r} in this storage goes the other way "
            f"({study.direction.name.lower()}); "
            f"name this sweep otherwise (name: in the sweep file)"
        )
    study.set_user_attr("spec", spec.raw)
    return study


def _is_creation_race(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return any(
        sign in text
        for sign in ("already exists", "UniqueViolation", "duplicate key", "IntegrityError")
    )


def _counts(study) -> dict[str, int]:
    from optuna.trial import TrialState

    out = {"complete": 0, "pruned": 0, "fail": 0, "running": 0}
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("discarded"):
            continue
        key = {
            TrialState.COMPLETE: "complete",
            TrialState.PRUNED: "pruned",
            TrialState.FAIL: "fail",
            TrialState.RUNNING: "running",
            TrialState.WAITING: "running",
        }[t.state]
        out[key] += 1
    return out


def _budget_used(trials) -> list:
    """Trials that count against run_cap: finished (complete, pruned, or failed of themselves)
    or under way; not those cut off or whose worker died, whose places go to new trials."""
    from optuna.trial import TrialState

    used = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    return [
        t
        for t in trials
        if (t.state in used or t.user_attrs.get("charged")) and not t.user_attrs.get("discarded")
    ]


def _may_ask(trials, run_cap: int) -> bool:
    """Whether a worker should ask the study for a trial: the budget has room, or a trial waits
    in the queue (a cut-off grid point queued again), which the budget counts but only
    ``ask()`` starts."""
    queued = any(t.state.name == "WAITING" and not t.user_attrs.get("discarded") for t in trials)
    return queued or len(_budget_used(trials)) < run_cap


def fail_dead_trials(study, now: float | None = None) -> list[int]:
    """Mark failed every RUNNING trial whose worker is gone; return their numbers.

    Dead: on this host, its process no longer exists; elsewhere, no heartbeat for
    :data:`STALE_AFTER_S`. (Optuna's own heartbeat covers RDB storages inside ``optimize()``;
    this covers the journal file and ask-and-tell workers too.)
    """
    from optuna.trial import TrialState

    now = time.time() if now is None else now
    host = socket.gethostname()
    dead = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = _worker(t)
        if who.get("host") == host:
            gone = not _alive(int(who["pid"])) or who.get("boot") != _boot_id()
        else:  # another machine's, or one whose worker died before it said who it is
            gone = (
                now - float(t.user_attrs.get("heartbeat", t.datetime_start.timestamp()))
                > STALE_AFTER_S
            )
        if gone:
            with contextlib.suppress(Exception):  # another worker may have failed it first
                study._storage.set_trial_user_attr(t._trial_id, "failed_because", "its worker died")
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                dead.append(t.number)
                retry_grid_point(study, t.number)
    return dead


def retry_grid_point(study, number: int) -> None:
    """Queue again the parameters of grid trial ``number``, cut off by no fault of its own:
    Optuna's GridSampler counts a failed point as visited, so a grid sweep (a committee's
    members) would otherwise never run it, and run another point twice instead."""
    frozen = study._storage.get_trial(study._storage.get_trial_id_from_study_id_trial_number(
        study._study_id, number
    ))  # fmt: skip
    if "grid_id" in frozen.system_attrs:
        study.enqueue_trial(frozen.params)


def _worker(trial) -> dict:
    """Who runs (or ran) ``trial``: host, pid, boot, sampler_seed, folder ({} until it said)."""
    return trial.user_attrs.get("worker") or {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # killed but not yet reaped (a zombie) is dead too: it answers signals, it runs nothing
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class _Heartbeat:
    """Records, every :data:`HEARTBEAT_S` seconds, that this worker's trial is alive."""

    def __init__(self, trial):
        self.trial = trial
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="mnist_mlp-heartbeat")

    def _beat(self):
        while not self.done.wait(HEARTBEAT_S):
            with contextlib.suppress(Exception):  # the trial may have just finished
                self.trial.set_user_attr("heartbeat", time.time())

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join(5)
