"""How good a network is on a split: loss, accuracy, the confusion matrix, the per-class table,
and a committee's vote.

Pure functions of arrays (and a network's forward pass): :mod:`mnist_mlp.run` loads the
checkpoints and the data, the loop measures each epoch's validation here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mnist_mlp import data as data_mod
from mnist_mlp import model


@dataclass
class Metrics:
    """Loss, accuracy and predictions of a network on one split.

    Attributes
    ----------
    loss : float
        Mean cross-entropy.
    accuracy : float
        In [0, 1].
    probabilities : ndarray of shape (n, 10), float32
    predictions : ndarray of shape (n,)
    """

    loss: float
    accuracy: float
    probabilities: np.ndarray
    predictions: np.ndarray


def probabilities(
    params: model.Params,
    activation: str,
    images: np.ndarray,
    batch: int = 2500,
    scaling: tuple[float, float] = (data_mod.SCALE, data_mod.OFFSET),
) -> np.ndarray:
    """The network's class probabilities for raw pixels ``images`` (n, 784), in batches.

    ``scaling`` is the (scale, offset) the network was trained with (a checkpoint's ``scaling``).

    Returns
    -------
    ndarray of shape (n, n_classes), float32
    """
    from mnist_mlp.fast import step as fast_step

    n = len(images)
    probs = np.empty((n, params[f"b{model.n_layers(params)}"].shape[0]), np.float32)
    x = np.empty((min(batch, n), params["W1"].shape[0]), np.float32)
    for start in range(0, n, batch):
        chunk = images[start : start + batch]
        xb = data_mod.scale(chunk, x[: len(chunk)], *scaling)
        probs[start : start + batch] = fast_step.predict_proba(params, xb, activation, batch)
    return probs


def of_probabilities(probs: np.ndarray, labels: np.ndarray) -> Metrics:
    """:class:`Metrics` of probabilities ``probs`` (n, C) against the true ``labels`` (n,)."""
    labels = labels.astype(np.intp)
    predictions = probs.argmax(axis=1)
    accuracy = float(np.mean(predictions == labels)) if len(labels) else math.nan
    return Metrics(cross_entropy(probs, labels), accuracy, probs, predictions)


def cross_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p of the true class (a probability of 0 counted as 1e-30)."""
    true_p = probs[np.arange(len(labels)), labels.astype(np.intp)]
    return float(-np.mean(np.log(np.maximum(true_p, 1e-30))))


def evaluate(
    params: model.Params,
    activation: str,
    split: data_mod.Split,
    batch: int = 2500,
    scaling: tuple[float, float] = (data_mod.SCALE, data_mod.OFFSET),
) -> Metrics:
    """Run the network over a whole split (no dropout, no augmentation)."""
    return of_probabilities(
        probabilities(params, activation, split.images, batch, scaling), split.labels
    )


def committee(members: list[np.ndarray]) -> np.ndarray:
    """A committee's probabilities: the mean of its members' (each (n, C)), float32."""
    total = members[0].astype(np.float32, copy=True)
    for probs in members[1:]:
        total += probs
    total /= len(members)
    return total


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n: int = 10) -> np.ndarray:
    """Counts of (true, predicted) pairs: ndarray of shape (n, n), rows true."""
    return np.bincount(labels.astype(np.intp) * n + predictions, minlength=n * n).reshape(n, n)


def per_class(cm: np.ndarray, classes: list[str]) -> list[dict]:
    """Precision, recall and support of each class from a confusion matrix."""
    hits = np.diag(cm)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    return [
        {
            "class": classes[i],
            "precision": float(hits[i] / predicted[i]) if predicted[i] else None,
            "recall": float(hits[i] / actual[i]) if actual[i] else None,
            "support": int(actual[i]),
        }
        for i in range(len(classes))
    ]


def mcnemar(a_right: np.ndarray, b_right: np.ndarray) -> dict:
    """McNemar's exact test: do two classifiers, right or wrong on the same digits (n,) bool,
    differ more than chance would make them?

    Returns
    -------
    dict
        ``a_only`` and ``b_only`` (digits one got right and the other wrong) and ``p``: the
        two-sided exact binomial probability of a split at least that uneven if each were as
        likely (1.0 where they never disagree).
    """
    a_only = int(np.count_nonzero(a_right & ~b_right))
    b_only = int(np.count_nonzero(b_right & ~a_right))
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return {"a_only": 0, "b_only": 0, "p": 1.0}
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return {"a_only": a_only, "b_only": b_only, "p": min(1.0, 2 * tail)}
