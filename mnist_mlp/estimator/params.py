""":class:`mnist_mlp.MLPClassifier`'s parameters as a :class:`~mnist_mlp.config.Config`: which
key each one sets, the rules of the few that are the estimator's own, the seed and input scaling
a fit derives, its validation split, and the table of the layers they make. Checked by the rule
book (:mod:`mnist_mlp.rules`) and the config's rules, a bad parameter is one
:class:`ParameterError` naming it. scikit-learn is used only to split.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np

from mnist_mlp import config as config_mod
from mnist_mlp.errors import ConfigError
from mnist_mlp.model import ACTIVATIONS as _NET_ACTIVATIONS
from mnist_mlp.rules import Interval, is_int


class ParameterError(ConfigError, ValueError):
    """A constructor parameter breaks its rule (a ``ValueError``, as scikit-learn raises)."""


# Parameter -> the config key it sets. Activation names: scikit-learn's "logistic" is sigmoid.
CONFIG_KEYS = {
    "hidden_layer_sizes": "model.hidden",
    "activation": "model.activation",
    "dropout": "model.dropout",
    "alpha": "training.l2",
    "batch_size": "training.batch_size",
    "learning_rate_init": "training.lr",
    "momentum": "training.momentum",
    "nesterovs_momentum": "training.nesterov",
    "max_iter": "training.epochs",
    "shuffle": "training.shuffle",
    "max_norm": "training.max_norm",
    "label_smoothing": "training.label_smoothing",
    "schedule": "training.schedule",
    "warmup_epochs": "training.warmup_epochs",
    "skip_blank_pixels": "training.skip_blank_pixels",
    "report_to": "output.report_to",
}
# scikit-learn's names for the activations: "logistic" is sigmoid
ACTIVATIONS = {**{name: name for name in _NET_ACTIVATIONS}, "logistic": "sigmoid"}
# The parameters that set no config key, and their rules.
OWN_RULES = {
    "tol": Interval(0, None),
    "validation_fraction": Interval(0, 1, "neither"),
    "n_iter_no_change": Interval(1, None, integer=True),
    "tta": Interval(1, 13, integer=True),
}


def _fail(name: str, rule: str, value: Any) -> ParameterError:
    return ParameterError(f"MLPClassifier: {name} must {rule}, got {value!r}")


def config_of(est: Any, n_samples: int, seed: int) -> config_mod.Config:
    """The :class:`~mnist_mlp.config.Config` of a fit, every parameter checked."""
    if not isinstance(est.activation, str) or est.activation not in ACTIVATIONS:
        raise _fail("activation", f"be one of {', '.join(ACTIVATIONS)}", est.activation)
    hidden = est.hidden_layer_sizes
    if isinstance(hidden, (int, np.integer)):
        hidden = [hidden]
    try:
        hidden = [int(h) for h in hidden]
    except (TypeError, ValueError):
        raise _fail("hidden_layer_sizes", "be a tuple of sizes", est.hidden_layer_sizes) from None
    batch = est.batch_size
    if batch == "auto":
        batch = min(200, n_samples)
    values: dict[str, Any] = {
        name: getattr(est, name) for name in CONFIG_KEYS if name not in ("activation",)
    }
    values.update(
        hidden_layer_sizes=hidden,
        activation=ACTIVATIONS[est.activation],
        batch_size=batch,
        max_iter=est.max_iter,
        report_to=[] if est.report_to is None else est.report_to,  # None: no tracker
    )
    for name, law in OWN_RULES.items():
        if not law(getattr(est, name)):
            raise _fail(name, law.text, getattr(est, name))
    for name in ("early_stopping", "warm_start", "verbose"):
        if not isinstance(getattr(est, name), (bool, np.bool_, int)):
            raise _fail(name, "be true or false", getattr(est, name))
    tree: dict[str, Any] = {
        "data": {"validation": 0},
        "model": {},
        "training": {"seed": seed},
        "output": {},
    }
    for name, value in values.items():
        section, key = CONFIG_KEYS[name].split(".")
        tree[section][key] = plain(value)
    if est.augment is not None:
        if not isinstance(est.augment, dict):
            raise _fail("augment", "be a dict of data.augment settings or None", est.augment)
        tree["data"]["augment"] = {k: plain(v) for k, v in est.augment.items()}
    try:
        return config_mod.from_dict(tree, "MLPClassifier")
    except ConfigError as exc:
        raise ParameterError(_param_names(str(exc))) from None


def plain(value):
    """NumPy scalars and tuples as the plain Python values a config (and JSON) takes."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    return value


