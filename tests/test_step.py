"""The textbook step (ReferenceStep) and the one loop: equal to the fast step, resumable across
the two, the same weights on any thread count."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import StopAfter
from test_train import small_config, tiny_data

from mnist_mlp import model, optim, train
from mnist_mlp.fast import step as fast_step
from mnist_mlp.step import Momentum, ReferenceStep, StepSettings


def test_the_reference_step_is_model_py_and_optim_py_and_nothing_else():
    config = small_config("model.dropout=0.2", "training.l2=1e-3", "training.max_norm=2")
    data = tiny_data()
    state = train.new_state(config)
    copy = {k: v.copy() for k, v in state.params.items()}
    velocity = optim.init_state(copy)
    step = train.make_step(config, state, 16)
    assert isinstance(step, fast_step.Step)  # the default
    ref = ReferenceStep(state.params, Momentum.zeros(state.params), StepSettings.of(config))
    x = ref.inputs(data.train.images, np.arange(16), 16, data.scaling)
    y = data.train.labels[:16].astype(np.intp)
    loss, predictions = ref(x, y, 0.1, np.random.default_rng(3))
    # by hand, as docs/explanation/reading-the-code.md has it
    hand_loss, grads, hand_pred = model.loss_and_grads(
        copy, x, y, "relu", 1e-3, 0.2, np.random.default_rng(3)
    )
    optim.sgd_step(copy, grads, velocity, 0.1, 0.9)
    optim.clip_norms(copy, 2)
    assert loss == hand_loss
    np.testing.assert_array_equal(predictions, hand_pred)
    for k in copy:
        np.testing.assert_array_equal(state.params[k], copy[k], err_msg=k)


@pytest.mark.parametrize(
    "extra",
    [
        (),
        ("model.hidden=[48,24]", "model.dropout=0.2"),
        ("training.max_norm=1.5",),
        ("training.nesterov=true", "model.activation=tanh"),
        ("data.augment.translate=2", "training.label_smoothing=0.1"),
    ],
)
def test_reference_training_gives_the_fast_weights_within_float32_rounding(extra):
    """Hundreds of steps: 6 epochs of 15 batches, twice over, through the one loop."""
    data = tiny_data()
    config = small_config("model.dropout=0", "training.epochs=20", *extra)
    from mnist_mlp import augment

    distort = augment.for_config(config.data.augment)
    fast = train.fit(config, data, progress=False, augment=distort)
    ref_config = small_config(
        "model.dropout=0", "training.epochs=20", *extra, "training.step=reference"
    )
    ref = train.fit(ref_config, data, progress=False, augment=distort)
    assert fast.steps == ref.steps == 300
    for k in fast.params:
        np.testing.assert_allclose(ref.params[k], fast.params[k], rtol=0, atol=5e-4, err_msg=k)
    assert [r["val_acc"] for r in ref.history] == pytest.approx(
        [r["val_acc"] for r in fast.history], abs=0.02
    )


@pytest.mark.parametrize("first, then", [("fast", "reference"), ("reference", "fast")])
def test_a_run_stopped_in_one_step_resumes_in_the_other(first, then):
    data = tiny_data()
    whole = train.fit(small_config("model.dropout=0"), data, progress=False)
    part = train.fit(
        small_config("model.dropout=0", f"training.step={first}"),
        data,
        stop=StopAfter(40),
        progress=False,
    )
    assert part.status == "interrupted" and 30 < part.steps < whole.steps
    # through a checkpoint's JSON, its momentum in the form the first step kept
    saved = train.State.from_meta(
        {k: v.copy() for k, v in part.params.items()},
        {k: v.copy() for k, v in part.momentum.buffers.items()},
        json.loads(json.dumps(part.meta())),
    )
    assert saved.momentum.form == ("previous" if first == "fast" else "velocity")
    resumed = train.fit(
        small_config("model.dropout=0", f"training.step={then}"), data, saved, progress=False
    )
    assert resumed.status == "completed" and resumed.steps == whole.steps
    assert resumed.momentum.form == ("previous" if then == "fast" else "velocity")
    for k in whole.params:
        np.testing.assert_allclose(
            resumed.params[k], whole.params[k], rtol=1e-3, atol=1e-4, err_msg=k
        )


@pytest.mark.parametrize("kind", ["fast", "reference"])
def test_the_same_run_gives_the_same_weights_on_one_and_two_threads(kind):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    data = tiny_data(n_train=600)
    # 784 inputs and a 600-wide layer: sums longer than OpenBLAS's blocks, which it splits
    # otherwise on two threads
    config = small_config("model.hidden=[600,300]", "training.epochs=2", f"training.step={kind}")
    runs = []
    for threads in (1, 2):
        with threadpoolctl.threadpool_limits(threads):
            runs.append(train.fit(config, data, progress=False))
    for k in runs[0].params:
        np.testing.assert_array_equal(runs[0].params[k], runs[1].params[k], err_msg=k)
    assert runs[0].history == [
        {**r, "seconds": a["seconds"]} for a, r in zip(runs[0].history, runs[1].history)
    ]


def test_a_step_refuses_momentum_in_the_other_form():
    config = small_config()
    state = train.new_state(config)
    previous = state.momentum.to("previous", state.params)
    with pytest.raises(ValueError, match="velocities"):
        ReferenceStep(state.params, previous, StepSettings.of(config))
    with pytest.raises(ValueError, match="convert"):
        fast_step.Step(state.params, state.momentum, StepSettings.of(config), 16)
