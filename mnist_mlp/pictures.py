"""Pictures of digits, drawn with Pillow alone: grids of 28x28 images with captions.

Used by ``mlp report`` (the most confidently wrong test digits, the first layer's weights),
``mlp augment-preview`` (originals beside their distortions) and ``mlp predict --explain``
(the input beside its sensitivity map).
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


def digit_grid(
    rows: list[list[np.ndarray]],
    captions: list[list[str]] | None = None,
    row_labels: list[str] | None = None,
    scale: int = 3,
    title: str | None = None,
) -> Image.Image:
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
                pixels = pixels / np.float32(255)
            tile = Image.fromarray((255 * (1 - np.clip(pixels, 0, 1))).astype(np.uint8), "L")
            image.paste(
                tile.resize((cell, cell), Image.Resampling.NEAREST).convert("RGB"), (left, top)
            )
            draw.rectangle([left - 1, top - 1, left + cell, top + cell], outline=(200, 200, 200))
            if captions:
                draw.multiline_text(
                    (left + cell // 2, top + cell + 3),
                    captions[r][c],
                    fill=INK,
                    font=small,
                    anchor="ma",
                    align="center",
                    spacing=2,
                )
    return image


def mistakes_grid(
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    count: int = 40,
    per_row: int = 10,
):
    """The most confidently wrong digits, each captioned "true -> predicted, probability".

    Parameters
    ----------
    images : ndarray of shape (n, 784), uint8
    labels : ndarray of shape (n,)
    probs : ndarray of shape (n, 10)
    """
    predicted = probs.argmax(axis=1)
    wrong = np.nonzero(predicted != labels)[0]
    wrong = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:count]
    if len(wrong) == 0:
        return digit_grid(
            [[np.zeros((28, 28))]], [["no mistakes"]], title="No test digit is misclassified"
        )
    short = [c if len(c) <= 8 else c[:7] + "." for c in classes]
    rows, captions = [], []
    for start in range(0, len(wrong), per_row):
        chunk = wrong[start : start + per_row]
        rows.append([images[i].reshape(28, 28) for i in chunk])
        captions.append(
            [
                f"{short[labels[i]]} -> {short[predicted[i]]}\n{100 * probs[i, predicted[i]]:.1f}%"
                for i in chunk
            ]
        )
    return digit_grid(
        rows,
        captions,
        title=f"The {len(wrong)} most confidently wrong test digits "
        f"(true -> predicted, probability)",
    )


def confusion_image(cm: np.ndarray, classes: list[str], cell: int = 40) -> Image.Image:
    """A confusion matrix as a picture, without matplotlib: rows true, columns predicted, each
    cell shaded by its share of its row and marked with its count (blank where 0).

    Parameters
    ----------
    cm : ndarray of shape (C, C), int
    classes : list of str
    """
    n = len(classes)
    short = [c if len(c) <= 6 else c[:5] + "." for c in classes]
    font = _font(12)
    left, top = 60, 46
    image = Image.new("RGB", (left + n * cell + 8, top + n * cell + 8), PAPER)
    draw = ImageDraw.Draw(image)
    draw.text((left, 4), "predicted ->   (rows: true class)", fill=INK, font=font)
    shares = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    for i in range(n):
        draw.text(
            (left - 6, top + i * cell + cell // 2), short[i], fill=INK, font=font, anchor="rm"
        )
        draw.text(
            (left + i * cell + cell // 2, top - 4), short[i], fill=INK, font=font, anchor="md"
        )
        for j in range(n):
            x, y = left + j * cell, top + i * cell
            shade = int(255 * (1 - shares[i, j]))
            fill = (shade, shade, 255) if i == j else (255, shade, shade)
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=fill, outline=(220, 220, 220))
            if cm[i, j]:
                ink = (255, 255, 255) if shares[i, j] > 0.6 else INK
                draw.text(
                    (x + cell // 2, y + cell // 2), str(cm[i, j]), fill=ink, font=font, anchor="mm"
                )
    return image


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    """Save ``image`` as PNG atomically."""
    from mnist_mlp.fsutil import atomic_write

    atomic_write(path, lambda f: image.save(f, format="PNG", optimize=True))


RED = np.array([214, 39, 40], np.float32)  # more ink here: a higher score for the class
BLUE = np.array([31, 119, 180], np.float32)  # more ink here: a lower score


def sensitivity_rgb(pixels: np.ndarray, sensitivity: np.ndarray) -> np.ndarray:
    """The sensitivity map drawn over the input: uint8 RGB of shape (28, 28, 3).

    The input shows as light grey ink on white; each pixel is tinted red where its gradient
    is positive and blue where negative, the more strongly the larger its magnitude
    (relative to the largest in the map). The page draws the same colours in JavaScript.

    Parameters
    ----------
    pixels : ndarray of shape (28, 28)
        Ink in [0, 1].
    sensitivity : ndarray of shape (28, 28)
    """
    base = 255 - 130 * np.clip(pixels, 0, 1)[..., None] * np.ones(3, np.float32)  # (28, 28, 3)
    peak = float(np.abs(sensitivity).max())
    strength = (np.abs(sensitivity) / peak) ** 0.7 if peak > 0 else np.zeros_like(sensitivity)
    colour = np.where((sensitivity > 0)[..., None], RED, BLUE)
    alpha = (0.9 * strength)[..., None]
    return (base * (1 - alpha) + colour * alpha).round().astype(np.uint8)


def explanation(
    pixels: np.ndarray,
    sensitivity: np.ndarray,
    prediction: str,
    probability: float,
    scale: int = 10,
) -> Image.Image:
    """The 28x28 input the network saw beside its sensitivity map, with a sentence on the
    colours."""
    cell, pad = 28 * scale, 12
    font, small = _font(16), _font(13)
    width, height = 2 * cell + 3 * pad, cell + 2 * pad + 30 + 44
    image = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(image)
    draw.text((pad, pad), "the network's input", fill=INK, font=small)
    draw.text(
        (2 * pad + cell, pad),
        f"sensitivity of '{prediction}' ({100 * probability:.1f}%)",
        fill=INK,
        font=small,
    )
    top = pad + 24
    seen = Image.fromarray((255 * (1 - np.clip(pixels, 0, 1))).astype(np.uint8), "L").convert("RGB")
    image.paste(seen.resize((cell, cell), Image.Resampling.NEAREST), (pad, top))
    tinted = Image.fromarray(sensitivity_rgb(pixels, sensitivity), "RGB")
    image.paste(tinted.resize((cell, cell), Image.Resampling.NEAREST), (2 * pad + cell, top))
    for left in (pad, 2 * pad + cell):
        draw.rectangle([left - 1, top - 1, left + cell, top + cell], outline=(200, 200, 200))
    draw.multiline_text(
        (pad, top + cell + 8), SENTENCE.format(digit=prediction), fill=INK, font=font, spacing=4
    )
    return image


SENTENCE = (
    "Red: ink there would make the network more sure of '{digit}'.\n"
    "Blue: ink there speaks against '{digit}'. The stronger the colour, the larger the effect."
)


def weight_grid(
    weights: np.ndarray,
    captions: list[str],
    per_row: int = 8,
    scale: int = 3,
    title: str | None = None,
) -> Image.Image:
    """First-layer weight images: one 28x28 tile per hidden unit, red positive, blue negative.

    Each tile is scaled to its own largest magnitude (white is zero), so a unit's pattern shows
    whatever its overall size.

    Parameters
    ----------
    weights : ndarray of shape (k, 784)
        The incoming weights of k units.
    captions : list of str
        One per unit.
    """
    cell, pad = 28 * scale, 8
    font, small = _font(15), _font(11)
    rows = -(-len(weights) // per_row)
    title_h = 28 if title else 0
    caption_h = 15
    image = Image.new(
        "RGB",
        (pad + per_row * (cell + pad), title_h + pad + rows * (cell + caption_h + pad)),
        PAPER,
    )
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((pad, 6), title, fill=INK, font=font)
    for i, (w, caption) in enumerate(zip(weights, captions)):
        w = w.reshape(28, 28).astype(np.float32)
        peak = float(np.abs(w).max()) or 1.0
        strength = (np.abs(w) / peak)[..., None]
        colour = np.where((w > 0)[..., None], RED, BLUE)
        rgb = (255 * (1 - strength) + colour * strength).round().astype(np.uint8)
        left = pad + (i % per_row) * (cell + pad)
        top = title_h + pad + (i // per_row) * (cell + caption_h + pad)
        image.paste(
            Image.fromarray(rgb, "RGB").resize((cell, cell), Image.Resampling.NEAREST), (left, top)
        )
        draw.rectangle([left - 1, top - 1, left + cell, top + cell], outline=(200, 200, 200))
        draw.text((left + cell // 2, top + cell + 2), caption, fill=INK, font=small, anchor="ma")
    return image
