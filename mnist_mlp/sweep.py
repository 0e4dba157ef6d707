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
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mnist_mlp import config as config_mod
from mnist_mlp import run, train
from mnist_mlp.errors import ConfigError, MlpError
from mnist_mlp.fsutil import atomic_write

INSTALL_HINT = "mlp sweep needs Optuna: pip install 'mnist-mlp[sweep]' (optuna, plus psycopg for PostgreSQL)"
METHODS = ("grid", "random", "bayes")
METRICS = {"val_acc": "maximize", "val_loss": "minimize"}
DISTRIBUTIONS = ("constant", "categorical", "uniform", "int_uniform", "q_uniform", "log_uniform_values")
TOP_KEYS = ("base", "method", "metric", "run_cap", "early_terminate", "parameters", "name", "description")
KEEP_CHECKPOINTS = 3  # trials whose checkpoint.npz is kept: the best few
HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0  # a RUNNING trial of another host with no heartbeat for this long is dead


def _optuna():
    try:
        import optuna
    except ImportError:
        raise MlpError(INSTALL_HINT) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# --- the sweep file ------------------------------------------------------------------------------


@dataclass
class Parameter:
    """One searched config key: fixed ``values`` (a grid's or a categorical choice), or a range."""

    key: str
    distribution: str
    values: list | None = None
    low: float | None = None
    high: float | None = None
    q: float | None = None

    def suggest(self, trial) -> Any:
        if self.distribution == "constant":
            return self.values[0]
        if self.distribution == "categorical":
            # Optuna's choices must be scalars: lists (model.hidden) travel as their YAML text.
            choice = trial.suggest_categorical(self.key, [_encode(v) for v in self.values])
            return _decode(choice)
        if self.distribution == "int_uniform":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        if self.distribution == "log_uniform_values":
            return trial.suggest_float(self.key, self.low, self.high, log=True)
        return trial.suggest_float(self.key, self.low, self.high, step=self.q)

    def extremes(self) -> list:
        """Values that bound what this parameter can take, to check against the config's rules."""
        if self.values is not None:
            return list(self.values)
        low = int(self.low) if self.distribution == "int_uniform" else self.low
        high = int(self.high) if self.distribution == "int_uniform" else self.high
        return [low, high]


def _encode(value):
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _decode(value):
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    return value


@dataclass
class Spec:
    """A validated sweep file."""

    path: Path
    name: str
    base: config_mod.Config
    base_path: Path | None
    method: str
    metric: str
    goal: str
    run_cap: int
    parameters: list[Parameter]
    hyperband: dict | None = None  # {"min_iter": int, "eta": int}
    raw: dict = field(default_factory=dict)

    def config_for(self, values: dict[str, Any]) -> config_mod.Config:
        """The base config with ``values`` (key -> value) applied and validated as ``mlp train`` would."""
        return config_mod.apply_overrides(self.base, [f"{k}={json.dumps(v)}" for k, v in values.items()])

    def grid(self) -> dict[str, list]:
        return {p.key: [_encode(v) for v in p.values] for p in self.parameters}


def _fail(path, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}")


def _suggest(key: str, known) -> str:
    return config_mod._suggest(key, list(known), list(known))


