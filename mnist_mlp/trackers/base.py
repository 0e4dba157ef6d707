"""What every tracker shares: the callback it is, how a run ends for it, and the names it sends
a run's figures under."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlp import config as config_mod
from mnist_mlp import data as data_mod
from mnist_mlp.callbacks import Callback

HISTOGRAM_EVERY = 5  # epochs between two histograms of the weights and gradients


@dataclass
class RunEnd:
    """What a finished run gives its trackers.

    Attributes
    ----------
    folder : Path
        The run folder (its ``config.yaml``, ``metrics.csv``, pictures, ``report.html``).
    checkpoint : Path or None
        The best epoch's checkpoint (None for a sweep's trial: only the best few are kept).
    probabilities : ndarray of shape (n, C) or None
        The best checkpoint's on the test split (None where there is none).
    test : Split or None
    classes : list of str
    metrics : dict
        The final figures: ``test/accuracy``, ``test/loss``, ``best/val_accuracy``, ...
    """

    folder: Path
    checkpoint: Path | None
    probabilities: np.ndarray | None
    test: data_mod.Split | None
    classes: list[str]
    metrics: dict[str, float]


class Tracker(Callback):
    """A callback that also hears how the run ended, and can say what it failed to send."""

    name = "tracker"

    def on_run_end(self, end: RunEnd) -> None:
        """After the run was tested and its files written."""

    def unsent(self) -> str | None:
        """What could not be sent, in words (None: everything arrived)."""
        return None


def flat_config(config: config_mod.Config) -> dict[str, Any]:
    """The resolved config as ``{"training.lr": 0.05, "model.hidden": "[1024]", ...}``: numbers,
    booleans and strings as they are, lists and None as text."""
    out: dict[str, Any] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif isinstance(value, (bool, int, float, str)):
                out[prefix + key] = value
            else:
                out[prefix + key] = str(value)

    walk(config_mod.to_dict(config), "")
    return out


def epoch_metrics(row: dict) -> dict[str, float]:
    """An epoch's row under the trackers' names (``train/loss``, ``val/accuracy``, ``lr``, ...);
    the validation figures only where there is a validation split."""
    names = {
        "train_loss": "train/loss",
        "train_acc": "train/accuracy",
        "val_loss": "val/loss",
        "val_acc": "val/accuracy",
        "lr": "lr",
        "seconds": "time/epoch_s",
    }
    return {tag: float(row[col]) for col, tag in names.items() if row.get(col) is not None}
