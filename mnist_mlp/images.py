"""Turn a user's image of a digit into a 28x28 input prepared the way MNIST was made.

MNIST's digits are white ink on black, anti-aliased, scaled so that the longer side of the
ink's bounding box is 20 px (aspect ratio kept), and placed in a 28x28 field with the ink's
centre of mass at the centre. Their strokes are about 2 px wide at that scale. A network
trained on them does badly on a photo of dark ink on grey paper, or on a thin pen line on a
large canvas, unless the image is brought to the same form first; :func:`prepare` does that:

1. read any image Pillow reads, honouring EXIF orientation; transparency counts as paper;
2. grayscale, shrunk to a working size (long side <= 256 px) for speed;
3. decide which side is ink from the border (paper fills the border), and invert so ink is bright;
4. subtract the paper's uneven lighting (a smooth background estimate) and its noise floor;
5. keep the digit: connected blobs of ink, dropping specks and smudges far from the main one;
6. bring the stroke width to MNIST's (about a tenth of the digit's height): thicken a thin
   pen line, thin a marker's blob;
7. crop to the ink, scale the longer side to 20 px with anti-aliasing, and paste into 28x28
   with the centre of mass at the centre.

Everything here works on small images with NumPy and Pillow; there is no per-pixel Python loop.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_mlp.augment import gaussian_matrix  # the same Gaussian the elastic distortions use
from mnist_mlp.errors import MlpError

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
WORK_SIZE = 256  # long side of the working image, px
BOX = 20  # MNIST: the longer side of the digit's bounding box
FIELD = 28
CENTRE = 14  # MNIST's centre of mass, in pixel indices
# Stroke width / longer side of the digit, measured on MNIST's training digits (2 * area /
# perimeter of the ink above half intensity): median 0.098, 1st-99th percentile 0.055-0.181.
# Strokes inside that range are left alone; outside it they are brought to the median.
STROKE_RATIO = 0.098
STROKE_RANGE = (0.055, 0.18)


class ImageError(MlpError):
    """The file cannot be read as an image, or holds no digit."""


class ImageTooLarge(ImageError):
    """The image has more pixels than is safe to decode."""


@dataclass
class Prepared:
    """A digit ready for the network.

    Attributes
    ----------
    pixels : ndarray of shape (28, 28), float32
        Ink intensity in [0, 1], white (1) on black (0), like MNIST's pixels / 255.
    """

    pixels: np.ndarray


def list_images(paths: list[str | os.PathLike]) -> list[Path]:
    """The files named, with a folder standing for the image files directly inside it (sorted)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(
                sorted(f for f in p.iterdir() if f.suffix.lower() in SUFFIXES and f.is_file())
            )
        else:
            out.append(p)
    return out