def load_spec(path: str | os.PathLike, run_cap: int | None = None) -> Spec:
    """Read and check a sweep file; every sampled config is then valid by construction.

    Raises
    ------
    ConfigError
        For an unknown key (with the nearest suggested), a bad method, metric or distribution,
        a parameter that is not a config key, or a value a config would refuse.
    """
    import yaml

    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read sweep file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise _fail(path, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(tree, dict):
        raise _fail(path, "a sweep file is a mapping (base, method, metric, parameters, ...)")
    for key in tree:
        if key not in TOP_KEYS:
            raise _fail(path, f"unknown key {key!r}{_suggest(str(key), TOP_KEYS)}")
    base_path = None
    if tree.get("base") is not None:
        base_path = (path.parent / str(tree["base"])).resolve()
        if not base_path.exists():
            raise _fail(path, f"base {tree['base']!r} not found (looked for {base_path}; it is relative to the "
                              f"sweep file)")
    base = config_mod.load_config(base_path)
    method = tree.get("method", "bayes")
    if method not in METHODS:
        raise _fail(path, f"method must be one of {', '.join(METHODS)}, got {method!r}")
    metric = tree.get("metric") or {}
    if not isinstance(metric, dict):
        raise _fail(path, f"metric must be a mapping like {{name: val_acc, goal: maximize}}, got {metric!r}")
    for key in metric:
        if key not in ("name", "goal"):
            raise _fail(path, f"unknown key 'metric.{key}'{_suggest(str(key), ('name', 'goal'))}")
    name = metric.get("name", "val_acc")
    if name not in METRICS:
        raise _fail(path, f"metric.name must be one of {', '.join(METRICS)}, got {name!r}")
    goal = metric.get("goal", METRICS[name])
    if goal not in ("maximize", "minimize"):
        raise _fail(path, f"metric.goal must be maximize or minimize, got {goal!r}")
    if not base.data.validation:
        raise _fail(path, "the base config has no validation split (data.validation is 0), and trials are "
                          "chosen on validation only")
    params = _parameters(path, tree.get("parameters"), method)
    hyperband = _early_terminate(path, tree.get("early_terminate"))
    cap = run_cap if run_cap is not None else tree.get("run_cap")
    if method == "grid" and cap is None:
        cap = math.prod(len(p.values) for p in params)
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise _fail(path, f"run_cap must be a whole number >= 1 (trials in the whole study), got {cap!r}")
    spec = Spec(path, str(tree.get("name") or path.stem), base, base_path, method, name, goal, cap, params,
                hyperband, tree)
    for p in params:  # every value a trial can be given passes the config's own rules
        for value in p.extremes():
            try:
                config = spec.config_for({p.key: value})
            except ConfigError as exc:
                raise _fail(path, f"parameters.{p.key}: {value!r} would not be a valid config: "
                                  f"{str(exc).split(': ', 1)[-1]}") from None
            train.check_memory(config)
    return spec


def _parameters(path, tree, method) -> list[Parameter]:
    if not isinstance(tree, dict) or not tree:
        raise _fail(path, "parameters must map config keys to their values or distributions, e.g. "
                          "training.lr: {min: 0.01, max: 0.1}")
    known = config_mod.keys()
    out = []
    for key, body in tree.items():
        where = f"parameters.{key}"
        if key not in known:
            raise _fail(path, f"{where}: {key!r} is not a config key{_suggest(str(key), known)}")
        if not isinstance(body, dict):
            raise _fail(path, f"{where} must be a mapping with values, value, or a distribution with min and max")
        allowed = ("distribution", "values", "value", "min", "max", "q")
        for k in body:
            if k not in allowed:
                raise _fail(path, f"unknown key '{where}.{k}'{_suggest(str(k), allowed)}")
        dist = body.get("distribution") or ("constant" if "value" in body else
                                            "categorical" if "values" in body else
                                            "int_uniform" if isinstance(body.get("min"), int) and
                                            isinstance(body.get("max"), int) else "uniform")
        if dist not in DISTRIBUTIONS:
            raise _fail(path, f"{where}.distribution must be one of {', '.join(DISTRIBUTIONS)}, got {dist!r}")
        if dist == "constant":
            if "value" not in body:
                raise _fail(path, f"{where}: distribution constant needs value")
            p = Parameter(key, "categorical", values=[body["value"]])
        elif dist == "categorical":
            values = body.get("values")
            if not isinstance(values, list) or not values:
                raise _fail(path, f"{where}.values must be a non-empty list, got {values!r}")
            p = Parameter(key, dist, values=values)
        else:
            low, high = body.get("min"), body.get("max")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
                raise _fail(path, f"{where}: distribution {dist} needs numbers min and max, got {low!r} and {high!r}")
            if not low < high:
                raise _fail(path, f"{where}: min must be < max, got {low} and {high}")
            if dist == "log_uniform_values" and low <= 0:
                raise _fail(path, f"{where}: log_uniform_values needs min > 0, got {low}")
            if dist == "int_uniform" and not (float(low).is_integer() and float(high).is_integer()):
                raise _fail(path, f"{where}: int_uniform needs whole numbers, got {low} and {high}")
            q = body.get("q")
            if dist == "q_uniform" and not (isinstance(q, (int, float)) and q > 0):
                raise _fail(path, f"{where}: q_uniform needs q > 0, got {q!r}")
            p = Parameter(key, dist, low=float(low), high=float(high), q=float(q) if q else None)
        if method == "grid" and p.values is None:
            raise _fail(path, f"{where}: method grid needs a list of values for every parameter, not a "
                              f"distribution")
        out.append(p)
    return out


def _early_terminate(path, tree) -> dict | None:
    if tree is None:
        return None
    if not isinstance(tree, dict):
        raise _fail(path, f"early_terminate must be a mapping like {{type: hyperband, min_iter: 2}}, got {tree!r}")
    allowed = ("type", "min_iter", "eta", "max_iter", "s")
    for k in tree:
        if k not in allowed:
            raise _fail(path, f"unknown key 'early_terminate.{k}'{_suggest(str(k), allowed)}")
    if tree.get("type") != "hyperband":
        raise _fail(path, f"early_terminate.type must be hyperband, got {tree.get('type')!r}")
    min_iter, eta = tree.get("min_iter", 1), tree.get("eta", 3)
    for key, value in (("min_iter", min_iter), ("eta", eta)):
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "min_iter" else 2):
            raise _fail(path, f"early_terminate.{key} must be a whole number >= {1 if key == 'min_iter' else 2}, "
                              f"got {value!r}")
    return {"min_iter": min_iter, "eta": eta}


