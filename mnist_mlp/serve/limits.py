"""Request bodies limited before they are read into memory (ASGI middleware, no FastAPI needed)."""

from __future__ import annotations

import json

MAX_BYTES = 10 * 2**20  # a phone photo is 2-8 MB
MAX_PIXELS = 40_000_000  # 40 megapixels: any phone's photo; decoding more could take ~160 MB each


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
        return (
            f"the body is {size / 2**20:.1f} MiB or more, over the limit of "
            f"{self.max_bytes / 2**20:g} MiB; "
            f"send a smaller image"
        )


async def _send_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
