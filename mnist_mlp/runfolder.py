"""A run folder on disk: ``config.yaml``, ``metrics.csv`` (a row appended per epoch), checkpoints,
``curves.png``, and the ``latest`` link beside it. :mod:`mnist_mlp.run` keeps them current as
the loop trains."""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path

from mnist_mlp import checkpoint as ckpt_mod
from mnist_mlp import config as config_mod
from mnist_mlp import data as data_mod
from mnist_mlp import train
from mnist_mlp.errors import WriteError
from mnist_mlp.fsutil import atomic_write, describe


class RunFiles:
    """A run folder's files: ``config.yaml`` and ``metrics.csv`` written anew (with the rows of
    ``history``) when made, then rows appended and checkpoints saved."""

    def __init__(
        self, folder: Path, config: config_mod.Config, data: data_mod.Data, history: list[dict]
    ):
        self.folder, self.config = folder, config
        self.meta = {
            "dataset": {"name": data.name, "digest": data.digest},
            "classes": list(data.classes),
            "input": {"scale": data.scaling[0], "offset": data.scaling[1], "shape": [28, 28]},
        }
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "config.yaml", to_yaml(config).encode())
        self.metrics = folder / "metrics.csv"
        write_metrics(self.metrics, history)

    def append(self, row: dict) -> None:
        try:
            append_metrics(self.metrics, row)
        except OSError as exc:
            raise WriteError(f"cannot write {self.metrics}: {describe(exc)}") from None

    def save(self, name: str, state: train.State) -> None:
        """``last.npz``: everything to resume the run, the moving average included."""
        self.write(name, state.params, state.meta(), state.momentum.buffers, state.averaged)

    def save_best(self, state: train.State) -> None:
        """``checkpoint.npz``: the weights validation measured (the moving average, if the run
        keeps one: then without the momentum, which belongs to the weights as trained)."""
        if state.averaged:
            self.write("checkpoint.npz", state.averaged, state.meta())
        else:
            self.save("checkpoint.npz", state)

    def write(
        self,
        name: str,
        params: dict,
        meta: dict,
        momentum: dict | None = None,
        averaged: dict | None = None,
    ) -> None:
        ckpt_mod.save(
            self.folder / name,
            ckpt_mod.Checkpoint(
                params, self.config, {**self.meta, **meta}, momentum or {}, averaged or {}
            ),
        )


class Curves:
    """Keeps ``curves.png`` in the run folder current, if matplotlib is installed.

    A redraw costs about 0.2 s, a tenth of an epoch, so it happens at most every
    ``every`` seconds, and once more at the end.
    """

    def __init__(self, folder: Path, every: float = 15.0):
        from mnist_mlp import plots

        self.path, self.every = folder / "curves.png", every
        self.enabled, self.last = plots.have_matplotlib(), float("-inf")
        self.title = f"{folder.name}: learning curves"

    def update(self, history: list[dict], final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or not history or (not final and now - self.last < self.every):
            return
        from mnist_mlp import plots

        plots.plot_curves(history, self.path, self.title)
        self.last = now


def write_metrics(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, train.COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buf.getvalue().encode())


def append_metrics(path: Path, row: dict) -> None:
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, train.COLUMNS, lineterminator="\n").writerow(row)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``metrics.csv``, numbers as floats (None where empty)."""
    with open(path, newline="") as f:
        return [
            {k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def link_latest(config: config_mod.Config, folder: Path) -> None:
    """Point ``<output.dir>/latest`` at ``folder`` (atomically replacing the old link)."""
    root = Path(config.output.dir)
    root.mkdir(parents=True, exist_ok=True)
    link = root / "latest"
    target = os.path.relpath(folder.resolve(), root.resolve())
    tmp = root / f".latest-{os.getpid()}"
    try:
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, link)
    except OSError:  # no symlinks (some Windows setups): a later command falls back to mtimes
        pass


def to_yaml(config: config_mod.Config) -> str:
    import yaml

    return yaml.safe_dump(config_mod.to_dict(config), sort_keys=False)
