"""A trained checkpoint as an ONNX model that any ONNX runtime can load.

The graph is the network's forward pass written out in ONNX operators, built with the
``onnx`` package's helpers (an optional extra: ``pip install 'mnist-mlp[export]'``)::

    pixels (N, 28, 28), float32, 0..255                  the raw pixels of MNIST-style images
      Reshape -> (N, 784)                                (or declared (N, 784): input_shape="784")
      Mul scale, Add offset                              the checkpoint's input scaling
      MatMul W1, Add b1, Relu | Sigmoid | Tanh           once per hidden layer
      MatMul Wout, Add bout                              the logits (N, 10)
      Softmax                  -> probabilities (N, 10)
      ArgMax                   -> label (N,), int64

Dropout is a training-time operation and has no node. ONNX fixes an input's rank (the checker
refuses an input without a shape), so the exporter chooses between the image's shape and the
flat one; the batch dimension is the symbolic ``N`` throughout. The opset and
the IR version are set explicitly: a runtime refuses an IR version newer than it knows, so the
IR version is the oldest that the chosen opset allows.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_mlp import __version__, model
from mnist_mlp import checkpoint as ckpt_mod
from mnist_mlp.errors import MlpError
from mnist_mlp.fsutil import atomic_write

INSTALL_HINT = (
    "mlp export needs the onnx package: pip install 'mnist-mlp[export]' (or pip install onnx)"
)
DEFAULT_OPSET = 17  # onnxruntime 1.11 (2022) and later, onnxruntime-web, most mobile runtimes
MIN_OPSET = 13  # the first where Softmax normalises over one axis rather than flattening
INPUT_SHAPES = {"28x28": [28, 28], "784": [model.N_INPUTS]}
# model.ACTIVATIONS' twins
ONNX_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}

DOC = (
    "A {arch} multilayer perceptron ({activation}) trained by mnist_mlp {version} on {dataset}. "
    "Input 'pixels': float32 of shape {shape}, values 0..255, exactly the pixels of "
    "a {dataset} image (bright ink on a black background); the input scaling is part of the graph. "
    "Outputs: 'probabilities' (N, 10) and 'label' (N,) int64. Users' photos and drawings must "
    "first "
    "be prepared the way MNIST was made (ink made white on black, the digit fitted into 20x20 and "
    "centred by its mass in 28x28), as `mlp predict` does."
)


def _onnx():
    try:
        import onnx
    except ImportError:
        raise MlpError(INSTALL_HINT) from None
    return onnx


@dataclass
class Exported:
    """What :func:`export` wrote."""

    path: Path
    opset: int
    ir_version: int
    bytes: int
    architecture: str
    input_shape: str  # e.g. "(N, 28, 28)"
    note: str | None = None  # what the graph leaves to its caller, in one line


def build(ckpt: ckpt_mod.Checkpoint, opset: int = DEFAULT_OPSET, input_shape: str = "28x28"):
    """The ONNX ``ModelProto`` of a checkpoint's network (checked by ``onnx.checker``).

    Parameters
    ----------
    ckpt : Checkpoint
    opset : int
        ONNX operator set version, from :data:`MIN_OPSET` to the newest the installed onnx knows.
    input_shape : {"28x28", "784"}
        The declared shape of an image in ``pixels``: (N, 28, 28) or (N, 784).

    Raises
    ------
    MlpError
        For an opset out of range, or a checkpoint this graph would not reproduce faithfully.
    """
    onnx = _onnx()
    _check_request(onnx, opset, input_shape)
    _check_exportable(ckpt)
    graph = _graph(ckpt, input_shape)
    proto = _model(graph, ckpt, opset, input_shape)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _check_request(onnx, opset: int, input_shape: str) -> None:
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise MlpError(
            f"--opset must be in [{MIN_OPSET}, {newest}] (Softmax over one axis needs "
            f"{MIN_OPSET}; this onnx {onnx.__version__} knows up to {newest}), got {opset}"
        )
    if input_shape not in INPUT_SHAPES:
        raise MlpError(
            f"--input-shape must be one of {', '.join(INPUT_SHAPES)}, got {input_shape!r}"
        )


def _graph(ckpt: ckpt_mod.Checkpoint, input_shape: str):
    """The network as an ONNX graph: scale the pixels, the layers, softmax and argmax."""
    from onnx import TensorProto, helper, numpy_helper

    activation = ckpt.activation
    scale, offset = ckpt.scaling
    n = model.n_layers(ckpt.params)
    inits = [
        numpy_helper.from_array(np.array([-1, model.N_INPUTS], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array(scale, np.float32), "input_scale"),
        numpy_helper.from_array(np.array(offset, np.float32), "input_offset"),
    ]
    nodes = [
        helper.make_node("Reshape", ["pixels", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("Mul", ["flat", "input_scale"], ["scaled"], name="scale"),
        helper.make_node("Add", ["scaled", "input_offset"], ["a0"], name="offset"),
    ]
    a = "a0"
    for l in range(1, n + 1):
        inits += [
            numpy_helper.from_array(ckpt.params[f"W{l}"], f"W{l}"),
            numpy_helper.from_array(ckpt.params[f"b{l}"], f"b{l}"),
        ]
        z = "logits" if l == n else f"z{l}"
        nodes += [
            helper.make_node("MatMul", [a, f"W{l}"], [f"m{l}"], name=f"matmul{l}"),
            helper.make_node("Add", [f"m{l}", f"b{l}"], [z], name=f"bias{l}"),
        ]
        if l < n:
            a = f"a{l}"
            nodes.append(
                helper.make_node(ONNX_ACTIVATIONS[activation], [z], [a], name=f"{activation}{l}")
            )
    nodes += [
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=-1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], name="argmax", axis=1, keepdims=0),
    ]
    pixels = helper.make_tensor_value_info(
        "pixels", TensorProto.FLOAT, ["N", *INPUT_SHAPES[input_shape]]
    )
    outputs = [
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", ckpt.sizes[-1]]),
        helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
    ]
    arch = "-".join(map(str, ckpt.sizes))
    return helper.make_graph(nodes, f"mnist_mlp_{arch}", [pixels], outputs, inits)


def _model(graph, ckpt: ckpt_mod.Checkpoint, opset: int, input_shape: str):
    """The graph as a model: its opset, the oldest IR version that opset allows, its doc
    string and metadata."""
    from onnx import helper

    opsets = [helper.make_opsetid("", opset)]
    doc = DOC.format(
        shape=_shape_text(input_shape),
        arch="-".join(map(str, ckpt.sizes)),
        activation=ckpt.activation,
        version=__version__,
        dataset=ckpt.meta.get("dataset", {}).get("name", "unknown data"),
    )
    proto = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="mnist_mlp",
        producer_version=__version__,
        ir_version=helper.find_min_ir_version_for(opsets),
        doc_string=doc,
    )
    helper.set_model_props(proto, metadata(ckpt))
    return proto


def _shape_text(input_shape: str) -> str:
    return "(N, " + ", ".join(map(str, INPUT_SHAPES[input_shape])) + ")"


def metadata(ckpt: ckpt_mod.Checkpoint) -> dict[str, str]:
    """The ``metadata_props`` of the exported model: strings, JSON where structured."""
    from mnist_mlp import config as config_mod

    dataset = ckpt.meta.get("dataset", {})
    test = ckpt.meta.get("test") or {}
    scale, offset = ckpt.scaling
    return {
        "classes": json.dumps(ckpt.classes),
        "dataset": str(dataset.get("name", "")),
        "dataset_digest": str(dataset.get("digest", "")),
        "test_accuracy": "" if test.get("accuracy") is None else f"{test['accuracy']:.6f}",
        "epoch": str(ckpt.meta.get("epoch", "")),
        "input": json.dumps(
            {"shape": [28, 28], "range": [0, 255], "scale": scale, "offset": offset}
        ),
        "config": json.dumps(config_mod.to_dict(ckpt.config)),
        "normalise": json.dumps(config_mod.to_dict(ckpt.config)["data"]["normalise"]),
        "mnist_mlp_version": __version__,
    }


def _check_exportable(ckpt: ckpt_mod.Checkpoint) -> None:
    """Refuse, in one line, what the graph would not reproduce exactly."""
    activation = ckpt.activation
    if activation not in ONNX_ACTIVATIONS:
        raise MlpError(
            f"cannot export activation {activation!r}: ONNX export knows "
            f"{', '.join(ONNX_ACTIVATIONS)}"
        )
    shape = ckpt.meta.get("input", {}).get("shape", [28, 28])
    if list(shape) != [28, 28]:
        raise MlpError(
            f"cannot export a net for {shape} inputs: the exported graph takes 28x28 pixels"
        )


def default_path(checkpoint: str | os.PathLike) -> Path:
    """``runs/x/checkpoint.npz`` -> ``runs/x/checkpoint.onnx``."""
    return Path(checkpoint).with_suffix(".onnx")


def export(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike | None = None,
    fmt: str = "onnx",
    opset: int = DEFAULT_OPSET,
    input_shape: str = "28x28",
) -> Exported:
    """Write the network of ``checkpoint`` as an ONNX file (atomically) and say what was written."""
    if fmt != "onnx":
        raise MlpError(f"--format must be onnx, got {fmt!r}")
    ckpt = ckpt_mod.load(checkpoint)
    # before any file is touched: nothing is written on refusal
    proto = build(ckpt, opset, input_shape)
    path = Path(out) if out is not None else default_path(checkpoint)
    if path.is_dir():
        raise MlpError(f"--out {path} is a folder; give a file name such as {path / 'model.onnx'}")
    data = proto.SerializeToString()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    return Exported(
        path,
        opset,
        proto.ir_version,
        len(data),
        "-".join(map(str, ckpt.sizes)),
        _shape_text(input_shape),
        view_note(ckpt),
    )


def view_note(ckpt: ckpt_mod.Checkpoint) -> str | None:
    """One line where the network was trained on another view of the digits (data.normalise).

    The view is left out of the graph on purpose: deslanting and width normalisation resample
    each image from its own moments and bounding box, which ONNX could express only as a long
    chain of reductions and a GridSample (opset 16) that every runtime would have to reproduce
    to the pixel; the caller applies it instead, and ``metadata_props["normalise"]`` says which.
    """
    view = ckpt.config.data.normalise
    if view.kind == "none":
        return None
    name = "deslanted" if view.kind == "deslant" else f"width-normalised ({view.width} pixels)"
    return (
        f"note: this net was trained on {name} digits, which the graph does not do: give it "
        "pixels already in that view (mnist_mlp.normalise.as_trained; metadata 'normalise')"
    )
