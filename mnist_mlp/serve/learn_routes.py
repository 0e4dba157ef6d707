"""The Learn page and its JSON API (:mod:`mnist_mlp.learn` on the web).

``app.state.sessions`` (a :class:`mnist_mlp.learn.Sessions`) holds the sessions and
``app.state.workers`` runs their CPU work, as for the drawing page's predictions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import typing
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from starlette.exceptions import HTTPException

from mnist_mlp import images
from mnist_mlp.learn import (
    IDLE_SECONDS,
    MAX_SESSIONS,
    MAX_STEPS,
    UNHEARD_SECONDS,
    LearnConfig,
    LearnError,
    Session,
    TooManySessions,
    wire,
)
from mnist_mlp.rules import OneOf, Sizes
from mnist_mlp.serve.limits import MAX_PIXELS
from mnist_mlp.serve.routes import read_upload

router = APIRouter()
IDLE = f"{IDLE_SECONDS / 60:g}"  # minutes

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed body"},
    404: {"description": f"no such session (closed, or dropped after {IDLE} idle minutes)"},
    422: {"description": "a setting or value breaks its rule"},
}


def _integral(value: Any) -> Any:
    """JSON's 2.0 is an integer (as JSON Schema has it); true and "2" are not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Int = Annotated[int, BeforeValidator(_integral)]


def _field(rule: Any, hint: Any) -> Any:
    """The pydantic type of one setting: its JSON type, bounded as its rule says."""
    if isinstance(rule, OneOf):
        return Literal[rule.choices]
    if isinstance(rule, Sizes):
        size = Annotated[int, Field(**rule.each.schema()), BeforeValidator(_integral)]
        return Annotated[list[size], Field(**rule.schema())]
    if hint is int:
        return Annotated[int, Field(**rule.schema()), BeforeValidator(_integral)]
    return Annotated[float, Field(**rule.schema())]


def _settings_model() -> type[BaseModel]:
    """The settings' schema, made from :class:`mnist_mlp.learn.LearnConfig`'s rules (the one
    place they are written), every one optional; the rule in words as its description."""
    hints = typing.get_type_hints(LearnConfig)
    fields: dict[str, Any] = {
        f.name: (
            _field(f.metadata["rule"], hints[f.name]) | None,
            Field(None, description=f"must {f.metadata['rule'].text}"),
        )
        for f in dataclasses.fields(LearnConfig)
    }
    return create_model(
        "Settings",
        __config__=ConfigDict(extra="forbid", strict=True),  # true is no seed, "1" no lr
        __doc__="A session's settings; every one optional (the default net: 784-16-10, sigmoid).",
        **fields,
    )


Settings = _settings_model()
RULE_WORDS = {f.name: f.metadata["rule"].text for f in dataclasses.fields(LearnConfig)}


class Steps(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    steps: Annotated[int, Field(ge=1, le=MAX_STEPS), BeforeValidator(_integral)] = Field(
        1, description="SGD steps to take, one batch each"
    )


class GradCheck(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    param: str = Field(..., description="W1, b1, W2, ...", examples=["W2"])
    index: list[Int] = Field(
        ..., description="[j, k] for a weight, [k] for a bias", examples=[[3, 4]]
    )


def _sessions(request: Request):
    return request.app.state.sessions


async def _run(request: Request, function, *args):
    """``function(*args)`` on the CPU workers; a session's own mistake becomes its 4xx."""
    try:
        return await asyncio.get_running_loop().run_in_executor(
            request.app.state.workers, function, *args
        )
    except TooManySessions as exc:
        raise HTTPException(429, str(exc)) from None
    except LearnError as exc:
        raise HTTPException(422, str(exc)) from None


def _session(request: Request, key: str) -> Session:
    try:
        return _sessions(request).get(key)
    except KeyError:
        raise HTTPException(
            404,
            f"no learning session {key} (closed, or dropped after {IDLE} idle minutes); start one: "
            f"POST /api/learn",
        ) from None


Compact = Annotated[
    bool,
    Query(
        description="the weights as float64 bytes in base64, and no per-digit weight gradients "
        "(each is its input's activation times the sensitivity at its end): about 4x smaller"
    ),
]


def _state(session: Session, compact: bool, action=None, *args) -> bytes:
    """Do ``action`` under the session's lock, then its state as JSON bytes."""
    with session.lock:
        if action is not None:
            action(*args)
        return wire.dumps(session.state(compact))


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


# The two bodies /follow takes, for the API's schema (the route reads the body itself).
FOLLOW_BODY = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"index": {"type": "integer"}},
                    "required": ["index"],
                }
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "label": {"type": "integer"},
                    },
                    "required": ["file", "label"],
                }
            },
        }
    }
}


@router.get("/learn", response_class=HTMLResponse, include_in_schema=False)
def learn_page(request: Request):
    return HTMLResponse(request.app.state.learn_page)


