"""What every answer of the server carries: security headers, Allow on 405, HEAD on GET routes."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")

from fastapi.testclient import TestClient
from test_learn import synthetic_digits

from mnist_mlp import learn, serve


@pytest.fixture(scope="module")
def client():
    with TestClient(serve.create_app(None, sessions=learn.Sessions(synthetic_digits()))) as c:
        yield c


@pytest.mark.parametrize("path", ["/learn", "/static/learn.js", "/healthz", "/api/learn/nosuch"])
def test_every_answer_says_what_a_browser_may_do_with_it(client, path):
    r = client.get(path)
    csp = r.headers["content-security-policy"]
    assert (
        "default-src 'self'" in csp and "script-src 'self';" in csp and "'unsafe-inline'" not in csp
    )
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-frame-options"] == "DENY"


def test_the_api_docs_keep_a_policy_that_lets_them_load(client):
    r = client.get("/docs")
    policy = r.headers["content-security-policy"]
    assert r.status_code == 200 and "style-src 'self' 'unsafe-inline'" in policy
    assert "script-src 'self';" in policy and "cdn" not in policy


@pytest.mark.parametrize(
    "method, path, allow",
    [
        ("PUT", "/api/learn", "POST"),
        ("DELETE", "/learn", "GET, HEAD"),
        ("POST", "/healthz", "GET, HEAD"),
    ],
)
def test_a_405_says_which_methods_are_allowed(client, method, path, allow):
    r = client.request(method, path)
    assert r.status_code == 405
    assert r.headers["allow"] == allow
    assert r.json() == {"error": "Method Not Allowed"}


@pytest.mark.parametrize("path", ["/learn", "/healthz", "/static/learn.css", "/openapi.json"])
def test_head_is_answered_where_get_is(client, path):
    get, head = client.get(path), client.head(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.headers["content-type"] == get.headers["content-type"]


def test_listening_beyond_this_machine_is_said(monkeypatch, tmp_path):
    lines: list[str] = []

    class Server:  # uvicorn itself is not needed to see what is printed before it starts
        def __init__(self, config):
            pass

        def run(self, sockets):
            raise KeyboardInterrupt

    import uvicorn

    monkeypatch.setattr(uvicorn, "Server", Server)
    monkeypatch.setattr(
        learn.Digits, "load", classmethod(lambda cls, *a, **k: synthetic_digits(600))
    )
    serve.serve(None, host="0.0.0.0", port=0, echo=lines.append, learn_only=True)
    assert lines[0].startswith("--host 0.0.0.0: the page is reachable from the network")
    assert lines[1].startswith("the Learn page is at http://0.0.0.0:")
    lines.clear()
    serve.serve(None, host="127.0.0.1", port=0, echo=lines.append, learn_only=True)
    assert lines[0].startswith("the Learn page is at http://127.0.0.1:")
