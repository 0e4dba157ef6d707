"""The Open Inference Protocol (KServe v2, Triton) for the checkpoint being served.

KServe's and Triton's clients, and anything that speaks the protocol, reach the model at:

- ``GET /v2/health/live``, ``GET /v2/health/ready``;
- ``GET /v2/models/mnist_mlp`` (its metadata) and ``GET /v2/models/mnist_mlp/ready``;
- ``POST /v2/models/mnist_mlp/infer``: the input ``pixels``, FP32 of shape [N, 784] or
  [N, 28, 28], raw 0-255 pixels in MNIST's form, as the ONNX export takes them; the outputs
  ``probabilities`` (FP32 [N, 10]) and ``label`` (INT64 [N]), all or those ``outputs`` asks for;
  the request's ``id`` echoed.

Tensors come as JSON (``data``: a flat or nested list, row-major) or in the protocol's binary
extension (the ``Inference-Header-Content-Length`` header, then the raw little-endian bytes),
which Triton's client sends by default; an output asked for with ``binary_data: true`` is answered
in binary the same way. Every refusal is a 4xx ``{"error": ...}``: a body that is not JSON, an
unknown input or output, a datatype other than FP32, a wrong shape, data that does not fill the
shape (400); an unknown model (404).
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from mnist_mlp import __version__, metrics, normalise
from mnist_mlp.serve.limits import MAX_BYTES

MODEL = "mnist_mlp"
VERSION = "1"
HEADER_LENGTH = "Inference-Header-Content-Length"
DTYPES: dict[str, np.dtype] = {"FP32": np.dtype("<f4"), "INT64": np.dtype("<i8")}
OUTPUTS = {"probabilities": "FP32", "label": "INT64"}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "not JSON, or tensors that do not fit the model"},
    404: {"description": "no such model"},
}
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string", "examples": ["pixels"]},
        "shape": {"type": "array", "items": {"type": "integer"}, "examples": [[1, 784]]},
        "datatype": {"type": "string", "examples": ["FP32"]},
        "data": {"type": "array", "description": "the values, row-major, flat or nested"},
        "parameters": {"type": "object"},
    },
}
INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "items": _TENSOR},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string", "examples": ["label"]},
                                    "parameters": {"type": "object"},
                                },
                            },
                        },
                    },
                }
            }
        },
    }
}

router = APIRouter(tags=["Open Inference Protocol (v2)"])


@router.get("/v2/health/live", summary="Liveness (v2)")
def live():
    return {"live": True}


@router.get("/v2/health/ready", summary="Readiness (v2): the model is loaded")
def ready():
    return {"ready": True}


def _model(request: Request, name: str):
    if name != MODEL:
        raise HTTPException(404, f"no model {name!r}; this server serves {MODEL!r}")
    return request.app.state.predictor.ckpt


@router.get("/v2/models/{name}", summary="The model's metadata (v2)", responses=ERRORS)
def model_metadata(name: str, request: Request):
    ckpt = _model(request, name)
    n_in, n_out = ckpt.sizes[0], ckpt.sizes[-1]
    return {
        "name": MODEL,
        "versions": [VERSION],
        "platform": f"mnist_mlp-{__version__}",
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, n_in]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, n_out]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ],
        "parameters": {
            "input": "raw pixels 0-255 in MNIST's form (white ink on black, 28x28, centred); "
            "shape [-1, 28, 28] is accepted too",
            "classes": ckpt.classes,
        },
    }


@router.get("/v2/models/{name}/ready", summary="The model is ready (v2)", responses=ERRORS)
def model_ready(name: str, request: Request):
    _model(request, name)
    return {"name": MODEL, "ready": True}


@router.post(
    "/v2/models/{name}/infer",
    summary="Classify a batch of MNIST-form images (v2)",
    description="The input `pixels`: FP32, shape [N, 784] or [N, 28, 28], raw 0-255 pixels in "
    "MNIST's form. Outputs `probabilities` (FP32 [N, 10]) and `label` (INT64 [N]). JSON tensors, "
    "or the binary tensor extension (Inference-Header-Content-Length).",
    openapi_extra=INFER_BODY,
    responses=ERRORS,
)
async def infer(name: str, request: Request):
    ckpt = _model(request, name)
    header, pixels = _request(await request.body(), request.headers, ckpt.sizes[0])
    wanted = _wanted(header.get("outputs"))
    state = request.app.state
    probs = await asyncio.get_running_loop().run_in_executor(state.workers, _forward, ckpt, pixels)
    tensors = {"probabilities": probs, "label": probs.argmax(axis=1).astype(np.int64)}
    answer: dict[str, Any] = {"model_name": MODEL, "model_version": VERSION}
    if isinstance(header.get("id"), str):
        answer["id"] = header["id"]
    return _response(answer, [(n, tensors[n], binary) for n, binary in wanted])


def _forward(ckpt, pixels: np.ndarray) -> np.ndarray:
    """The checkpoint's probabilities for raw pixels, in the view it was trained on."""
    seen = normalise.as_trained(pixels, ckpt.config)
    return metrics.probabilities(ckpt.params, ckpt.activation, seen, scaling=ckpt.scaling)


