"""Other views of the same digits: slant removed, or the width set, as the network sees them.

Meier et al. (2011) made the members of a committee err differently by training each on the
digits normalised another way: the bounding box's width set to 10, 12, ..., 20 pixels (ones left
as they are), or deslanted (the principal axis made vertical). ``data.normalise`` picks a view
(:class:`mnist_mlp.config.NormaliseConfig`); the checkpoint keeps it in its config, and every
reader of the checkpoint (``mlp eval``, ``predict``, ``serve``, the estimator, a committee's
members each on its own view) applies it to the 28x28 pixels exactly as training did.

Both are a resampling of each 28x28 image (bilinear, zero outside), from moments and bounding
boxes measured per image, for a whole batch at once. :func:`deslant` and :func:`set_width` are the
definitions, written as the formulas read; where the compiled kernels are built, :func:`apply`
hands the same maps (both are affine: a shear, a sideways scaling) to the distortions' compiled
resampler (:func:`mnist_mlp.fast.kernels.distort`): for 128 digits on the two-core Xeon,
deslanting 3.6 -> 0.9 ms and a width 6.9 -> 2.8 ms (the moments and boxes are the rest), which
matters where a teacher's members see every training batch in their own views
(:mod:`mnist_mlp.distill`). The two agree to one grey level on a pixel now and then (the same
sums in another order).
"""

from __future__ import annotations

import numpy as np

from mnist_mlp.fast import kernels as fast

SIDE = 28
CENTRE = (SIDE - 1) / 2
ONE_LIKE = 0.5  # a digit narrower than this share of its height is a one: its width is kept


CHUNK = 4096  # images resampled at a time: their float32 grids stay near 13 MB each


def apply(images: np.ndarray, kind: str, width: int = 20) -> np.ndarray:
    """``images`` (N, 784) uint8 in the view ``kind`` ("none", "deslant" or "width")."""
    if kind == "none" or not len(images):
        return images
    if kind not in ("deslant", "width"):
        raise ValueError(f"unknown normalisation {kind!r}")
    if fast.WIDE:  # its 8-float vectors are slow where they are not native
        view = _fast_deslant if kind == "deslant" else lambda chunk: _fast_width(chunk, width)
    else:
        view = deslant if kind == "deslant" else lambda chunk: set_width(chunk, width)
    flat = images.reshape(len(images), -1)
    return np.concatenate([view(flat[i : i + CHUNK]) for i in range(0, len(flat), CHUNK)])


def several(images: np.ndarray, views: list[tuple[str, int]]) -> list[np.ndarray]:
    """A batch ``images`` (B, 784) uint8 in each of ``views`` ((kind, width) pairs, as
    :func:`apply` takes them), each distinct view made once and, on the fast path, the digits
    deslanted once for all: a teacher's members see every training batch this way."""
    made: dict[tuple[str, int], np.ndarray] = {("none", 0): images}
    for kind, width in views:
        key = (kind, width if kind == "width" else 0)
        if key in made:
            continue
        if kind == "width" and fast.WIDE:
            if ("deslant", 0) not in made:
                made["deslant", 0] = _fast_deslant(images)
            made[key] = _fast_width(images, width, made["deslant", 0])
        else:
            made[key] = apply(images, kind, width)
    return [made[kind, width if kind == "width" else 0] for kind, width in views]


def as_trained(pixels: np.ndarray, config) -> np.ndarray:
    """Raw 0-255 pixels (N, 784) (or (N, 28, 28)), of any dtype, in the view the network of
    ``config`` was trained on (``data.normalise``): uint8 (N, 784) then; unchanged where it was
    trained on the digits as they are."""
    view = config.data.normalise
    if view.kind == "none":
        return pixels
    raw = pixels.reshape(len(pixels), -1)
    if raw.dtype != np.uint8:
        raw = np.clip(np.rint(raw), 0, 255).astype(np.uint8)
    return apply(raw, view.kind, view.width)


def _grid() -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    return ys.reshape(1, -1), xs.reshape(1, -1)


