"""Other views of the digits: deslanting and width normalisation, on synthetic digits whose slant
and width are known, and applied by every reader of a checkpoint exactly as in training."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_mlp import checkpoint, evaluation, metrics, normalise, run
from mnist_mlp.config import load_config
from mnist_mlp.errors import ConfigError
from mnist_mlp.fast import kernels as fast
from mnist_mlp.predict import Predictor


def stroke(top=(4, 9), bottom=(23, 17), thick=2) -> np.ndarray:
    """A straight stroke of ``thick`` pixels from ``top`` to ``bottom`` (y, x), uint8 (784,)."""
    image = np.zeros((28, 28), np.uint8)
    (y0, x0), (y1, x1) = top, bottom
    for y in range(y0, y1 + 1):
        x = x0 + (x1 - x0) * (y - y0) / (y1 - y0)
        image[y, round(x) : round(x) + thick] = 255
    return image.reshape(-1)


def ring(width: int, height: int = 18) -> np.ndarray:
    """A zero: a rectangle's outline, ``width`` x ``height``, centred, uint8 (784,)."""
    image = np.zeros((28, 28), np.uint8)
    top, left = (28 - height) // 2, (28 - width) // 2
    image[top : top + height, left : left + width] = 255
    image[top + 2 : top + height - 2, left + 2 : left + width - 2] = 0
    return image.reshape(-1)


def test_a_slanted_stroke_comes_out_upright():
    images = np.stack([stroke(), stroke((4, 18), (23, 10))])
    alpha, _ = normalise.slant(images)
    assert alpha == pytest.approx([8 / 19, -8 / 19], abs=0.03)
    upright = normalise.deslant(images)
    assert np.abs(normalise.slant(upright)[0]).max() < 0.03
    for image in upright.reshape(2, 28, 28):  # every row's ink in the same columns
        rows = [np.average(np.arange(28), weights=r) for r in image if r.sum() > 200]
        assert np.std(rows) < 0.5 and len(rows) >= 18
    assert abs(int(upright.sum()) - int(images.sum())) < 0.05 * images.sum()  # ink kept


@pytest.mark.parametrize("target", [10, 16, 20])
def test_a_zero_gets_the_width_asked_for_and_keeps_its_height(target):
    images = np.stack([ring(10), ring(14)])
    out = normalise.set_width(images, target)
    box = normalise.bounding_boxes(np.where(out > 127, out, 0))  # the edges' blur left out
    widths = box[:, 3] - box[:, 2] + 1
    assert np.abs(widths - target).max() <= 1
    np.testing.assert_array_equal(box[:, :2], normalise.bounding_boxes(images)[:, :2])
    centres = (box[:, 2] + box[:, 3]) / 2
    assert np.abs(centres - 13.5).max() <= 1


def test_ones_keep_their_width_even_slanted_and_a_blank_image_stays_blank():
    ones = np.stack([stroke((4, 13), (23, 13)), stroke((4, 10), (23, 16)), np.zeros(784, np.uint8)])
    np.testing.assert_array_equal(normalise.set_width(ones, 20), ones)
    assert normalise.deslant(ones[2:]).sum() == 0
    assert normalise.apply(ones, "none") is ones


@pytest.mark.realdata
def test_the_compiled_views_agree_with_their_definitions(real_cache):
    """10,000 real digits in each view, by the compiled resampler and by the NumPy definition:
    the same sums in another order, so a pixel may differ by one grey level now and then."""
    if not fast.WIDE:
        pytest.skip("the compiled kernels are not built, or this CPU lacks AVX2 and FMA")
    images = np.load(real_cache / "mnist" / "train-images.npy")[:10000].reshape(-1, 784)
    for kind, width in [("deslant", 0), ("width", 10), ("width", 16), ("width", 20)]:
        compiled = normalise.apply(images, kind, width)
        chunks = [images[i : i + 2000] for i in range(0, len(images), 2000)]
        define = (
            normalise.deslant if kind == "deslant" else lambda x, w=width: normalise.set_width(x, w)
        )
        reference = np.concatenate([define(c) for c in chunks])
        diff = np.abs(compiled.astype(int) - reference.astype(int))
        assert diff.max() <= 1, kind
        assert np.count_nonzero(diff) <= 1e-3 * diff.size, kind


