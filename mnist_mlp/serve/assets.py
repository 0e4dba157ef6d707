"""The pages' files, served by name from a fixed table (no path a request names reaches any other
file), and the image types the API takes."""

from __future__ import annotations

from pathlib import Path

WEB = Path(__file__).resolve().parent.parent / "web"
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "learn.js": "text/javascript; charset=utf-8",
    "docs.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "learn.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
IMAGE_TYPES = (
    "image/png, image/jpeg, image/gif, image/bmp, image/tiff, image/webp "
    "or application/octet-stream"
)
