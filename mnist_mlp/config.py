"""Every setting and its default, in one typed tree; YAML files and ``--set`` overrides on top.

A config file only needs the keys it changes. Loading refuses what it cannot use: an unknown
key (naming the closest known one), a value of the wrong type, or one that breaks its rule
(naming the key, the rule and the value). Nothing is silently ignored or coerced, except
that an integer is accepted where a float is expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_mlp import rules
from mnist_mlp.errors import ConfigError
from mnist_mlp.model import ACTIVATIONS
from mnist_mlp.rules import Interval, Names, OneOf, Sizes, rule

_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


# Each key's rule, from the rule book (mnist_mlp.rules): a field's metadata carries it.
def positive() -> dict:
    return rule(rules.positive())


def non_negative() -> dict:
    return rule(rules.non_negative())


def fraction(upper_open: bool = True) -> dict:
    return rule(rules.fraction(upper_open))


def one_of(*choices: str) -> dict:
    return rule(OneOf(choices))


# --- the tree ---------------------------------------------------------------------------------


@dataclass
class AugmentConfig:
    """Random distortions of each training minibatch (off when every range is zero)."""

    translate: float = field(default=0.0, metadata=non_negative())  # pixels, uniform +-
    rotate: float = field(default=0.0, metadata=non_negative())  # degrees, uniform +-
    scale: float = field(default=0.0, metadata=fraction())  # relative, uniform +-
    shear: float = field(default=0.0, metadata=non_negative())  # degrees, uniform +-
    elastic_alpha: float = field(default=0.0, metadata=non_negative())  # pixels; 0 = no elastic
    elastic_sigma: float = field(default=4.0, metadata=positive())  # pixels of smoothing
    # share mirrored left-right
    flip: float = field(default=0.0, metadata=fraction(upper_open=False))
    probability: float = field(default=1.0, metadata=fraction(upper_open=False))  # share distorted

    @property
    def enabled(self) -> bool:
        return self.probability > 0 and any(
            (self.translate, self.rotate, self.scale, self.shear, self.elastic_alpha, self.flip)
        )

    @property
    def geometric(self) -> bool:
        """Whether anything beyond mirroring is asked for (which needs resampling)."""
        return any((self.translate, self.rotate, self.scale, self.shear, self.elastic_alpha))


@dataclass
class NormaliseConfig:
    """Which view of the digits the network sees (:mod:`mnist_mlp.normalise`): as they are,
    deslanted, or with their inked box set to ``width`` pixels (ones left as they are)."""

    kind: str = field(default="none", metadata=one_of("none", "deslant", "width"))
    width: int = field(default=20, metadata=rule(Interval(4, 26, integer=True)))


@dataclass
class DataConfig:
    dataset: str = field(default="mnist", metadata=one_of("mnist", "fashion-mnist"))
    validation: int = field(default=5000, metadata=rule(Interval(0, 60000, "left")))
    subset: int = field(default=0, metadata=non_negative())  # train on the first N; 0 = all
    dir: str | None = None  # cache folder; None = $MNIST_MLP_HOME or the user cache
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    normalise: NormaliseConfig = field(default_factory=NormaliseConfig)


@dataclass
class ModelConfig:
    hidden: list[int] = field(
        default_factory=lambda: [1024],
        metadata=rule(Sizes(rules.positive())),
    )
    activation: str = field(default="relu", metadata=one_of(*ACTIVATIONS))
    dropout: float = field(default=0.0, metadata=fraction())  # on hidden units, training only


@dataclass
class TrainingConfig:
    epochs: int = field(default=20, metadata=positive())
    batch_size: int = field(default=128, metadata=positive())
    lr: float = field(default=0.05, metadata=positive())
    momentum: float = field(default=0.9, metadata=fraction())
    nesterov: bool = False
    l2: float = field(default=5e-4, metadata=non_negative())
    # cap on incoming weight norms; 0 = off
    max_norm: float = field(default=0.0, metadata=non_negative())
    # target (1 - e) onehot + e / classes
    label_smoothing: float = field(default=0.0, metadata=fraction())
    # Distillation (Hinton et al. 2015): checkpoints whose mean probabilities, softened at
    # distill_temperature, are mixed into the loss with distill_weight; none: no teacher.
    teacher: list[str] = field(default_factory=list)
    distill_temperature: float = field(default=4.0, metadata=positive())
    distill_weight: float = field(default=0.5, metadata=fraction(upper_open=False))
    schedule: str = field(default="cosine", metadata=one_of("constant", "step", "cosine"))
    step_every: int = field(default=10, metadata=positive())  # epochs, for schedule: step
    step_gamma: float = field(default=0.1, metadata=rule(Interval(0, 1, "right")))
    warmup_epochs: float = field(default=0.0, metadata=non_negative())
    patience: int = field(default=0, metadata=non_negative())  # epochs; 0 = no early stopping
    # decay of an exponential moving average of the weights, taken after every step; what
    # validation measures and checkpoint.npz keeps. 0 = none (the weights as trained)
    ema: float = field(default=0.0, metadata=fraction())
    shuffle: bool = True  # a new order of the training examples every epoch
    # Leave out of the first layer's products the pixels blank in every image of a batch (the
    # same math; see fast.inked.InkedColumns). Classical momentum only; Nesterov's runs dense.
    skip_blank_pixels: bool = True
    # The step that trains: "fast" (mnist_mlp.fast) or "reference", the textbook's functions of
    # model.py and optim.py, dense (the same numbers within float32 rounding, a few times slower).
    step: str = field(default="fast", metadata=one_of("fast", "reference"))
    seed: int = field(default=0, metadata=non_negative())


TRACKERS = ("tensorboard", "mlflow")  # what output.report_to (--report-to) may name


@dataclass
class OutputConfig:
    dir: str = "runs"  # run folders go to <dir>/<config name>/
    # trackers that also receive the run (metrics.csv is always written): tensorboard, mlflow
    report_to: list[str] = field(default_factory=list, metadata=rule(Names(TRACKERS)))


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self):
        # Rules that join two keys; each key's own rule is checked where it is read.
        if self.training.teacher and self.training.label_smoothing:
            raise ConfigError(
                "training.label_smoothing must be 0 with a training.teacher (its soft targets "
                f"already spread the probability), got {self.training.label_smoothing}"
            )
        if self.training.patience and not self.data.validation:
            raise ConfigError(
                f"training.patience must be 0 when data.validation is 0 (early stopping "
                f"watches the validation loss), got {self.training.patience}"
            )


# --- loading ----------------------------------------------------------------------------------


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Build a :class:`Config` from defaults, an optional YAML file, then ``KEY=VALUE`` overrides.

    Parameters
    ----------
    path : path-like, optional
        A YAML mapping with any subset of the sections and keys of :class:`Config`.
    overrides : sequence of str
        Items like ``"training.lr=0.05"``; the value is read as YAML (``0.05`` is a float,
        ``[512, 256]`` a list, ``true`` a bool).

    Raises
    ------
    ConfigError
        Naming the file or override, the key, the rule and the offending value.
    """
    tree: dict = {}
    source = "config"
    if path is not None:
        source = str(path)
        tree = read_yaml(path, "config")
        if tree is None:
            tree = {}
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: must be a mapping of sections, got {type(tree).__name__}")
        if "parameters" in tree and "method" in tree:
            raise ConfigError(f"{path} is a sweep file, not a config: run mlp sweep {path}")
    return apply_overrides(from_dict(tree, source), overrides)


