"""SGD updates and learning-rate schedules."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_mlp import kernels, model, optim


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


@pytest.mark.parametrize("activation, dropout", [("relu", 0.0), ("relu", 0.3), ("tanh", 0.3)])
@pytest.mark.parametrize("hidden", [[64], [48, 32]])
def test_fused_sgd_matches_the_plain_gradient_path(activation, dropout, hidden, monkeypatch):
    """The fast path (fused update, compiled kernels if built) against plain NumPy."""
    rng = np.random.default_rng(0)
    sizes = model.layer_sizes(hidden)
    plain = model.init_params(sizes, activation, rng)
    fused = {k: v.copy() for k, v in plain.items()}
    v_plain = optim.init_state(plain)
    sgd = optim.FusedSGD({k: w.copy() for k, w in fused.items()}, momentum=0.9, l2=1e-3)
    for step in range(5):
        x = rng.random((16, 784), dtype=np.float32)
        y = rng.integers(0, 10, 16)
        lr = 0.05 * (step + 1)  # a changing learning rate, as schedules make it
        with monkeypatch.context() as numpy_only:
            numpy_only.setattr(kernels, "AVAILABLE", False)
            _, grads, _ = model.loss_and_grads(plain, x, y, activation, 1e-3, dropout,
                                               np.random.default_rng(step))
            optim.sgd_step(plain, grads, v_plain, lr, 0.9)
        acts, masks = model.forward(fused, x.copy(), activation, dropout, np.random.default_rng(step))
        _, dz = model.softmax_cross_entropy(acts[-1], y)
        sgd.lr = lr
        model.backward(fused, acts, masks, dz, activation, sink=sgd)
        sgd.apply(fused)
    v_fused = optim.other_form(fused, sgd.previous)
    for k in plain:
        np.testing.assert_allclose(fused[k], plain[k], rtol=1e-5, atol=1e-6, err_msg=k)
        np.testing.assert_allclose(v_fused[k], v_plain[k], rtol=1e-4, atol=1e-6, err_msg=k)
        assert np.abs(v_plain[k]).max() > 1e-3  # the steps were not too small to compare


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
    assert optim.learning_rate(10, 1.0, 30, "step", step_every=10, step_gamma=0.1) == pytest.approx(0.1)
    assert optim.learning_rate(25, 1.0, 30, "step", step_every=10, step_gamma=0.1) == pytest.approx(0.01)
    assert optim.learning_rate(7, 0.3, 10, "constant") == 0.3
    assert optim.learning_rate(0.5, 1.0, 10, "cosine", warmup_epochs=2) == pytest.approx(0.25)
    assert optim.learning_rate(2, 1.0, 10, "cosine", warmup_epochs=2) == pytest.approx(1.0)


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("blank_share", [0.35, 0.0, 1.0])
def test_a_fused_step_from_inked_columns_equals_the_dense_step(compiled, blank_share, monkeypatch):
    from test_model import mnist_like

    from mnist_mlp import data

    if compiled and not kernels.AVAILABLE:
        pytest.skip("the compiled kernels are off or not built")
    if not compiled:
        monkeypatch.setattr(kernels, "AVAILABLE", False)
    rng = np.random.default_rng(6)
    dense_params = model.init_params(model.layer_sizes([48, 32]), "relu", rng)
    sparse_params = {k: v.copy() for k, v in dense_params.items()}
    dense = optim.FusedSGD({k: w.copy() for k, w in dense_params.items()}, momentum=0.9, l2=1e-3)
    sparse = optim.FusedSGD({k: w.copy() for k, w in sparse_params.items()}, momentum=0.9, l2=1e-3)
    for step in range(4):
        images = mnist_like(rng, 16, blank_share)
        y = rng.integers(0, 10, 16)
        for params, sgd, x in ((dense_params, dense, data.scale(images)),
                               (sparse_params, sparse, data.inked_columns(images))):
            if isinstance(x, model.InkedColumns):
                x.w_colsum = sgd.column_sums.get("W1")
            acts, masks = model.forward(params, x, "relu", 0.2, np.random.default_rng(step))
            _, dz = model.softmax_cross_entropy(acts[-1], y)
            sgd.lr = 0.05
            model.backward(params, acts, masks, dz, "relu", sink=sgd)
            sgd.apply(params)
        if compiled:  # the kept column sums are exactly those NumPy gives for the new weights
            np.testing.assert_array_equal(sparse.column_sums["W1"], sparse_params["W1"].sum(axis=0))
    for k in dense_params:  # momentum and L2 reached every row of W1, blank or not
        np.testing.assert_allclose(sparse_params[k], dense_params[k], rtol=1e-5, atol=1e-6, err_msg=k)
        np.testing.assert_allclose(sparse.previous[k], dense.previous[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert np.abs(sparse_params["W1"] - sparse.previous["W1"]).max() > 1e-4  # the steps moved the weights
