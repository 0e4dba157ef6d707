"""Test-time augmentation: fixed views of each digit, and the readers that average over them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_normalise import TINY, stroke

from mnist_mlp import checkpoint, evaluation, metrics, normalise, run, tta
from mnist_mlp.config import load_config


def test_the_views_move_turn_and_scale_the_digit_as_they_say():
    bar = stroke((4, 13), (23, 13)).reshape(1, -1)  # a vertical stroke, two pixels wide
    assert tta.view(bar, 0, 0, 0, 1.0) is bar
    right = tta.view(bar, 0, 1, 0, 1.0).reshape(28, 28)
    np.testing.assert_array_equal(right[:, 1:], bar.reshape(28, 28)[:, :-1])  # one pixel right
    down = tta.view(bar, 1, 0, 0, 1.0).reshape(28, 28)
    np.testing.assert_array_equal(down[1:], bar.reshape(28, 28)[:-1])
    turned = tta.view(bar, 0, 0, 5, 1.0)
    assert abs(normalise.slant(turned)[0][0]) == pytest.approx(math.tan(math.radians(5)), abs=0.02)
    box = normalise.bounding_boxes(bar)[0]
    big = normalise.bounding_boxes(np.where(tta.view(bar, 0, 0, 0, 1.05) > 127, 255, 0))[0]
    assert big[1] - big[0] > box[1] - box[0]


def test_the_mean_is_over_the_first_n_views_in_order():
    images = np.random.default_rng(0).integers(0, 256, (6, 784)).astype(np.uint8)

    def forward(px):  # a "network" whose answer depends on the pixels seen
        x = px.reshape(len(px), -1).astype(np.float32)
        return np.stack([x[:, :392].sum(1), x[:, 392:].sum(1)], axis=1)

    expected = sum(forward(tta.view(images, *spec)) for spec in tta.VIEWS[:4]) / 4
    np.testing.assert_allclose(tta.probabilities(forward, images, 4), expected, rtol=1e-6)
    np.testing.assert_array_equal(tta.probabilities(forward, images, 1), forward(images))
    with pytest.raises(ValueError, match="from 1 to 13 views"):
        tta.probabilities(forward, images, 14)


def test_eval_predict_and_the_estimator_average_over_the_views(tiny_as_mnist, tmp_path):
    config = load_config(overrides=TINY)
    run.train_run(config, tmp_path / "t", progress=False, echo=lambda s: None)
    path = tmp_path / "t" / "checkpoint.npz"
    ckpt = checkpoint.load(path)
    plain = evaluation.evaluate_on(path, "val", progress=False)
    viewed = evaluation.evaluate_on(path, "val", progress=False, tta=5)

    def forward(px):
        return metrics.probabilities(ckpt.params, ckpt.activation, px, scaling=ckpt.scaling)

    images = plain.split.images.reshape(len(plain.split), -1)
    expected = tta.probabilities(forward, images, 5)
    np.testing.assert_allclose(viewed.metrics.probabilities, expected, rtol=1e-6)
    assert not np.allclose(viewed.metrics.probabilities, plain.metrics.probabilities)
    assert evaluation.evaluate_checkpoint(path, "val", progress=False, tta=5)["tta"] == 5
    from mnist_mlp.predict import Predictor

    pixels = images[:4].reshape(4, 28, 28) / np.float32(255)
    np.testing.assert_allclose(
        Predictor(path, tta=5).probabilities(pixels), expected[:4], rtol=1e-5, atol=1e-7
    )
    pytest.importorskip("sklearn")
    from mnist_mlp import MLPClassifier
    from mnist_mlp.estimator import ParameterError

    clf = MLPClassifier.from_checkpoint(path).set_params(tta=5)
    np.testing.assert_allclose(clf.predict_proba(images), expected, rtol=1e-6)
    with pytest.raises(ParameterError, match="tta must be an integer from 1 to 13"):
        MLPClassifier(tta=0).fit(images, plain.split.labels)


def test_mlp_eval_says_how_many_views(tiny_as_mnist, tmp_path):
    from click.testing import CliRunner

    from mnist_mlp.cli import main

    run.train_run(load_config(overrides=TINY), tmp_path / "t", progress=False, echo=lambda s: None)
    result = CliRunner().invoke(
        main, ["eval", str(tmp_path / "t" / "checkpoint.npz"), "--tta", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "(each digit seen 3 ways)" in result.output
    refused = CliRunner().invoke(
        main, ["eval", str(tmp_path / "t" / "checkpoint.npz"), "--tta", "20"]
    )
    assert refused.exit_code == 2 and "Traceback" not in refused.output
