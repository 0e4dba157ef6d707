"""ONNX export: the exported graph, run by onnxruntime, is the NumPy network."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnist_mlp import checkpoint, data, export, metrics, model, run
from mnist_mlp.config import load_config
from mnist_mlp.errors import MlpError

onnx = pytest.importorskip("onnx", reason="the export extra (onnx) is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime (the dev extra) is not installed")


def make(tmp_path, hidden=(32,), activation="relu", seed=0, name="c.npz", **meta):
    """A checkpoint with random weights (biases too, so a missing Add would show)."""
    config = load_config(
        overrides=[f"model.hidden={list(hidden)}", f"model.activation={activation}"]
    )
    rng = np.random.default_rng(seed)
    shape = meta.get("input", {}).get("shape", [28, 28])
    n_classes = len(meta.get("classes", range(10)))
    sizes = model.layer_sizes(list(hidden), int(np.prod(shape)), n_classes)
    params = model.init_params(sizes, activation, rng)
    for key in params:
        if key.startswith("b"):
            params[key] = rng.normal(0, 0.5, params[key].shape).astype(np.float32)
    meta = {
        "epoch": 2,
        "input": {"scale": data.SCALE, "offset": data.OFFSET, "shape": [28, 28]},
        "dataset": {"name": "mnist", "digest": "abc123"},
        "classes": [str(d) for d in range(10)],
        "test": {"accuracy": 0.9876, "loss": 0.04, "n": 10000},
        **meta,
    }
    path = tmp_path / name
    checkpoint.save(path, checkpoint.Checkpoint(params, config, meta))
    return path


def pixels(n=64, seed=1):
    """Images like MNIST's: mostly 0, some ink up to 255 (uint8 (n, 28, 28))."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
    images[rng.random((n, 28, 28)) < 0.8] = 0
    return images


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities", "label"], {"pixels": x.astype(np.float32)})


def numpy_probs(ckpt_path, images):
    ckpt = checkpoint.load(ckpt_path)
    x = data.scale(images.reshape(len(images), -1), scale=ckpt.scaling[0], offset=ckpt.scaling[1])
    return model.predict_proba(ckpt.params, x, ckpt.activation)


@pytest.mark.parametrize(
    "hidden, activation",
    [((32,), "relu"), ((48, 24), "tanh"), ((40, 30, 20), "sigmoid"), ((32,), "tanh")],
)
def test_onnxruntime_matches_the_numpy_forward_pass(tmp_path, hidden, activation):
    path = make(tmp_path, hidden, activation)
    done = export.export(path)
    assert done.path == tmp_path / "c.onnx" and done.path.stat().st_size == done.bytes
    images = pixels()
    probs, labels = run_onnx(done.path, images)
    expected = numpy_probs(path, images)
    assert probs.shape == (64, 10) and labels.shape == (64,) and labels.dtype == np.int64
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    np.testing.assert_array_equal(labels, expected.argmax(axis=1))
    # answers that vary, so the comparison means something
    assert np.ptp(expected, axis=0).max() > 1e-3


def test_the_graph_is_the_documented_one(tmp_path):
    proto = onnx.load(export.export(make(tmp_path, (48, 24), "tanh")).path)
    ops = [n.op_type for n in proto.graph.node]
    assert ops == [
        "Reshape",
        "Mul",
        "Add",
        "MatMul",
        "Add",
        "Tanh",
        "MatMul",
        "Add",
        "Tanh",
        "MatMul",
        "Add",
        "Softmax",
        "ArgMax",
    ]
    assert proto.opset_import[0].version == export.DEFAULT_OPSET and proto.ir_version == 8
    (inp,) = proto.graph.input
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "pixels" and dims == ["N", 28, 28]
    assert [o.name for o in proto.graph.output] == ["probabilities", "label"]
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["classes"]) == [str(d) for d in range(10)]
    assert props["dataset"] == "mnist" and props["dataset_digest"] == "abc123"
    assert props["test_accuracy"] == "0.987600"
    assert json.loads(props["config"])["model"]["hidden"] == [48, 24]
    assert "mlp predict" in proto.doc_string and "0..255" in proto.doc_string
    # The weights are the file: little beyond them.
    weights = sum(v.nbytes for v in checkpoint.load(tmp_path / "c.npz").params.values())
    assert weights < (tmp_path / "c.onnx").stat().st_size < weights + 20_000


