"""The network's math against oracles: finite differences, a step worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_mlp import model, optim


def _as64(params):
    return {k: v.astype(np.float64) for k, v in params.items()}


def _total_loss(params, x, y, activation, l2, smoothing=0.0):
    logits = model.forward(params, x, activation).logits
    return model.cross_entropy(logits, y, smoothing) + model.l2_penalty(params, l2)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("hidden", [[7], [6, 5]])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_gradients_match_finite_differences(activation, hidden, smoothing):
    rng = np.random.default_rng(1)
    sizes = [12, *hidden, 4]
    params = _as64(model.init_params(sizes, activation, rng))
    for k in params:  # non-zero biases so their gradients are tested too
        if k.startswith("b"):
            params[k] = rng.normal(0, 0.1, params[k].shape)
    x = rng.normal(size=(9, 12))
    y = rng.integers(0, 4, 9)
    l2 = 0.03
    _, grads, _ = model.loss_and_grads(params, x, y, activation, l2, smoothing=smoothing)
    eps = 1e-6
    for key, p in params.items():
        numeric = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            up = _total_loss(params, x, y, activation, l2, smoothing)
            p[i] = old - eps
            down = _total_loss(params, x, y, activation, l2, smoothing)
            p[i] = old
            numeric[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grads[key], numeric, rtol=1e-5, atol=1e-8, err_msg=key)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("hidden", [[7], [6, 5]])
def test_input_gradient_matches_finite_differences(activation, hidden):
    rng = np.random.default_rng(3)
    params = _as64(model.init_params([12, *hidden, 4], activation, rng))
    for k in params:
        if k.startswith("b"):
            params[k] = rng.normal(0, 0.1, params[k].shape)
    x = rng.normal(size=(6, 12))
    classes = np.array([0, 1, 2, 3, 1, 2])
    original = x.copy()
    grad = model.input_gradient(params, x, activation, classes)
    np.testing.assert_array_equal(x, original)  # the caller's inputs are left alone
    assert grad.shape == x.shape

    def logit(row, values):
        return model.forward(params, values[None], activation).logits[0, classes[row]]

    numeric = np.zeros_like(x)
    for r, c in np.ndindex(x.shape):
        up, down = x[r].copy(), x[r].copy()
        up[c] += 1e-6
        down[c] -= 1e-6
        numeric[r, c] = (logit(r, up) - logit(r, down)) / 2e-6
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_dropout_gradients_match_finite_differences_for_a_fixed_mask(activation):
    rng = np.random.default_rng(2)
    params = _as64(model.init_params([10, 8, 3], activation, rng))
    x, y = rng.normal(size=(5, 10)), rng.integers(0, 3, 5)
    _, grads, _ = model.loss_and_grads(params, x, y, activation, 0.0, 0.5, np.random.default_rng(7))

    def loss():
        logits = model.forward(params, x, activation, 0.5, np.random.default_rng(7)).logits
        return model.cross_entropy(logits, y)

    w = params["W1"]
    numeric = np.zeros_like(w)
    for i in np.ndindex(w.shape):
        old = w[i]
        w[i] = old + 1e-6
        up = loss()
        w[i] = old - 1e-6
        numeric[i] = (up - loss()) / 2e-6
        w[i] = old
    np.testing.assert_allclose(grads["W1"], numeric, rtol=1e-5, atol=1e-8)


def test_one_sgd_step_worked_out_by_hand():
    # x = [1, 2], identity weights, zero biases, true class 1:
    #   z1 = [1, 2] -> relu -> a1 = [1, 2] -> logits = [1, 2]
    #   softmax = [s, 1 - s] with s = 1 / (1 + e) = 0.26894142
    #   dlogits = [s, -s];  dW2 = a1.T @ dlogits = [[s, -s], [2s, -2s]];  db2 = [s, -s]
    #   da1 = dlogits @ W2.T = [s, -s], both units active -> dW1 = x.T @ da1 = dW2, db1 = [s, -s]
    # One step of plain SGD with lr 0.5 subtracts half of each gradient.
    s = 0.26894142
    params = {
        "W1": np.eye(2, dtype=np.float32),
        "b1": np.zeros(2, np.float32),
        "W2": np.eye(2, dtype=np.float32),
        "b2": np.zeros(2, np.float32),
    }
    x, y = np.array([[1.0, 2.0]], np.float32), np.array([1])
    loss, grads, pred = model.loss_and_grads(params, x, y, "relu")
    assert loss == pytest.approx(np.log(1 + np.e**-1), rel=1e-6)  # -log(1 - s)
    assert pred.tolist() == [1]
    optim.sgd_step(params, grads, optim.init_state(params), lr=0.5, momentum=0.0)
    expected_w = np.array([[1 - 0.5 * s, 0.5 * s], [-s, 1 + s]], np.float32)
    np.testing.assert_allclose(params["W1"], expected_w, rtol=1e-6)
    np.testing.assert_allclose(params["W2"], expected_w, rtol=1e-6)
    np.testing.assert_allclose(params["b1"], [-0.5 * s, 0.5 * s], rtol=1e-6)
    np.testing.assert_allclose(params["b2"], [-0.5 * s, 0.5 * s], rtol=1e-6)


def test_sigmoid_does_not_overflow():
    z = np.array([-1e4, -50.0, 0.0, 50.0, 1e4], np.float32)
    np.testing.assert_allclose(model.sigmoid(z), [0, 0, 0.5, 1, 1], atol=1e-7)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_init_is_seeded_float32_and_scaled(activation):
    sizes = model.layer_sizes([1024])
    a = model.init_params(sizes, activation, np.random.default_rng(0))
    b = model.init_params(sizes, activation, np.random.default_rng(0))
    assert all(a[k].dtype == np.float32 and np.array_equal(a[k], b[k]) for k in a)
    assert {k: v.shape for k, v in a.items()} == model.param_shapes(sizes)
    expected = np.sqrt(2 / 784) if activation == "relu" else np.sqrt(2 / (784 + 1024))
    assert a["W1"].std() == pytest.approx(expected, rel=0.01)
    assert not a["b1"].any()


@pytest.mark.parametrize("batch", [1, 32])
def test_overfits_a_tiny_batch(batch):
    rng = np.random.default_rng(3)
    x = rng.random((32, 784), dtype=np.float32)
    y = rng.integers(0, 10, 32)
    params = model.init_params(model.layer_sizes([64]), "relu", rng)
    velocity = optim.init_state(params)
    lr = 0.05 if batch == 32 else 0.002  # one example's gradient is noisy: smaller steps
    for _ in range(60 if batch == 32 else 20):
        for start in range(0, 32, batch):
            _, grads, _ = model.loss_and_grads(
                params, x[start : start + batch], y[start : start + batch], "relu"
            )
            optim.sgd_step(params, grads, velocity, lr=lr, momentum=0.9)
    probs = model.predict_proba(params, x, "relu")
    assert (probs.argmax(axis=1) == y).mean() == 1.0
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)


def test_float32_stays_float32():
    params = model.init_params(model.layer_sizes([16]), "tanh", np.random.default_rng(0))
    x = np.random.default_rng(1).random((4, 784), dtype=np.float32)
    _, grads, _ = model.loss_and_grads(
        params, x, np.arange(4), "tanh", l2=1e-3, dropout=0.1, rng=np.random.default_rng(2)
    )
    assert all(g.dtype == np.float32 for g in grads.values())


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_smoothed_loss_and_gradient_against_the_smoothed_target(smoothing):
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(6, 10)) * 3
    y = rng.integers(0, 10, 6)
    q = np.full((6, 10), smoothing / 10)
    q[np.arange(6), y] += 1 - smoothing
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected_loss = -(q * np.log(p)).sum(axis=1).mean()
    assert model.cross_entropy(logits, y, smoothing) == pytest.approx(expected_loss, rel=1e-12)
    dz = model.cross_entropy_grad(logits, y, smoothing)
    np.testing.assert_allclose(dz, (p - q) / 6, atol=1e-15)
    np.testing.assert_allclose(dz.sum(axis=1), 0, atol=1e-15)  # q and p both sum to one


def test_the_reference_stays_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [-5e4, 5e4, 0.0]], np.float32)
    y = np.array([0, 0])
    assert model.cross_entropy(logits, y) == pytest.approx(1e5 / 2, rel=1e-6)  # 0, then 1e5
    np.testing.assert_allclose(
        model.cross_entropy_grad(logits, y), [[0, 0, 0], [-0.5, 0.5, 0]], atol=1e-7
    )


def test_the_reference_leaves_its_inputs_alone_and_keeps_float32():
    rng = np.random.default_rng(8)
    params = model.init_params(model.layer_sizes([16, 12]), "sigmoid", rng)
    x = rng.random((5, 784), dtype=np.float32)
    before = {k: v.copy() for k, v in params.items()}, x.copy()
    loss, _grads, _ = model.loss_and_grads(params, x, np.arange(5), "sigmoid", 1e-3, 0.2, rng)
    for k in params:
        np.testing.assert_array_equal(params[k], before[0][k])
    np.testing.assert_array_equal(x, before[1])
    fwd = model.forward(params, x, "sigmoid")
    assert [a.shape for a in fwd.a] == [(5, 784), (5, 16), (5, 12)]
    assert [z.shape for z in fwd.z] == [(5, 16), (5, 12), (5, 10)]
    assert all(a.dtype == np.float32 for a in fwd.a + fwd.z)
    _, deltas = model.backward(
        params, fwd, model.cross_entropy_grad(fwd.logits, np.arange(5)), "sigmoid"
    )
    assert [d.shape for d in deltas] == [(5, 16), (5, 12), (5, 10)]
    assert np.isfinite(loss)


def test_a_hidden_neurons_sensitivity_is_the_chain_rule_written_out():
    # delta_j = f'(z_j) * sum_k W2[j, k] * delta_k, for one neuron, as the write-up states it
    rng = np.random.default_rng(9)
    params = model.init_params([6, 4, 3], "tanh", rng)
    x, y = rng.normal(size=(1, 6)).astype(np.float32), np.array([2])
    fwd = model.forward(params, x, "tanh")
    out = model.cross_entropy_grad(fwd.logits, y)
    deltas = model.sensitivities(params, fwd, out, "tanh")
    for j in range(4):
        total = sum(params["W2"][j, k] * out[0, k] for k in range(3))
        assert deltas[0][0, j] == pytest.approx(
            (1 - np.tanh(fwd.z[0][0, j]) ** 2) * total, rel=1e-5
        )
