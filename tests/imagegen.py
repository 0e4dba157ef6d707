"""Images of digits as users make them, for testing ``mlp predict``.

- :func:`photo_like`: an MNIST digit as a phone photo of ink on paper would show it.
- :func:`drawn`: a digit drawn with a pen stroke of any width on a large canvas.
- :func:`font_digit`: a digit rendered from a TrueType font.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont


def photo_like(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Dark ink on light, unevenly lit, noisy paper; 5-15x larger; off-centre; RGB; JPEG.

    Parameters
    ----------
    digit : ndarray of shape (28, 28), uint8
        MNIST's white-on-black pixels.
    """
    scale = rng.uniform(5, 15)
    size = round(28 * scale)
    ink = (
        np.asarray(
            Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC), np.float32
        )
        / 255
    )
    ink = np.clip(ink, 0, 1)
    height, width = (int(size * rng.uniform(1.15, 1.8)) for _ in range(2))
    top, left = rng.integers(0, height - size + 1), rng.integers(0, width - size + 1)
    canvas_ink = np.zeros((height, width), np.float32)
    canvas_ink[top : top + size, left : left + size] = ink
    # Paper: a base level with a lighting gradient in a random direction and some blotches.
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.cos(angle) * xx / width + np.sin(angle) * yy / height
    paper = rng.uniform(0.6, 0.9) + rng.uniform(0.05, 0.2) * (ramp - ramp.mean())
    blotch = rng.normal(0, 1, (6, 6)).astype(np.float32)
    blotch = np.asarray(
        Image.fromarray(blotch, "F").resize((width, height), Image.Resampling.BICUBIC)
    )
    paper = paper + 0.025 * blotch
    # warm paper
    tint = np.array([1.0, rng.uniform(0.95, 1.0), rng.uniform(0.85, 0.98)], np.float32)
    pen = rng.choice(
        [np.array([0.08, 0.08, 0.1]), np.array([0.1, 0.12, 0.4]), np.array([0.25, 0.22, 0.2])]
    )
    pen = pen.astype(np.float32) * rng.uniform(0.6, 1.2)
    strength = rng.uniform(0.75, 1.0)  # ink never quite as dark as the pen
    a = (canvas_ink * strength)[..., None]
    rgb = paper[..., None] * tint * (1 - a) + pen * a
    rgb += rng.normal(0, rng.uniform(0.01, 0.03), rgb.shape).astype(np.float32)
    image = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))  # a slightly soft lens
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=int(rng.integers(60, 92)))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _arc(cx, cy, rx, ry, start, end, n=24):
    t = np.linspace(math.radians(start), math.radians(end), n)
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))


# Strokes of each digit in a unit box (x right, y down), as a handwriting teacher draws them.
STROKES = {
    0: [_arc(0.5, 0.5, 0.32, 0.45, 0, 360, 40)],
    1: [[(0.38, 0.2), (0.55, 0.05), (0.55, 0.95)]],
    2: [[*_arc(0.5, 0.3, 0.3, 0.25, 200, 380), (0.2, 0.95), (0.85, 0.95)]],
    3: [_arc(0.48, 0.28, 0.28, 0.23, 200, 450), _arc(0.48, 0.72, 0.32, 0.25, 270, 520)],
    4: [[(0.6, 0.05), (0.15, 0.65), (0.85, 0.65)], [(0.62, 0.3), (0.62, 0.95)]],
    5: [[(0.8, 0.05), (0.3, 0.05), (0.25, 0.45), *_arc(0.48, 0.67, 0.32, 0.28, 230, 500)]],
    6: [[(0.7, 0.05), *_arc(0.5, 0.68, 0.3, 0.28, 200, 560)]],
    7: [[(0.15, 0.08), (0.85, 0.08), (0.4, 0.95)]],
    8: [_arc(0.5, 0.27, 0.24, 0.22, 90, 450), _arc(0.5, 0.72, 0.3, 0.24, -90, 270)],
    9: [_arc(0.5, 0.32, 0.28, 0.27, 0, 360), [(0.78, 0.32), (0.72, 0.95)]],
}


def drawn(
    digit: int,
    width: int,
    canvas: int = 1000,
    rng: np.random.Generator | None = None,
    dark_on_light: bool = True,
) -> Image.Image:
    """A digit drawn with a pen of ``width`` px on a square canvas, as a drawing app saves it."""
    rng = rng or np.random.default_rng(digit)
    fill, paper = (0, 255) if dark_on_light else (255, 0)
    image = Image.new("L", (canvas, canvas), paper)
    draw = ImageDraw.Draw(image)
    box = canvas * rng.uniform(0.45, 0.75)
    x0, y0 = (
        rng.uniform(0.05, 0.95 - box / canvas) * canvas,
        rng.uniform(0.05, 0.95 - box / canvas) * canvas,
    )
    slant = rng.uniform(-0.15, 0.15)
    for stroke in STROKES[digit]:
        points = [(x0 + box * (0.8 * x + slant * (1 - y)), y0 + box * y) for x, y in stroke]
        draw.line(points, fill=fill, width=width, joint="curve")
        r = width / 2
        for x, y in (points[0], points[-1]):  # round pen tips
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    return image


FONTS = sorted(
    str(p)
    for p in Path("/usr/share/fonts").rglob("DejaVu*.ttf")
    if "Oblique" not in p.name and "Italic" not in p.name and "ExtraLight" not in p.name
)


def font_digit(digit: int, font_path: str, canvas: int = 600) -> Image.Image:
    """Black ``digit`` in ``font_path`` on a white canvas."""
    image = Image.new("L", (canvas, canvas), 255)
    font = ImageFont.truetype(font_path, int(canvas * 0.6))
    ImageDraw.Draw(image).text((canvas / 2, canvas / 2), str(digit), fill=0, font=font, anchor="mm")
    return image


def on_ruled_paper(
    image: Image.Image,
    spacing: int = 60,
    rng: np.random.Generator | None = None,
    colour=(90, 110, 200),
) -> Image.Image:
    """``image`` (dark ink on white) as if written on ruled notebook paper: blue lines."""
    rng = rng or np.random.default_rng(0)
    rgb = np.asarray(image.convert("RGB"), np.float32)
    lines = np.zeros(rgb.shape[:2], np.float32)
    offset = int(rng.integers(0, spacing))
    for y in range(offset, rgb.shape[0], spacing):
        lines[y : y + 3] = 1
    line_colour = np.array(colour, np.float32)
    out = rgb * (1 - lines[..., None]) + np.minimum(rgb, line_colour) * lines[..., None]
    return Image.fromarray(out.astype(np.uint8), "RGB")


def mnist_like(rng: np.random.Generator, n: int, blank_share: float) -> np.ndarray:
    """uint8 images (n, 784) in which about ``blank_share`` of the columns are 0 in every image."""
    images = np.zeros((n, 784), np.uint8)
    inked = rng.choice(784, round((1 - blank_share) * 784), replace=False)
    ink = rng.integers(1, 256, (n, len(inked))) * (rng.random((n, len(inked))) < 0.4)
    ink[0] = rng.integers(1, 256, len(inked))  # every chosen column inked in some image
    images[:, inked] = ink
    return images
