"""What every answer carries, and HEAD for every GET (ASGI middleware, no FastAPI needed).

The pages are meant to be served to a room (a teacher's laptop, a classroom's network), so
each answer says what a browser may do with it: our pages load only their own scripts, styles
and images (no inline script), may not be framed by another site, and leak no address in the
Referer; no answer is sniffed as another type. The API's ``/docs`` and ``/redoc`` pages load
their scripts from this server too (:mod:`mnist_mlp.serve.docs`), with inline styles allowed.

HEAD (what ``curl -I`` and uptime monitors send) is answered on every GET route, with the GET's
headers and no body, as RFC 9110 asks.
"""

from __future__ import annotations

PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# Swagger UI and ReDoc set styles from their scripts, and ReDoc reads the API in a worker it
# makes from a blob: both allowed on these two pages; scripts still only from this server.
DOCS_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; font-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """ASGI middleware: the headers above on every answer; HEAD served as a body-less GET."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        head = scope["method"] == "HEAD"
        if head:
            scope = {**scope, "method": "GET"}
        docs = scope["path"] in ("/docs", "/redoc") or scope["path"].startswith("/docs/")
        policy = (DOCS_POLICY if docs else PAGE_POLICY).encode()

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = [(k, v) for k, v in COMMON if k not in names]
                if b"content-security-policy" not in names:
                    extra.append((b"content-security-policy", policy))
                message = {**message, "headers": [*headers, *extra]}
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app(scope, receive, send_with_headers)
