"""A learning session's settings and its errors: :class:`LearnConfig`, each setting checked by
its rule (:mod:`mnist_mlp.rules`), the one place they are written (the Learn API's schema is
made from them)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from mnist_mlp import model, rules
from mnist_mlp.config import Config
from mnist_mlp.config import from_dict as config_from_dict
from mnist_mlp.errors import MlpError
from mnist_mlp.rules import Interval, OneOf, Sizes, rule

MAX_WIDTH = 64  # neurons in a hidden layer: each is drawn as a picture
MAX_BATCH = 256
MAX_LR = 10.0
ENDLESS = 2**62  # a session's "epochs": it never ends by itself


class LearnError(MlpError):
    """A request a learning session cannot honour (a bad setting, an unknown parameter)."""


class TooManySessions(LearnError):
    """Every place for a session is taken."""


@dataclass
class LearnConfig:
    """A session's settings; each checked by its rule (:mod:`mnist_mlp.rules`), with the rule
    and the value in the message. The Learn API's schema is made from the same rules.

    Attributes
    ----------
    hidden : list of int
        One or two hidden layers of 1 to :data:`MAX_WIDTH` neurons.
    activation : {"sigmoid", "tanh", "relu"}
    lr : float
        The learning rate, > 0 and <= :data:`MAX_LR`.
    batch_size : int
        1 (as the write-up trained) to :data:`MAX_BATCH`.
    momentum : float
        In [0, 1); 0 makes an update exactly -lr x the gradient.
    l2 : float
        >= 0, the weight of l2/2 x the sum of squared weights.
    seed : int
        >= 0: the initial weights and the order of the batches.
    """

    hidden: list[int] = field(
        default_factory=lambda: [16],
        metadata=rule(Sizes(Interval(1, MAX_WIDTH, integer=True), most=2)),
    )
    activation: str = field(default="sigmoid", metadata=rule(OneOf(tuple(model.ACTIVATIONS))))
    lr: float = field(default=0.5, metadata=rule(Interval(0, MAX_LR, "right")))
    batch_size: int = field(default=32, metadata=rule(Interval(1, MAX_BATCH, integer=True)))
    momentum: float = field(default=0.0, metadata=rule(rules.fraction()))
    l2: float = field(default=0.0, metadata=rule(rules.non_negative()))
    seed: int = field(default=0, metadata=rule(rules.non_negative(integer=True)))

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.metadata["rule"](value):
                raise LearnError(f"{f.name} must {f.metadata['rule'].text}, got {value!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LearnConfig:
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise LearnError(f"unknown setting {unknown[0]!r}; the settings are {', '.join(known)}")
        return cls(**{k: v for k, v in values.items() if v is not None})

    def training_config(self) -> Config:
        """The :class:`~mnist_mlp.config.Config` the loop trains a session by: these settings,
        a constant learning rate, no end (a session stops after the steps asked for)."""
        return config_from_dict(
            {
                "model": {"hidden": self.hidden, "activation": self.activation},
                "training": {
                    "lr": self.lr,
                    "batch_size": self.batch_size,
                    "momentum": self.momentum,
                    "l2": self.l2,
                    "seed": self.seed,
                    "schedule": "constant",
                    "epochs": ENDLESS,
                    "step": "reference",
                },
            },
            "mlp learn",
        )