@pytest.mark.parametrize("compiled", [True, False])
def test_several_views_of_a_batch_are_each_view_made_alone(compiled, monkeypatch):
    monkeypatch.setattr(fast, "WIDE", compiled and fast.WIDE)
    images = np.stack([stroke(), stroke((4, 18), (23, 10)), ring(10), ring(14), ring(8, 12)])
    views = [("width", 16), ("none", 20), ("deslant", 20), ("width", 20), ("width", 16)]
    made = normalise.several(images, views)
    assert made[1] is images and made[0] is made[4]  # each distinct view made once
    for (kind, width), out in zip(views, made):
        np.testing.assert_array_equal(out, normalise.apply(images, kind, width))


def test_the_view_is_a_config_key_with_its_rules():
    assert load_config(overrides=["data.normalise.kind=width"]).data.normalise.width == 20
    with pytest.raises(ConfigError, match=r"data\.normalise\.kind must be one of none, deslant"):
        load_config(overrides=["data.normalise.kind=skew"])
    with pytest.raises(
        ConfigError, match=r"data\.normalise\.width must be an integer from 4 to 26"
    ):
        load_config(overrides=["data.normalise.width=40"])


TINY = ["data.validation=16", "model.hidden=[32]", "training.epochs=2", "training.batch_size=8"]


def test_eval_a_committee_and_predict_see_each_member_in_its_own_view(tiny_as_mnist, tmp_path):
    paths = []
    for view in ("kind=deslant", "kind=width"):
        config = load_config(overrides=[*TINY, f"data.normalise.{view}"])
        folder = tmp_path / view
        run.train_run(config, folder, progress=False, echo=lambda s: None)
        paths.append(folder / "checkpoint.npz")
    first = evaluation.evaluate_on(paths[0], progress=False)
    raw = first.split
    probs = []
    for path in paths:
        ckpt = checkpoint.load(path)
        seen = normalise.apply(raw.images, *_view(ckpt))
        assert not np.array_equal(seen, raw.images)
        own = metrics.probabilities(ckpt.params, ckpt.activation, seen, scaling=ckpt.scaling)
        probs.append(own)
    np.testing.assert_allclose(first.metrics.probabilities, probs[0], rtol=1e-6)
    together = evaluation.evaluate_committee(paths, progress=False)
    expected = metrics.of_probabilities(metrics.committee(probs), raw.labels)
    assert together["accuracy"] == pytest.approx(expected.accuracy)
    assert together["loss"] == pytest.approx(expected.loss, rel=1e-5)
    # mlp predict and mlp serve's Predictor: the same view of pixels in [0, 1]
    predictor = Predictor(paths[1])
    pixels = raw.images[:5].reshape(5, 28, 28) / np.float32(255)
    np.testing.assert_allclose(predictor.probabilities(pixels), probs[1][:5], rtol=1e-5, atol=1e-7)


def _view(ckpt) -> tuple[str, int]:
    view = ckpt.config.data.normalise
    return view.kind, view.width


def test_export_oip_and_the_estimator_take_the_view_too(tiny_as_mnist, tmp_path):
    config = load_config(overrides=[*TINY, "data.normalise.kind=deslant"])
    run.train_run(config, tmp_path / "d", progress=False, echo=lambda s: None)
    path = tmp_path / "d" / "checkpoint.npz"
    test = evaluation.evaluate_on(path, progress=False)
    pixels = test.split.images.reshape(len(test.split), -1)
    # ONNX: the graph takes the view, and says so in one line and in its metadata
    pytest.importorskip("onnx")
    from mnist_mlp import export

    done = export.export(path, tmp_path / "d.onnx")
    assert done.note is not None and "deslanted" in done.note and "\n" not in done.note
    assert '"kind": "deslant"' in export.metadata(checkpoint.load(path))["normalise"]
    # the Open Inference Protocol
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mnist_mlp import serve

    body = {"inputs": [{"name": "pixels", "shape": [len(pixels), 784], "datatype": "FP32",
                        "data": pixels.astype(float).reshape(-1).tolist()}]}  # fmt: skip
    with TestClient(serve.create_app(Predictor(path))) as client:
        answer = client.post("/v2/models/mnist_mlp/infer", json=body).json()
    outputs = {o["name"]: o["data"] for o in answer["outputs"]}
    np.testing.assert_array_equal(outputs["label"], test.metrics.predictions)
    probs = np.reshape(outputs["probabilities"], test.metrics.probabilities.shape)
    np.testing.assert_allclose(probs, test.metrics.probabilities, rtol=1e-5, atol=1e-7)
    # the estimator, from the checkpoint
    pytest.importorskip("sklearn")
    from mnist_mlp import MLPClassifier

    clf = MLPClassifier.from_checkpoint(path)
    np.testing.assert_allclose(clf.predict_proba(pixels), test.metrics.probabilities, rtol=1e-5)
