"""SGD updates and learning-rate schedules."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_mlp import optim


def _one(value):
    return {"W1": np.array([value], np.float32)}


def test_momentum_accumulates():
    params, velocity = _one(1.0), _one(0.0)
    for _ in range(2):
        optim.sgd_step(params, _one(1.0), velocity, lr=0.1, momentum=0.5)
    # v1 = -0.1, w1 = 0.9; v2 = 0.5 * -0.1 - 0.1 = -0.15, w2 = 0.9 - 0.15 = 0.75
    assert velocity["W1"][0] == pytest.approx(-0.15)
    assert params["W1"][0] == pytest.approx(0.75)


def test_nesterov_looks_ahead():
    params, velocity = _one(1.0), _one(0.0)
    optim.sgd_step(params, _one(1.0), velocity, lr=0.1, momentum=0.5, nesterov=True)
    # v = -0.1; w += mu v - lr g = -0.05 - 0.1
    assert params["W1"][0] == pytest.approx(0.85)


def test_momentum_forms_convert_both_ways():
    params = {"W1": np.array([0.5, -0.25], np.float32)}
    velocity = {"W1": np.array([0.125, 0.5], np.float32)}
    previous = optim.other_form(params, velocity)
    np.testing.assert_array_equal(previous["W1"], [0.375, -0.75])
    np.testing.assert_array_equal(optim.other_form(params, previous)["W1"], velocity["W1"])


def test_clip_norms_leaves_the_velocity_of_the_previous_form_alone():
    rng = np.random.default_rng(0)
    params = {"W1": rng.normal(size=(5, 3)).astype(np.float32) * 3, "b1": np.ones(3, np.float32)}
    velocity = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
    previous = optim.other_form(params, velocity)
    optim.clip_norms(params, 1.0, previous)
    np.testing.assert_allclose(np.linalg.norm(params["W1"], axis=0), 1.0, rtol=1e-6)
    for k in params:
        np.testing.assert_allclose(optim.other_form(params, previous)[k], velocity[k], atol=1e-6)


def test_clip_norms_caps_each_column():
    w = np.array([[3.0, 0.1], [4.0, 0.1]], np.float32)
    params = {"W1": w}
    optim.clip_norms(params, 1.0)
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), [1.0, np.sqrt(0.02)], rtol=1e-6)


@pytest.mark.parametrize("progress, expected", [(0, 1.0), (5, 0.5), (10, 0.0)])
def test_cosine(progress, expected):
    assert optim.learning_rate(progress, 1.0, 10, "cosine") == pytest.approx(expected, abs=1e-12)


def test_step_and_constant_and_warmup():
    assert optim.learning_rate(9.9, 1.0, 30, "step", step_every=10, step_gamma=0.1) == 1.0
    assert optim.learning_rate(10, 1.0, 30, "step", step_every=10, step_gamma=0.1) == pytest.approx(
        0.1
    )
    assert optim.learning_rate(25, 1.0, 30, "step", step_every=10, step_gamma=0.1) == pytest.approx(
        0.01
    )
    assert optim.learning_rate(7, 0.3, 10, "constant") == 0.3
    assert optim.learning_rate(0.5, 1.0, 10, "cosine", warmup_epochs=2) == pytest.approx(0.25)
    assert optim.learning_rate(2, 1.0, 10, "cosine", warmup_epochs=2) == pytest.approx(1.0)


def test_the_moving_average_starts_as_the_weights_and_follows_them_by_its_decay():
    w = {"W1": np.full((2, 2), 1.0, np.float32), "b1": np.zeros(2, np.float32)}
    avg: dict = {}
    optim.ema_update(avg, w, 0.99, steps=1)
    assert np.array_equal(avg["W1"], w["W1"]) and avg["W1"] is not w["W1"]  # a copy
    w["W1"][...] = 3.0
    optim.ema_update(avg, w, 0.99, steps=2)  # early on the decay is (1 + 2) / (10 + 2) = 0.25
    np.testing.assert_allclose(avg["W1"], 0.25 * 1.0 + 0.75 * 3.0)
    before = avg["W1"].copy()
    w["W1"][...] = 5.0
    optim.ema_update(avg, w, 0.99, steps=10_000)  # later: the decay asked for
    np.testing.assert_allclose(avg["W1"], 0.99 * before + 0.01 * 5.0, rtol=1e-6)
    assert avg["W1"].dtype == np.float32
