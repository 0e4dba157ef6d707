"""The fast updates against the reference update, :func:`mnist_mlp.optim.sgd_step`."""

from __future__ import annotations

import numpy as np
import pytest
from imagegen import mnist_like

from mnist_mlp import data, model, optim
from mnist_mlp.fast import inked, kernels, step
from mnist_mlp.fast.sgd import FusedSGD


def _fused_step(params, sgd, x, y, activation, dropout, seed, lr):
    cache = step.forward(params, x, activation, dropout, np.random.default_rng(seed))
    _, dz = step.softmax_cross_entropy(cache.logits, y)
    sgd.lr = lr
    step.backward(params, cache, dz, activation, sgd)
    sgd.apply(params)


@pytest.mark.parametrize("activation, dropout", [("relu", 0.0), ("relu", 0.3), ("tanh", 0.3)])
@pytest.mark.parametrize("hidden", [[64], [48, 32]])
def test_fused_sgd_matches_the_reference_step(activation, dropout, hidden, monkeypatch):
    """The fast path (fused update, compiled kernels if built) against the reference."""
    rng = np.random.default_rng(0)
    sizes = model.layer_sizes(hidden)
    plain = model.init_params(sizes, activation, rng)
    fused = {k: v.copy() for k, v in plain.items()}
    v_plain = optim.init_state(plain)
    sgd = FusedSGD({k: w.copy() for k, w in fused.items()}, momentum=0.9, l2=1e-3)
    for i in range(5):
        x = rng.random((16, 784), dtype=np.float32)
        y = rng.integers(0, 10, 16)
        lr = 0.05 * (i + 1)  # a changing learning rate, as schedules make it
        _, grads, _ = model.loss_and_grads(
            plain, x, y, activation, 1e-3, dropout, np.random.default_rng(i)
        )
        optim.sgd_step(plain, grads, v_plain, lr, 0.9)
        _fused_step(fused, sgd, x.copy(), y, activation, dropout, i, lr)
    v_fused = optim.other_form(fused, sgd.previous)
    for k in plain:
        np.testing.assert_allclose(fused[k], plain[k], rtol=1e-5, atol=1e-6, err_msg=k)
        np.testing.assert_allclose(v_fused[k], v_plain[k], rtol=1e-4, atol=1e-6, err_msg=k)
        assert np.abs(v_plain[k]).max() > 1e-3  # the steps were not too small to compare


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("blank_share", [0.35, 0.0, 1.0])
def test_a_fused_step_from_inked_columns_equals_the_dense_step(compiled, blank_share, monkeypatch):
    if compiled and not kernels.AVAILABLE:
        pytest.skip("the compiled kernels are off or not built")
    if not compiled:
        monkeypatch.setattr(kernels, "AVAILABLE", False)
    rng = np.random.default_rng(6)
    dense_params = model.init_params(model.layer_sizes([48, 32]), "relu", rng)
    sparse_params = {k: v.copy() for k, v in dense_params.items()}
    dense = FusedSGD({k: w.copy() for k, w in dense_params.items()}, momentum=0.9, l2=1e-3)
    sparse = FusedSGD({k: w.copy() for k, w in sparse_params.items()}, momentum=0.9, l2=1e-3)
    for i in range(4):
        images = mnist_like(rng, 16, blank_share)
        y = rng.integers(0, 10, 16)
        batch = inked.inked_columns(images)
        batch.w_colsum = sparse.column_sums.get("W1")
        _fused_step(dense_params, dense, data.scale(images), y, "relu", 0.2, i, 0.05)
        _fused_step(sparse_params, sparse, batch, y, "relu", 0.2, i, 0.05)
        if compiled:  # the kept column sums are exactly those NumPy gives for the new weights
            np.testing.assert_array_equal(sparse.column_sums["W1"], sparse_params["W1"].sum(axis=0))
    for k in dense_params:  # momentum and L2 reached every row of W1, blank or not
        np.testing.assert_allclose(
            sparse_params[k], dense_params[k], rtol=1e-5, atol=1e-6, err_msg=k
        )
        np.testing.assert_allclose(
            sparse.previous[k], dense.previous[k], rtol=1e-5, atol=1e-6, err_msg=k
        )
    # the steps moved the weights
    assert np.abs(sparse_params["W1"] - sparse.previous["W1"]).max() > 1e-4