def read_yaml(path: str | Path, what: str) -> Any:
    """The YAML document in the file ``path`` (a config or a sweep file, says ``what``).

    Raises
    ------
    ConfigError
        In one line, for a file that cannot be read, is not UTF-8 text (one saved as Latin-1, or
        not text at all) or is not valid YAML.
    """
    import yaml

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line}); save the "
            f"{what} as UTF-8"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None


def from_dict(tree: dict, source: str = "config") -> Config:
    """Build a :class:`Config` from a nested dict such as :func:`to_dict` makes."""
    try:
        return _build(Config, tree, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def to_dict(config: Config) -> dict:
    """The config as plain nested dicts, lists and scalars (for YAML, JSON and checkpoints)."""
    return dataclasses.asdict(config)


def keys(cls=Config, prefix: str = "") -> list[str]:
    """Every dotted key, e.g. ``training.lr``."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            out.extend(keys(hints[f.name], name + "."))
        else:
            out.append(name)
    return out


def sections(cls=Config, prefix: str = "") -> list[str]:
    """Every dotted section, e.g. ``data.normalise``."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.append(prefix + f.name)
            out.extend(sections(hints[f.name], prefix + f.name + "."))
    return out


def apply_overrides(config: Config, overrides: typing.Sequence[str]) -> Config:
    """``config`` with each ``KEY=VALUE`` of ``overrides`` applied and validated in turn."""
    for item in overrides:
        config = _override(config, item)
    return config


def _override(config: Config, item: str) -> Config:
    import yaml

    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. training.lr=0.05")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text  # a plain string such as a path with a colon
    tree = to_dict(config)
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item}: unknown key {key!r}{_suggest(key, keys(), keys())}")
        node = child
    if parts[-1] not in node:
        raise ConfigError(f"--set {item}: unknown key {key!r}{_suggest(key, keys(), keys())}")
    if isinstance(node[parts[-1]], dict):  # a section: a mapping of some of its keys
        if not isinstance(value, dict):
            raise ConfigError(
                f"--set {item}: {key} is a section; give a mapping of its keys, e.g. "
                f"{key}={{{next(iter(node[parts[-1]]))}: ...}}"
            )
        value = {**node[parts[-1]], **value}
    node[parts[-1]] = value
    try:
        return _build(Config, tree, "")
    except ConfigError as exc:
        raise ConfigError(f"--set {item}: {exc}") from None


