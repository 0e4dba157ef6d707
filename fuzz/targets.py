"""Fuzz targets: every parser of bytes from outside, each a function of one ``bytes``.

The rule each checks: any input ends in a result or in the project's own error
(:class:`mnist_mlp.errors.MlpError`, one line), never in another exception, and memory stays
bounded (the runner caps it). ``fuzz/run.py`` runs them under atheris, coverage-guided;
``tests/test_fuzz.py`` runs each for a few seconds in the test suite.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

TARGETS: dict[str, Callable[[bytes], object]] = {}


def target(function: Callable[[bytes], object]) -> Callable[[bytes], object]:
    TARGETS[function.__name__.removeprefix("fuzz_")] = function
    return function


def _in_a_file(data: bytes, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(name)


@target
def fuzz_idx(data: bytes) -> object:
    """The downloader's parser: gzip (or not), then IDX."""
    from mnist_mlp.idx import maybe_gunzip, parse_idx

    return parse_idx(maybe_gunzip(data, limit=1 << 22))


@target
def fuzz_image(data: bytes) -> object:
    """A user's image, prepared as ``mlp predict`` and the servers prepare it."""
    from mnist_mlp import images

    return images.prepare(data, "fuzz", max_pixels=4_000_000)


def _parsed_as_a_file(data: bytes, suffix: str, parse: Callable[[Path], object]) -> object:
    path = _in_a_file(data, suffix)
    try:
        return parse(path)
    finally:
        path.unlink()


@target
def fuzz_checkpoint(data: bytes) -> object:
    from mnist_mlp import checkpoint

    return _parsed_as_a_file(data, ".npz", checkpoint.load)


@target
def fuzz_config(data: bytes) -> object:
    from mnist_mlp import config

    return _parsed_as_a_file(data, ".yaml", config.load_config)


@target
def fuzz_sweep(data: bytes) -> object:
    from mnist_mlp.sweep import spec

    return _parsed_as_a_file(data, ".yaml", spec.load_spec)


_CLIENT = None
ROUTES = [  # the first byte of an input picks one; the rest is its body
    ("POST", "/api/predict", "image/png"),
    ("POST", "/api/predict", "multipart/form-data; boundary=fuzz"),
    ("POST", "/api/learn", "application/json"),
    ("POST", "/api/learn/{id}/step", "application/json"),
    ("POST", "/api/learn/{id}/follow", "application/json"),
    ("POST", "/api/learn/{id}/follow", "multipart/form-data; boundary=fuzz"),
    ("POST", "/api/learn/{id}/gradcheck", "application/json"),
]


class ServerError(Exception):
    """The server answered 5xx, or a 4xx without its one-line JSON error."""


@target
def fuzz_api(data: bytes) -> object:
    """The request bodies of both servers' APIs: never a 5xx, every 4xx a one-line JSON error."""
    import asyncio
    import json

    global _CLIENT
    if _CLIENT is None:
        try:
            _CLIENT = _client()
        except Exception as exc:  # the harness's own set-up: never to be taken for a refusal
            raise RuntimeError(f"the fuzz server could not be set up: {exc}") from exc
    app, session = _CLIENT
    if not data:
        return None
    method, path, kind = ROUTES[data[0] % len(ROUTES)]
    path = path.replace("{id}", session)
    # The app is called in this thread (not through a test client's), so that the fuzzer sees
    # which of its branches each input reaches.
    status, body = asyncio.run(_call(app, method, path, kind, data[1:]))
    if status >= 500:
        raise ServerError(f"{status} for {path}: {body[:200]!r}")
    if status >= 400:
        error = json.loads(body).get("error")
        if not isinstance(error, str) or "\n" in error:
            raise ServerError(f"{status} for {path} without a one-line error")
    if path == "/api/learn" and status == 201:
        asyncio.run(_call(app, "DELETE", f"/api/learn/{json.loads(body)['id']}", "", b""))
    return status


async def _call(app, method: str, path: str, kind: str, body: bytes) -> tuple[int, bytes]:
    """One HTTP request straight into the ASGI app: (status, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent = False
    answer: dict = {"status": 0, "body": b""}

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return answer["status"], answer["body"]


def _client():
    """A server with a small random net and a learning session over 200 synthetic digits."""
    import numpy as np

    from mnist_mlp import checkpoint, config, learn, model, serve
    from mnist_mlp.data import OFFSET, SCALE
    from mnist_mlp.predict import Predictor

    rng = np.random.default_rng(0)
    params = model.init_params(model.layer_sizes([16]), "relu", rng)
    meta = {
        "input": {"scale": SCALE, "offset": OFFSET, "shape": [28, 28]},
        "classes": [str(d) for d in range(10)],
        "epoch": 1,
    }
    path = Path(tempfile.mkdtemp()) / "fuzz.npz"
    net = config.load_config(overrides=["model.hidden=[16]"])
    checkpoint.save(path, checkpoint.Checkpoint(params, net, meta))
    images = rng.integers(0, 256, (200, 784)).astype(np.uint8)
    digits = learn.Digits(images, rng.integers(0, 10, 200), np.arange(100, 200), np.arange(100))
    app = serve.create_app(Predictor(path), sessions=learn.Sessions(digits, limit=4))
    session = app.state.sessions.create(learn.LearnConfig(hidden=[4])).id
    return app, session
