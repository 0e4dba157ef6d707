"""The server's routes: the page, its assets, the health check and the JSON API.

They read what the application shares from ``request.app.state`` (set by
:func:`mnist_mlp.serve.create_app`): ``predictor``, ``info``, ``page``, ``assets`` and
``workers``, the threads the CPU work runs on.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from mnist_mlp.errors import one_line
from mnist_mlp.images import ImageError, ImageTooLarge
from mnist_mlp.serve.answers import answer
from mnist_mlp.serve.assets import ASSETS, IMAGE_TYPES
from mnist_mlp.serve.limits import MAX_BYTES

router = APIRouter()  # the drawing page and its API: served with a checkpoint
common = APIRouter()  # the assets and the health check: always


def error(status: int, message: str) -> JSONResponse:
    """The body of every refusal: ``{"error": "<one readable line>"}``."""
    return JSONResponse({"error": message}, status_code=status)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    # no route at all, as opposed to our own 404s, which say what is missing
    default = exc.status_code == 404 and exc.detail == "Not Found"
    message = f"no such page or API: {request.url.path}" if default else exc.detail
    response = error(exc.status_code, str(message))
    if exc.headers:
        response.headers.update(exc.headers)
    if exc.status_code == 405:  # every method of the path, not only its first route's (RFC 9110)
        response.headers["Allow"] = ", ".join(_methods(request))
    return response


def _methods(request: Request) -> list[str]:
    """The methods some route of the app answers at this request's path (HEAD where GET is)."""
    from starlette.routing import Match

    def answers(method: str) -> bool:
        scope = {**request.scope, "method": method}
        return any(route.matches(scope)[0] == Match.FULL for route in request.app.routes)

    methods = [m for m in ("GET", "POST", "PUT", "PATCH", "DELETE") if answers(m)]
    if "GET" in methods:
        methods.insert(1, "HEAD")
    return methods


async def invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    loc = first.get("loc", [])
    # a Learn setting is said by its rule, with the whole value sent ("hidden must be one or
    # two layer sizes from 1 to 64, got ['sixteen']"), not by the part pydantic tripped on
    rules = getattr(request.app.state, "setting_rules", {})
    body = getattr(exc, "body", None)
    settings = request.url.path.rstrip("/") == "/api/learn"
    if (
        settings
        and isinstance(body, dict)
        and len(loc) >= 2
        and loc[0] == "body"
        and loc[1] in rules
    ):
        got = f", got {body[loc[1]]!r}" if loc[1] in body else ""
        return error(422, one_line(f"{loc[1]} must {rules[loc[1]]}{got}")[:500])
    where = ".".join(str(p) for p in loc[1:]) or "request"
    got = f", got {first['input']!r}" if "input" in first and first["type"] != "missing" else ""
    return error(422, one_line(f"{where}: {first.get('msg', 'invalid')}{got}")[:500])


def add_error_handlers(app: FastAPI) -> None:
    """Make FastAPI's own refusals (404, 405, validation) one-line JSON errors too."""
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index(request: Request):
    return HTMLResponse(request.app.state.page)


@common.get("/static/{name}", include_in_schema=False)
def static(name: str, request: Request):
    assets = request.app.state.assets
    if name not in assets:
        raise HTTPException(404)
    return Response(assets[name], media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})


@common.get("/healthz", summary="Liveness: the server answers")
def healthz():
    return {"status": "ok"}


@router.get(
    "/api/model", summary="The checkpoint being served: dataset, test accuracy, architecture"
)
def api_model(request: Request):
    return request.app.state.info


@router.post(
    "/api/predict",
    summary="Classify one image of a digit",
    description=f"Send one image as the raw request body (Content-Type: {IMAGE_TYPES}) or as a "
    f"multipart/form-data upload (the first file field). It is prepared the way MNIST was "
    f"made, as `mlp predict` does, so photos and drawings of any size work. The answer "
    f"holds the prediction, the top_k most likely classes, the 28x28 `input` the network "
    f"saw (ink 0..1) and the `sensitivity` map: the gradient of the predicted class's "
    f"logit with respect to each input pixel. Bodies over the server's limit "
    f"({MAX_BYTES / 2**20:g} MiB unless it was started with another) are refused (413).",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                },
            },
        }
    },
    responses={
        400: {"description": "empty or malformed body"},
        413: {"description": "body too large"},
        415: {"description": "not an image type"},
        422: {"description": "not a readable image, or no digit in it"},
    },
)
async def api_predict(
    request: Request, top_k: int = Query(3, ge=1, le=10, description="how many classes")
):
    body = await _image_bytes(request)
    state = request.app.state
    try:
        result = await asyncio.get_running_loop().run_in_executor(
            state.workers, answer, state.predictor, body, top_k
        )
    except ImageTooLarge as exc:
        return error(413, str(exc))
    except ImageError as exc:
        return error(422, str(exc))
    return JSONResponse(result)


async def _image_bytes(request: Request) -> bytes:
    kind = (
        request.headers.get("content-type", "application/octet-stream")
        .split(";")[0]
        .strip()
        .lower()
    )
    if kind == "multipart/form-data":
        return await _upload(request)
    if kind == "image/svg+xml":
        raise HTTPException(
            415,
            "SVG is a vector format the network cannot read; send a PNG or JPEG "
            "(a screenshot of it will do)",
        )
    if not (kind.startswith("image/") or kind in ("application/octet-stream", "")):
        curl = (
            " (curl sends that for --data-binary: add -H 'Content-Type: image/png')"
            if kind == "application/x-www-form-urlencoded"
            else ""
        )
        raise HTTPException(
            415,
            f"Content-Type {kind} is not an image{curl}; send {IMAGE_TYPES}, or a "
            f"multipart/form-data upload",
        )
    body = await request.body()
    if not body:
        raise HTTPException(400, "the body is empty; send the bytes of an image")
    return body


async def _upload(request: Request) -> bytes:
    body, _ = await read_upload(
        request,
        400,
        "the multipart body holds no file; send the image in a file field "
        "(e.g. curl -F file=@digit.png)",
    )
    return body


async def read_upload(request: Request, missing: int, why: str) -> tuple[bytes, dict[str, str]]:
    """The first file of a multipart body and its text fields; refusals as one-line 4xx:
    a malformed body (400), no file (``missing``, saying ``why``), an empty file (400)."""
    from starlette.datastructures import UploadFile

    try:
        form = await request.form(max_files=1, max_fields=10)
    except HTTPException as exc:  # Starlette's word for python-multipart's errors
        raise HTTPException(
            400, f"malformed multipart body: {str(exc.detail).rstrip('.')}"
        ) from None
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise HTTPException(missing, why)
        body = await files[0].read()
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    finally:
        await form.close()
    if not body:
        raise HTTPException(400, "the uploaded file is empty")
    return body, fields