def _fail(message: str) -> HTTPException:
    return HTTPException(400, message)


def _request(body: bytes, headers, n_inputs: int) -> tuple[dict, np.ndarray]:
    """The request's JSON header and its pixels (N, n_inputs), every rule checked."""
    length = headers.get(HEADER_LENGTH)
    if length is not None:
        if not length.isdigit() or int(length) > len(body):
            raise _fail(f"{HEADER_LENGTH} {length!r} is not a length within the body")
        head, rest = body[: int(length)], body[int(length) :]
    else:
        head, rest = body, b""
    try:
        header = json.loads(head or b"null")
    except (ValueError, UnicodeDecodeError):
        raise _fail("the body is not JSON (or its JSON header is not)") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise _fail('the body must be a JSON object with "inputs": a list of tensors')
    inputs = header["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict) or inputs[0].get("name") != "pixels":
        names = [i.get("name") if isinstance(i, dict) else i for i in inputs]
        raise _fail(f'the model takes one input, "pixels"; got {names!r}')
    return header, _pixels(inputs[0], rest, n_inputs)


def _pixels(tensor: dict, rest: bytes, n_inputs: int) -> np.ndarray:
    if tensor.get("datatype") != "FP32":
        raise _fail(f'input "pixels" must be FP32, got {tensor.get("datatype")!r}')
    shape: Any = tensor.get("shape")
    ok = isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
    if not ok or list(shape[1:]) not in ([n_inputs], [28, 28] if n_inputs == 784 else None):
        raise _fail(f'input "pixels" must have shape [N, {n_inputs}] or [N, 28, 28], got {shape!r}')
    count = math.prod(shape)
    if 4 * count > MAX_BYTES:
        raise HTTPException(413, f"{count} values are over this server's limit of a request")
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if size != 4 * count or len(rest) != size:
            raise _fail(f"binary_data_size {size!r} does not hold the {count} values of {shape}")
        return np.frombuffer(rest, DTYPES["FP32"]).reshape(shape[0], -1)
    data = tensor.get("data")
    try:
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
            values = np.asarray(data, np.float32).reshape(-1) if isinstance(data, list) else None
    except (TypeError, ValueError):
        values = None
    if values is None or values.size != count:
        raise _fail(f'input "pixels" data must be {count} numbers for shape {shape}')
    if not np.isfinite(values).all():
        raise _fail('input "pixels" holds a value that is not a finite number')
    return values.reshape(shape[0], -1)


def _wanted(outputs: Any) -> list[tuple[str, bool]]:
    """(output, in binary) for each output asked for, all of them (JSON) if none is."""
    if outputs is None:
        return [(name, False) for name in OUTPUTS]
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise _fail('"outputs" must be a list of {"name": ...}')
    out = []
    for o in outputs:
        if o.get("name") not in OUTPUTS:
            raise _fail(f"unknown output {o.get('name')!r}; the outputs are {', '.join(OUTPUTS)}")
        out.append((o["name"], bool((o.get("parameters") or {}).get("binary_data", False))))
    return out


def _response(answer: dict, tensors: list[tuple[str, np.ndarray, bool]]) -> Response:
    """JSON tensors, or the JSON header and the binary ones after it."""
    blobs: list[bytes] = []
    answer["outputs"] = []
    for name, array, binary in tensors:
        entry: dict[str, Any] = {
            "name": name,
            "datatype": OUTPUTS[name],
            "shape": list(array.shape),
        }
        if binary:
            blob = np.ascontiguousarray(array, DTYPES[OUTPUTS[name]]).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.reshape(-1).tolist()
        answer["outputs"].append(entry)
    if not blobs:
        return JSONResponse(answer)
    head = json.dumps(answer, separators=(",", ":")).encode()
    return Response(
        head + b"".join(blobs),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(head))},
    )