@router.post(
    "/api/learn",
    status_code=201,
    summary="Start a learning session",
    description="A new net from random weights (seeded), with its state: weights, the "
    "last batch, the curves and a followed training digit carried forward and back. At "
    f"most {MAX_SESSIONS} sessions at once (429 beyond); an idle one is dropped after {IDLE} "
    "minutes.",
    responses={**ERRORS, 429: {"description": "every place for a session is taken"}},
)
async def create(request: Request, settings: Settings | None = None, compact: Compact = False):  # type: ignore[valid-type]
    values: dict[str, Any] = settings.model_dump() if settings is not None else {}

    def start() -> bytes:
        session = _sessions(request).create(LearnConfig.from_dict(values))
        return _state(session, compact)

    return _json(await _run(request, start), 201)


@router.get("/api/learn/{key}", summary="A session's state", responses=ERRORS)
async def get_state(key: str, request: Request, compact: Compact = False):
    session = _session(request, key)
    return _json(await _run(request, _state, session, compact))


@router.delete("/api/learn/{key}", status_code=204, summary="Close a session", responses=ERRORS)
def delete(key: str, request: Request):
    try:
        _sessions(request).delete(key)
    except KeyError:
        raise HTTPException(
            404, f"no learning session {key} (closed, or dropped after {IDLE} idle minutes)"
        ) from None
    return Response(status_code=204)


@router.post(
    "/api/learn/{key}/step", summary="Train: take SGD steps, one batch each", responses=ERRORS
)
async def step(key: str, request: Request, body: Steps | None = None, compact: Compact = False):
    session = _session(request, key)
    steps = body.steps if body is not None else 1
    return _json(await _run(request, _state, session, compact, session.advance, steps))


@router.post(
    "/api/learn/{key}/follow",
    summary="Follow a digit through the net",
    description='JSON `{"index": i}`: training digit i (0..59999, in the file\'s order). '
    "Or a multipart/form-data upload: an image in the first file field and its `label` "
    "(0-9), prepared as `mlp predict` prepares images.",
    openapi_extra=FOLLOW_BODY,
    responses={
        **ERRORS,
        413: {"description": "image too large"},
        415: {"description": "not JSON, an image upload"},
    },
)
async def follow(key: str, request: Request, compact: Compact = False):
    session = _session(request, key)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        body, label = await _image_and_label(request)

        def prepared():
            try:
                pixels = images.prepare(body, "the image", max_pixels=MAX_PIXELS).pixels * 255.0
            except images.ImageError as exc:
                raise LearnError(str(exc)) from None
            return _state(session, compact, session.follow, None, pixels, label)

        return _json(await _run(request, prepared))
    if kind not in ("application/json", ""):
        raise HTTPException(
            415,
            f'Content-Type {kind} is neither application/json ({{"index": i}}) '
            f"nor a multipart/form-data image upload",
        )
    values = await _json_body(request)
    if set(values) != {"index"}:
        raise HTTPException(
            422,
            'the body must be {"index": i}, a training digit (or upload an image with its label)',
        )
    return _json(await _run(request, _state, session, compact, session.follow, values["index"]))


@router.post(
    "/api/learn/{key}/follow/step",
    summary="One SGD step on the followed digit alone",
    description="Plain SGD on the followed digit only: every parameter moves by -lr x its "
    "gradient for this digit's loss, and each weight also by -lr x l2 x itself (the L2 term); "
    "no momentum. The state that comes back carries `last_update`: the lr and l2 used, the "
    "digit's loss and probabilities before and after, the gradients and the parameters before, "
    "so that any weight's change can be checked by hand.",
    responses=ERRORS,
)
async def follow_step(key: str, request: Request, compact: Compact = False):
    session = _session(request, key)
    return _json(await _run(request, _state, session, compact, session.step_on_followed))


@router.post(
    "/api/learn/{key}/heartbeat",
    status_code=204,
    summary="Keep a session alive",
    description=f"The page sends one every 20 s while it is open. When all {MAX_SESSIONS} places "
    f"are taken, a session unheard from for {UNHEARD_SECONDS} s is the first closed to make room.",
    responses=ERRORS,
)
def heartbeat(key: str, request: Request):
    _session(request, key)  # being asked for is being heard from
    return Response(status_code=204)


@router.post(
    "/api/learn/{key}/gradcheck",
    summary="Check one gradient against finite differences",
    description="Backprop's gradient of the followed digit's loss with respect to one "
    "parameter, beside a finite-difference estimate computed in float64, and their "
    "relative error.",
    responses=ERRORS,
)
async def gradcheck(key: str, body: GradCheck, request: Request):
    session = _session(request, key)

    def check() -> dict[str, Any]:
        with session.lock:
            return session.gradcheck(body.param, body.index)

    return JSONResponse(await _run(request, check))


async def _json_body(request: Request) -> dict:
    raw = await request.body()
    try:
        values = json.loads(raw or b"{}")
    except ValueError:
        raise HTTPException(400, "the body is not valid JSON") from None
    if not isinstance(values, dict):
        raise HTTPException(422, "the body must be a JSON object")
    return values


async def _image_and_label(request: Request) -> tuple[bytes, int]:
    body, fields = await read_upload(
        request, 422, "the upload holds no image; send it in a file field with a label"
    )
    text = fields.get("label")
    if not isinstance(text, str) or not text.strip().isdigit() or not 0 <= int(text) <= 9:
        raise HTTPException(422, f"label must be the digit drawn, 0 to 9, got {text!r}")
    return body, int(text)
