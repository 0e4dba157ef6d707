"""The training loop on small synthetic data: learning, exact resume, divergence, early stop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import StopAfter, make_tiny_arrays

from mnist_mlp import data as data_mod
from mnist_mlp import metrics, optim, train
from mnist_mlp.callbacks import OnEpoch
from mnist_mlp.config import load_config
from mnist_mlp.fast import inked, kernels
from mnist_mlp.fast import step as step_mod
from mnist_mlp.step import Momentum


def tiny_data(n_train=240, n_val=60, n_test=60, seed=0):
    a = make_tiny_arrays(n_train + n_val, n_test, seed)
    images, labels = a["train-images"].reshape(-1, 784), a["train-labels"]
    return data_mod.Data(
        "tiny",
        tuple("0123456789"),
        "0" * 16,
        train=data_mod.Split(images[:n_train], labels[:n_train]),
        val=data_mod.Split(images[n_train:], labels[n_train:]),
        test=data_mod.Split(a["test-images"].reshape(-1, 784), a["test-labels"]),
    )


def small_config(*extra):
    return load_config(
        overrides=[
            "model.hidden=[64]",
            "training.epochs=6",
            "training.batch_size=16",
            "training.lr=0.05",
            "model.dropout=0.2",
            *extra,
        ]
    )


def test_learns_the_synthetic_task():
    data = tiny_data()
    rows = []
    state = train.fit(
        small_config(),
        data,
        callbacks=[OnEpoch(lambda s, row, best: rows.append(row))],
        progress=False,
    )
    assert state.status == "completed" and state.epoch == 6 and state.steps == 6 * 15
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["val_acc"] >= 0.9
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert metrics.evaluate(state.params, "relu", data.test).accuracy >= 0.9


@pytest.mark.parametrize("augment", [False, True])
def test_the_compiled_kernels_change_nothing_but_the_time(monkeypatch, augment):
    if not kernels.AVAILABLE:
        pytest.skip("the compiled kernels are off or not built")
    from mnist_mlp.augment import Augmenter

    data = tiny_data()
    config = small_config("training.epochs=1", "data.augment.translate=2")
    distort = Augmenter(config.data.augment) if augment else None
    fast = train.fit(config, data, progress=False, augment=distort)
    monkeypatch.setattr(kernels, "AVAILABLE", False)
    monkeypatch.setattr(kernels, "WIDE", False)
    plain = train.fit(config, data, progress=False, augment=distort)
    assert fast.steps == plain.steps == 15
    for key in plain.params:
        np.testing.assert_allclose(
            fast.params[key], plain.params[key], rtol=1e-4, atol=1e-6, err_msg=key
        )
    assert fast.history[0]["train_loss"] == pytest.approx(plain.history[0]["train_loss"], rel=1e-5)


def test_label_smoothing_trains_and_keeps_the_logits_closer():
    data = tiny_data()
    plain = train.fit(small_config("model.dropout=0"), data, progress=False)
    smooth = train.fit(
        small_config("model.dropout=0", "training.label_smoothing=0.2"), data, progress=False
    )
    assert metrics.evaluate(smooth.params, "relu", data.test).accuracy >= 0.9

    def logit_spread(state):
        from mnist_mlp import model

        logits = model.forward(state.params, data_mod.scale(data.test.images), "relu").logits
        return float(np.mean(logits.max(axis=1) - logits.min(axis=1)))

    # the smoothed target asks for a little probability on every class: less extreme logits
    assert logit_spread(smooth) < 0.8 * logit_spread(plain)


@pytest.mark.parametrize("stop_at", [7, 15, 31])  # mid-epoch, at an epoch's end, mid-epoch later
def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(stop_at):
    data, config = tiny_data(), small_config()
    whole = train.fit(config, data, progress=False)
    part = train.fit(config, data, stop=StopAfter(stop_at), progress=False)
    assert part.status == "interrupted"
    # Through JSON, as a checkpoint stores it.
    import json

    resumed_state = train.State.from_meta(
        {k: v.copy() for k, v in part.params.items()},
        {k: v.copy() for k, v in part.momentum.buffers.items()},
        json.loads(json.dumps(part.meta())),
    )
    resumed = train.fit(config, data, resumed_state, progress=False)
    assert resumed.status == "completed" and resumed.steps == whole.steps
    for key in whole.params:
        np.testing.assert_array_equal(resumed.params[key], whole.params[key])
    assert resumed.history == whole.history or all(
        a["val_acc"] == b["val_acc"] for a, b in zip(resumed.history, whole.history)
    )


def test_resume_is_exact_with_nesterov_momentum_and_max_norm_too():
    data, config = (
        tiny_data(),
        small_config("training.nesterov=true", "training.max_norm=2", "training.epochs=2"),
    )
    whole = train.fit(config, data, progress=False)
    part = train.fit(config, data, stop=StopAfter(9), progress=False)
    assert part.momentum.form == "velocity"
    resumed = train.fit(config, data, part, progress=False)
    for key in whole.params:
        np.testing.assert_array_equal(resumed.params[key], whole.params[key])


def test_a_state_holding_velocities_continues_with_classical_momentum():
    # As when resuming a checkpoint written before the fast path kept the previous weights.
    data, config = tiny_data(), small_config("training.epochs=2", "training.max_norm=2")
    whole = train.fit(config, data, progress=False)
    part = train.fit(config, data, stop=StopAfter(9), progress=False)
    assert part.momentum.form == "previous"
    part.momentum = Momentum(optim.other_form(part.params, part.momentum.buffers), "velocity")
    resumed = train.fit(config, data, part, progress=False)
    assert resumed.momentum.form == "previous"
    for key in whole.params:  # float32 rounding in the conversion, nothing more
        np.testing.assert_allclose(resumed.params[key], whole.params[key], rtol=1e-4, atol=1e-6)


def test_resume_is_exact_with_augmentation_too():
    from mnist_mlp.augment import Augmenter

    data = tiny_data()
    config = small_config(
        "data.augment.rotate=10", "data.augment.elastic_alpha=20", "training.epochs=3"
    )
    augment = Augmenter(config.data.augment)
    whole = train.fit(config, data, progress=False, augment=augment)
    part = train.fit(config, data, stop=StopAfter(20), progress=False, augment=augment)
    resumed = train.fit(config, data, part, progress=False, augment=augment)
    assert resumed.steps == whole.steps
    for key in whole.params:
        np.testing.assert_array_equal(resumed.params[key], whole.params[key])
    plain = train.fit(config, data, progress=False)
    assert not np.array_equal(plain.params["W1"], whole.params["W1"])  # the distortions did act


def test_same_seed_same_weights_other_seed_other_weights():
    data = tiny_data()
    a = train.fit(small_config("training.epochs=1"), data, progress=False)
    b = train.fit(small_config("training.epochs=1"), data, progress=False)
    c = train.fit(small_config("training.epochs=1", "training.seed=1"), data, progress=False)
    assert np.array_equal(a.params["W1"], b.params["W1"])
    assert not np.array_equal(a.params["W1"], c.params["W1"])


def test_divergence_stops_with_a_clear_message():
    with pytest.raises(
        train.TrainingDiverged, match=r"learning rate \(training.lr=1e\+06\) is probably too high"
    ):
        train.fit(small_config("training.lr=1e6", "model.dropout=0"), tiny_data(), progress=False)


def test_early_stopping_on_validation_loss():
    data = tiny_data()
    # Validation labels unrelated to the images: once the net fits the training set, growing
    # confidence can only raise validation loss, so patience 2 must stop the run.
    data.val.labels = np.random.default_rng(5).permutation(data.val.labels)
    config = small_config(
        "training.epochs=60",
        "training.patience=2",
        "training.schedule=constant",
        "model.dropout=0",
        "training.lr=0.1",
    )
    state = train.fit(config, data, progress=False)
    assert state.status == "early-stopped"
    assert state.epoch < 60
    losses = [r["val_loss"] for r in state.history]
    assert min(losses[-2:]) >= min(losses[:-2])  # the last two epochs did not improve


def test_best_epoch_is_chosen_by_validation_accuracy():
    state = train.fit(small_config(), tiny_data(), progress=False)
    accs = [r["val_acc"] for r in state.history]
    assert state.best["val_acc"] == max(accs)
    assert state.history[state.best["epoch"] - 1]["val_acc"] == max(accs)


def test_no_validation_split():
    data = tiny_data(n_val=0)
    state = train.fit(small_config("training.epochs=2"), data, progress=False)
    assert state.history[-1]["val_acc"] is None and state.best["epoch"] == 2


def test_batch_size_one_and_a_partial_last_batch():
    state = train.fit(
        small_config("training.batch_size=1", "training.epochs=1", "training.lr=0.005"),
        tiny_data(n_train=50),
        progress=False,
    )
    assert state.steps == 50
    state = train.fit(
        small_config("training.batch_size=32", "training.epochs=1"),
        tiny_data(n_train=50),
        progress=False,
    )
    assert state.steps == 2


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_other_activations_learn(activation):
    config = small_config(f"model.activation={activation}", "training.lr=0.3", "training.epochs=10")
    state = train.fit(config, tiny_data(), progress=False)
    assert state.history[-1]["val_acc"] >= 0.8


def test_evaluate_metrics():
    data = tiny_data()
    state = train.new_state(small_config())
    m = metrics.evaluate(state.params, "relu", data.val, batch=7)
    assert m.probabilities.shape == (60, 10)
    np.testing.assert_allclose(m.probabilities.sum(axis=1), 1, rtol=1e-5)
    expected = -np.mean(np.log(m.probabilities[np.arange(60), data.val.labels]))
    assert m.loss == pytest.approx(expected, rel=1e-5)
    assert math.isclose(m.accuracy, np.mean(m.predictions == data.val.labels))


def sparse_data():
    """tiny_data with the noise cleared from the outer columns of every image: about 60% of the
    pixel columns are blank in every batch, as a third are in MNIST's."""
    data = tiny_data()
    for split in (data.train, data.val, data.test):
        images = split.images.reshape(-1, 28, 28)
        images[:, :, :9] = 0
        images[:, :, 20:] = 0
    return data


