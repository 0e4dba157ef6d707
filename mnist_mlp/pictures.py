"""Pictures of digits, drawn with Pillow alone: grids of 28x28 images with captions.

Used by ``mlp report`` (the most confidently wrong test digits) and ``mlp augment-preview``
(originals beside their distortions).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

INK = (20, 20, 20)
PAPER = (255, 255, 255)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the small bitmap font
        return ImageFont.load_default()


def digit_grid(rows: list[list[np.ndarray]], captions: list[list[str]] | None = None,
               row_labels: list[str] | None = None, scale: int = 3, title: str | None = None) -> Image.Image:
    """Lay out digits in a grid, each under an optional caption.

    Parameters
    ----------
    rows : list of lists of ndarray of shape (28, 28)
        uint8 (0-255) or float (0-1), white ink on black as in MNIST; shown black on white.
    captions : list of lists of str, optional
        One caption per digit (may contain a newline).
    row_labels : list of str, optional
        A label left of each row.
    scale : int
        Pixels per MNIST pixel.
    title : str, optional
    """
    cell = 28 * scale
    pad = 8
    font, small = _font(15), _font(12)
    caption_lines = max((c.count("\n") + 1 for row in (captions or []) for c in row), default=0)
    caption_h = caption_lines * 15 + (4 if caption_lines else 0)
    label_w = (max(int(small.getlength(t)) for t in row_labels) + pad) if row_labels else 0
    title_h = 28 if title else 0
    n_cols = max(len(r) for r in rows)
    width = label_w + pad + n_cols * (cell + pad)
    height = title_h + pad + len(rows) * (cell + caption_h + pad)
    image = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((pad, 6), title, fill=INK, font=font)
    for r, row in enumerate(rows):
        top = title_h + pad + r * (cell + caption_h + pad)
        if row_labels:
            draw.text((pad, top + cell // 2), row_labels[r], fill=INK, font=small, anchor="lm")
        for c, digit in enumerate(row):
            left = label_w + pad + c * (cell + pad)
            pixels = np.asarray(digit, np.float32)
            if pixels.max() > 1.0:
                pixels = pixels / 255
            tile = Image.fromarray((255 * (1 - np.clip(pixels, 0, 1))).astype(np.uint8), "L")
            image.paste(tile.resize((cell, cell), Image.Resampling.NEAREST).convert("RGB"), (left, top))
            draw.rectangle([left - 1, top - 1, left + cell, top + cell], outline=(200, 200, 200))
            if captions:
                draw.multiline_text((left + cell // 2, top + cell + 3), captions[r][c], fill=INK, font=small,
                                    anchor="ma", align="center", spacing=2)
    return image


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    """Save ``image`` as PNG atomically."""
    from mnist_mlp.fsutil import atomic_write

    atomic_write(path, lambda f: image.save(f, format="PNG", optimize=True))
