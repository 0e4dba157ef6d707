"""``mlp serve``: a page to draw digits on and watch the network decide, and a JSON API.

Built on FastAPI (OpenAPI at ``/docs`` for free) and uvicorn, the optional ``serve`` extra
(``pip install 'mnist-mlp[serve]'``). The checkpoint is loaded once, before the socket opens,
so a bad checkpoint is a one-line error rather than a server that fails on every request.

Routes:

- ``GET /``: the page (``mnist_mlp/web/``: plain HTML, CSS and JavaScript, nothing fetched
  from elsewhere); ``GET /static/<name>``: its assets, looked up by name in a fixed table, so
  no path a request names can reach any other file;
- ``POST /api/predict``: one image (the raw bytes, or a multipart upload) -> the prediction,
  the probabilities, the 28x28 input the network saw and its sensitivity map;
- ``GET /api/model``: the checkpoint's metadata; ``GET /healthz``: liveness.

Every refusal is a 4xx JSON body ``{"error": "<one readable line>"}``. Request bodies are
limited before they are read into memory: a ``Content-Length`` over the limit is refused at
once, and a body sent without one is counted as it arrives (:mod:`mnist_mlp.serve.limits`).
The routes are in :mod:`mnist_mlp.serve.routes`.
"""

from __future__ import annotations

import contextlib
import os
import socket
from concurrent.futures import ThreadPoolExecutor

from mnist_mlp import __version__
from mnist_mlp.errors import MlpError
from mnist_mlp.predict import Predictor
from mnist_mlp.serve.answers import model_info
from mnist_mlp.serve.assets import ASSETS, WEB
from mnist_mlp.serve.limits import MAX_BYTES

INSTALL_HINT = (
    "mlp serve needs FastAPI, uvicorn and fastapi-offline: pip install 'mnist-mlp[serve]'"
)


def _imports():
    try:
        import fastapi  # noqa: F401
        import fastapi_offline  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise MlpError(INSTALL_HINT) from None


def create_app(predictor: Predictor | None, max_bytes: int = MAX_BYTES, sessions=None):
    """The FastAPI application: the drawing page serving ``predictor`` (already loaded, so it is
    loaded once), and the Learn page.

    The routes are :mod:`mnist_mlp.serve.routes` and :mod:`mnist_mlp.serve.learn_routes`; what
    they share (the predictor, the learning sessions, the pages, the worker threads) lives in
    ``app.state``. Without a predictor (``mlp learn``) only the Learn page is served, and ``/``
    leads to it.

    Parameters
    ----------
    predictor : Predictor or None
    max_bytes : int
        The largest request body.
    sessions : mnist_mlp.learn.Sessions, optional
        Where the learning sessions live (a new, empty one by default).
    """
    _imports()
    from fastapi import FastAPI
    from fastapi.responses import RedirectResponse

    from mnist_mlp.learn import Sessions
    from mnist_mlp.serve import docs, learn_routes, oip, routes
    from mnist_mlp.serve.headers import SecurityHeaders
    from mnist_mlp.serve.limits import BodyLimit

    # The CPU work of a request runs on as many threads as there are cores, not on the 40 of
    # the default pool: more threads only contend for the GIL and each makes BLAS allocate
    # buffers of its own (measured: 32 clients on 40 threads, 8 requests/s and a growing RSS).
    def pool() -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max(1, os.cpu_count() or 1), thread_name_prefix="mnist_mlp-work")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        # a pool of its own for each time the app is started (a test client may start it twice)
        app.state.workers = pool()
        yield
        app.state.workers.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="mnist_mlp",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # served from the package's own files: mnist_mlp.serve.docs
        redoc_url=None,
        description="Classify images of handwritten digits with a NumPy MLP, and see which pixels "
        "drive each decision (the gradient of the predicted class's score).",
    )
    app.state.predictor, app.state.workers = (
        predictor,
        pool(),
    )  # (also when called without lifespan)
    app.state.sessions = sessions if sessions is not None else Sessions()
    app.state.learn_page = (WEB / "learn.html").read_text()
    app.state.assets = {name: (WEB / name).read_bytes() for name in ASSETS}
    routes.add_error_handlers(app)
    app.state.docs_assets = {}
    app.state.setting_rules = learn_routes.RULE_WORDS
    app.include_router(routes.common)
    app.include_router(docs.router)
    app.include_router(learn_routes.router)
    if predictor is not None:
        # the Learn page links to the drawing page only where there is one
        app.state.learn_page = app.state.learn_page.replace(
            '<a id="draw-link" href="/" hidden>', '<a id="draw-link" href="/">'
        )
        app.state.info = model_info(predictor)
        app.state.page = (WEB / "index.html").read_text()
        app.include_router(routes.router)
        app.include_router(oip.router)
    else:
        app.add_api_route("/", lambda: RedirectResponse("/learn"), include_in_schema=False)
    app.add_middleware(BodyLimit, max_bytes=max_bytes)
    app.add_middleware(SecurityHeaders)
    return app


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: any free one), or an MlpError saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise MlpError(
            f"--host {host}: not an address this machine knows ({exc.strerror})"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        hint = (
            "; another server is using it: choose another with --port"
            if exc.errno in (98, 48)
            else ""
        )
        raise MlpError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(
    checkpoint: str | os.PathLike | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_bytes: int = MAX_BYTES,
    echo=print,
    learn_only: bool = False,
) -> None:
    """Load the checkpoint, bind, print the URL, and serve until Ctrl-C (then return).

    ``learn_only`` (``mlp learn``): no checkpoint, only the Learn page; MNIST's training digits
    are loaded (downloaded if need be) before the socket opens.
    """
    _imports()
    import uvicorn

    from mnist_mlp.learn import Digits, Sessions

    predictor = None if learn_only else Predictor(checkpoint)
    sessions = Sessions(Digits.load()) if learn_only else None
    app = create_app(predictor, max_bytes, sessions)
    sock = listen(host, port)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    )
    url = url_of(sock)
    if host not in ("127.0.0.1", "localhost", "::1"):
        echo(
            f"--host {host}: the page is reachable from the network, by anyone who can reach this "
            f"machine on port {sock.getsockname()[1]}"
        )
    if predictor is None:
        echo(f"the Learn page is at {url}learn (API docs at {url}docs); Ctrl-C stops")
    else:
        echo(
            f"serving {predictor.path} at {url} (the Learn page at {url}learn, API docs at "
            f"{url}docs); Ctrl-C stops"
        )
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn shuts down gracefully, then raises the Ctrl-C it caught again
    finally:
        sock.close()
    echo("stopped")