def _counting(monkeypatch):
    calls = {"inked": 0, "dense": 0}
    original = inked.inked_columns

    def counted(*args, **kwargs):
        result = original(*args, **kwargs)
        calls["inked" if result is not None else "dense"] += 1
        return result

    monkeypatch.setattr(step_mod, "inked_columns", counted)
    return calls


@pytest.mark.parametrize("hidden, dropout", [("[64]", 0.2), ("[48,32]", 0.0)])
def test_skipping_blank_pixels_changes_nothing_but_the_time(monkeypatch, hidden, dropout):
    data = sparse_data()
    config = small_config("training.epochs=2", f"model.hidden={hidden}", f"model.dropout={dropout}")
    calls = _counting(monkeypatch)
    skipped = train.fit(config, data, progress=False)
    assert calls == {"inked": 30, "dense": 0}  # every batch went in without its blank columns
    dense = train.fit(
        small_config(
            "training.epochs=2",
            f"model.hidden={hidden}",
            f"model.dropout={dropout}",
            "training.skip_blank_pixels=false",
        ),
        data,
        progress=False,
    )
    assert calls["inked"] == 30  # the switch turns it off
    for key in dense.params:
        np.testing.assert_allclose(
            skipped.params[key], dense.params[key], rtol=1e-4, atol=1e-5, err_msg=key
        )
    assert skipped.history[-1]["val_acc"] == pytest.approx(dense.history[-1]["val_acc"], abs=0.02)