# --- the study -----------------------------------------------------------------------------------


def storage_url(url: str | None, folder: Path) -> str:
    """What Optuna is given: the journal file in ``folder``, or ``url`` (psycopg 3 for PostgreSQL)."""
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
        raise MlpError("--storage sqlite:// locks up with several workers writing at once (Optuna's FAQ); "
                       "leave --storage out for the journal file on one machine, or use postgresql://")
    tries = 8
    try:
        for attempt in range(tries):
            try:
                # No Optuna heartbeat: it works inside optimize() only; workers here record their own.
                return optuna.storages.RDBStorage(url)
            except Exception as exc:  # workers creating the tables at the same moment: all but one lose
                if attempt == tries - 1 or not _is_creation_race(exc):
                    raise
                time.sleep(0.2 * (attempt + 1))
    except ImportError as exc:
        raise MlpError(f"--storage {_redact(url)}: a database driver is missing ({exc}); "
                       f"pip install 'mnist-mlp[sweep]'") from None
    except Exception as exc:  # sqlalchemy's errors: a bad URL, a server that does not answer
        raise MlpError(f"--storage {_redact(url)}: cannot open it ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0]})") from None


def _redact(url: str) -> str:
    head, sep, tail = url.partition("@")
    if not sep:
        return url
    scheme, _, credentials = head.partition("://")
    user, colon, _ = credentials.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{tail}"


def create_study(spec: Spec, storage, sampler_seed: int | None = None, tries: int = 8):
    """Create the study, or load it if another worker did (retrying the schema race of RDBs)."""
    optuna = _optuna()
    if spec.method == "grid":
        sampler = optuna.samplers.GridSampler(spec.grid(), seed=sampler_seed)
    elif spec.method == "random":
        sampler = optuna.samplers.RandomSampler(seed=sampler_seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=sampler_seed)
    if spec.hyperband:
        pruner = optuna.pruners.HyperbandPruner(min_resource=spec.hyperband["min_iter"],
                                                max_resource=spec.base.training.epochs,
                                                reduction_factor=spec.hyperband["eta"])
    else:
        pruner = optuna.pruners.NopPruner()
    for attempt in range(tries):
        try:
            study = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner, study_name=spec.name,
                                        direction=spec.goal, load_if_exists=True)
            break
        except Exception as exc:  # two workers creating the tables or the study at once
            if attempt == tries - 1 or not _is_creation_race(exc):
                raise
            time.sleep(0.2 * (attempt + 1))
    if study.direction.name.lower() != spec.goal:
        raise MlpError(f"study {spec.name!r} in this storage goes the other way ({study.direction.name.lower()}); "
                       f"name this sweep otherwise (name: in the sweep file)")
    study.set_user_attr("spec", spec.raw)
    return study


