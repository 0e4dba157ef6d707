"""mlp serve: the API's answers, every kind of bad request, the body limit, a live server under
load."""

from __future__ import annotations

import io
import signal
import socket
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagegen
import numpy as np
import pytest
from conftest import serving
from PIL import Image

from mnist_mlp.errors import MlpError
from mnist_mlp.predict import Predictor

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
pytest.importorskip("httpx", reason="httpx (the dev extra) is needed by FastAPI's TestClient")
from fastapi.testclient import TestClient

from mnist_mlp import serve

ROOT = Path(__file__).resolve().parent.parent


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels in a few dozen bytes (a decompression bomb's
    header)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


SEVEN = png(imagegen.drawn(7, 30, canvas=400))


@pytest.fixture
def predictor(random_checkpoint):
    return Predictor(random_checkpoint)


@pytest.fixture
def client(predictor):
    with TestClient(serve.create_app(predictor, max_bytes=1_000_000)) as c:
        yield c


def test_predict_raw_bytes_matches_the_library(client, predictor):
    response = client.post(
        "/api/predict?top_k=4", content=SEVEN, headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 200, response.text
    a = response.json()
    expected = predictor.predict_image(SEVEN, "x", top_k=4, explain=True)
    assert a["prediction"] == expected.prediction and a["label"] == str(expected.prediction)
    assert a["probability"] == pytest.approx(expected.probability)
    assert [c for c, _ in a["top_k"]] == [c for c, _ in expected.top_k] and len(a["top_k"]) == 4
    assert np.asarray(a["input"]).shape == (28, 28)
    np.testing.assert_allclose(a["input"], expected.pixels, atol=1e-4)
    sens = np.asarray(a["sensitivity"])
    assert sens.shape == (28, 28)
    np.testing.assert_allclose(
        sens, expected.sensitivity, atol=1e-3 * np.abs(expected.sensitivity).max()
    )


def test_predict_multipart_upload_gives_the_same_answer(client):
    raw = client.post("/api/predict", content=SEVEN, headers={"Content-Type": "image/png"}).json()
    form = client.post("/api/predict", files={"file": ("seven.png", SEVEN, "image/png")}).json()
    assert form == raw


def test_model_health_and_openapi(client, predictor):
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/api/model").json()
    assert info["layers"] == [784, 16, 10] and info["activation"] == "relu"
    assert info["classes"] == [str(d) for d in range(10)] and info["checkpoint"] == str(
        predictor.path
    )
    spec = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/model", "/healthz"} <= set(spec["paths"])
    body = spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert {"image/png", "multipart/form-data", "application/octet-stream"} <= set(body)
    assert "swagger" in client.get("/docs").text.lower()


def test_the_page_and_its_assets(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for name in ("app.js", "style.css", "favicon.svg"):
        assert f"/static/{name}" in page.text
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200 and asset.content == (serve.WEB / name).read_bytes()
    # Nothing is fetched from elsewhere: the page works offline.
    for name in ("index.html", "app.js", "style.css"):
        text = (serve.WEB / name).read_text()
        assert "http://" not in text and "https://" not in text, name


TRUNCATED = SEVEN[: len(SEVEN) // 2]
SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">'
    b'<text x="5" y="20">7</text></svg>'
)
BLANK = png(Image.new("L", (200, 200), 255))
BAD_REQUESTS = [
    # (name, request kwargs, status, fragment of the message)
    (
        "empty body",
        dict(content=b"", headers={"Content-Type": "image/png"}),
        400,
        "the body is empty",
    ),
    (
        "text as an image",
        dict(content=b"seven", headers={"Content-Type": "application/octet-stream"}),
        422,
        "not an image Pillow can read",
    ),
    (
        "text content type",
        dict(content=b"seven", headers={"Content-Type": "text/plain"}),
        415,
        "Content-Type text/plain is not an image",
    ),
    (
        "JSON content type",
        dict(content=b'{"a": 1}', headers={"Content-Type": "application/json"}),
        415,
        "is not an image",
    ),
    (
        "curl's form default",
        dict(content=SEVEN, headers={"Content-Type": "application/x-www-form-urlencoded"}),
        415,
        "add -H 'Content-Type: image/png'",
    ),
    (
        "truncated PNG",
        dict(content=TRUNCATED, headers={"Content-Type": "image/png"}),
        422,
        "unreadable image",
    ),
    (
        "SVG",
        dict(content=SVG, headers={"Content-Type": "image/svg+xml"}),
        415,
        "SVG is a vector format",
    ),
    (
        "SVG as bytes",
        dict(content=SVG, headers={"Content-Type": "application/octet-stream"}),
        422,
        "not an image Pillow can read",
    ),
    (
        "decompression bomb",
        dict(content=png_header_only(20000, 20000), headers={"Content-Type": "image/png"}),
        413,
        "too many pixels",
    ),
    (
        "over the pixel limit",
        dict(content=png_header_only(8000, 6000), headers={"Content-Type": "image/png"}),
        413,
        "8000x6000 is too many pixels",
    ),
    (
        "blank image",
        dict(content=BLANK, headers={"Content-Type": "image/png"}),
        422,
        "blank image, no digit",
    ),
    (
        "over the size limit",
        dict(content=b"\0" * 1_000_001, headers={"Content-Type": "image/png"}),
        413,
        "over the limit of",
    ),
    (
        "malformed multipart",
        dict(
            content=b"--xyz\r\nbroken header\r\n\r\n7\r\n--xyz--\r\n",
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        ),
        400,
        "malformed multipart body: Invalid multipart data",
    ),
    (
        "multipart without a boundary",
        dict(content=b"7", headers={"Content-Type": "multipart/form-data"}),
        400,
        "malformed multipart body: Missing boundary",
    ),
    ("multipart without a file", dict(files={"note": (None, "hello")}), 400, "holds no file"),
    (
        "top_k out of range",
        dict(content=SEVEN, headers={"Content-Type": "image/png"}, params={"top_k": 11}),
        422,
        "top_k",
    ),
]


@pytest.mark.parametrize(
    "name, kwargs, status, fragment", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_requests_get_one_readable_json_error_and_the_server_keeps_serving(
    client, name, kwargs, status, fragment
):
    response = client.post("/api/predict", **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and fragment in body["error"] and "\n" not in body["error"]
    assert (
        client.post(
            "/api/predict", content=SEVEN, headers={"Content-Type": "image/png"}
        ).status_code
        == 200
    )


def test_unknown_paths_and_methods_are_json_errors(client):
    for path in ("/nope", "/static/server.py", "/static/..%2F..%2Fetc%2Fpasswd", "/api"):
        response = client.get(path)
        assert response.status_code == 404 and "no such page" in response.json()["error"], path
    assert client.get("/api/predict").status_code == 405
    assert "error" in client.get("/api/predict").json()


def test_a_body_without_length_is_counted_as_it_arrives(client):
    def chunks():  # sent chunked: no Content-Length to refuse early
        for _ in range(40):
            yield b"\0" * 50_000

    response = client.post("/api/predict", content=chunks(), headers={"Content-Type": "image/png"})
    assert (
        response.status_code == 413 and "over the limit of 0.953674 MiB" in response.json()["error"]
    )


def test_sensitivity_is_the_logit_gradient_per_unit_of_raw_pixel(predictor):
    from mnist_mlp import model

    params = {k: v.astype(np.float64) for k, v in predictor.ckpt.params.items()}

    def logit(pixels, c):  # in float64, on the raw pixels in [0, 1]
        x = predictor.inputs(pixels).astype(np.float64)
        return model.forward(params, x, predictor.ckpt.activation).logits[0, c]

    rng = np.random.default_rng(0)
    p = (rng.random((2, 28, 28)) * (rng.random((2, 28, 28)) < 0.3)).astype(np.float32)
    classes = np.array([3, 8])
    sens = predictor.sensitivity(p, classes)
    assert sens.shape == (2, 28, 28)
    for i, c in enumerate(classes):
        # (0, 0): blank in every digit, still sensitive
        for y, x in [(14, 14), (5, 20), (20, 7), (0, 0)]:
            up, down = p[i : i + 1].copy(), p[i : i + 1].copy()
            up[0, y, x] += 0.01
            down[0, y, x] -= 0.01
            numeric = (logit(up, c) - logit(down, c)) / 0.02
            assert sens[i, y, x] == pytest.approx(numeric, rel=2e-2, abs=1e-4)


# --- a live server on 127.0.0.1 ------------------------------------------------------------------


@pytest.fixture
def live(predictor):
    with serving(serve.create_app(predictor)) as url:
        yield url.rstrip("/")


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """A GET with the path sent exactly as written (clients normalise '..' away)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_no_file_outside_the_page_is_ever_served(live):
    for path in (
        "/../../etc/passwd",
        "/static/../../etc/passwd",
        "/static/%2e%2e/%2e%2e/etc/passwd",
        "/static/../serve.py",
        "//etc/passwd",
    ):
        status, body = raw_get(live, path)
        assert status in (400, 404), path
        assert b"root:" not in body and b"import" not in body


def test_bounded_load_every_answer_right(live, predictor):
    import httpx

    rng = np.random.default_rng(0)
    bodies = [
        png(
            imagegen.drawn(d, int(rng.integers(8, 40)), canvas=int(rng.integers(100, 500)), rng=rng)
        )
        for d in range(10)
    ]
    expected = [predictor.predict_image(b, "x").prediction for b in bodies]

    def worker(k):
        wrong = errors = 0
        with httpx.Client(base_url=live, timeout=30) as c:
            for i in range(25):
                j = (k + i) % len(bodies)
                r = c.post("/api/predict", content=bodies[j], headers={"Content-Type": "image/png"})
                if r.status_code != 200:
                    errors += 1
                elif r.json()["prediction"] != expected[j]:
                    wrong += 1
        return errors, wrong

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(worker, range(16)))
    assert sum(e for e, _ in results) == 0 and sum(w for _, w in results) == 0  # 400 requests


def test_mlp_serve_prints_its_url_answers_and_stops_cleanly_on_ctrl_c(random_checkpoint, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnist_mlp", "serve", "-c", str(random_checkpoint), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"serving {random_checkpoint} at http://127.0.0.1:"), line
        url = line.split(" at ")[1].split()[0]
        import httpx

        assert httpx.get(url + "healthz", timeout=10).json() == {"status": "ok"}
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        proc.kill()


def test_a_busy_port_and_a_bad_checkpoint_are_one_line_errors(random_checkpoint, tmp_path):
    from click.testing import CliRunner

    from mnist_mlp.cli import main

    taken = serve.listen("127.0.0.1", 0)
    port = taken.getsockname()[1]
    try:
        result = CliRunner().invoke(
            main, ["serve", "-c", str(random_checkpoint), "--port", str(port)]
        )
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr
    finally:
        taken.close()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"nope")
    result = CliRunner().invoke(main, ["serve", "-c", str(bad)])
    assert result.exit_code == 1 and "not a valid checkpoint" in result.stderr
    with pytest.raises(MlpError, match="not an address"):
        serve.listen("no-such-host.invalid", 0)


def test_without_the_extra_it_says_how_to_install(random_checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(MlpError, match=r"pip install 'mnist-mlp\[serve\]'"):
        serve.serve(random_checkpoint, port=0)
