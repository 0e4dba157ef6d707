"""The sweep file: W&B's spelling (``method``, ``metric``, ``parameters``, ``early_terminate``,
``run_cap``) plus ``base``, read and checked so that every config a trial samples is valid."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from mnist_mlp import config as config_mod
from mnist_mlp import memory
from mnist_mlp.errors import ConfigError, one_line

METHODS = ("grid", "random", "bayes")
METRICS = {"val_acc": "maximize", "val_loss": "minimize"}
DISTRIBUTIONS = (
    "constant",
    "categorical",
    "uniform",
    "int_uniform",
    "q_uniform",
    "log_uniform_values",
)
TOP_KEYS = (
    "base",
    "method",
    "metric",
    "run_cap",
    "early_terminate",
    "parameters",
    "name",
    "description",
    "committee",
)


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
        if self.values is not None:
            if self.distribution == "constant":
                return self.values[0]
            # Optuna's choices must be scalars: lists (model.hidden) travel as their YAML text.
            choice = trial.suggest_categorical(self.key, [_encode(v) for v in self.values])
            return _decode(choice)
        low, high = self.bounds()
        if self.distribution == "int_uniform":
            return trial.suggest_int(self.key, int(low), int(high))
        if self.distribution == "log_uniform_values":
            return trial.suggest_float(self.key, low, high, log=True)
        return trial.suggest_float(self.key, low, high, step=self.q)

    def bounds(self) -> tuple[float, float]:
        """(min, max) of a range; a parameter of ``values`` has none."""
        if self.low is None or self.high is None:
            raise ValueError(f"{self.key} is searched over values, not a range")
        return self.low, self.high

    def extremes(self) -> list:
        """Values that bound what this parameter can take, to check against the config's rules."""
        if self.values is not None:
            return list(self.values)
        low, high = self.bounds()
        if self.distribution == "int_uniform":
            return [int(low), int(high)]
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
    # every trial a member of one committee: all checkpoints kept, the committee evaluated
    committee: bool = False

    def config_for(self, values: dict[str, Any]) -> config_mod.Config:
        """The base config with ``values`` (key -> value) applied and validated as ``mlp train``
        would."""
        return config_mod.apply_overrides(
            self.base, [f"{k}={json.dumps(v)}" for k, v in values.items()]
        )

    def grid(self) -> dict[str, list]:
        return {p.key: [_encode(v) for v in p.values or []] for p in self.parameters}


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fail(path, message: str) -> ConfigError:
    return ConfigError(f"{path}: {one_line(message)}")


def _suggest(key: str, known) -> str:
    return config_mod._suggest(key, list(known), list(known))


def load_spec(
    path: str | os.PathLike, run_cap: int | None = None, report_to: tuple[str, ...] | None = None
) -> Spec:
    """Read and check a sweep file; every sampled config is then valid by construction.

    ``run_cap`` and ``report_to`` (trackers every trial sends its run to) replace the file's and
    the base config's.

    Raises
    ------
    ConfigError
        For an unknown key (with the nearest suggested), a bad method, metric or distribution,
        a parameter that is not a config key, or a value a config would refuse.
    """
    path = Path(path)
    tree = config_mod.read_yaml(path, "sweep file")
    if not isinstance(tree, dict):
        raise _fail(path, "a sweep file is a mapping (base, method, metric, parameters, ...)")
    for key in tree:
        if key not in TOP_KEYS:
            raise _fail(path, f"unknown key {key!r}{_suggest(str(key), TOP_KEYS)}")
    base_path = _base_path(path, tree.get("base"))
    base = config_mod.load_config(base_path)
    if report_to is not None:
        from mnist_mlp.run import reporting_to

        base = reporting_to(base, report_to)
    method = tree.get("method", "bayes")
    if method not in METHODS:
        raise _fail(path, f"method must be one of {', '.join(METHODS)}, got {method!r}")
    metric, goal = _metric(path, tree.get("metric") or {})
    if not base.data.validation:
        raise _fail(
            path,
            "the base config has no validation split (data.validation is 0), and trials are "
            "chosen on validation only",
        )
    params = _parameters(path, tree.get("parameters"), method)
    hyperband = _early_terminate(path, tree.get("early_terminate"))
    cap = run_cap if run_cap is not None else tree.get("run_cap")
    if method == "grid" and cap is None:
        cap = math.prod(len(p.values or []) for p in params)
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise _fail(
            path, f"run_cap must be a whole number >= 1 (trials in the whole study), got {cap!r}"
        )
    name = str(tree.get("name") or path.stem)
    committee = tree.get("committee", False)
    if not isinstance(committee, bool):
        raise _fail(path, f"committee must be true or false, got {committee!r}")
    spec = Spec(path, name, base, base_path, method, metric, goal, cap, params, hyperband, tree)
    spec.committee = committee
    _check_extremes(spec)
    return spec


def _base_path(path: Path, base: Any) -> Path | None:
    """The base config's file, relative to the sweep file (None: the defaults)."""
    if base is None:
        return None
    base_path = (path.parent / str(base)).resolve()
    if not base_path.exists():
        raise _fail(
            path,
            f"base {base!r} not found (looked for {base_path}; it is relative to the sweep file)",
        )
    return base_path


