"""Matplotlib figures of a run: learning curves and the confusion matrix.

matplotlib is an optional extra (``pip install 'mnist-mlp[plot]'``). This module sits below
both :mod:`mnist_mlp.run` (which redraws ``curves.png`` as training goes) and
:mod:`mnist_mlp.report` (which draws everything), so that neither imports the other.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np

from mnist_mlp.errors import MlpError
from mnist_mlp.fsutil import atomic_write

INSTALL_HINT = (
    "the plots need matplotlib: pip install 'mnist-mlp[plot]' (or pip install matplotlib)"
)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MlpError(INSTALL_HINT) from None
    matplotlib.use("Agg")  # files only: no window, works on servers
    import matplotlib.pyplot as plt

    return plt


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_curves(rows: list[dict], out: str | os.PathLike, title: str = "") -> None:
    """Loss and accuracy per epoch, training and validation, side by side (PNG)."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    has_val = any(r.get("val_loss") is not None for r in rows)
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "-o", ms=3, label="training")
    if has_val:
        ax_loss.plot(epochs, [r["val_loss"] for r in rows], "-s", ms=3, label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_loss.set_yscale("log")
    ax_acc.plot(epochs, [100 * r["train_acc"] for r in rows], "-o", ms=3, label="training")
    if has_val:
        ax_acc.plot(epochs, [100 * r["val_acc"] for r in rows], "-s", ms=3, label="validation")
        best = max(rows, key=lambda r: r["val_acc"])
        ax_acc.annotate(
            f"best {100 * best['val_acc']:.2f}%",
            (best["epoch"], 100 * best["val_acc"]),
            textcoords="offset points",
            xytext=(0, -18),
            ha="center",
            fontsize=9,
        )
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    if len(rows) > 3:  # zoom past the first quarter's climb, keeping both curves in view
        later = rows[len(rows) // 4 :]
        low = min(
            min(100 * r["train_acc"] for r in later),
            min((100 * r["val_acc"] for r in later if r.get("val_acc") is not None), default=100),
        )
        ax_acc.set_ylim(max(low - 0.5, 0), 100.1)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        if len(epochs) <= 30:
            ax.set_xticks(epochs if len(epochs) <= 15 else epochs[::2])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out, plt)


def plot_confusion(
    cm: np.ndarray, classes: list[str], out: str | os.PathLike, title: str = ""
) -> None:
    """The confusion matrix as a heat map with counts; rows true, columns predicted (PNG).

    Colours are the share of each true class (row-normalised), on a gray-friendly scale, so
    that rare and common classes read alike; the counts are written in each cell.
    """
    plt = _pyplot()
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    # Off-diagonal errors are tiny next to the diagonal: a square-root scale shows them.
    shown = np.sqrt(share)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * n, 0.9 + 0.55 * n), dpi=110)
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                dark = shown[i, j] > 0.6
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8 if cm[i, j] < 1000 else 7,
                    color="white" if dark else "black",
                    fontweight="bold" if i == j else "normal",
                )
    labels = [c if len(c) <= 9 else c[:8] + "." for c in classes]
    ax.set_xticks(
        range(n),
        labels,
        rotation=45 if max(map(len, labels)) > 2 else 0,
        ha="right" if max(map(len, labels)) > 2 else "center",
    )
    ax.set_yticks(range(n), labels)
    ax.set(xlabel="predicted class", ylabel="true class", title=title or "Confusion matrix")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.array([0, 0.01, 0.05, 0.2, 0.5, 1.0])
    bar.set_ticks(np.sqrt(ticks), labels=[f"{100 * t:g}%" for t in ticks])
    bar.set_label("share of the true class")
    fig.tight_layout()
    _save(fig, out, plt)


def _save(fig, out, plt) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write(out, buf.getvalue())


STATE_STYLE = {
    "complete": ("o", "#1f77b4"),
    "pruned": ("x", "#ff7f0e"),
    "fail": ("s", "#d62728"),
    "running": ("^", "#7f7f7f"),
}


def plot_sweep_trials(
    rows: list[dict], metric: str, goal: str, out: str | os.PathLike, title: str = ""
) -> None:
    """The metric of each trial in the order they were asked, by state, with the best so far."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4), dpi=110)
    for state, (marker, colour) in STATE_STYLE.items():
        pts = [
            (r["number"], r["value"])
            for r in rows
            if r["state"] == state and r["value"] is not None
        ]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, color=colour, label=state, s=28)
    done = sorted(
        (r["number"], r["value"])
        for r in rows
        if r["state"] == "complete" and r["value"] is not None
    )
    if done:
        pick = max if goal == "maximize" else min
        best, xs, ys = None, [], []
        for n, v in done:
            best = v if best is None else pick(best, v)
            xs.append(n)
            ys.append(best)
        last = max(r["number"] for r in rows)
        ax.step([*xs, last], [*ys, ys[-1]], where="post", color="#2ca02c", label="best so far")
    ax.set(
        xlabel="trial",
        ylabel=f"{metric} (best epoch; pruned: best before pruning)",
        title=title or "Trials",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out, plt)


def plot_sweep_params(
    rows: list[dict], params: dict[str, str], metric: str, out: str | os.PathLike
) -> None:
    """The metric against each searched parameter (log axis for log-uniform ones), one panel
    each."""
    plt = _pyplot()
    n = max(1, len(params))
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), dpi=110, squeeze=False)
    for ax, (key, dist) in zip(axes[0], params.items()):
        for state, (marker, colour) in STATE_STYLE.items():
            pts = [
                (r[key], r["value"])
                for r in rows
                if r["state"] == state and r["value"] is not None and r.get(key) is not None
            ]
            if not pts:
                continue
            xs, ys = (list(v) for v in zip(*pts))
            if dist == "categorical":  # in the values' own order: [512] before [1024]
                choices = sorted(
                    {json.dumps(x) for r in rows if (x := r.get(key)) is not None}, key=json.loads
                )
                xs = [choices.index(json.dumps(x)) for x in xs]
                ax.set_xticks(range(len(choices)), choices, fontsize=8)
            ax.scatter(xs, ys, marker=marker, color=colour, s=22, label=state)
        if dist == "log_uniform_values":
            ax.set_xscale("log")
            # the minor labels run into each other
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set(xlabel=key, ylabel=metric)
        ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, out, plt)


def plot_importances(importances: dict[str, float], out: str | os.PathLike) -> None:
    """Parameter importances (Optuna's PED-ANOVA), largest first, as horizontal bars."""
    plt = _pyplot()
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * max(1, len(items))), dpi=110)
    if items:
        ax.barh([k for k, _ in items], [v for _, v in items], color="#1f77b4")
    ax.set(xlabel="importance (share of the metric's variation)", title="Which settings mattered")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    _save(fig, out, plt)


def plot_runs_curves(curves: dict[str, list[dict]], metric: str, out: str | os.PathLike) -> None:
    """Validation curves of several runs on one set of axes (a sweep's best trials)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
    for label, rows in curves.items():
        ys = [r[metric] for r in rows]
        ax.plot(
            [r["epoch"] for r in rows],
            [100 * y for y in ys] if metric == "val_acc" else ys,
            "-o",
            ms=3,
            label=label,
        )
    ax.set(
        xlabel="epoch",
        ylabel="validation accuracy (%)" if metric == "val_acc" else metric,
        title="The best trials' learning curves",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, out, plt)