def test_batch_dimension_is_free_and_the_flat_shape_can_be_declared(tmp_path):
    path = make(tmp_path)
    images = pixels(7)
    square = export.export(path, tmp_path / "square.onnx").path
    flat = export.export(path, tmp_path / "flat.onnx", input_shape="784").path
    for n in (1, 7):
        a, _ = run_onnx(square, images[:n])
        b, _ = run_onnx(flat, images[:n].reshape(n, 784))
        np.testing.assert_array_equal(a, b)
        assert a.shape == (n, 10)


def test_oldest_opset_gives_the_same_answers(tmp_path):
    path = make(tmp_path)
    images = pixels()
    new, _ = run_onnx(export.export(path, tmp_path / "new.onnx").path, images)
    old_path = export.export(path, tmp_path / "old.onnx", opset=export.MIN_OPSET).path
    assert onnx.load(old_path).ir_version == 7
    np.testing.assert_allclose(run_onnx(old_path, images)[0], new, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"opset": 12}, "--opset must be in [13,"),
        ({"opset": 999}, "--opset must be in [13,"),
        ({"fmt": "tflite"}, "--format must be onnx"),
        ({"input_shape": "28"}, "--input-shape must be one of 28x28, 784"),
    ],
)
def test_bad_options_are_refused_and_nothing_is_written(tmp_path, kwargs, message):
    path = make(tmp_path)
    with pytest.raises(MlpError, match=message.replace("[", r"\[")):
        export.export(path, tmp_path / "out.onnx", **kwargs)
    assert not (tmp_path / "out.onnx").exists()


def test_what_cannot_be_exported_faithfully_is_refused(tmp_path):
    odd = make(tmp_path, name="odd.npz", input={"scale": 1.0, "offset": 0.0, "shape": [32, 32]})
    with pytest.raises(MlpError, match=r"cannot export a net for \[32, 32\] inputs"):
        export.export(odd)


def test_a_net_of_other_classes_exports_with_as_many_outputs(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    few = make(tmp_path, name="few.npz", classes=["a", "b"])
    path = export.export(few).path
    session = ort.InferenceSession(str(path))
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.float32)
    probabilities, labels = session.run(None, {"pixels": images})
    assert probabilities.shape == (5, 2) and set(labels) <= {0, 1}
    ckpt = checkpoint.load(few)
    expected = model.predict_proba(
        ckpt.params, data.scale(images.reshape(5, -1), None, *ckpt.scaling), "relu"
    )
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-6)


def test_corrupt_and_pickled_checkpoints_are_refused_like_eval_does(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(MlpError, match="not a valid checkpoint"):
        export.export(bad)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(MlpError, match="pickled objects"):
        export.export(pickled)


def test_an_existing_file_survives_a_failed_export(tmp_path):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous")
    with pytest.raises(MlpError):
        export.export(make(tmp_path), out, opset=1)
    assert out.read_bytes() == b"previous"


def test_a_trained_run_records_its_test_accuracy_for_the_export(tiny_as_mnist, tmp_path):
    config = load_config(
        overrides=[
            "data.validation=16",
            "model.hidden=[16]",
            "training.epochs=2",
            "training.batch_size=8",
        ]
    )
    result = run.train_run(config, tmp_path / "runs" / "t", progress=False, echo=lambda line: None)
    ckpt = checkpoint.load(result.folder / "checkpoint.npz")
    assert ckpt.meta["test"]["accuracy"] == result.test_accuracy and ckpt.meta["test"]["n"] == 32
    proto = onnx.load(export.export(result.folder / "checkpoint.npz").path)
    assert {p.key: p.value for p in proto.metadata_props}[
        "test_accuracy"
    ] == f"{result.test_accuracy:.6f}"


@pytest.mark.realdata
def test_on_real_mnist_every_test_label_agrees(smoke_checkpoint, real_env, mnist_test, tmp_path):
    images, labels = mnist_test
    probs, predicted = run_onnx(
        export.export(smoke_checkpoint, tmp_path / "smoke.onnx").path, images
    )
    ckpt = checkpoint.load(smoke_checkpoint)
    ours = metrics.evaluate(
        ckpt.params,
        ckpt.activation,
        data.Split(images.reshape(-1, 784), labels),
        scaling=ckpt.scaling,
    )
    assert np.abs(probs - ours.probabilities).max() <= 1e-5
    # Every label agrees but where the two most likely classes tie to within that tolerance
    # (two summation orders may then break the tie differently: seen once, with one BLAS thread).
    top2 = np.sort(ours.probabilities, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2e-5
    assert np.array_equal(predicted[clear], ours.predictions[clear]) and clear.mean() > 0.999
    assert np.mean(predicted == labels) > 0.9
