"""Distillation: the loss and its gradient against finite differences, the fast step against the
textbook's, and a student taught by a teacher that sees each batch as the student does."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_train import small_config, tiny_data

from mnist_mlp import checkpoint, distill, metrics, model, run, train
from mnist_mlp import data as data_mod
from mnist_mlp.config import load_config
from mnist_mlp.errors import ConfigError, MlpError
from mnist_mlp.fast import step as fast_step
from mnist_mlp.step import Momentum, ReferenceStep, StepSettings

T, W = 3.0, 0.7


def _problem(seed=0, b=6, c=5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (b, c))
    y = rng.integers(0, c, b)
    q = model.soft_targets(model.softmax(rng.normal(0, 2, (b, c))), T)
    return logits, y, q


def test_the_distillation_gradient_matches_finite_differences():
    logits, y, q = _problem()
    grad = model.distillation_grad(logits, y, q, T, W)
    numeric = np.zeros_like(logits)
    eps = 1e-6
    for i in np.ndindex(logits.shape):
        up, down = logits.copy(), logits.copy()
        up[i] += eps
        down[i] -= eps
        numeric[i] = (
            model.distillation_loss(up, y, q, T, W) - model.distillation_loss(down, y, q, T, W)
        ) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
    # with w = 0 it is cross-entropy; soft targets are a distribution
    assert model.distillation_loss(logits, y, q, T, 0.0) == pytest.approx(
        model.cross_entropy(logits, y)
    )
    np.testing.assert_allclose(q.sum(axis=1), 1)


def test_through_the_network_every_parameter_s_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    params = {k: v.astype(np.float64) for k, v in model.init_params([8, 6, 4], "tanh", rng).items()}
    x = rng.normal(size=(7, 8))
    y = rng.integers(0, 4, 7)
    q = model.soft_targets(model.softmax(rng.normal(size=(7, 4))), T)

    def loss(p):
        return model.distillation_loss(model.forward(p, x, "tanh").logits, y, q, T, W)

    fwd = model.forward(params, x, "tanh")
    grads, _ = model.backward(params, fwd, model.distillation_grad(fwd.logits, y, q, T, W), "tanh")
    for key, p in params.items():
        numeric = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + 1e-6
            up = loss(params)
            p[i] = old - 1e-6
            numeric[i] = (up - loss(params)) / 2e-6
            p[i] = old
        np.testing.assert_allclose(grads[key], numeric, rtol=1e-5, atol=1e-9, err_msg=key)


def test_the_fast_loss_is_the_textbook_s():
    logits, y, q = _problem(3)
    loss, dz = fast_step.distillation(logits.copy(), y, q, T, W)
    assert loss == pytest.approx(model.distillation_loss(logits, y, q, T, W), rel=1e-12)
    np.testing.assert_allclose(dz, model.distillation_grad(logits, y, q, T, W), rtol=1e-12)


def test_the_fast_step_with_soft_targets_gives_the_reference_weights():
    config = small_config("model.dropout=0", "training.distill_temperature=3")
    fast_state, ref_state = train.new_state(config), train.new_state(config)
    fast = train.make_step(config, fast_state, 16)
    ref = ReferenceStep(ref_state.params, ref_state.momentum, StepSettings.of(config))
    data = tiny_data()
    rng = np.random.default_rng(0)
    for i in range(4):
        idx = np.arange(16 * i, 16 * (i + 1))
        y = data.train.labels[idx].astype(np.intp)
        q = model.soft_targets(model.softmax(rng.normal(0, 2, (16, 10))), 3.0).astype(np.float32)
        x = data_mod.scale(data.train.images[idx])
        fast(fast.inputs(data.train.images, idx, 16, data.scaling), y, 0.05, rng, q)
        ref(x, y, 0.05, rng, q)
    velocity = fast_state.momentum.to("velocity", fast_state.params)
    assert isinstance(velocity, Momentum)
    for k in ref_state.params:
        np.testing.assert_allclose(
            fast_state.params[k], ref_state.params[k], rtol=1e-5, atol=1e-6, err_msg=k
        )


def test_a_student_learns_from_a_teacher_that_sees_its_distorted_batches(
    tiny_as_mnist, tmp_path, monkeypatch
):
    base = ["data.validation=16", "model.hidden=[32]", "training.epochs=2", "training.batch_size=8"]
    run.train_run(load_config(overrides=base), tmp_path / "teacher", progress=False, echo=print)
    teacher_path = str(tmp_path / "teacher" / "checkpoint.npz")
    seen: list[np.ndarray] = []
    real = distill.Teacher.__call__

    def spy(self, pixels):
        seen.append(pixels.copy())
        return real(self, pixels)

    monkeypatch.setattr(distill.Teacher, "__call__", spy)
    student = load_config(
        overrides=[*base, f"training.teacher=[{teacher_path}]", "data.augment.rotate=10"]
    )
    result = run.train_run(student, tmp_path / "student", progress=False, echo=lambda s: None)
    assert len(seen) == result.state.steps  # asked about every batch
    # the first batch, distorted as the student saw it
    data = data_mod.for_config(student, progress=False)
    order = data_mod.rng_for(0, data_mod.EPOCH, 0).permutation(len(data.train))
    from mnist_mlp.augment import Augmenter

    first = Augmenter(student.data.augment)(
        data.train.images[order[:8]], data_mod.rng_for(0, data_mod.AUGMENT, 0, 0)
    )
    np.testing.assert_array_equal(seen[0], first)
    # the student is an ordinary checkpoint
    ckpt = checkpoint.load(tmp_path / "student" / "checkpoint.npz")
    assert ckpt.config.training.teacher == [teacher_path]
    m = metrics.evaluate(ckpt.params, ckpt.activation, data.test, scaling=ckpt.scaling)
    assert m.accuracy == pytest.approx(result.test_accuracy)


def test_a_teacher_is_refused_with_label_smoothing_or_when_it_is_no_checkpoint(tiny_as_mnist):
    with pytest.raises(ConfigError, match=r"label_smoothing must be 0 with a training\.teacher"):
        load_config(overrides=["training.teacher=[a.npz]", "training.label_smoothing=0.1"])
    config = small_config("training.teacher=[nowhere.npz]")
    with pytest.raises(MlpError, match=r"nowhere\.npz") as info:
        train.fit(config, tiny_data(), progress=False)
    assert "\n" not in str(info.value)


def test_a_committee_sweeps_folder_names_its_members(tmp_path):
    folder = tmp_path / "committee"
    folder.mkdir()
    with pytest.raises(MlpError, match="not a finished committee sweep") as info:
        distill.members_of(str(folder))
    assert "\n" not in str(info.value)
    summary = {"committee": {"members": [{"checkpoint": "a/checkpoint.npz"}, {"checkpoint": "b"}]}}
    (folder / "summary.json").write_text(json.dumps(summary))
    assert distill.members_of(str(folder)) == ["a/checkpoint.npz", "b"]
    assert distill.members_of("c.npz") == ["c.npz"]


def test_the_soft_part_is_zero_when_the_student_answers_as_the_teacher():
    rng = np.random.default_rng(3)
    T = 4.0
    q = model.soft_targets(model.softmax(rng.normal(0, 3, (6, 10))), T)
    matching = T * np.log(q) + 7.0  # softmax(z / T) = q
    y = rng.integers(0, 10, 6)
    assert model.distillation_loss(matching, y, q, T, 1.0) == pytest.approx(0.0, abs=1e-12)
    other = rng.normal(0, 3, (6, 10))
    assert model.distillation_loss(other, y, q, T, 1.0) > 0.1  # KL >= 0, 0 only at q