def _is_creation_race(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return any(sign in text for sign in ("already exists", "UniqueViolation", "duplicate key", "IntegrityError"))


def _counts(study) -> dict[str, int]:
    from optuna.trial import TrialState

    out = {"complete": 0, "pruned": 0, "fail": 0, "running": 0}
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("discarded"):
            continue
        key = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "fail",
               TrialState.RUNNING: "running", TrialState.WAITING: "running"}[t.state]
        out[key] += 1
    return out


def _budget_used(trials) -> list:
    """Trials that count against run_cap: finished (complete, pruned, or failed of themselves)
    or under way; not those cut off or whose worker died, whose places go to new trials."""
    from optuna.trial import TrialState

    used = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    return [t for t in trials if (t.state in used or t.user_attrs.get("charged")) and not t.user_attrs.get("discarded")]


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
            gone = now - float(t.user_attrs.get("heartbeat", t.datetime_start.timestamp())) > STALE_AFTER_S
        if gone:
            with contextlib.suppress(Exception):  # another worker may have failed it first
                study._storage.set_trial_user_attr(t._trial_id, "failed_because", "its worker died")
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                dead.append(t.number)
    return dead


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


# --- the workers ---------------------------------------------------------------------------------


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

    def run(self, stop: train.StopFlag | None = None) -> None:
        optuna = _optuna()
        study = create_study(self.spec, open_storage(self.storage_url), sampler_seed=self.seed)
        stop = stop or train.StopFlag()
        while not stop.requested:
            fail_dead_trials(study)
            if len(_budget_used(study.get_trials(deepcopy=False))) >= self.spec.run_cap:
                return
            trial = study.ask()
            earlier = [t for t in _budget_used(study.get_trials(deepcopy=False)) if t.number < trial.number]
            if len(earlier) >= self.spec.run_cap:  # another worker took the last place meanwhile
                trial.set_user_attr("discarded", "asked past run_cap by a worker racing another")
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                return
            self._run_trial(study, trial, stop)

    def _run_trial(self, study, trial, stop) -> None:
        optuna = _optuna()
        folder = self.folder / "trials" / str(trial.number)
        # Who runs it, in one write (each write to a journal file is an fsync): a trial is checked by
        # its process once this is there, and by its age until then.
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid(), "boot": _boot_id(),
                                       "sampler_seed": self.seed, "folder": str(folder)})
        sign = 1 if self.spec.goal == "maximize" else -1
        best = {"value": None, "epochs": 0}
        pruning = self.spec.hyperband is not None

        config = None

        def report(row: dict) -> None:
            value = row[self.spec.metric]
            best["epochs"] = int(row["epoch"])
            if best["value"] is None or sign * value > sign * best["value"]:
                best["value"] = value
            if not pruning:
                return  # each report is a write to the storage; only a pruner reads them
            trial.report(value, int(row["epoch"]))
            # After the last epoch there is nothing left to save: the trial completes.
            if int(row["epoch"]) < config.training.epochs and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {row['epoch']}")

        started = time.perf_counter()
        try:
            config = self.spec.config_for({p.key: p.suggest(trial) for p in self.spec.parameters})
            train.check_memory(config)
            with _Heartbeat(trial):
                run.trial_run(config, folder, self._data_for(config), epoch_hook=report,
                              progress=self.progress, stop=stop)
        except optuna.TrialPruned:
            trial.set_user_attr("run", {"seconds": time.perf_counter() - started, "epochs": best["epochs"]})
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            _drop_checkpoints(folder)
        except (run.TrainingInterrupted, KeyboardInterrupt):
            trial.set_user_attr("failed_because", "interrupted (Ctrl-C)")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            _drop_checkpoints(folder)
            raise
        except Exception as exc:
            # The trial's own failure (a loss that diverged, say) uses up its place, unlike a
            # trial cut off or whose worker died: else a sampler fond of a bad region would never stop.
            trial.set_user_attr("failed_because", f"{type(exc).__name__}: {exc}"[:500])
            trial.set_user_attr("charged", True)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            _drop_checkpoints(folder)
            if not isinstance(exc, MlpError):
                raise
        else:
            trial.set_user_attr("run", {"seconds": time.perf_counter() - started, "epochs": best["epochs"]})
            study.tell(trial, best["value"])
        self._keep_best_checkpoints(study)
        write_results(study, self.spec, self.folder)
        self.on_trial(trial)

    def _data_for(self, config: config_mod.Config):
        d = config.data
        key = (d.dataset, d.validation, config.training.seed, d.subset, d.dir)
        if key not in self._data:
            self._data.clear()  # one dataset at a time: a sweep over seeds should not pile them up
            self._data[key] = run.load_data(config, progress=False)
        return self._data[key]

    def _keep_best_checkpoints(self, study) -> None:
        from optuna.trial import TrialState

        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
        done.sort(key=lambda t: t.value, reverse=self.spec.goal == "maximize")
        for t in done[KEEP_CHECKPOINTS:]:
            folder = _worker(t).get("folder")
            if folder and _worker(t).get("host") == socket.gethostname():
                _drop_checkpoints(Path(folder))