def load_gray(
    source: str | os.PathLike | bytes, name: str | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Read an image as grayscale float32 in [0, 1], of shape (H, W), long side <= WORK_SIZE.

    Transparent pixels become paper: the image is composited onto a background of the
    opposite brightness to its opaque pixels.

    Parameters
    ----------
    source : path-like or bytes
        A file, or the bytes of one (an upload).
    name : str, optional
        What messages call the image [default: the path, or "image" for bytes].
    max_pixels : int, optional
        Refuse images with more pixels than this before decoding them (a server's bound on
        memory); Pillow's own decompression-bomb limit (about 89 million) applies anyway.

    Raises
    ------
    ImageError
        For a missing, empty, truncated or non-image file, or an image too large to be safe.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = name or "image"
        if not len(source):
            raise ImageError(f"{name}: empty file")
        opened: io.BytesIO | Path = io.BytesIO(source)
    else:
        path = Path(source)
        name = name or str(path)
        if not path.exists():
            raise ImageError(f"{name}: no such file")
        if path.is_dir():
            raise ImageError(f"{name}: is a folder")
        if path.stat().st_size == 0:
            raise ImageError(f"{name}: empty file")
        opened = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(opened) as im:
                # known from the header alone, before decoding
                if max_pixels is not None and im.width * im.height > max_pixels:
                    raise ImageTooLarge(
                        f"{name}: {im.width}x{im.height} is too many pixels (the limit is "
                        f"{max_pixels / 1e6:g} million); send a smaller image"
                    )
                im = ImageOps.exif_transpose(im)
                im.load()
                return _to_gray(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(
            f"{name}: too many pixels to be safe (Pillow's decompression-bomb limit)"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"{name}: unreadable image ({exc})") from None


def _to_gray(im: Image.Image) -> np.ndarray:
    if max(im.size) > 4 * WORK_SIZE:  # a cheap first reduction of huge photos, in Pillow
        im.thumbnail((WORK_SIZE, WORK_SIZE), Image.Resampling.BOX)
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(im.convert("F"), np.float32)
        lo, hi = float(a.min()), float(a.max())
        gray = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    else:
        if im.mode == "P":
            im = im.convert("RGBA")
        has_alpha = im.mode in ("RGBA", "LA", "PA") or (
            im.mode == "RGB" and "transparency" in im.info
        )
        if has_alpha:
            rgba = np.asarray(im.convert("RGBA"), np.float32) / 255
            alpha = rgba[..., 3]
            luma = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
            opaque = alpha > 0.5
            # Paper behind the transparency: the opposite of the ink (the opaque pixels).
            paper = 0.0 if opaque.any() and luma[opaque].mean() > 0.5 else 1.0
            gray = luma * alpha + paper * (1 - alpha)
        else:
            gray = np.asarray(im.convert("L"), np.float32) / 255
    return _shrink(gray)


def _shrink(gray: np.ndarray) -> np.ndarray:
    h, w = gray.shape
    if max(h, w) <= WORK_SIZE:
        return gray
    scale = WORK_SIZE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(gray, "F").resize(size, Image.Resampling.BOX), np.float32)


def ink_map(gray: np.ndarray) -> np.ndarray:
    """Ink intensity in [0, 1] (bright ink, black paper) from a grayscale image.

    Ink is what departs most strongly from the paper around it, darker or lighter. In a photo
    the paper's brightness varies, so on images large enough to tell strokes from lighting
    the paper is estimated locally and smoothly (:func:`_background`) for each polarity;
    on small images it is the border's median. The polarity whose strongest departures are
    larger is the ink. What remains below the paper's own noise level is set to zero.
    """
    if min(gray.shape) >= 64:
        dark = (1 - gray) - _background(1 - gray)  # dark ink on lighter paper
        light = gray - _background(gray)  # light ink (chalk, a drawing app's white pen)
    else:
        paper = float(np.median(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])))
        dark, light = paper - gray, gray - paper
    ink = dark if _strongest(dark) > _strongest(light) else light
    np.clip(ink, 0, None, out=ink)
    top = max(float(np.percentile(ink, 99.7)), 0.5 * float(ink.max()))
    if top <= 0.08:  # nothing stands out from the paper by 8% of the full range
        return np.zeros_like(ink)
    ink /= top
    # Paper is most of the image: its median and spread give the noise floor.
    median = float(np.median(ink))
    spread = 1.4826 * float(np.median(np.abs(ink - median)))
    floor = min(max(median + 5 * spread, 1.5 / 255), 0.35)  # clean paper: about one grey level
    ink = (ink - floor) / (1 - floor)
    np.clip(ink, 0, 1, out=ink)
    if min(ink.shape) >= 64:
        _erase_rules(ink)
        _erase_rules(ink.T)
    return ink.astype(np.float32)


def _erase_rules(ink: np.ndarray) -> None:
    """Zero, in place, the rows of ruled or squared paper: thin bands inked edge to edge.

    A row counts when at least 80% of it is ink; a band of such rows is ruling only if it is
    thinner than 3% of the image (a digit's own horizontal strokes are about 10% of the
    digit's height, and never cross the whole image).
    """
    rows = (ink > 0.1).mean(axis=1) >= 0.8  # faint: a thin line loses contrast when shrunk
    if not rows.any():
        return
    limit = max(2, int(0.03 * len(rows)))
    start = None
    for i, flagged in enumerate(np.append(rows, False)):
        if flagged and start is None:
            start = i
        elif not flagged and start is not None:
            if i - start <= limit:
                ink[start:i] = 0
            start = None


