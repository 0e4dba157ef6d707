"""mlp learn's JSON API: each call, each limit, and every bad request's one-line 4xx."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")

from fastapi.testclient import TestClient
from test_learn import synthetic_digits

from mnist_mlp import learn, serve


@pytest.fixture(scope="module")
def digits():
    return synthetic_digits()


@pytest.fixture
def client(digits):
    app = serve.create_app(None, sessions=learn.Sessions(digits))
    with TestClient(app) as c:
        yield c


def seven_png() -> bytes:
    image = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(image).line([(60, 60), (240, 60), (130, 260)], fill=0, width=24)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_a_session_from_start_to_end(client):
    r = client.post("/api/learn", json={"hidden": [8], "lr": 1.0, "seed": 3})
    assert r.status_code == 201
    state = r.json()
    key = state["id"]
    assert state["step"] == 0 and state["config"]["hidden"] == [8] and state["config"]["seed"] == 3
    assert np.array(state["params"]["W1"]).shape == (784, 8)
    r = client.post(f"/api/learn/{key}/step", json={"steps": 250})
    assert r.status_code == 200 and r.json()["step"] == 250
    assert client.get(f"/api/learn/{key}").json()["step"] == 250
    r = client.post(f"/api/learn/{key}/follow", json={"index": 42})
    assert r.json()["follow"]["index"] == 42
    r = client.post(
        f"/api/learn/{key}/follow",
        files={"file": ("seven.png", seven_png(), "image/png")},
        data={"label": "7"},
    )
    assert r.status_code == 200, r.text
    follow = r.json()["follow"]
    assert follow["index"] is None and follow["label"] == 7
    pixels = np.array(follow["pixels"])
    assert pixels.shape == (28, 28) and 200 < pixels.max() <= 255  # prepared as mlp predict does
    r = client.post(f"/api/learn/{key}/gradcheck", json={"param": "W2", "index": [1, 7]})
    assert r.status_code == 200
    check = r.json()
    assert set(check) >= {"backprop", "numeric", "rel_error"} and check["rel_error"] < 1e-6
    r = client.post(f"/api/learn/{key}/follow/step")
    assert r.status_code == 200, r.text
    state = r.json()
    update = state["last_update"]
    assert state["step"] == 250 and state["one_steps"] == 1
    assert update["after"]["loss"] < update["before"]["loss"] == pytest.approx(follow["loss"])
    w_before = np.array(update["params_before"]["W2"])
    assert np.allclose(
        state["params"]["W2"], w_before - 1.0 * np.array(update["grads"]["W2"]), atol=1e-15
    )
    assert client.post(f"/api/learn/{key}/heartbeat").status_code == 204
    assert client.delete(f"/api/learn/{key}").status_code == 204
    assert client.get(f"/api/learn/{key}").status_code == 404


def test_the_page_and_its_links(client, smoke_or_none=None):
    page = client.get("/learn")
    assert page.status_code == 200 and "Watch a network learn" in page.text
    assert '<a id="draw-link" href="/" hidden>' in page.text  # no drawing page without a checkpoint
    assert client.get("/", follow_redirects=False).headers["location"] == "/learn"
    for asset in ("learn.js", "learn.css", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    assert client.get("/api/model").status_code == 404
    spec = client.get("/openapi.json").json()["paths"]
    assert {
        "/api/learn",
        "/api/learn/{key}",
        "/api/learn/{key}/step",
        "/api/learn/{key}/follow",
        "/api/learn/{key}/gradcheck",
    } <= set(spec)


def test_the_ninth_session_is_refused(client):
    for _ in range(8):
        assert client.post("/api/learn", json={}).status_code == 201
    r = client.post("/api/learn", json={})
    assert r.status_code == 429
    assert "8 learning sessions are open" in r.json()["error"]


BAD = [  # method, path (KEY: a live session), body kind, body, status, message
    (
        "POST",
        "/api/learn",
        "json",
        {"hidden": [100]},
        422,
        "hidden must be one or two layer sizes from 1 to 64, got [100]",
    ),
    (
        "POST",
        "/api/learn",
        "json",
        {"activation": "softmax"},
        422,
        "activation must be one of relu, sigmoid, tanh, got 'softmax'",
    ),
    ("POST", "/api/learn", "json", {"lr": -1}, 422, "lr must be in (0, 10], got -1"),
    ("POST", "/api/learn", "json", {"lr": "fast"}, 422, "lr must be in (0, 10], got 'fast'"),
    ("POST", "/api/learn", "json", {"speed": 2}, 422, "speed: Extra inputs are not permitted"),
    ("POST", "/api/learn", "raw", b"{not json", 422, "JSON decode error"),
    ("GET", "/api/learn/nosuch", None, None, 404, "no learning session nosuch"),
    ("DELETE", "/api/learn/nosuch", None, None, 404, "no learning session nosuch"),
    ("PUT", "/api/learn/KEY", "json", {}, 405, "Method Not Allowed"),
    (
        "POST",
        "/api/learn/KEY/step",
        "json",
        {"steps": 0},
        422,
        "steps: Input should be greater than or equal to 1, got 0",
    ),
    (
        "POST",
        "/api/learn/KEY/step",
        "json",
        {"steps": 20000},
        422,
        "steps: Input should be less than or equal to 10000, got 20000",
    ),
    (
        "POST",
        "/api/learn/KEY/step",
        "json",
        {"steps": "many"},
        422,
        "steps: Input should be a valid integer",
    ),
    ("POST", "/api/learn/nosuch/step", "json", {"steps": 1}, 404, "no learning session nosuch"),
    (
        "POST",
        "/api/learn/KEY/follow",
        "json",
        {"index": -1},
        422,
        "index must be a training digit from 0 to 2999, got -1",
    ),
    ("POST", "/api/learn/KEY/follow", "json", {"idx": 3}, 422, 'the body must be {"index": i}'),
    ("POST", "/api/learn/KEY/follow", "raw", b"[1, 2", 400, "the body is not valid JSON"),
    (
        "POST",
        "/api/learn/KEY/follow",
        "text",
        "3",
        415,
        "Content-Type text/plain is neither application/json",
    ),
    ("POST", "/api/learn/KEY/follow", "files", {"label": "7"}, 422, "the upload holds no image"),
    (
        "POST",
        "/api/learn/KEY/follow",
        "image",
        {"label": "12"},
        422,
        "label must be the digit drawn, 0 to 9, got '12'",
    ),
    (
        "POST",
        "/api/learn/KEY/follow",
        "image",
        {},
        422,
        "label must be the digit drawn, 0 to 9, got None",
    ),
    ("POST", "/api/learn/KEY/follow", "notimage", {"label": "3"}, 422, "the image: not an image"),
    (
        "POST",
        "/api/learn/KEY/gradcheck",
        "json",
        {"param": "W9", "index": [0, 0]},
        422,
        "param must be one of W1, b1, W2, b2, got 'W9'",
    ),
    (
        "POST",
        "/api/learn/KEY/gradcheck",
        "json",
        {"param": "W2", "index": [99, 0]},
        422,
        "index must be 2 integers within [16, 10] for W2",
    ),
    ("POST", "/api/learn/KEY/gradcheck", "json", {"param": "W2"}, 422, "index: Field required"),
]


@pytest.mark.parametrize(
    "method, path, kind, body, status, message",
    BAD,
    ids=[f"{m} {p.replace('KEY', 'ID')} {b}"[:60] for m, p, _, b, *_ in BAD],
)
def test_every_bad_request_is_a_one_line_4xx(client, method, path, kind, body, status, message):
    key = client.post("/api/learn", json={}).json()["id"]
    path = path.replace("KEY", key)
    kwargs: dict = {}
    if kind == "json":
        kwargs["json"] = body
    elif kind == "raw":
        kwargs.update(content=body, headers={"Content-Type": "application/json"})
    elif kind == "text":
        kwargs.update(content=body, headers={"Content-Type": "text/plain"})
    elif kind == "files":
        kwargs.update(data=body, files={"other": (None, "x")})
    elif kind == "image":
        kwargs.update(data=body, files={"file": ("seven.png", seven_png(), "image/png")})
    elif kind == "notimage":
        kwargs.update(
            data=body, files={"file": ("notes.png", b"these are not pixels", "image/png")}
        )
    r = client.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error and "\n" not in error
    assert client.get(f"/api/learn/{key}").status_code == 200  # and the server goes on serving


@pytest.mark.realdata
def test_mlp_learn_prints_the_pages_url_and_stops_cleanly_on_ctrl_c(real_env, tmp_path):
    import signal
    import subprocess
    import sys

    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "mnist_mlp", "learn", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("the Learn page is at http://127.0.0.1:"), line
        url = line.split(" at ")[1].split()[0]
        assert "Watch a network learn" in httpx.get(url, timeout=10).text
        base = url.removesuffix("learn")
        state = httpx.post(base + "api/learn", json={}, timeout=30).json()
        assert len(state["follow"]["pixels"]) == 28  # a real training digit
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        proc.kill()


def test_the_compact_state_holds_the_same_numbers_in_a_quarter_of_the_bytes(client):
    from mnist_mlp.learn import wire

    key = client.post("/api/learn", json={"hidden": [64, 64]}).json()["id"]
    client.post(f"/api/learn/{key}/step", json={"steps": 20})
    full = client.get(f"/api/learn/{key}")
    compact = client.get(f"/api/learn/{key}?compact=true")
    assert len(compact.content) < len(full.content) / 3.5
    f, c = full.json(), compact.json()
    for name, values in f["params"].items():
        assert np.array_equal(wire.unpacked(c["params"][name]), np.array(values))
    assert "grads" not in c["follow"] and c["follow"]["dz"] == f["follow"]["dz"]
    # each weight's gradient is its input's activation times the sensitivity at its end
    x = np.array(f["follow"]["pixels"]).reshape(784) * f["input"]["scale"] + f["input"]["offset"]
    inputs = [x, *map(np.array, f["follow"]["a"][:-1])]
    for layer, (a, dz) in enumerate(zip(inputs, f["follow"]["dz"]), start=1):
        assert np.allclose(np.outer(a, dz), f["follow"]["grads"][f"W{layer}"], rtol=1e-12, atol=0)
    r = client.post(f"/api/learn/{key}/follow/step?compact=true")
    update = r.json()["last_update"]
    assert "grads" not in update and set(update["params_before"]) == set(f["params"])
