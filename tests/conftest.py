"""Shared fixtures: tiny synthetic datasets, a real HTTP server on 127.0.0.1, isolated caches."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from mnist_mlp import callbacks, datasets, download
from mnist_mlp.idx import to_idx

REAL_MIRROR = os.environ.get("MNIST_MLP_MIRROR", "")
IN_CI = os.environ.get("CI") == "true"


# A run of a few seconds on the tiny datasets (tiny_as_mnist): the overrides several tests train by
TINY_RUN = [
    "data.validation=16",
    "model.hidden=[32]",
    "training.epochs=3",
    "training.batch_size=8",
    "training.lr=0.05",
]


def require(condition: bool, why: str) -> None:
    """Skip, saying why, when a real component is missing; under CI=true, fail instead:
    CI installs every component, so a missing one there is a broken set-up, not a skip."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{why} (CI=true: .ci/run installs it, so this test must run)")
    pytest.skip(why)


@contextlib.contextmanager
def serving(app):
    """``app`` served by uvicorn on a free port of 127.0.0.1, from a thread; yields its base URL
    (``http://127.0.0.1:PORT/``) once it answers, and stops it afterwards."""
    import uvicorn

    from mnist_mlp import serve

    sock = serve.listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield serve.url_of(sock)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def only_loopback(page) -> list[str]:
    """Let a Playwright page fetch from 127.0.0.1 only: every other request is aborted and its
    address kept in the list returned (a page that works offline leaves it empty)."""
    elsewhere: list[str] = []

    def route(r):
        if r.request.url.startswith("http://127.0.0.1"):
            r.continue_()
        else:
            elsewhere.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return elsewhere


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own cache and no mirror unless it asks for one."""
    monkeypatch.setenv("MNIST_MLP_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MNIST_MLP_MIRROR", raising=False)


class StopAfter(callbacks.StopFlag):
    """A stop flag that asks to stop once it has been checked ``n`` times (after ``n`` steps)."""

    def __init__(self, n):
        self.n, self.checks = n, 0

    @property
    def requested(self):
        self.checks += 1
        return self.checks > self.n


def make_tiny_arrays(n_train=64, n_test=32, seed=0):
    """Random 28x28 uint8 images whose label is readable from a bright pixel (learnable)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        images[np.arange(n), 4 + 2 * labels, 14] = 255
        out[f"{split}-images"], out[f"{split}-labels"] = images, labels
    return out


@dataclass
class TinyDataset:
    """A registered dataset named ``tiny`` with its IDX bytes, gzip bytes and arrays."""

    spec: datasets.DatasetSpec
    arrays: dict
    idx: dict = field(default_factory=dict)  # filename -> IDX bytes
    gz: dict = field(default_factory=dict)  # filename -> gzip bytes

    def write_mirror(self, root: Path) -> Path:
        """Lay out ``root/tiny/<file>`` like a real mirror; return ``root``."""
        (root / "tiny").mkdir(parents=True, exist_ok=True)
        for name, data in self.gz.items():
            (root / "tiny" / name).write_bytes(data)
        return root


@pytest.fixture
def random_checkpoint(tmp_path):
    """An untrained but valid checkpoint: enough to test everything but accuracy."""
    from mnist_mlp import checkpoint, data, model
    from mnist_mlp.config import load_config

    config = load_config(overrides=["model.hidden=[16]"])
    params = model.init_params(model.layer_sizes([16]), "relu", np.random.default_rng(0))
    path = tmp_path / "c.npz"
    checkpoint.save(
        path,
        checkpoint.Checkpoint(
            params, config, {"input": {"scale": data.SCALE, "offset": data.OFFSET}}
        ),
    )
    return path


@pytest.fixture
def tiny(monkeypatch):
    arrays = make_tiny_arrays()
    resources, idx, gz = [], {}, {}
    for key, array in arrays.items():
        split, kind = key.split("-")
        prefix = "train" if split == "train" else "t10k"
        filename = f"{prefix}-{kind}-idx{array.ndim}-ubyte.gz"
        raw = to_idx(array)
        idx[filename], gz[filename] = raw, gzip.compress(raw, mtime=0)
        resources.append(
            datasets.Resource(split, kind, filename, array.shape, hashlib.sha256(raw).hexdigest())
        )
    spec = datasets.DatasetSpec(
        "tiny", tuple(resources), mirrors=(), classes=tuple(str(d) for d in range(10))
    )
    monkeypatch.setitem(datasets.DATASETS, "tiny", spec)
    return TinyDataset(spec, arrays, idx, gz)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.hits.append(self.path)
        route = server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        status, body, headers, stall = route
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if stall:
            time.sleep(stall)
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server:
    """An HTTP server on 127.0.0.1 whose answers each test sets with :meth:`route`."""

    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.routes, self.httpd.hits = {}, []
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @property
    def hits(self) -> list[str]:
        return self.httpd.hits

    def route(self, path, body=b"", status=200, headers=None, stall=0.0):
        self.httpd.routes[path] = (status, body, headers or {}, stall)

    def serve(self, prefix: str, files: dict[str, bytes]):
        for name, data in files.items():
            self.route(f"{prefix}/{name}", data)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory):
    """A cache folder filled once per session from the real mirror, or a skip saying why."""
    if not REAL_MIRROR:
        pytest.skip(
            "real-data test: set MNIST_MLP_MIRROR to a folder or URL holding "
            "mnist/ and fashion-mnist/ (../shared/data), as .ci/run does"
        )
    root = tmp_path_factory.mktemp("real-cache")
    saved = os.environ.get("MNIST_MLP_MIRROR")
    os.environ["MNIST_MLP_MIRROR"] = REAL_MIRROR
    try:
        download.ensure("mnist", root, download.FetchOptions(progress=False))
    finally:
        if saved is None:
            os.environ.pop("MNIST_MLP_MIRROR", None)
    return root


@pytest.fixture
def real_env(real_cache, monkeypatch):
    """The real mirror and the session's real cache, for one test."""
    monkeypatch.setenv("MNIST_MLP_MIRROR", REAL_MIRROR)
    monkeypatch.setenv("MNIST_MLP_HOME", str(real_cache))
    return real_cache


@pytest.fixture
def tiny_as_mnist(tiny, tmp_path, monkeypatch):
    """The tiny dataset served from a folder mirror under the name ``mnist``."""
    spec = datasets.DatasetSpec("mnist", tiny.spec.resources, (), tiny.spec.classes)
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    mirror = tmp_path / "mirror"
    (mirror / "mnist").mkdir(parents=True)
    for name, data in tiny.gz.items():
        (mirror / "mnist" / name).write_bytes(data)
    monkeypatch.setenv("MNIST_MLP_MIRROR", str(mirror))
    monkeypatch.chdir(tmp_path)  # runs/ goes under tmp_path
    return tiny


@pytest.fixture(scope="session")
def smoke_checkpoint(real_cache, tmp_path_factory):
    """A model trained once per session with configs/smoke.yaml on real MNIST."""
    from mnist_mlp import run
    from mnist_mlp.config import load_config

    config = load_config(
        Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml",
        [f"data.dir={real_cache}"],
    )
    folder = tmp_path_factory.mktemp("smoke-run")
    config.output.dir = str(folder)
    run.train_run(config, folder / "smoke", progress=False, echo=lambda line: None)
    return folder / "smoke" / "checkpoint.npz"


@pytest.fixture(scope="session")
def mnist_test(real_cache):
    """MNIST's test images (10000, 28, 28) and labels."""
    return (
        np.load(real_cache / "mnist" / "test-images.npy"),
        np.load(real_cache / "mnist" / "test-labels.npy"),
    )
