"""mlp learn's sessions: their state against an independent backward pass, the update, the
gradient check, the settings' rules and the limits on sessions."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from mnist_mlp import learn


def synthetic_digits(n: int = 3000, seed: int = 0) -> learn.Digits:
    """Digits with a learnable pattern: class c inks columns of band c."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = (rng.random((n, 784)) < 0.05) * rng.integers(0, 256, (n, 784))
    for c in range(10):
        rows = labels == c
        images[np.ix_(rows, np.arange(c * 70, c * 70 + 60))] = 200
    order = rng.permutation(n)
    return learn.Digits(
        images.astype(np.uint8), labels.astype(np.intp), np.sort(order[500:]), np.sort(order[:500])
    )


@pytest.fixture(scope="module")
def digits():
    return synthetic_digits()


# --- an independent dense backward pass, written out anew for these tests ---------------------


def _f(name, z):
    return {"sigmoid": 1 / (1 + np.exp(-z)), "tanh": np.tanh(z), "relu": np.where(z > 0, z, 0.0)}[
        name
    ]


def _f_prime(name, z):
    s = 1 / (1 + np.exp(-z))
    return {"sigmoid": s * (1 - s), "tanh": 1 - np.tanh(z) ** 2, "relu": (z > 0) * 1.0}[name]