def _metric(path: Path, metric: Any) -> tuple[str, str]:
    """(name, goal) of the metric the sweep optimises."""
    if not isinstance(metric, dict):
        raise _fail(
            path, f"metric must be a mapping like {{name: val_acc, goal: maximize}}, got {metric!r}"
        )
    for key in metric:
        if key not in ("name", "goal"):
            raise _fail(path, f"unknown key 'metric.{key}'{_suggest(str(key), ('name', 'goal'))}")
    name = metric.get("name", "val_acc")
    if name not in METRICS:
        raise _fail(path, f"metric.name must be one of {', '.join(METRICS)}, got {name!r}")
    goal = metric.get("goal", METRICS[name])
    if goal not in ("maximize", "minimize"):
        raise _fail(path, f"metric.goal must be maximize or minimize, got {goal!r}")
    return name, goal


def _check_extremes(spec: Spec) -> None:
    """Every value a trial can be given passes the config's own rules, and fits in memory."""
    for p in spec.parameters:
        for value in p.extremes():
            try:
                config = spec.config_for({p.key: value})
            except ConfigError as exc:
                raise _fail(
                    spec.path,
                    f"parameters.{p.key}: {value!r} would not be a valid config: "
                    f"{str(exc).split(': ', 1)[-1]}",
                ) from None
            memory.check_memory(config)


def _parameters(path, tree, method) -> list[Parameter]:
    if not isinstance(tree, dict) or not tree:
        raise _fail(
            path,
            "parameters must map config keys to their values or distributions, e.g. "
            "training.lr: {min: 0.01, max: 0.1}",
        )
    known, sections = config_mod.keys(), config_mod.sections()
    out = []
    for key, body in tree.items():
        where = f"parameters.{key}"
        if key not in known and key not in sections:
            raise _fail(path, f"{where}: {key!r} is not a config key{_suggest(str(key), known)}")
        p = _parameter(path, key, body)
        if key in sections and not (p.values and all(isinstance(v, dict) for v in p.values)):
            raise _fail(
                path,
                f"{where} is a section: give its values, each a mapping of some of its keys, "
                f"e.g. values: [{{kind: none}}, {{kind: deslant}}]",
            )
        if method == "grid" and p.values is None:
            raise _fail(
                path,
                f"{where}: method grid needs a list of values for every parameter, not a "
                f"distribution",
            )
        out.append(p)
    return out


def _parameter(path, key: str, body: Any) -> Parameter:
    """One parameter's values or distribution, checked."""
    where = f"parameters.{key}"
    if not isinstance(body, dict):
        raise _fail(
            path,
            f"{where} must be a mapping with values, value, or a distribution with min and max",
        )
    allowed = ("distribution", "values", "value", "min", "max", "q")
    for k in body:
        if k not in allowed:
            raise _fail(path, f"unknown key '{where}.{k}'{_suggest(str(k), allowed)}")
    dist = body.get("distribution") or (
        "constant"
        if "value" in body
        else "categorical"
        if "values" in body
        else "int_uniform"
        if isinstance(body.get("min"), int) and isinstance(body.get("max"), int)
        else "uniform"
    )
    if dist not in DISTRIBUTIONS:
        raise _fail(
            path, f"{where}.distribution must be one of {', '.join(DISTRIBUTIONS)}, got {dist!r}"
        )
    if dist == "constant":
        if "value" not in body:
            raise _fail(path, f"{where}: distribution constant needs value")
        return Parameter(key, "categorical", values=[body["value"]])
    if dist == "categorical":
        values = body.get("values")
        if not isinstance(values, list) or not values:
            raise _fail(path, f"{where}.values must be a non-empty list, got {values!r}")
        return Parameter(key, dist, values=values)
    return _range(path, where, key, dist, body)


def _range(path, where: str, key: str, dist: str, body: dict) -> Parameter:
    """A distribution over [min, max], checked."""
    low, high = body.get("min"), body.get("max")
    if not (_is_number(low) and _is_number(high)):
        raise _fail(
            path,
            f"{where}: distribution {dist} needs numbers min and max, got {low!r} and {high!r}",
        )
    if not low < high:
        raise _fail(path, f"{where}: min must be < max, got {low} and {high}")
    if dist == "log_uniform_values" and low <= 0:
        raise _fail(path, f"{where}: log_uniform_values needs min > 0, got {low}")
    if dist == "int_uniform" and not (float(low).is_integer() and float(high).is_integer()):
        raise _fail(path, f"{where}: int_uniform needs whole numbers, got {low} and {high}")
    q = body.get("q")
    if dist == "q_uniform" and not (isinstance(q, (int, float)) and q > 0):
        raise _fail(path, f"{where}: q_uniform needs q > 0, got {q!r}")
    return Parameter(key, dist, low=float(low), high=float(high), q=float(q) if q else None)


def _early_terminate(path, tree) -> dict | None:
    if tree is None:
        return None
    if not isinstance(tree, dict):
        raise _fail(
            path,
            f"early_terminate must be a mapping like {{type: hyperband, min_iter: 2}}, got "
            f"{tree!r}",
        )
    allowed = ("type", "min_iter", "eta", "max_iter", "s")
    for k in tree:
        if k not in allowed:
            raise _fail(path, f"unknown key 'early_terminate.{k}'{_suggest(str(k), allowed)}")
    if tree.get("type") != "hyperband":
        raise _fail(path, f"early_terminate.type must be hyperband, got {tree.get('type')!r}")
    min_iter, eta = tree.get("min_iter", 1), tree.get("eta", 3)
    for key, value in (("min_iter", min_iter), ("eta", eta)):
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < (1 if key == "min_iter" else 2)
        ):
            raise _fail(
                path,
                f"early_terminate.{key} must be a whole number >= {1 if key == 'min_iter' else 2}, "
                f"got {value!r}",
            )
    return {"min_iter": min_iter, "eta": eta}