def _param_names(message: str) -> str:
    """A config error in the estimator's words: ``training.lr`` -> ``learning_rate_init``."""
    message = message.removeprefix("MLPClassifier: ")
    for name, key in CONFIG_KEYS.items():
        message = message.replace(key, name)
    message = message.replace("data.augment.", "augment.")
    return f"MLPClassifier: {message}"


def seed_of(random_state) -> int:
    """A config seed (an int >= 0) from scikit-learn's random_state."""
    if random_state is None:
        return int(np.random.default_rng().integers(2**31))
    if is_int(random_state):
        if random_state < 0:
            raise _fail("random_state", "be an integer >= 0, a RandomState or None", random_state)
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31))
    raise _fail("random_state", "be an integer >= 0, a RandomState or None", random_state)


def scaling_of(X: np.ndarray) -> tuple[float, float]:
    """(scale, offset) that standardise ``X`` as a whole (one mean, one spread), in chunks so
    that no float64 copy of a large ``X`` is made."""
    total, squares, n = 0.0, 0.0, X.size
    for start in range(0, len(X), 8192):
        chunk = X[start : start + 8192].astype(np.float64)
        total += float(chunk.sum())
        squares += float(np.square(chunk).sum())
    mean = total / n
    std = math.sqrt(max(squares / n - mean * mean, 0.0))
    if not std > 1e-12:
        return 1.0, -mean
    return 1.0 / std, -mean / std


def with_training(config: config_mod.Config, **training) -> config_mod.Config:

    return dataclasses.replace(config, training=dataclasses.replace(config.training, **training))


def config_value(config: config_mod.Config, key: str):
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def positions(classes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each label of ``y`` as its position in the sorted ``classes`` (n,); a label not among
    them is a :class:`ParameterError`."""
    labels = np.searchsorted(classes, y)
    unknown = (labels >= len(classes)) | (classes[np.minimum(labels, len(classes) - 1)] != y)
    if unknown.any():
        raise ParameterError(
            f"MLPClassifier: y holds labels not in classes_ ({y[unknown][0]!r}); give every "
            f"label in partial_fit's first call (classes=...)"
        )
    return labels


def validation_split(
    X: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train X, train labels, validation X, validation labels): ``fraction`` of the samples held
    out, stratified where every class can be, as scikit-learn's MLP does (none for 0)."""
    if not fraction:
        return X, labels, X[:0], labels[:0]
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels)
    present = counts[counts > 0]
    n_val = max(1, round(fraction * len(X)))
    if n_val >= len(X):
        raise ParameterError(
            f"MLPClassifier: early_stopping needs more than {len(X)} samples for "
            f"validation_fraction={fraction}"
        )
    stratify = labels if present.min() >= 2 and n_val >= len(present) else None
    tx, vx, ty, vy = train_test_split(
        X, labels, test_size=n_val, random_state=seed, stratify=stratify
    )
    return np.ascontiguousarray(tx), ty, np.ascontiguousarray(vx), vy


def layer_table(sizes: list[int], activation: str) -> list[str]:
    """The layers of a net of ``sizes`` and their parameter counts, as lines of a small table
    (Keras's ``summary``)."""
    lines = [
        f"MLPClassifier: {'-'.join(map(str, sizes))}, {activation} hidden neurons, softmax output",
        f"{'layer':<10}{'weights':>16}{'biases':>10}{'parameters':>14}",
    ]
    total = 0
    for i, (a, b) in enumerate(itertools.pairwise(sizes), start=1):
        kind = "output" if i == len(sizes) - 1 else f"hidden {i}"
        total += a * b + b
        lines.append(f"{kind:<10}{f'{a} x {b}':>16}{b:>10}{a * b + b:>14,}")
    lines.append(f"{'total':<10}{'':>26}{total:>14,}")
    return lines
