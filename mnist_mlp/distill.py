"""A teacher for distillation (Hinton et al. 2015): trained checkpoints whose answers a student
learns besides the labels.

``training.teacher`` names the checkpoints (a committee: the mean of their probabilities), or a
committee sweep's folder (``committee: true``: its finished members, as its ``summary.json``
lists them), and
the loop asks the teacher about every batch exactly as the student sees it, distortions
included (:func:`mnist_mlp.train.fit`), then hands the step its soft targets at
``training.distill_temperature``. Each member sees the batch in its own view of the digits
(``data.normalise``) on top of the student's. The student is an ordinary checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mnist_mlp import checkpoint, metrics, model, normalise
from mnist_mlp.config import Config
from mnist_mlp.errors import MlpError


class Teacher:
    """The committee of checkpoints ``paths``, answering in soft targets at ``temperature``."""

    def __init__(self, paths: list[str], temperature: float, classes: tuple[str, ...]):
        paths = [m for p in paths for m in members_of(p)]
        self.members = [checkpoint.load(p) for p in paths]
        checkpoint.check_committee(paths, self.members)
        if tuple(self.members[0].classes) != tuple(classes):
            raise MlpError(
                f"training.teacher {paths[0]} has the classes {self.members[0].classes}, the "
                f"data {list(classes)}: a teacher must know the student's classes"
            )
        self.temperature = temperature
        views = [c.config.data.normalise for c in self.members]
        self.views = [(v.kind, v.width) for v in views]  # each member's view of every batch

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Soft targets (B, C), float32, for a batch of uint8 pixels (B, 784)."""
        seen = normalise.several(pixels, self.views)
        mean = metrics.committee(
            [
                metrics.probabilities(c.params, c.activation, x, batch=len(x), scaling=c.scaling)
                for c, x in zip(self.members, seen)
            ]
        )
        return model.soft_targets(mean, self.temperature).astype(np.float32)


def members_of(path: str) -> list[str]:
    """The checkpoints ``path`` names: itself, or a committee sweep's finished members."""
    folder = Path(path)
    if not folder.is_dir():
        return [path]
    try:
        summary = json.loads((folder / "summary.json").read_text())
        members = [m["checkpoint"] for m in summary["committee"]["members"]]
    except (OSError, ValueError, KeyError, TypeError):
        members = []
    if not members:
        raise MlpError(
            f"training.teacher {path}: a folder, but not a finished committee sweep (no "
            f"summary.json listing its members): finish it first, mlp sweep SPEC --out {path}"
        )
    return members


def teacher_for(config: Config, classes: tuple[str, ...]) -> Teacher | None:
    """The teacher ``training.teacher`` names, or None."""
    t = config.training
    return Teacher(t.teacher, t.distill_temperature, classes) if t.teacher else None
