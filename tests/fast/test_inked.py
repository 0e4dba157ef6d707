"""A batch without its blank pixel columns stands for the dense batch: the same products."""

from __future__ import annotations

import numpy as np
import pytest
from imagegen import mnist_like

from mnist_mlp import data, model
from mnist_mlp.fast import inked, step
from mnist_mlp.fast.sgd import BufferedSGD


def _fast_loss_and_grads(params, x, y, activation, dropout, seed):
    """The fast forward and backward, the gradients multiplied out (BufferedSGD's buffers)."""
    cache = step.forward(params, x, activation, dropout, np.random.default_rng(seed))
    loss, dz = step.softmax_cross_entropy(cache.logits, y)
    sgd = BufferedSGD({k: np.zeros_like(v) for k, v in params.items()}, 0.0, 0.0)
    step.backward(params, cache, dz, activation, sgd)
    return loss, sgd.grads


@pytest.mark.parametrize("blank_share", [0.0, 0.35, 0.9, 1.0])
@pytest.mark.parametrize(
    "hidden, activation, dropout",
    [([32], "relu", 0.0), ([24, 16], "tanh", 0.0), ([32], "relu", 0.3), ([24, 16], "relu", 0.3)],
)
def test_inked_columns_give_the_dense_forward_and_gradients(
    blank_share, hidden, activation, dropout
):
    rng = np.random.default_rng(4)
    params = model.init_params(model.layer_sizes(hidden), activation, rng)
    for k in params:
        if k.startswith("b"):
            params[k] = rng.normal(0, 0.1, params[k].shape).astype(np.float32)
    images = mnist_like(rng, 16, blank_share)
    dense = data.scale(images)
    batch = inked.inked_columns(images)
    assert len(batch.cols) == 784 - round(blank_share * 784)
    np.testing.assert_allclose(batch.dense(), dense, rtol=1e-6, atol=1e-6)
    y = rng.integers(0, 10, 16)
    loss_r, grads_r, _ = model.loss_and_grads(
        params, dense, y, activation, 0.0, dropout, np.random.default_rng(1)
    )
    loss_d, grads_d = _fast_loss_and_grads(params, dense, y, activation, dropout, 1)
    loss_i, grads_i = _fast_loss_and_grads(params, batch, y, activation, dropout, 1)
    assert loss_i == pytest.approx(loss_r, rel=1e-5) and loss_d == pytest.approx(loss_r, rel=1e-5)
    for key in params:
        np.testing.assert_allclose(grads_d[key], grads_r[key], rtol=1e-4, atol=2e-6, err_msg=key)
        np.testing.assert_allclose(grads_i[key], grads_r[key], rtol=1e-4, atol=2e-6, err_msg=key)


def test_inked_columns_keep_a_given_column_sum_and_refuse_a_busy_batch():
    rng = np.random.default_rng(5)
    images = mnist_like(rng, 8, 0.5)
    w = rng.random((784, 12), dtype=np.float32)
    batch = inked.inked_columns(images)
    _z, blank = batch.matmul(w)
    np.testing.assert_array_equal(blank, np.float32(batch.offset) * w.sum(axis=0))
    batch.w_colsum = np.zeros(12, np.float32)  # a kept sum is used as it is, not recomputed
    assert not batch.matmul(w)[1].any()
    assert inked.inked_columns(images, max_share=0.49) is None  # half the columns are inked
    assert inked.inked_columns(images, max_share=0.5) is not None


def test_the_transposed_product_is_the_dense_one():
    rng = np.random.default_rng(6)
    batch = inked.inked_columns(mnist_like(rng, 8, 0.6))
    dz = rng.normal(size=(8, 5)).astype(np.float32)
    np.testing.assert_allclose(batch.t_matmul(dz), batch.dense().T @ dz, rtol=1e-5, atol=1e-5)