def slant(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each image's slant, ``mu11 / mu02`` (how far x moves per row down its principal axis),
    and its centre row; (N,) each. 0 and the middle for a blank image."""
    ink = images.reshape(len(images), -1).astype(np.float32)
    ys, xs = _grid()
    mass = ink.sum(axis=1)
    safe = np.maximum(mass, 1)
    cy, cx = (ink * ys).sum(axis=1) / safe, (ink * xs).sum(axis=1) / safe
    dy, dx = ys - cy[:, None], xs - cx[:, None]
    mu02 = (ink * dy * dy).sum(axis=1)
    mu11 = (ink * dx * dy).sum(axis=1)
    alpha = np.where(mu02 > 1e-3 * np.maximum(mass, 1), mu11 / np.maximum(mu02, 1e-12), 0)
    return alpha.astype(np.float32), np.where(mass > 0, cy, CENTRE).astype(np.float32)


def deslant(images: np.ndarray) -> np.ndarray:
    """The digits sheared so that their principal axis is vertical: the output pixel (y, x)
    takes the input at (y, x + slant * (y - centre row)). (N, 784) uint8 -> (N, 784) uint8."""
    from mnist_mlp.augment import bilinear

    alpha, cy = slant(images)
    ys, xs = _grid()
    src_x = xs + alpha[:, None] * (ys - cy[:, None])
    n = len(images)
    return bilinear(images.reshape(n, SIDE, SIDE), np.repeat(ys, n, axis=0), src_x)


def bounding_boxes(images: np.ndarray) -> np.ndarray:
    """Each image's inked box: (N, 4) of top, bottom, left, right (inclusive); a blank image's
    is the whole image."""
    ink = images.reshape(len(images), SIDE, SIDE) > 0
    rows, cols = ink.any(axis=2), ink.any(axis=1)
    first = lambda m: np.where(m.any(axis=1), m.argmax(axis=1), 0)  # noqa: E731
    last = lambda m: np.where(m.any(axis=1), SIDE - 1 - m[:, ::-1].argmax(axis=1), SIDE - 1)  # noqa: E731
    return np.stack([first(rows), last(rows), first(cols), last(cols)], axis=1)


def _sideways(images: np.ndarray, width: int, deslanted: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each digit's sideways scale to ``width`` (1 for a one) and its inked box's centre
    column, (N,) float32 each, given the digits and the same digits ``deslanted``."""
    box = bounding_boxes(images).astype(np.float32)
    current = box[:, 3] - box[:, 2] + 1
    # a one is told by its box once upright: a slanted one is as wide as a narrow zero
    upright = bounding_boxes(deslanted).astype(np.float32)
    one = upright[:, 3] - upright[:, 2] + 1 < ONE_LIKE * (upright[:, 1] - upright[:, 0] + 1)
    scale = np.where(one, 1.0, width / current).astype(np.float32)
    return scale, (box[:, 2] + box[:, 3]) / 2


def set_width(images: np.ndarray, width: int) -> np.ndarray:
    """The digits stretched or squeezed sideways so that their inked box is ``width`` pixels
    wide, centred where it was; the height is kept, and ones (upright, narrower than
    :data:`ONE_LIKE` of their height) are left as they are. (N, 784) uint8 -> uint8."""
    from mnist_mlp.augment import bilinear

    scale, centre = _sideways(images, width, deslant(images))
    ys, xs = _grid()
    src_x = centre[:, None] + (xs - centre[:, None]) / scale[:, None]
    n = len(images)
    return bilinear(images.reshape(n, SIDE, SIDE), np.repeat(ys, n, axis=0), src_x)


# The fast path: each view as the distortions' affine map, rows (a, b, c, d) of the inverse and a
# shift (y, x), the source of output pixel p being [[a, b], [c, d]] @ (p - centre - shift) + centre.
# With a = d = 1, b = 0 and shift_y = 0 the rows stay where they are, as in the definitions.


def _deslant_map(images: np.ndarray) -> np.ndarray:
    """:func:`deslant` 's shear as inverse rows and shift, (N, 6) float32: x + alpha (y - cy) is
    x + alpha (y - centre) - alpha (cy - centre)."""
    alpha, cy = slant(images)
    one, zero = np.ones_like(alpha), np.zeros_like(alpha)
    return np.stack([one, zero, alpha, one, zero, alpha * (cy - CENTRE)], axis=1)


def _fast_deslant(images: np.ndarray) -> np.ndarray:
    """:func:`deslant`, resampled by the compiled kernel. (N, 784) uint8 -> (N, 784) uint8."""
    return _resample(images, _deslant_map(images))


def _fast_width(images: np.ndarray, width: int, deslanted: np.ndarray | None = None) -> np.ndarray:
    """:func:`set_width`, its scaling resampled by the compiled kernel (``deslanted``: the
    images' :func:`_fast_deslant`, if made already): the source column c + (x - c) / s is
    (x - centre - shift) / s + centre with shift = (c - centre)(1 - s)."""
    if deslanted is None:
        deslanted = _fast_deslant(images)
    scale, centre = _sideways(images, width, deslanted)
    ones, zeros = np.ones_like(scale), np.zeros_like(scale)
    inverse = np.stack([ones, zeros, zeros, 1 / scale, zeros, (centre - CENTRE) * (1 - scale)], 1)
    return _resample(images, inverse)


def _resample(images: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """``images`` (N, 784) uint8 at the affine sources ``inverse`` (N, 6), by the kernel."""
    return fast.distort(images, inverse.astype(np.float32), None, _NO_BLUR, 0.0)


_NO_BLUR = np.eye(SIDE, dtype=np.float32)  # the kernel's blurring matrix, unused without a field