def test_batches_without_blank_columns_go_the_dense_way(monkeypatch):
    calls = _counting(monkeypatch)
    # noise in every pixel
    train.fit(small_config("training.epochs=1"), tiny_data(), progress=False)
    assert calls == {"inked": 0, "dense": 15}


def test_resume_is_exact_when_skipping_blank_pixels():
    data, config = sparse_data(), small_config("training.epochs=2", "training.max_norm=3")
    whole = train.fit(config, data, progress=False)
    part = train.fit(config, data, stop=StopAfter(11), progress=False)
    resumed = train.fit(config, data, part, progress=False)
    for key in whole.params:
        np.testing.assert_array_equal(resumed.params[key], whole.params[key])


def test_with_a_moving_average_validation_measures_it_and_resume_is_exact():
    data, config = tiny_data(), small_config("training.ema=0.9", "training.epochs=2")
    whole = train.fit(config, data, progress=False)
    assert whole.averaged and not np.array_equal(whole.averaged["W1"], whole.params["W1"])
    last = whole.history[-1]
    m = metrics.evaluate(whole.averaged, config.model.activation, data.val, scaling=data.scaling)
    assert (last["val_acc"], last["val_loss"]) == (m.accuracy, m.loss)
    part = train.fit(config, data, stop=StopAfter(9), progress=False)
    import json

    resumed_state = train.State.from_meta(
        {k: v.copy() for k, v in part.params.items()},
        {k: v.copy() for k, v in part.momentum.buffers.items()},
        json.loads(json.dumps(part.meta())),
        {k: v.copy() for k, v in part.averaged.items()},
    )
    resumed = train.fit(config, data, resumed_state, progress=False)
    for key in whole.params:
        np.testing.assert_array_equal(resumed.params[key], whole.params[key])
        np.testing.assert_array_equal(resumed.averaged[key], whole.averaged[key])