def independent(params, x, y, activation):
    """(zs, activations, probabilities, loss, deltas, grads, dx) for rows x (B, 784), labels y."""
    L = len(params) // 2
    a, zs, acts = x, [], []
    for l in range(1, L + 1):
        z = a @ params[f"W{l}"] + params[f"b{l}"]
        zs.append(z)
        a = _f(activation, z) if l < L else z
        if l < L:
            acts.append(a)
    e = np.exp(zs[-1] - zs[-1].max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    onehot = np.eye(p.shape[1])[y]
    loss = -np.mean(np.log(p[np.arange(len(y)), y]))
    deltas = [None] * L
    deltas[L - 1] = (p - onehot) / len(y)
    for l in range(L - 1, 0, -1):
        deltas[l - 1] = (deltas[l] @ params[f"W{l + 1}"].T) * _f_prime(activation, zs[l - 1])
    inputs = [x, *acts]
    grads = {}
    for l in range(1, L + 1):
        grads[f"W{l}"] = inputs[l - 1].T @ deltas[l - 1]
        grads[f"b{l}"] = deltas[l - 1].sum(axis=0)
    return zs, acts, p, loss, deltas, grads, deltas[0] @ params["W1"].T


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("hidden", [[16], [12, 7]])
def test_the_states_sensitivities_and_gradients_are_an_independent_backward_pass(
    activation, hidden, digits
):
    session = learn.Session(learn.LearnConfig(hidden=hidden, activation=activation), digits)
    session.advance(30)
    session.follow(index=17)
    state = json.loads(json.dumps(session.state()))  # as the page receives it
    params = {k: np.array(v) for k, v in state["params"].items()}
    follow = state["follow"]
    pixels = np.array(follow["pixels"]).reshape(1, 784)
    assert np.array_equal(pixels[0], digits.images[17]) and follow["label"] == digits.labels[17]
    x = pixels * state["input"]["scale"] + state["input"]["offset"]
    zs, acts, p, loss, deltas, grads, dx = independent(
        params, x, np.array([follow["label"]]), activation
    )
    for l, z in enumerate(zs):
        np.testing.assert_allclose(follow["z"][l], z[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(follow["dz"][l], deltas[l][0], rtol=1e-8, atol=1e-14)
    for l, a in enumerate(acts):
        np.testing.assert_allclose(follow["a"][l], a[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(follow["probabilities"], p[0], rtol=1e-10)
    np.testing.assert_allclose(follow["a"][-1], p[0], rtol=1e-10)
    assert follow["loss"] == pytest.approx(loss, rel=1e-10)
    np.testing.assert_allclose(follow["dx"], dx[0], rtol=1e-8, atol=1e-14)
    for key, g in grads.items():
        np.testing.assert_allclose(
            np.array(follow["grads"][key]), g, rtol=1e-8, atol=1e-14, err_msg=key
        )


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_a_step_with_no_momentum_moves_each_weight_by_minus_lr_times_the_batch_gradient(
    activation, digits
):
    session = learn.Session(learn.LearnConfig(activation=activation, lr=0.3, batch_size=20), digits)
    session.advance(5)
    before = {k: v.copy() for k, v in session.params.items()}
    session.advance(1)
    state = session.state()
    batch = np.array(state["batch"])
    assert len(batch) == 20 and np.isin(batch, digits.train).all()
    x = digits.images[batch] * state["input"]["scale"] + state["input"]["offset"]
    *_, grads, _ = independent(before, x, digits.labels[batch], activation)
    for key, w in session.params.items():
        np.testing.assert_allclose(
            w - before[key], -0.3 * grads[key], rtol=1e-9, atol=1e-15, err_msg=key
        )
        assert np.abs(w - before[key]).max() > 0


def test_momentum_and_l2_go_into_the_update(digits):
    session = learn.Session(learn.LearnConfig(momentum=0.9, l2=0.01, lr=0.1), digits)
    session.advance(2)
    before = {k: v.copy() for k, v in session.params.items()}
    velocity = {k: v.copy() for k, v in session.velocity.items()}
    session.advance(1)
    x = session.inputs(digits.images[session.batch])
    *_, grads, _ = independent(before, x, digits.labels[session.batch], "sigmoid")
    for key in before:
        g = grads[key] + (0.01 * before[key] if key.startswith("W") else 0)
        np.testing.assert_allclose(
            session.params[key], before[key] + 0.9 * velocity[key] - 0.1 * g, rtol=1e-9, atol=1e-14
        )


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_the_gradient_check_agrees_to_a_millionth(activation, digits):
    session = learn.Session(learn.LearnConfig(hidden=[16, 10], activation=activation), digits)
    session.advance(50)
    grads = session.followed_grads()
    for key in session.params:
        where = np.unravel_index(np.abs(grads[key]).argmax(), grads[key].shape)
        result = session.gradcheck(key, [int(i) for i in where])
        assert result["rel_error"] < 1e-6, result
        assert result["backprop"] == pytest.approx(float(grads[key][where]))


def test_it_learns_and_measures_validation_every_200_steps(digits):
    session = learn.Session(learn.LearnConfig(), digits)
    first = session.validation_accuracy()
    session.advance(450)
    h = session.history
    measured = [s for s, a in zip(h["step"], h["val_acc"]) if a is not None]
    assert measured == [0, 200, 400]
    assert h["step"][-1] == 450 and h["loss"][-1] is not None
    assert h["val_acc"][-1] is None  # not measured at 450
    assert session.validation_accuracy() > max(0.9, first + 0.3)


def test_a_diverging_step_is_refused_and_the_weights_kept(digits):
    session = learn.Session(learn.LearnConfig(activation="relu", lr=10, batch_size=1), digits)
    with pytest.raises(learn.LearnError, match="lr=10 is too high") as info:
        for _ in range(50):
            session.advance(100)
    assert "\n" not in str(info.value)
    assert all(np.isfinite(v).all() for v in session.params.values())
    json.dumps(session.state(), allow_nan=False)  # the page can still draw it


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"hidden": [0]}, "hidden must be one or two layer sizes from 1 to 64, got [0]"),
        ({"hidden": [65]}, "hidden must be one or two layer sizes from 1 to 64, got [65]"),
        (
            {"hidden": [8, 8, 8]},
            "hidden must be one or two layer sizes from 1 to 64, got [8, 8, 8]",
        ),
        ({"hidden": "16"}, "hidden must be one or two layer sizes from 1 to 64, got '16'"),
        ({"activation": "softmax"}, "activation must be one of relu, sigmoid, tanh, got 'softmax'"),
        ({"lr": 0}, "lr must be in (0, 10], got 0"),
        ({"lr": 11}, "lr must be in (0, 10], got 11"),
        ({"batch_size": 0}, "batch_size must be an integer from 1 to 256, got 0"),
        ({"batch_size": 257}, "batch_size must be an integer from 1 to 256, got 257"),
        ({"momentum": 1}, "momentum must be in [0, 1), got 1"),
        ({"l2": -1}, "l2 must be >= 0, got -1"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"speed": 2}, "unknown setting 'speed'"),
    ],
)
def test_each_setting_breaking_its_rule_is_named(settings, message):
    with pytest.raises(learn.LearnError) as info:
        learn.LearnConfig.from_dict(settings)
    assert message in str(info.value)


