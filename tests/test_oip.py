"""The Open Inference Protocol (v2) in mlp serve, driven by Triton's own client over loopback."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from conftest import serving

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
from fastapi.testclient import TestClient

from mnist_mlp import checkpoint, metrics, serve
from mnist_mlp.data import Split
from mnist_mlp.predict import Predictor

INFER = "/v2/models/mnist_mlp/infer"


def live_server(path):
    """``mlp serve``'s app for the checkpoint at ``path``, on a free port of 127.0.0.1: a
    context that yields ``host:port``, as Triton's client takes it."""
    return _host_port(serving(serve.create_app(Predictor(path))))


@contextlib.contextmanager
def _host_port(served):
    with served as url:
        yield url.removeprefix("http://").rstrip("/")


@pytest.fixture
def triton(random_checkpoint):
    httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient (dev) is missing")
    with live_server(random_checkpoint) as address:
        client = httpclient.InferenceServerClient(url=address)
        yield httpclient, client
        client.close()


def _infer(httpclient, client, pixels, binary: bool, outputs=("probabilities", "label")):
    tensor = httpclient.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels.astype(np.float32), binary_data=binary)
    wanted = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in outputs]
    return client.infer("mnist_mlp", [tensor], outputs=wanted, request_id="req-7")


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("shape", [(784,), (28, 28)])
def test_triton_client_gets_the_forward_pass_of_mlp_predict(
    triton, random_checkpoint, binary, shape
):
    httpclient, client = triton
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mnist_mlp")
    meta = client.get_model_metadata("mnist_mlp")
    assert meta["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 784]}]
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {
        "probabilities": "FP32",
        "label": "INT64",
    }
    pixels = np.random.default_rng(0).integers(0, 256, (37, *shape)).astype(np.float32)
    result = _infer(httpclient, client, pixels, binary)
    ckpt = checkpoint.load(random_checkpoint)
    expected = metrics.probabilities(
        ckpt.params, ckpt.activation, pixels.reshape(37, -1), scaling=ckpt.scaling
    )
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(result.as_numpy("label"), expected.argmax(axis=1))
    assert result.get_response()["id"] == "req-7"
    only = _infer(httpclient, client, pixels[:2], binary, outputs=("label",))
    assert [o["name"] for o in only.get_response()["outputs"]] == ["label"]


@pytest.mark.realdata
def test_a_thousand_test_digits_equal_mlp_eval(smoke_checkpoint, mnist_test):
    httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient (dev) is missing")
    images, labels = mnist_test
    with live_server(smoke_checkpoint) as address:
        client = httpclient.InferenceServerClient(url=address)
        pixels = images[:1000].reshape(1000, 784).astype(np.float32)
        result = _infer(httpclient, client, pixels, binary=True)
        ckpt = checkpoint.load(smoke_checkpoint)
        test = Split(images[:1000].reshape(1000, -1), labels[:1000])
        ours = metrics.evaluate(ckpt.params, ckpt.activation, test, scaling=ckpt.scaling)
        np.testing.assert_array_equal(result.as_numpy("label"), ours.predictions)
        # FP32 pixels are scaled by NumPy, mlp eval's uint8 ones by the compiled kernel: the same
        # to float32 rounding
        got = result.as_numpy("probabilities")
        np.testing.assert_allclose(got, ours.probabilities, rtol=1e-4, atol=1e-7)
        client.close()


@pytest.fixture
def client(random_checkpoint):
    with TestClient(serve.create_app(Predictor(random_checkpoint))) as c:
        yield c


def _body(data=None, shape=(1, 784), datatype="FP32", name="pixels", **extra):
    count = int(np.prod(shape))
    tensor = {"name": name, "shape": list(shape), "datatype": datatype}
    tensor["data"] = [0.0] * count if data is None else data
    return {"inputs": [tensor], **extra}


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"{not json", 400, "not JSON"),
        (json.dumps([1, 2]).encode(), 400, '"inputs": a list of tensors'),
        (_body(shape=(1, 783)), 400, "must have shape [N, 784] or [N, 28, 28], got [1, 783]"),
        (_body(shape=(784,)), 400, "must have shape"),
        (_body(data=[0.0] * 10), 400, "must be 784 numbers for shape [1, 784]"),
        (_body(data=["a"] * 784), 400, "must be 784 numbers"),
        (_body(name="image"), 400, 'the model takes one input, "pixels"'),
        (_body(datatype="INT8"), 400, "must be FP32, got 'INT8'"),
        (_body(outputs=[{"name": "logits"}]), 400, "unknown output 'logits'"),
        (_body(data=[1e39] * 784), 400, "not a finite number"),
    ],
)
def test_bad_requests_are_one_line_4xx(client, body, status, message):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post(INFER, content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"] and "\n" not in r.json()["error"]
    assert client.get("/healthz").status_code == 200  # and it keeps serving


def test_an_unknown_model_is_404(client):
    for r in (
        client.get("/v2/models/resnet50"),
        client.get("/v2/models/resnet50/ready"),
        client.post("/v2/models/resnet50/infer", json=_body()),
    ):
        assert r.status_code == 404 and "resnet50" in r.json()["error"]


def test_a_binary_length_that_does_not_fit_is_refused(client):
    head = json.dumps(
        {"inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "FP32",
                     "parameters": {"binary_data_size": 3136}}]}
    ).encode()  # fmt: skip
    r = client.post(
        INFER,
        content=head + b"\x00" * 100,
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert r.status_code == 400 and "binary_data_size" in r.json()["error"]
    r = client.post(INFER, content=head, headers={"Inference-Header-Content-Length": "99999"})
    assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"]


def test_the_routes_are_in_the_openapi_page(client):
    paths = client.get("/openapi.json").json()["paths"]
    routes = ["/v2/health/live", "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/ready"]
    assert {*routes, "/v2/models/{name}/infer"} <= set(paths)
