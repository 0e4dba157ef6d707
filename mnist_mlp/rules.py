"""The rule book: each setting's rule declared once, as data.

A rule is a small frozen object that says whether a value obeys it (``rule(value)``), how to
say the rule in words (``rule.text``, which completes "<key> must ..."), and what it is in an
API's schema (``rule.schema()``: pydantic's ``Field`` bounds). scikit-learn's
``_parameter_constraints`` (``Interval(Real, 0, 1, closed="left")``, ``StrOptions``) is the model.

:mod:`mnist_mlp.config` attaches one to each key (``field(metadata=rule(...))``); the learning
sessions of ``mlp learn`` (:class:`mnist_mlp.learn.LearnConfig`), the Learn API's schema
(generated from those) and :class:`mnist_mlp.MLPClassifier`'s own parameters read the same
objects, so a bound is written in one place and said the same way everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

_BRACKETS = {"both": ("[", "]"), "left": ("[", ")"), "right": ("(", "]"), "neither": ("(", ")")}


def is_int(v: Any) -> bool:
    """An integer, and not a bool (``True`` is no batch size)."""
    import numbers

    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v: Any) -> bool:
    """A finite real number, and not a bool."""
    import numbers

    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


@dataclass(frozen=True)
class Interval:
    """A number between ``low`` and ``high`` (None: unbounded), ends included as ``closed``
    says ("both", "left", "right" or "neither"); ``integer`` asks for an integer."""

    low: float | None = None
    high: float | None = None
    closed: str = "both"
    integer: bool = False

    def __call__(self, v: Any) -> bool:
        if not (is_int(v) if self.integer else is_real(v)):
            return False
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and not (v >= self.low if left else v > self.low):
            return False
        return self.high is None or (v <= self.high if right else v < self.high)

    @property
    def text(self) -> str:
        left, right = _BRACKETS[self.closed]
        bounded = self.low is not None and self.high is not None
        if self.integer and bounded and self.closed == "both":
            return f"be an integer from {self.low:g} to {self.high:g}"
        what = "be an integer" if self.integer else "be"
        if self.high is None and self.low is not None:
            return f"{what} {'>=' if left == '[' else '>'} {self.low:g}"
        if self.low is None and self.high is not None:
            return f"{what} {'<=' if right == ']' else '<'} {self.high:g}"
        if self.low is None:
            return "be a number" if not self.integer else what
        return f"{what} in {left}{self.low:g}, {self.high:g}{right}"

    def schema(self) -> dict[str, float]:
        """Pydantic ``Field`` keywords (``ge``, ``gt``, ``le``, ``lt``)."""
        out: dict[str, float] = {}
        if self.low is not None:
            out["ge" if self.closed in ("both", "left") else "gt"] = self.low
        if self.high is not None:
            out["le" if self.closed in ("both", "right") else "lt"] = self.high
        return out


@dataclass(frozen=True)
class OneOf:
    """One of a few names."""

    choices: tuple[str, ...]

    def __call__(self, v: Any) -> bool:
        return isinstance(v, str) and v in self.choices

    @property
    def text(self) -> str:
        return f"be one of {', '.join(self.choices)}"

    def schema(self) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Sizes:
    """A list of layer sizes, each obeying ``each``, at most ``most`` of them (None: any)."""

    each: Interval
    most: int | None = None

    def __call__(self, v: Any) -> bool:
        return (
            isinstance(v, list)
            and 1 <= len(v) <= (self.most or len(v))
            and all(self.each(n) for n in v)
        )

    @property
    def text(self) -> str:
        if self.most is None and self.each.high is None:
            return "be a list of sizes > 0"
        count = {None: "a list of", 1: "one", 2: "one or two"}.get(self.most, f"1 to {self.most}")
        sizes = "layer size" if self.most == 1 else "layer sizes"
        return f"be {count} {sizes} from {self.each.low:g} to {self.each.high:g}"

    def schema(self) -> dict[str, Any]:
        return {"min_length": 1, **({"max_length": self.most} if self.most else {})}


@dataclass(frozen=True)
class Names:
    """A list of names, each one of ``choices``, none twice; empty is allowed (none chosen)."""

    choices: tuple[str, ...]

    def __call__(self, v: Any) -> bool:
        return isinstance(v, list) and len(set(v)) == len(v) and all(n in self.choices for n in v)

    @property
    def text(self) -> str:
        return f"be a list of {', '.join(self.choices)} (each at most once)"

    def schema(self) -> dict[str, Any]:
        return {}


Rule = Interval | OneOf | Sizes | Names


def rule(r: Rule) -> dict:
    """A dataclass field's ``metadata`` carrying ``r``."""
    return {"rule": r}


def positive(integer: bool = False) -> Interval:
    """> 0."""
    return Interval(0, None, "neither", integer)


def non_negative(integer: bool = False) -> Interval:
    """>= 0."""
    return Interval(0, None, "both", integer)


def fraction(upper_open: bool = True) -> Interval:
    """In [0, 1), or [0, 1]."""
    return Interval(0, 1, "left" if upper_open else "both")
