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
once, and a body sent without one is counted as it arrives.
"""


import asyncio
import contextlib
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mnist_mlp import __version__, model
from mnist_mlp.errors import MlpError
from mnist_mlp.images import ImageError, ImageTooLarge
from mnist_mlp.predict import Predictor

INSTALL_HINT = "mlp serve needs FastAPI and uvicorn: pip install 'mnist-mlp[serve]'"
MAX_BYTES = 10 * 2**20  # a phone photo is 2-8 MB
MAX_PIXELS = 40_000_000  # 40 megapixels: any phone's photo; decoding more could take ~160 MB each
WEB = Path(__file__).resolve().parent / "web"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8",
          "favicon.svg": "image/svg+xml"}
IMAGE_TYPES = "image/png, image/jpeg, image/gif, image/bmp, image/tiff, image/webp or application/octet-stream"


def _imports():
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise MlpError(INSTALL_HINT) from None


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` (413) before they fill memory."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                return await _send_error(send, 400, "the Content-Length header is not a number")
            if too_large:
                return await _send_error(send, 413, self.message(int(declared)))
        seen = 0
        started = False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await _send_error(send, 413, self.message(seen))

    def message(self, size: int) -> str:
        return (f"the body is {size / 2**20:.1f} MiB or more, over the limit of {self.max_bytes / 2**20:g} MiB; "
                f"send a smaller image")


async def _send_error(send, status: int, message: str) -> None:
    import json

    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def model_info(predictor: Predictor) -> dict:
    """What ``GET /api/model`` says about the checkpoint being served."""
    ckpt = predictor.ckpt
    test = ckpt.meta.get("test") or {}
    dataset = ckpt.meta.get("dataset", {})
    return {"checkpoint": str(predictor.path), "dataset": dataset.get("name"), "digest": dataset.get("digest"),
            "classes": ckpt.classes, "layers": model.layer_sizes(ckpt.config.model.hidden),
            "activation": ckpt.activation, "dropout": ckpt.config.model.dropout,
            "test_accuracy": test.get("accuracy"), "test_images": test.get("n"),
            "epoch": ckpt.meta.get("epoch"), "best": ckpt.meta.get("best"),
            "input": {"scale": ckpt.scaling[0], "offset": ckpt.scaling[1]}, "mnist_mlp_version": __version__}


def answer(predictor: Predictor, body: bytes, top_k: int) -> dict:
    """The prediction for one image's bytes, with the input and its sensitivity (a JSON-able dict).

    Raises
    ------
    ImageError
        If the bytes are not an image, hold no digit, or have too many pixels.
    """
    r = predictor.predict_image(body, "the image", top_k, explain=True, max_pixels=MAX_PIXELS)
    return {"prediction": r.prediction, "label": predictor.ckpt.classes[r.prediction],
            "probability": r.probability, "top_k": r.top_k,
            "input": np.round(r.pixels, 4).tolist(), "sensitivity": _rounded(r.sensitivity).tolist()}


def _rounded(a: np.ndarray, digits: int = 4) -> np.ndarray:
    """``a`` to ``digits`` significant figures of its largest magnitude (a shorter JSON)."""
    peak = float(np.abs(a).max())
    if peak == 0:
        return a.astype(np.float64)
    step = 10.0 ** (np.floor(np.log10(peak)) - digits + 1)
    return np.round(a / step) * step


def create_app(predictor: Predictor, max_bytes: int = MAX_BYTES):
    """The FastAPI application serving ``predictor`` (already loaded, so it is loaded once)."""
    _imports()
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException

    # The CPU work of a request runs on as many threads as there are cores, not on the 40 of
    # the default pool: more threads only contend for the GIL and each makes BLAS allocate
    # buffers of its own (measured: 32 clients on 40 threads, 8 requests/s and a growing RSS).
    workers = ThreadPoolExecutor(max(1, os.cpu_count() or 1), thread_name_prefix="mnist_mlp-predict")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        workers.shutdown(wait=False, cancel_futures=True)

    info = model_info(predictor)
    page = (WEB / "index.html").read_text()
    assets = {name: (WEB / name).read_bytes() for name in ASSETS}
    app = FastAPI(title="mnist_mlp", version=__version__, lifespan=lifespan,
                  description="Classify images of handwritten digits with a NumPy MLP, and see which pixels "
                              "drive each decision (the gradient of the predicted class's score).")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        message = exc.detail if exc.status_code != 404 else f"no such page or API: {request.url.path}"
        return error(exc.status_code, str(message))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", [])[1:]) or "request"
        return error(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return HTMLResponse(page)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in assets:
            raise HTTPException(404)
        return Response(assets[name], media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})

    @app.get("/healthz", summary="Liveness: the model is loaded and the server answers")
    def healthz():
        return {"status": "ok"}

    @app.get("/api/model", summary="The checkpoint being served: dataset, test accuracy, architecture")
    def api_model():
        return info

    @app.post("/api/predict", summary="Classify one image of a digit",
              description=f"Send one image as the raw request body (Content-Type: {IMAGE_TYPES}) or as a "
                          f"multipart/form-data upload (the first file field). It is prepared the way MNIST was "
                          f"made, as `mlp predict` does, so photos and drawings of any size work. The answer "
                          f"holds the prediction, the top_k most likely classes, the 28x28 `input` the network "
                          f"saw (ink 0..1) and the `sensitivity` map: the gradient of the predicted class's "
                          f"logit with respect to each input pixel. Bodies over {max_bytes / 2**20:g} MiB are "
                          f"refused (413).",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "image/png": {"schema": {"type": "string", "format": "binary"}},
                  "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                  "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "file": {"type": "string", "format": "binary"}}}}}}},
              responses={400: {"description": "empty or malformed body"}, 413: {"description": "body too large"},
                         415: {"description": "not an image type"},
                         422: {"description": "not a readable image, or no digit in it"}})
    async def api_predict(request: Request, top_k: int = Query(3, ge=1, le=10, description="how many classes")):
        body = await _image_bytes(request)
        try:
            result = await asyncio.get_running_loop().run_in_executor(workers, answer, predictor, body, top_k)
        except ImageTooLarge as exc:
            return error(413, str(exc))
        except ImageError as exc:
            return error(422, str(exc))
        return JSONResponse(result)

    async def _image_bytes(request: Request) -> bytes:
        kind = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            return await _upload(request)
        if kind == "image/svg+xml":
            raise HTTPException(415, "SVG is a vector format the network cannot read; send a PNG or JPEG "
                                     "(a screenshot of it will do)")
        if not (kind.startswith("image/") or kind in ("application/octet-stream", "")):
            curl = (" (curl sends that for --data-binary: add -H 'Content-Type: image/png')"
                    if kind == "application/x-www-form-urlencoded" else "")
            raise HTTPException(415, f"Content-Type {kind} is not an image{curl}; send {IMAGE_TYPES}, or a "
                                     f"multipart/form-data upload")
        body = await request.body()
        if not body:
            raise HTTPException(400, "the body is empty; send the bytes of an image")
        return body

    async def _upload(request: Request) -> bytes:
        from starlette.datastructures import UploadFile

        try:
            form = await request.form(max_files=1, max_fields=10)
        except HTTPException as exc:  # Starlette's word for python-multipart's errors
            raise HTTPException(400, f"malformed multipart body: {str(exc.detail).rstrip('.')}") from None
        try:
            files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
            if not files:
                raise HTTPException(400, "the multipart body holds no file; send the image in a file field "
                                         "(e.g. curl -F file=@digit.png)")
            body = await files[0].read()
        finally:
            await form.close()
        if not body:
            raise HTTPException(400, "the uploaded file is empty")
        return body

    app.add_middleware(BodyLimit, max_bytes=max_bytes)
    return app


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: any free one), or an MlpError saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise MlpError(f"--host {host}: not an address this machine knows ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        hint = "; another server is using it: choose another with --port" if exc.errno in (98, 48) else ""
        raise MlpError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(checkpoint: str | os.PathLike | None, host: str = "127.0.0.1", port: int = 8000,
          max_bytes: int = MAX_BYTES, echo=print) -> None:
    """Load the checkpoint, bind, print the URL, and serve until Ctrl-C (then return)."""
    _imports()
    import uvicorn

    predictor = Predictor(checkpoint)
    app = create_app(predictor, max_bytes)
    sock = listen(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5))
    echo(f"serving {predictor.path} at {url_of(sock)} (API docs at {url_of(sock)}docs); Ctrl-C stops")
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then raises the Ctrl-C it caught again
        pass
    finally:
        sock.close()
    echo("stopped")
