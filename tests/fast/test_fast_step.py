"""The fast training step gives the reference step's weights (model.py + optim.sgd_step)."""

from __future__ import annotations

import numpy as np
import pytest
from imagegen import mnist_like

from mnist_mlp import data, train
from mnist_mlp.config import load_config
from mnist_mlp.fast import kernels
from mnist_mlp.fast.inked import InkedColumns
from mnist_mlp.fast.step import Step
from mnist_mlp.step import ReferenceStep, StepSettings

CASES = [  # hidden, activation, dropout, nesterov, extra settings
    ("[32]", "relu", 0.0, False, []),
    ("[32]", "sigmoid", 0.0, False, []),
    ("[32]", "tanh", 0.0, False, []),
    ("[40,24]", "relu", 0.0, False, []),
    ("[40,24]", "relu", 0.3, False, []),
    ("[40,24]", "tanh", 0.3, False, ["training.label_smoothing=0.1"]),
    ("[32]", "relu", 0.2, False, ["training.max_norm=0.5"]),
    ("[32]", "relu", 0.0, True, []),
    ("[40,24]", "sigmoid", 0.3, True, ["training.max_norm=0.5"]),
]


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("blank_share", [0.35, 0.0])
@pytest.mark.parametrize("hidden, activation, dropout, nesterov, extra", CASES)
def test_the_fast_step_gives_the_reference_weights(
    hidden, activation, dropout, nesterov, extra, blank_share, compiled, monkeypatch
):
    if compiled and not kernels.AVAILABLE:
        pytest.skip("the compiled kernels are off or not built")
    if not compiled:
        monkeypatch.setattr(kernels, "AVAILABLE", False)
        monkeypatch.setattr(kernels, "WIDE", False)
    config = load_config(
        overrides=[
            f"model.hidden={hidden}",
            f"model.activation={activation}",
            f"model.dropout={dropout}",
            f"training.nesterov={str(nesterov).lower()}",
            "training.momentum=0.9",
            "training.l2=1e-3",
            *extra,
        ]
    )
    state = train.new_state(config)
    textbook = train.new_state(config)
    step = train.make_step(config, state, 16)
    assert isinstance(step, Step)
    ref_step = ReferenceStep(textbook.params, textbook.momentum, StepSettings.of(config))
    rng = np.random.default_rng(7)
    kinds = set()
    for i in range(4):
        images = mnist_like(rng, 16, blank_share)
        y = rng.integers(0, 10, 16)
        lr = 0.05 * (i + 1)
        x = step.inputs(images, None, 16, data.scaling_for(0.1307, 0.3081))
        kinds.add(type(x))
        _, fast_pred = step(x, y, lr, np.random.default_rng(i))
        _, ref_pred = ref_step(data.scale(images), y, lr, np.random.default_rng(i))
        np.testing.assert_array_equal(fast_pred, ref_pred)
    # batches with a third of their columns blank went in without them (classical momentum only)
    assert kinds == ({InkedColumns} if blank_share and not nesterov else {np.ndarray})
    reference, velocity = textbook.params, textbook.momentum.buffers
    fast_velocity = state.momentum.to("velocity", state.params).buffers
    for k in reference:
        np.testing.assert_allclose(state.params[k], reference[k], rtol=1e-5, atol=1e-6, err_msg=k)
        np.testing.assert_allclose(fast_velocity[k], velocity[k], rtol=1e-4, atol=1e-6, err_msg=k)
        assert np.abs(velocity[k]).max() > 1e-4  # the steps were not too small to compare
