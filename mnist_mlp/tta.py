"""Test-time augmentation: a digit's probabilities averaged over a few fixed views of it.

A net trained on distorted digits has learned that a digit moved by a pixel, turned a little or
drawn a little larger is the same digit; asked about several such views of one test digit, its
mean answer errs less often than its answer to the digit alone. The views are fixed, not random,
so the same checkpoint always gives the same answer: :data:`VIEWS` in order, the digit as it is
first, then shifts of one pixel, turns of 5 degrees and sizes of +-5%; ``n`` views take the first
``n``.
"""

from __future__ import annotations

import math

import numpy as np

SIDE = 28
CENTRE = (SIDE - 1) / 2
# (shift down, shift right, degrees anticlockwise, size): the order in which views are added
VIEWS: tuple[tuple[float, float, float, float], ...] = (
    (0, 0, 0, 1.0),
    (0, 1, 0, 1.0),
    (0, -1, 0, 1.0),
    (1, 0, 0, 1.0),
    (-1, 0, 0, 1.0),
    (0, 0, 5, 1.0),
    (0, 0, -5, 1.0),
    (0, 0, 0, 1.05),
    (0, 0, 0, 0.95),
    (1, 1, 0, 1.0),
    (-1, -1, 0, 1.0),
    (1, -1, 0, 1.0),
    (-1, 1, 0, 1.0),
)
MAX_VIEWS = len(VIEWS)


def view(images: np.ndarray, dy: float, dx: float, degrees: float, size: float) -> np.ndarray:
    """``images`` (N, 784) uint8 moved by (dy, dx) pixels, turned by ``degrees`` about the centre
    and scaled by ``size``; bilinear, zero outside. Returns (N, 784) uint8."""
    if (dy, dx, degrees, size) == (0, 0, 0, 1.0):
        return images
    from mnist_mlp.augment import bilinear

    ys, xs = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    y, x = ys.ravel() - CENTRE - dy, xs.ravel() - CENTRE - dx
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    # the source of each output pixel: the inverse turn and scale of its offset from the centre
    src_y = (c * y - s * x) / size + CENTRE
    src_x = (s * y + c * x) / size + CENTRE
    n = len(images)
    return bilinear(
        images.reshape(n, SIDE, SIDE),
        np.broadcast_to(src_y.astype(np.float32), (n, SIDE * SIDE)),
        np.broadcast_to(src_x.astype(np.float32), (n, SIDE * SIDE)),
    )


def of_pixels(forward, pixels: np.ndarray, n: int) -> np.ndarray:
    """:func:`probabilities` of raw 0-255 pixels of any dtype (N, 784); ``forward`` itself where
    ``n`` is 1 (the pixels untouched)."""
    if n == 1:
        return forward(pixels)
    if pixels.shape[1] != SIDE * SIDE:
        raise ValueError(f"tta views 28x28 digits (784 pixels a row), got {pixels.shape[1]}")
    if pixels.dtype != np.uint8:
        pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return probabilities(forward, pixels, n)


def probabilities(forward, images: np.ndarray, n: int) -> np.ndarray:
    """The mean of ``forward(view of images)`` over the first ``n`` :data:`VIEWS`.

    Parameters
    ----------
    forward : callable
        (N, 784) uint8 pixels -> (N, C) probabilities (a checkpoint's own forward pass).
    images : ndarray of shape (N, 784), uint8
    n : int
        1 to :data:`MAX_VIEWS`; 1 is the plain forward pass.
    """
    if not 1 <= n <= MAX_VIEWS:
        raise ValueError(f"tta must be from 1 to {MAX_VIEWS} views, got {n}")
    flat = images.reshape(len(images), -1)
    total = forward(flat).astype(np.float32, copy=True)
    for spec in VIEWS[1:n]:
        total += forward(view(flat, *spec))
    total /= np.float32(n)
    return total