def _build(cls, tree: Any, prefix: str):
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(tree, dict):
        raise ConfigError(f"{where} must be a mapping, got {_show(tree)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in tree:
        if name not in fields:
            known = [prefix + k for k in fields]
            raise ConfigError(
                f"unknown key {prefix + str(name)!r}{_suggest(prefix + str(name), known, keys())}"
            )
    values = {}
    for name, value in tree.items():
        hint, key = hints[name], prefix + name
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value if value is not None else {}, key + ".")
            continue
        law = fields[name].metadata.get("rule")
        empty_ok = value == [] and fields[name].default_factory is list  # none chosen
        value = [] if empty_ok else _check_type(key, value, hint)
        if law and value is not None and not law(value):
            raise ConfigError(f"{key} must {law.text}, got {_show(value)}")
        values[name] = value
    return cls(**values)


def _check_type(key: str, value: Any, hint) -> Any:
    """``value`` if it fits ``hint`` (an int is promoted to float), else a ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_type(key, value, inner)
    if origin is list:
        (item,) = args
        if not isinstance(value, list) or not value:
            raise ConfigError(
                f"{key} must be a non-empty list of {item.__name__}, got {_show(value)}"
            )
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; people write it anyway
    if (hint in (int, float) and isinstance(value, bool)) or not isinstance(value, hint):
        raise ConfigError(f"{key} must be {_type_name(hint)}, got {_show(value)}")
    return value


def _type_name(hint) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        hint, str(hint)
    )


def _show(value: Any) -> str:
    return (
        f"{value!r} ({type(value).__name__})"
        if not isinstance(value, (int, float)) or isinstance(value, bool)
        else repr(value)
    )


def _suggest(key: str, section: list[str], everywhere: list[str]) -> str:
    """' (did you mean ...?)' with the likeliest intended key, or a list of the known keys."""
    last = key.rsplit(".", 1)[-1]
    same_name = [k for k in everywhere if k.rsplit(".", 1)[-1] == last]  # right key, wrong section
    close = (
        same_name
        or difflib.get_close_matches(key, section, n=1, cutoff=0.6)
        or difflib.get_close_matches(key, everywhere, n=1, cutoff=0.6)
    )
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f"; known keys here: {', '.join(section)}"