def _strongest(departure: np.ndarray) -> float:
    """Mean of the strongest 0.2% of departures from the paper: a thin pen line on a large
    canvas covers well under 1% of it, and must still outweigh the paper's grain."""
    flat = departure.reshape(-1)
    n = max(4, flat.size // 500)
    return float(np.partition(flat, flat.size - n)[-n:].mean())


def square_filter(a: np.ndarray, k: int, reduce) -> np.ndarray:
    """Grey erosion (``np.min``) or dilation (``np.max``) of ``a`` by a k x k square window.

    A square window is separable: the window's extreme is the extreme along rows of the
    extremes along columns, so this costs 2k rather than k^2 comparisons per pixel.
    """
    if k <= 1:
        return a.astype(np.float32, copy=True)
    before, after = k // 2, k - 1 - k // 2
    out = a
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (before, after)
        windows = np.lib.stride_tricks.sliding_window_view(
            np.pad(out, pad, mode="edge"), k, axis=axis
        )
        out = reduce(windows, axis=-1)
    return out.astype(np.float32)


def _background(ink: np.ndarray) -> np.ndarray:
    """A smooth estimate of the paper's level under the ink (same shape as ``ink``)."""
    h, w = ink.shape
    small_size = (max(8, w // 4), max(8, h // 4))
    small = np.asarray(
        Image.fromarray(ink, "F").resize(small_size, Image.Resampling.BOX), np.float32
    )
    # Window: a third of the image, wider than any stroke of a digit that fills it (strokes
    # are about a tenth of the digit); lighting changes over larger distances than that.
    k = max(3, (min(small_size) // 3) | 1)
    opened = square_filter(square_filter(small, k, np.min), k, np.max)  # grey opening
    smooth = Image.fromarray(blur(opened, k / 2), "F")
    return np.asarray(smooth.resize((w, h), Image.Resampling.BILINEAR), np.float32)


def blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a 2-D array: separable, so two small matrix products G_h @ a @ G_w.T."""
    h, w = a.shape
    return gaussian_matrix(h, sigma) @ a @ gaussian_matrix(w, sigma).T


def _components(mask: np.ndarray) -> np.ndarray:
    """Labels of the 8-connected components of ``mask`` (0 outside).

    Each ink pixel starts labelled with its own index and repeatedly takes the smallest
    label among its neighbours, then jumps to its label's label (pointer jumping), so that
    labels spread in about log2(diameter) rounds rather than one pixel per round. Each
    component ends labelled by its smallest pixel index + 1.
    """
    h, w = mask.shape
    outside = h * w
    labels = np.where(mask, np.arange(outside).reshape(h, w), outside)
    padded = np.full((h + 2, w + 2), outside)
    while True:
        padded[1:-1, 1:-1] = labels
        best = labels.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                np.minimum(best, padded[dy : dy + h, dx : dx + w], out=best)
        best[~mask] = outside
        table = np.append(best.reshape(-1), outside)  # pixel index -> its current label
        best = table[table[best]]  # jump twice: a label's label is in the same component
        if np.array_equal(best, labels):
            return np.where(mask, labels + 1, 0)
        labels = best


def keep_digit(ink: np.ndarray) -> np.ndarray:
    """Zero the specks and smudges that are not part of the digit.

    Blobs of ink are kept if they are large (>= 15% of the largest) or close to the largest
    (a broken stroke); small isolated dots (paper grain, dust, a pen tap) are dropped.
    """
    h, w = ink.shape
    scale = min(1.0, 64 / max(h, w))  # blobs are found at <= 64 px: fast, and never upsampled
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = (
        ink
        if scale == 1
        else np.asarray(Image.fromarray(ink, "F").resize(size, Image.Resampling.BOX), np.float32)
    )
    mask = small > 0.25
    if not mask.any():
        return ink
    labels = _components(mask)
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    main = ids[np.argmax(areas)]
    ys, xs = np.nonzero(labels == main)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    reach = 0.35 * max(y1 - y0 + 1, x1 - x0 + 1)  # how far a piece of the same digit may lie
    keep = np.zeros_like(mask)
    for i, area in zip(ids, areas):
        yy, xx = np.nonzero(labels == i)
        gap = max(y0 - yy.max(), yy.min() - y1, x0 - xx.max(), xx.min() - x1, 0)
        if (
            i == main
            or (area >= 0.15 * areas.max() and gap <= 2 * reach)
            or (area >= 3 and gap <= reach)
        ):
            keep |= labels == i
    # a pixel's margin around what is kept
    keep = square_filter(keep.astype(np.float32), 3, np.max) > 0
    if scale < 1:
        keep = (
            np.asarray(
                Image.fromarray(keep.astype(np.uint8)).resize((w, h), Image.Resampling.NEAREST)
            )
            > 0
        )
    keep_full = keep
    return np.where(keep_full, ink, 0).astype(np.float32)


def _bbox(ink: np.ndarray, level: float = 0.2) -> tuple[int, int, int, int] | None:
    rows, cols = np.nonzero(ink > level)
    if rows.size == 0:
        return None
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def stroke_width(ink: np.ndarray) -> float:
    """Typical stroke width in px: 2 * area / perimeter of the ink above half intensity."""
    m = ink > 0.5
    area = m.sum()
    perimeter = (m[:, 1:] != m[:, :-1]).sum() + (m[1:] != m[:-1]).sum()
    perimeter += m[0].sum() + m[-1].sum() + m[:, 0].sum() + m[:, -1].sum()
    return 2 * area / max(perimeter, 1)


def normalise_stroke(ink: np.ndarray) -> np.ndarray:
    """Thicken or thin the strokes so that their width / digit size is MNIST's."""
    box = _bbox(ink, 0.5)
    if box is None:
        return ink
    size = max(box[1] - box[0], box[3] - box[2])
    width = stroke_width(ink)
    ratio = width / size
    if STROKE_RANGE[0] <= ratio <= STROKE_RANGE[1]:
        return ink
    # Grey dilation/erosion by a square window of k px changes the width by about k - 1.
    change = STROKE_RATIO * size - width
    k = round(abs(change)) + 1
    if k < 2:
        return ink
    k |= 1  # odd: the window stays centred on its pixel
    if change > 0:
        out = square_filter(ink, k, np.max)
    else:
        k = min(k, max(3, (int(width) - 2) | 1))  # never erode a stroke away entirely
        out = square_filter(ink, k, np.min)
    return blur(out, max(0.5, k / 6))  # soften the square window's corners


def to_field(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink, fit the longer side to 20 px, centre the mass in 28x28 (float32).

    The crop takes every pixel with any ink (the ink map has zeroed the paper): that is how
    MNIST's 20 px were measured, so an MNIST digit passes through unchanged.
    """
    box = _bbox(ink, 0.0)
    if box is None:
        return np.zeros((FIELD, FIELD), np.float32)
    y0, y1, x0, x1 = box
    crop = ink[y0:y1, x0:x1]
    h, w = crop.shape
    digit = crop
    if max(h, w) != BOX:
        scale = BOX / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        digit = np.asarray(
            Image.fromarray(crop, "F").resize(size, Image.Resampling.LANCZOS), np.float32
        )
    digit = np.clip(digit, 0, None)
    if digit.max() > 0:
        digit /= digit.max()
    dh, dw = digit.shape
    mass = digit.sum()
    cy = (digit.sum(axis=1) @ np.arange(dh)) / mass
    cx = (digit.sum(axis=0) @ np.arange(dw)) / mass
    # Integer offset putting the centre of mass where MNIST has it: pixel (14, 14) (measured
    # on its training digits: 14.00, 14.01), kept inside the field.
    top = int(np.clip(round(CENTRE - cy), 0, FIELD - dh))
    left = int(np.clip(round(CENTRE - cx), 0, FIELD - dw))
    field = np.zeros((FIELD, FIELD), np.float32)
    field[top : top + dh, left : left + dw] = digit
    return field


def prepare(
    source: str | os.PathLike | bytes, name: str | None = None, max_pixels: int | None = None
) -> Prepared:
    """Read one image (a file or its bytes) and bring it to MNIST's form (see the module docstring).

    ``name`` and ``max_pixels`` are as for :func:`load_gray`.

    Raises
    ------
    ImageError
        If the image cannot be read, or holds no ink (blank or uniform).
    """
    name = name or ("image" if isinstance(source, (bytes, bytearray, memoryview)) else str(source))
    gray = load_gray(source, name, max_pixels)
    if min(gray.shape) < 4 or float(gray.max() - gray.min()) < 0.04:
        raise ImageError(f"{name}: blank image, no digit found")
    ink = ink_map(gray)
    if not (ink > 0.2).any():
        raise ImageError(f"{name}: no ink stands out from the background; no digit found")
    # Strokes first: a thin pen line must be thickened before specks are told from strokes.
    ink = keep_digit(normalise_stroke(ink))
    return Prepared(to_field(ink))


def prepare_image(source: str | os.PathLike | bytes) -> np.ndarray:
    """``mlp predict``'s preparation of a user's image, as MNIST's pixels.

    Returns
    -------
    ndarray of shape (28, 28), float32
        Pixel values 0..255, white ink on black, the digit fitted and centred as in MNIST:
        ``clf.predict(prepare_image(path).reshape(1, -1))`` classifies it.

    Raises
    ------
    ImageError
        If the image cannot be read or holds no digit.
    """
    return prepare(source).pixels * np.float32(255)


def render(pixels: np.ndarray) -> str:
    """The 28x28 input as text, two characters per pixel, darker shades for more ink."""
    shades = " ░▒▓█"
    idx = np.clip((pixels * (len(shades) - 1) + 0.5).astype(int), 0, len(shades) - 1)
    return "\n".join("".join(shades[i] * 2 for i in row) for row in idx)
