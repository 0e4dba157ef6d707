"""Random distortions of training digits: affine transforms and elastic deformations.

Simard, Steinkraus and Platt (ICDAR 2003) took a one-hidden-layer net from 98.4% to 98.9%
with affine distortions and to 99.3% with elastic ones. An elastic distortion moves every
pixel by a random displacement field, smoothed so that neighbours move together:

    dx, dy ~ uniform(-1, 1), one value per pixel                      (B, 28, 28) each
    dx, dy = alpha * gaussian_blur(dx, sigma), likewise dy            sigma ~ 4 px, alpha ~ 34

Blurring a 28x28 field is linear: with G the (28, 28) Gaussian matrix it is G @ F @ G.T,
two small matrix products for the whole batch at once. The affine part (rotation, scale,
shear, translation about the centre) gives each output pixel a source position; the elastic
field is added to it; then one gathered bilinear interpolation resamples the whole batch.
Nothing loops over images in Python. Where the compiled kernels are built,
:func:`mnist_mlp.fast.kernels.distort` does the blurring and resampling of each digit in one
pass (0.44 s an epoch instead of 1.0 s); the NumPy code here is its definition, and the random
draws are the same.
"""

from __future__ import annotations

import numpy as np

from mnist_mlp.config import AugmentConfig
from mnist_mlp.fast import kernels

SIDE = 28
_CENTRE = (SIDE - 1) / 2


def gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) matrix whose product with a signal blurs it by a Gaussian (rows sum to 1)."""
    d = np.arange(n)[:, None] - np.arange(n)[None, :]
    g = np.exp(-0.5 * (d / sigma) ** 2)
    return (g / g.sum(axis=1, keepdims=True)).astype(np.float32)


class Augmenter:
    """Distort minibatches of uint8 digits according to an :class:`AugmentConfig`.

    Call it as ``augment(images, rng)`` with images of shape (B, 784) uint8; it returns a
    new array of the same shape and dtype. With every range zero it returns the images
    unchanged.
    """

    def __init__(self, config: AugmentConfig):
        self.config = config
        self._g = gaussian_matrix(SIDE, config.elastic_sigma)
        ys, xs = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
        self._grid = np.stack([ys.ravel() - _CENTRE, xs.ravel() - _CENTRE])  # (2, 784), centred

    CHUNK = (
        16  # images at a time in NumPy: the temporaries then stay small and in cache (2x faster)
    )

    def __call__(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self.config.enabled:
            return images
        c = self.config
        b = len(images)
        if c.geometric:
            inverse = self._draw_affine(b, rng)
            # the elastic fields' uniform draws: every dy field, then every dx field
            uniform = rng.random((2, b, SIDE, SIDE), dtype=np.float32) if c.elastic_alpha else None
            if kernels.WIDE:  # its 8-float vectors are slow where they are not native
                out = kernels.distort(images, inverse, uniform, self._g, c.elastic_alpha)
            else:
                chunks = [slice(i, i + self.CHUNK) for i in range(0, b, self.CHUNK)]
                out = np.concatenate(
                    [
                        self._resample(
                            images[s], inverse[s], None if uniform is None else uniform[:, s]
                        )
                        for s in chunks
                    ]
                )
        else:
            out = images.copy()
        if c.flip:  # mirror left-right: exact, no resampling
            mirrored = rng.random(b) < c.flip
            square = out.reshape(b, SIDE, SIDE)
            square[mirrored] = square[mirrored, :, ::-1]
        if c.probability < 1:  # leave some images as they were
            keep = rng.random(b) >= c.probability
            out[keep] = images[keep]
        return out

    def _draw_affine(self, b: int, rng: np.random.Generator) -> np.ndarray:
        """A random affine map per image, as the rows of its inverse and its shift.

        Returns
        -------
        ndarray of shape (B, 6), float32
            (a, b, c, d, shift_y, shift_x): output pixel p comes from
            ``[[a, b], [c, d]] @ (p - centre - shift) + centre``.
        """
        c = self.config
        angle = np.deg2rad(rng.uniform(-c.rotate, c.rotate, b)).astype(np.float32)
        shear = np.deg2rad(rng.uniform(-c.shear, c.shear, b)).astype(np.float32)
        scale = rng.uniform(1 - c.scale, 1 + c.scale, b).astype(np.float32)
        shift = rng.uniform(-c.translate, c.translate, (2, b)).astype(np.float32)
        cos, sin = np.cos(angle), np.sin(angle)
        # Forward map (y, x) -> scale * R(angle) @ Shear(shear) @ (y, x); we need its inverse
        # to pull each output pixel from its source. Rows: [[a, b], [c, d]] per image.
        a, bb = cos, -sin + cos * np.tan(shear)
        cc, d = sin, cos + sin * np.tan(shear)
        det = (a * d - bb * cc) * scale
        return np.stack([d / det, -bb / det, -cc / det, a / det, shift[0], shift[1]], axis=1)

    def _resample(
        self, images: np.ndarray, inverse: np.ndarray, uniform: np.ndarray | None
    ) -> np.ndarray:
        """The definition of :func:`mnist_mlp.fast.kernels.distort`, in NumPy, for a few images.

        Parameters
        ----------
        images : ndarray of shape (B, 784), uint8
        inverse : ndarray of shape (B, 6), float32
            From :meth:`_draw_affine`.
        uniform : ndarray of shape (2, B, 28, 28), float32, or None
            Uniform [0, 1) draws for the elastic displacements, dy's then dx's; None: none.

        Returns
        -------
        ndarray of shape (B, 784), uint8
        """
        b = len(images)
        i00, i01, i10, i11, shift_y, shift_x = (v[:, None] for v in inverse.T)  # (B, 1) each
        gy = self._grid[0] - shift_y  # (B, 784): output pixel, centred and unshifted
        gx = self._grid[1] - shift_x
        centre = np.float32(_CENTRE)
        src_y, src_x = i00 * gy + i01 * gx + centre, i10 * gy + i11 * gx + centre
        if uniform is not None:
            src_y += self._elastic_field(uniform[0])
            src_x += self._elastic_field(uniform[1])
        return bilinear(images.reshape(b, SIDE, SIDE), src_y, src_x)

    def _elastic_field(self, uniform: np.ndarray) -> np.ndarray:
        """Smoothed displacements in pixels, (B, 784), from uniform [0, 1) draws (B, 28, 28)."""
        field = uniform * 2 - 1  # uniform(-1, 1)
        smooth = self._g @ field @ self._g.T  # G F G^T for every field at once
        smooth *= np.float32(self.config.elastic_alpha)
        return smooth.reshape(len(uniform), -1)


def bilinear(images: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Sample ``images`` (B, H, W) at real positions (B, P) with bilinear weights; 0 outside.

    Each image gets a border of zeros, and positions are clipped into the bordered field, so
    anything outside the image samples the border: no masks, four 1-D gathers in all.

    Returns
    -------
    ndarray of shape (B, P), uint8
    """
    b, h, w = images.shape
    padded = np.zeros((b, h + 2, w + 2), np.float32)
    padded[:, 1:-1, 1:-1] = images
    flat = padded.reshape(-1)
    y = np.clip(y + 1, 0, h + 0.999)  # +1: the border; the top corner is then at most h + 1
    x = np.clip(x + 1, 0, w + 0.999)
    y0, x0 = np.floor(y), np.floor(x)
    fy, fx = y - y0, x - x0
    top_left = (
        y0.astype(np.intp) * (w + 2)
        + x0.astype(np.intp)
        + (np.arange(b) * (h + 2) * (w + 2))[:, None]
    )
    a, bb = flat.take(top_left), flat.take(top_left + 1)
    c, d = flat.take(top_left + w + 2), flat.take(top_left + w + 3)
    top = a + fx * (bb - a)
    bottom = c + fx * (d - c)
    out = top + fy * (bottom - top)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def preview(images: np.ndarray, config: AugmentConfig, variants: int = 7, seed: int = 0):
    """A grid picture: each row one digit, then ``variants`` distortions of it.

    Parameters
    ----------
    images : ndarray of shape (n, 784), uint8

    Returns
    -------
    PIL.Image.Image
    """
    from mnist_mlp.pictures import digit_grid

    augmenter = Augmenter(config)
    rng = np.random.default_rng(seed)
    repeated = np.repeat(images, variants, axis=0)
    distorted = augmenter(repeated, rng).reshape(len(images), variants, SIDE, SIDE)
    rows = [[img.reshape(SIDE, SIDE), *distorted[i]] for i, img in enumerate(images)]
    c = config
    title = (
        f"original, then {variants} distortions: rotate ±{c.rotate:g}°, scale ±{c.scale:g}, "
        f"shear ±{c.shear:g}°, shift ±{c.translate:g} px, elastic alpha {c.elastic_alpha:g} "
        f"sigma {c.elastic_sigma:g}, mirrored {100 * c.flip:g}%"
    )
    return digit_grid(rows, title=title)


def for_config(config: AugmentConfig) -> Augmenter | None:
    """The distortions ``data.augment`` asks for, or None where it asks for none."""
    return Augmenter(config) if config.enabled else None