def test_steps_follow_and_gradcheck_refuse_what_they_cannot_do(digits):
    session = learn.Session(learn.LearnConfig(), digits)
    cases = [
        (lambda: session.advance(0), "steps must be an integer from 1 to 10000, got 0"),
        (lambda: session.advance(10_001), "steps must be an integer from 1 to 10000, got 10001"),
        (
            lambda: session.follow(index=len(digits.labels)),
            "index must be a training digit from 0 to",
        ),
        (
            lambda: session.follow(pixels=np.zeros((28, 28)), label=10),
            "label must be the digit drawn",
        ),
        (lambda: session.gradcheck("W9", [0, 0]), "param must be one of W1, b1, W2, b2, got 'W9'"),
        (
            lambda: session.gradcheck("W2", [16, 0]),
            "index must be 2 integers within [16, 10] for W2",
        ),
        (lambda: session.gradcheck("b1", [0, 0]), "index must be 1 integers within [16] for b1"),
    ]
    for call, message in cases:
        with pytest.raises(learn.LearnError, match=None) as info:
            call()
        assert message in str(info.value)


def test_at_most_eight_sessions_and_an_idle_one_is_dropped(digits):
    sessions = learn.Sessions(digits, limit=8, idle=0.3)
    made = [sessions.create(learn.LearnConfig()) for _ in range(8)]
    with pytest.raises(learn.TooManySessions, match="8 learning sessions are open"):
        sessions.create(learn.LearnConfig())
    sessions.delete(made[0].id)
    sessions.create(learn.LearnConfig())  # a place came free
    time.sleep(0.2)
    sessions.get(made[1].id)  # used: stays
    time.sleep(0.2)
    assert len(sessions) == 1  # the others sat idle for more than 0.3 s
    assert sessions.get(made[1].id) is made[1]
    with pytest.raises(KeyError):
        sessions.get(made[2].id)


def test_the_state_is_json_with_everything_the_page_draws(digits):
    session = learn.Session(learn.LearnConfig(hidden=[16, 8]), digits)
    session.advance(3)
    state = session.state()
    text = json.dumps(state, allow_nan=False)
    assert set(state) == {
        "id",
        "step",
        "config",
        "input",
        "params",
        "batch",
        "history",
        "follow",
        "health",
        "one_steps",
        "last_update",
        "compute_seconds",
    }
    assert set(state["follow"]) == {
        "output",
        "index",
        "label",
        "pixels",
        "z",
        "a",
        "probabilities",
        "loss",
        "dz",
        "dx",
        "grads",
    }
    assert np.array(state["params"]["W1"]).shape == (784, 16)
    assert [len(z) for z in state["follow"]["z"]] == [16, 8, 10]
    assert len(state["follow"]["dx"]) == 784 and np.array(state["follow"]["pixels"]).shape == (
        28,
        28,
    )
    assert state["config"] == {
        "hidden": [16, 8],
        "activation": "sigmoid",
        "lr": 0.5,
        "batch_size": 32,
        "momentum": 0.0,
        "l2": 0.0,
        "seed": 0,
    }
    assert len(text) < 2_000_000


