"""A checkpoint evaluated on a split of the data it was trained on, alone or in a committee:
what ``mlp eval`` prints, as a dict and as a table."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from mnist_mlp import checkpoint as ckpt_mod
from mnist_mlp import data as data_mod
from mnist_mlp import metrics
from mnist_mlp.errors import MlpError


@dataclass
class Evaluation:
    """A checkpoint run over one split of the data it was trained on."""

    checkpoint: ckpt_mod.Checkpoint
    data: data_mod.Data
    split: data_mod.Split
    metrics: metrics.Metrics
    confusion: np.ndarray  # (10, 10), rows true, columns predicted


def evaluate_on(
    path: str | os.PathLike, split: str = "test", progress: bool = True, tta: int = 1
) -> Evaluation:
    """Load a checkpoint and its dataset (checking it is the same data) and run it over
    ``split``, averaging each digit's probabilities over ``tta`` views (:mod:`mnist_mlp.tta`)."""
    ckpt = ckpt_mod.load(path)
    ckpt_mod.check_pixels(path, ckpt)
    data = data_mod.for_config(ckpt.config, progress, normalised=False)  # each member its view
    check_same_data(path, ckpt, data)
    chosen = {"test": data.test, "val": data.val, "train": data.train}[split]
    if not len(chosen):
        raise MlpError(f"the {split} split of {path} is empty (data.validation is 0)")
    return _evaluation(ckpt, data, chosen, tta)


def _evaluation(
    ckpt: ckpt_mod.Checkpoint, data: data_mod.Data, split: data_mod.Split, tta_views: int = 1
) -> Evaluation:
    """``ckpt`` on ``split`` (the digits as they are), seen in its own view (data.normalise),
    each digit's probabilities the mean over ``tta_views`` views of it."""
    from mnist_mlp import tta

    seen = data_mod.viewed(split, ckpt.config)

    def forward(pixels: np.ndarray) -> np.ndarray:
        return metrics.probabilities(ckpt.params, ckpt.activation, pixels, scaling=ckpt.scaling)

    m = metrics.of_probabilities(tta.probabilities(forward, seen.images, tta_views), split.labels)
    return Evaluation(ckpt, data, split, m, metrics.confusion_matrix(split.labels, m.predictions))


def evaluate_checkpoint(
    path: str | os.PathLike, split: str = "test", progress: bool = True, tta: int = 1
) -> dict:
    """Accuracy, loss, per-class precision and recall, and the confusion matrix of a checkpoint.

    Returns
    -------
    dict
        ``accuracy`` (0..1), ``loss``, ``n``, ``split``, ``dataset``, ``checkpoint``,
        ``classes``, ``per_class`` (list of dicts with ``class``, ``precision``, ``recall``,
        ``support``) and ``confusion_matrix`` (rows true, columns predicted).
    """
    e = evaluate_on(path, split, progress, tta)
    return {**_report(str(path), split, e, e.metrics, e.confusion), "tta": tta}


def _report(name, split: str, e: Evaluation, m: metrics.Metrics, confusion: np.ndarray) -> dict:
    """What ``mlp eval`` says of a checkpoint (or a committee) on a split, as a dict."""
    classes = e.checkpoint.classes
    return {
        "checkpoint": name,
        "dataset": e.data.name,
        "split": split,
        "n": len(e.split),
        "accuracy": m.accuracy,
        "loss": m.loss,
        "classes": classes,
        "per_class": metrics.per_class(confusion, classes),
        "confusion_matrix": confusion.tolist(),
    }


def evaluate_committee(
    paths: list[str | os.PathLike], split: str = "test", progress: bool = True, tta: int = 1
) -> dict:
    """Several checkpoints as one classifier: the mean of their probabilities.

    Returns
    -------
    dict
        What :func:`evaluate_checkpoint` returns, for the committee (``checkpoint`` is the list
        of paths), plus ``members``: each member's ``checkpoint``, ``accuracy`` and ``loss``.

    Raises
    ------
    MlpError
        If the members were trained on different datasets or class lists (see
        :func:`~mnist_mlp.checkpoint.check_committee`).
    """
    # checks the first member against the cached data
    first = evaluate_on(paths[0], split, progress, tta)
    others = [ckpt_mod.load(p) for p in paths[1:]]
    ckpt_mod.check_committee(paths, [first.checkpoint, *others])
    members = [first, *(_evaluation(c, first.data, first.split, tta) for c in others)]
    vote = metrics.of_probabilities(
        metrics.committee([m.metrics.probabilities for m in members]), first.split.labels
    )
    confusion = metrics.confusion_matrix(first.split.labels, vote.predictions)
    report = {**_report([str(p) for p in paths], split, first, vote, confusion), "tta": tta}
    report["members"] = [
        {"checkpoint": str(p), "accuracy": m.metrics.accuracy, "loss": m.metrics.loss}
        for p, m in zip(paths, members)
    ]
    return report


def check_same_data(
    path: str | os.PathLike, ckpt: ckpt_mod.Checkpoint, data: data_mod.Data
) -> None:
    recorded = ckpt.meta.get("dataset", {}).get("digest")
    if recorded not in (None, data.digest):
        raise MlpError(f"{path} was trained on other data than the cached {data.name}")


def format_evaluation(r: dict) -> str:
    """What :func:`evaluate_checkpoint` or :func:`evaluate_committee` returns, as a readable
    table: the accuracy (each member's too), the per-class table, the confusion matrix."""
    classes = [c if len(c) <= 7 else c[:6] + "." for c in r["classes"]]
    members = r.get("members")
    name = f"a committee of {len(members)}" if members else r["checkpoint"]
    lines = [f"{name} on {r['dataset']} {r['split']} ({r['n']} images)"]
    for m in members or []:
        lines.append(
            f"  member {m['checkpoint']}: accuracy {100 * m['accuracy']:.2f}%   loss "
            f"{m['loss']:.4f}"
        )
    lines += [
        f"accuracy {100 * r['accuracy']:.2f}%   loss {r['loss']:.4f}"
        + ("  (the mean of the members' probabilities)" if members else "")
        + (f"  (each digit seen {r['tta']} ways)" if r.get("tta", 1) > 1 else ""),
        "",
        f"{'class':>8} {'precision':>9} {'recall':>7} {'support':>7}",
    ]
    for c, row in zip(classes, r["per_class"]):
        pct = lambda v: "     -" if v is None else f"{100 * v:6.2f}%"  # noqa: E731
        lines.append(f"{c:>8}   {pct(row['precision'])} {pct(row['recall'])} {row['support']:>7}")
    lines += [
        "",
        "confusion matrix (rows: true class, columns: predicted)",
        " " * 9 + "".join(f"{c:>7}" for c in classes),
    ]
    for c, counts in zip(classes, r["confusion_matrix"]):
        lines.append(f"{c:>8} " + "".join(f"{n:>7}" if n else f"{'.':>7}" for n in counts))
    return "\n".join(lines)