def _drop_checkpoints(folder: Path) -> None:
    for name in ("checkpoint.npz", "last.npz"):
        with contextlib.suppress(OSError):
            (folder / name).unlink()


# --- results --------------------------------------------------------------------------------------


RESULT_COLUMNS = ("number", "state", "value", "epochs", "seconds", "host", "sampler_seed")


def results(study, spec: Spec) -> list[dict]:
    """One row per trial: number, state, parameters, best validation metric, epochs, seconds, host."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("discarded"):
            continue
        row = {"number": t.number, "state": t.state.name.lower(),
               "value": t.value if t.value is not None else _best_reported(t, spec),
               "epochs": t.user_attrs.get("run", {}).get("epochs", len(t.intermediate_values)),
               "seconds": t.user_attrs.get("run", {}).get("seconds"),
               "host": _worker(t).get("host"), "sampler_seed": _worker(t).get("sampler_seed")}
        for p in spec.parameters:
            row[p.key] = _decode(t.params[p.key]) if p.key in t.params else None
        rows.append(row)
    return rows


def _best_reported(t, spec: Spec):
    values = list(t.intermediate_values.values())
    if not values:
        return None
    return max(values) if spec.goal == "maximize" else min(values)


def write_results(study, spec: Spec, folder: Path) -> list[dict]:
    """``results.csv`` from the study (atomically: several workers may write it)."""
    rows = results(study, spec)
    columns = [*RESULT_COLUMNS[:3], *(p.key for p in spec.parameters), *RESULT_COLUMNS[3:]]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "results.csv", lambda f: f.write(buf.getvalue().encode()))
    return rows


def finish(study, spec: Spec, folder: Path, wall_s: float) -> dict:
    """After the study reached its cap: ``best.yaml``, the best trial tested once, ``summary.json``."""
    import yaml

    rows = write_results(study, spec, folder)
    counts = _counts(study)
    summary: dict = {"name": spec.name, "folder": str(folder), "metric": spec.metric, "goal": spec.goal,
                     "method": spec.method,
                     "run_cap": spec.run_cap, "trials": counts, "wall_seconds": wall_s,
                     "parameters": {p.key: p.distribution for p in spec.parameters},
                     "epochs_run": sum(int(r["epochs"] or 0) for r in rows), "best": None}
    if counts["complete"]:
        best = study.best_trial
        values = {p.key: _decode(best.params[p.key]) for p in spec.parameters if p.key in best.params}
        config = spec.config_for(values)
        tree = config_mod.to_dict(config)
        header = (f"# The best trial (number {best.number}) of sweep {spec.name}: {spec.metric} {best.value:.4f}.\n"
                  f"# Every key resolved, seed included: mlp train --config best.yaml reproduces it.\n")
        atomic_write(folder / "best.yaml", lambda f: f.write((header + yaml.safe_dump(tree, sort_keys=False)).encode()))
        summary["best"] = {"number": best.number, "value": best.value, "params": values,
                           "host": _worker(best).get("host"), "folder": _worker(best).get("folder")}
        ckpt = Path(_worker(best).get("folder", "")) / "checkpoint.npz"
        if ckpt.exists():
            e = run.evaluate_on(ckpt, "test", progress=False)
            summary["best"]["test_accuracy"] = e.metrics.accuracy
            summary["best"]["test_loss"] = e.metrics.loss
        else:
            summary["best"]["test_accuracy"] = None
            summary["best"]["note"] = (f"its checkpoint is on {_worker(best).get('host')}, not here: "
                                       f"mlp eval {ckpt} there")
        summary["importances"] = _importances(study)
    atomic_write(folder / "summary.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    return summary


def _importances(study) -> dict[str, float]:
    import warnings

    optuna = _optuna()
    try:
        with warnings.catch_warnings():  # with a handful of trials PED-ANOVA says it cannot tell them apart
            warnings.simplefilter("ignore", UserWarning)
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError, ZeroDivisionError):  # too few trials, or nothing varied
        return {}


# --- the command ---------------------------------------------------------------------------------


def default_folder(spec: Spec) -> Path:
    return Path(spec.base.output.dir) / f"sweep-{spec.name}"


def sweep(spec_path: str | os.PathLike, *, run_cap: int | None = None, workers: int = 1,
          storage: str | None = None, out: str | os.PathLike | None = None, progress: bool = True,
          log: Callable[[str], None] = print, seed: int | None = None) -> dict:
    """Run (or continue) a sweep until its study holds ``run_cap`` finished trials; return the summary.

    With ``workers`` > 1, that many worker processes share the study, each with its share of
    the cores for BLAS. Ctrl-C stops every worker after cutting its trial off (the trial is
    marked failed, its budget free); rerunning the same command continues the study. Each
    worker's sampler seed is drawn from the operating system, or is ``seed + i`` for worker i.

    Raises
    ------
    SweepInterrupted
        On Ctrl-C, after the workers stopped.
    """
    spec = load_spec(spec_path, run_cap)
    folder = Path(out) if out else default_folder(spec)
    folder.mkdir(parents=True, exist_ok=True)
    folder = folder.resolve()
    url = storage_url(storage, folder)
    study = create_study(spec, open_storage(url))  # once, before the workers start: no schema race
    dead = fail_dead_trials(study)
    if dead:
        log(f"marked failed trials {', '.join(map(str, dead))}: their workers had died; their budget goes to "
            f"new trials")
    started = time.perf_counter()
    bar = _Progress(study, spec, progress)
    flag = train.StopFlag()
    try:
        with train.stop_on_sigint(flag):
            while True:
                if workers <= 1:
                    Worker(spec, folder, url, _new_seed() if seed is None else seed,
                           on_trial=lambda t: bar.update()).run(flag)
                else:
                    _run_processes(spec_path, spec, folder, storage, workers, bar, flag, seed)
                if flag.requested:
                    raise KeyboardInterrupt
                if not _wait_for_others(study, spec, bar, flag):
                    break  # a trial of another worker failed: its budget is free again, run it here
    except (KeyboardInterrupt, run.TrainingInterrupted):
        bar.close()
        write_results(study, spec, folder)
        raise SweepInterrupted(f"stopped; the finished trials are kept in {folder} and the one cut off is marked "
                               f"failed. Continue with the same command.") from None
    finally:
        bar.close()
    return finish(study, spec, folder, time.perf_counter() - started)


def _wait_for_others(study, spec: Spec, bar, flag: train.StopFlag, poll: float = 1.0) -> bool:
    """Wait while other workers' trials run; False when the study is done, True when a place
    came free (one of their trials failed) and this machine should run more trials."""
    while not flag.requested:
        fail_dead_trials(study)
        trials = study.get_trials(deepcopy=False)
        if len(_budget_used(trials)) < spec.run_cap:
            return True
        if not any(t.state.name in ("RUNNING", "WAITING") and not t.user_attrs.get("discarded") for t in trials):
            return False
        bar.update()
        time.sleep(poll)
    raise KeyboardInterrupt


class SweepInterrupted(MlpError):
    exit_code = 130


def _new_seed() -> int:
    return int.from_bytes(os.urandom(4), "little")


def _run_processes(spec_path, spec: Spec, folder: Path, storage: str | None, workers: int, bar,
                   flag: train.StopFlag, seed: int | None = None) -> None:
    """Start ``workers`` worker processes, each with its share of the cores, and wait for them."""
    cores = os.cpu_count() or 1
    threads = str(max(1, cores // workers))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    cmd = [sys.executable, "-m", "mnist_mlp.sweep", str(spec_path), str(folder), storage or "", str(spec.run_cap)]
    procs = [subprocess.Popen([*cmd, "" if seed is None else str(seed + i)], env=env, stdin=subprocess.DEVNULL)
             for i in range(workers)]
    forwarded = False
    while any(p.poll() is None for p in procs):
        if flag.requested and not forwarded:  # a terminal's Ctrl-C reached them too; kill -INT of this one did not
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGINT)
            forwarded = True
        bar.update()
        time.sleep(0.2 if flag.requested else 1.0)
    bar.update()
    failed = [p.returncode for p in procs if p.returncode != 0 and not flag.requested]
    if failed:
        raise MlpError(f"{len(failed)} of {workers} workers failed (exit codes {failed}); see their messages above")


class _Progress:
    """A tqdm line on stderr: trials done, pruned, failed, best so far."""

    def __init__(self, study, spec: Spec, enabled: bool):
        from tqdm import tqdm

        self.study, self.spec = study, spec
        self.bar = tqdm(total=spec.run_cap, desc=f"sweep {spec.name}", unit="trial", disable=None if enabled else True,
                        leave=True)
        self.update()

    def update(self) -> None:
        counts = _counts(self.study)
        done = counts["complete"] + counts["pruned"]
        self.bar.n = min(done, self.spec.run_cap)
        best = None
        with contextlib.suppress(ValueError):
            best = self.study.best_value
        self.bar.set_postfix(pruned=counts["pruned"], failed=counts["fail"], running=counts["running"],
                             best="-" if best is None else f"{best:.4f}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _worker_main(argv: list[str]) -> int:
    """A worker process of :func:`sweep` (``python -m mnist_mlp.sweep SPEC FOLDER STORAGE RUN_CAP SEED``)."""
    spec_path, folder, storage, cap, seed = argv
    spec = load_spec(spec_path, int(cap))
    folder = Path(folder)
    flag = train.StopFlag()
    try:
        with train.stop_on_sigint(flag):
            Worker(spec, folder, storage_url(storage or None, folder), int(seed) if seed else _new_seed()).run(flag)
    except (KeyboardInterrupt, run.TrainingInterrupted):
        return 130
    except MlpError as exc:
        print(f"worker {os.getpid()}: {exc}", file=sys.stderr)
        return 1
    return 130 if flag.requested else 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))


def format_summary(s: dict) -> str:
    """The summary as a few lines for a person."""
    t = s["trials"]
    lines = [f"sweep {s['name']}: {t['complete']} complete, {t['pruned']} pruned, {t['fail']} failed; "
             f"{s['epochs_run']} epochs in {s['wall_seconds']:.0f} s"]
    best = s.get("best")
    if best:
        test = best.get("test_accuracy")
        lines.append(f"best trial {best['number']}: {s['metric']} {best['value']:.4f}"
                     + (f", test accuracy {100 * test:.2f}%" if test is not None else "")
                     + f"  ({', '.join(f'{k}={json.dumps(v)}' for k, v in best['params'].items())})")
        if best.get("note"):
            lines.append(best["note"])
    else:
        lines.append("no trial completed")
    folder = Path(s["folder"])
    lines.append(f"wrote {folder / 'results.csv'}, {folder / 'best.yaml' if best else ''}"
                 f"{', ' if best else ''}{folder / 'summary.json'}")
    return "\n".join(lines)