def test_a_session_trains_through_the_loop_exactly_as_model_py_by_hand(digits):
    """The loop and its float64 reference step add nothing: the weights are bit for bit those of
    a plain loop over the same batches calling model.loss_and_grads and optim.sgd_step."""
    from mnist_mlp import data as data_mod
    from mnist_mlp import model, optim

    config = learn.LearnConfig(hidden=[12, 8], activation="tanh", momentum=0.8, l2=0.01, lr=0.2)
    session = learn.Session(config, digits)
    params = {k: v.copy() for k, v in session.params.items()}
    velocity = optim.init_state(params)
    n, size = len(digits.train), config.batch_size
    per_epoch = -(-n // size)
    for step in range(250):  # past an epoch's end (2,500 digits in batches of 32: 79 steps)
        epoch, b = divmod(step, per_epoch)
        rng = data_mod.rng_for(config.seed, data_mod.EPOCH, epoch)
        batch = digits.train[rng.permutation(n)][b * size : (b + 1) * size]
        x = session.inputs(digits.images[batch])
        _, grads, _ = model.loss_and_grads(params, x, digits.labels[batch], "tanh", 0.01)
        optim.sgd_step(params, grads, velocity, 0.2, 0.8)
    session.advance(100)
    session.advance(150)
    assert session.step == 250
    np.testing.assert_array_equal(session.batch, batch)
    for k in params:
        np.testing.assert_array_equal(session.params[k], params[k], err_msg=k)
        np.testing.assert_array_equal(session.velocity[k], velocity[k], err_msg=k)


# --- the output layer in numbers, one step on one digit, health ---------------------------------


def test_the_output_layer_arithmetic_is_softmax_its_loss_and_p_minus_target(digits):
    session = learn.Session(learn.LearnConfig(hidden=[16]), digits)
    session.advance(40)
    session.follow(index=7)
    state = session.state()
    out, f = state["follow"]["output"], state["follow"]
    z = np.array(out["z"])
    assert np.array_equal(z, f["z"][-1]) and out["shift"] == z.max()
    assert np.allclose(out["exp"], np.exp(z - z.max()), rtol=1e-15)
    assert out["sum_exp"] == pytest.approx(np.sum(out["exp"]), rel=1e-15)
    assert np.allclose(out["p"], np.exp(z) / np.exp(z).sum(), rtol=1e-12)
    assert np.array_equal(out["p"], f["probabilities"])
    label = int(digits.labels[7])
    assert out["target"] == [1.0 if k == label else 0.0 for k in range(10)]
    assert out["loss"] == pytest.approx(-np.log(out["p"][label]), rel=1e-12)
    assert out["loss"] == pytest.approx(f["loss"], rel=1e-12)
    assert np.allclose(out["dz"], np.array(out["p"]) - out["target"], atol=0)
    assert np.allclose(out["dz"], f["dz"][-1], rtol=1e-12, atol=1e-300)


def test_the_output_layer_stays_finite_when_the_sums_are_huge():
    out = learn.follow.output_layer(np.array([1e6, -1e6, 0.0, *[0.0] * 7]), label=1)
    assert out["p"][0] == 1.0 and out["exp"][1] == 0.0
    assert out["loss"] == pytest.approx(2e6) and np.isfinite(out["loss"])


@pytest.mark.parametrize("l2", [0.0, 0.01])
def test_one_step_on_the_followed_digit_is_plain_sgd_and_lowers_its_loss(digits, l2):
    session = learn.Session(learn.LearnConfig(hidden=[16, 8], momentum=0.9, l2=l2), digits)
    session.advance(20)
    session.follow(index=11)
    before = {k: v.copy() for k, v in session.params.items()}
    velocity = {k: v.copy() for k, v in session.velocity.items()}
    grads = session.followed_grads()
    steps, history = session.step, json.dumps(session.history)
    update = session.step_on_followed()
    lr = session.config.lr
    for k, w in session.params.items():
        decay = lr * l2 * before[k] if k.startswith("W") else 0.0
        assert np.allclose(w, before[k] - lr * grads[k] - decay, rtol=0, atol=1e-15), k
        assert np.array_equal(session.velocity[k], velocity[k])  # no momentum
        assert np.array_equal(update["params_before"][k], before[k])
    assert session.step == steps and json.dumps(session.history) == history
    assert update["after"]["loss"] < update["before"]["loss"]
    state = session.state()
    assert state["one_steps"] == 1 and state["last_update"]["lr"] == lr
    assert state["last_update"]["after"]["loss"] == pytest.approx(state["follow"]["loss"])


def test_one_step_on_ones_own_drawing(digits):
    session = learn.Session(learn.LearnConfig(), digits)
    pixels = np.zeros((28, 28))
    pixels[4:24, 12:16] = 255
    session.follow(pixels=pixels, label=1)
    update = session.step_on_followed()
    assert update["index"] is None and update["label"] == 1
    assert update["after"]["probabilities"][1] > update["before"]["probabilities"][1]


def test_health_names_the_dead_relus(digits):
    session = learn.Session(learn.LearnConfig(hidden=[8], activation="relu"), digits)
    session.advance(1)
    assert session.state()["health"]["dead"] == [[]] and not session.health()["diverged"]
    session.params["b1"][[2, 5]] = -1e3  # no digit lifts these above 0
    h = session.health()
    assert h["dead"] == [[2, 5]] and h["saturated"] == [[]] and "ReLU" in h["rule"]


@pytest.mark.parametrize("activation, z", [("sigmoid", 8.0), ("tanh", 4.0)])
def test_health_names_the_saturated_neurons(digits, activation, z):
    session = learn.Session(learn.LearnConfig(hidden=[6, 4], activation=activation), digits)
    session.advance(1)
    session.params["W2"][:, 3] = 0
    session.params["b2"][3] = z  # f'(z) below 1% of its peak for every digit
    session.params["b2"][1] = -z / 3  # still learning
    h = session.health()
    assert h["saturated"] == [[], [3]] and h["dead"] == [[], []]


def test_health_says_the_net_diverged_where_the_loss_blew_up(digits):
    session = learn.Session(learn.LearnConfig(hidden=[32, 16], activation="relu"), digits)
    session.advance(1)
    assert not session.health()["diverged"]
    session.params["W3"] *= 1e6
    h = session.health()
    assert h["diverged"] and h["loss"] > learn.health.DIVERGED_LOSS


def test_the_state_of_a_blown_up_net_is_still_json(digits):
    session = learn.Session(learn.LearnConfig(hidden=[4]), digits)
    session.params["W2"][0, 0] = np.inf
    state = session.state()
    json.dumps(state, allow_nan=False)
    assert state["params"]["W2"][0][0] is None


def test_a_session_unheard_from_gives_its_place_to_a_new_one(digits):
    sessions = learn.Sessions(digits, limit=2, unheard=60)
    first, second = (sessions.create(learn.LearnConfig()) for _ in range(2))
    with pytest.raises(learn.TooManySessions, match="reclaimed after 60 s"):
        sessions.create(learn.LearnConfig())
    first.last_used -= 61  # its page has gone
    sessions.get(second.id)
    third = sessions.create(learn.LearnConfig())
    with pytest.raises(KeyError):
        sessions.get(first.id)
    assert sessions.get(second.id) is second and sessions.get(third.id) is third


def test_the_last_update_is_forgotten_once_the_net_trains_or_follows_another_digit(digits):
    session = learn.Session(learn.LearnConfig(), digits)
    session.step_on_followed()
    assert session.state()["last_update"] is not None
    session.advance(1)
    assert session.state()["last_update"] is None  # its weights before are no longer the net's
    session.step_on_followed()
    session.follow(index=3)
    assert session.state()["last_update"] is None
