"""Trackers: a run sent where engineers already look, TensorBoard and MLflow, beside its files.

A tracker is a callback of the training loop (:mod:`mnist_mlp.callbacks`), as Lightning's
``TensorBoardLogger`` and ``MLFlowLogger`` and Keras's ``TensorBoard`` callback are: it sees
each epoch's row, and when the run has been tested, :meth:`Tracker.on_run_end` gives it the
test results and the run folder's files. ``metrics.csv`` stays the record: a tracker that
cannot send something says so, and the run goes on.

Chosen by name (``--report-to``, ``output.report_to``, ``MLPClassifier(report_to=...)``), each
tracker's library is imported only when it is chosen, and a missing one is a one-line error
naming the extra to install.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist_mlp import config as config_mod
from mnist_mlp import data as data_mod
from mnist_mlp.errors import MlpError
from mnist_mlp.trackers.base import RunEnd, Tracker, epoch_metrics, flat_config

__all__ = ["RunEnd", "Tracker", "check_installed", "epoch_metrics", "flat_config", "open_trackers"]

# tracker -> (the module it needs, the extra that installs it)
NEEDS = {"tensorboard": ("tensorboardX", "tensorboard"), "mlflow": ("mlflow", "mlflow")}


def check_installed(names: list[str]) -> None:
    """Refuse, in one line, a tracker whose library is not installed."""
    for name in names:
        module, extra = NEEDS[name]
        if importlib.util.find_spec(module) is None:
            raise MlpError(f"--report-to {name} needs {module}: pip install 'mnist-mlp[{extra}]'")


def open_trackers(
    names: list[str],
    folder: Path,
    config: config_mod.Config,
    data: data_mod.Data,
    echo: Callable[[str], None] = print,
    parent: Any = None,
) -> list[Tracker]:
    """The trackers ``names`` asks for, for the run in ``folder``, each started (a tracking
    server that does not answer is a one-line error before anything trains).

    Parameters
    ----------
    parent : optional
        The sweep's parent run, for MLflow (:func:`mnist_mlp.trackers.mlflow_tracker.parent_run`).
    """
    check_installed(names)
    out: list[Tracker] = []
    for name in names:
        if name == "tensorboard":
            from mnist_mlp.trackers.tensorboard_tracker import TensorBoard

            out.append(TensorBoard(folder, config, data))
        else:
            from mnist_mlp.trackers.mlflow_tracker import MLflow

            out.append(MLflow(folder, config, data, echo, parent))
    return out
