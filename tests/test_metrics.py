"""The metrics' arithmetic against cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mnist_mlp import metrics


def test_mcnemar_counts_the_disagreements_and_gives_the_exact_two_sided_p():
    a = np.array([True] * 10 + [False] * 2 + [True] * 80)
    b = np.array([False] * 10 + [True] * 2 + [True] * 80)
    result = metrics.mcnemar(a, b)
    assert result["a_only"] == 10 and result["b_only"] == 2
    expected = 2 * sum(math.comb(12, i) for i in range(3)) / 2**12  # 0.0386
    assert result["p"] == pytest.approx(expected)
    assert metrics.mcnemar(a, a) == {"a_only": 0, "b_only": 0, "p": 1.0}
    assert metrics.mcnemar(a, b)["p"] == metrics.mcnemar(b, a)["p"]  # symmetric
    assert metrics.mcnemar(np.array([True, False]), np.array([False, True]))["p"] == 1.0


def test_the_confusion_matrix_and_the_per_class_table():
    labels = np.array([0, 0, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 0])
    cm = metrics.confusion_matrix(labels, predicted, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    table = metrics.per_class(cm, ["a", "b", "c"])
    assert table[1] == {"class": "b", "precision": 2 / 3, "recall": 1.0, "support": 2}
    assert table[2]["precision"] is None and table[2]["recall"] == 0.0
