"""Training-time distortions: seeded, label-preserving, in range, exact when switched off."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_tiny_arrays
from mnist_mlp.augment import Augmenter, _bilinear
from mnist_mlp.config import AugmentConfig

FULL = AugmentConfig(translate=2, rotate=12, scale=0.1, shear=8, elastic_alpha=34, elastic_sigma=4)


def digits(n=40, seed=0):
    return make_tiny_arrays(n, 1, seed)["train-images"].reshape(n, 784)


def blobs(n=40, seed=0):
    """Images with one bright 5x5 blob each at a random place (easy to track)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 28, 28), np.uint8)
    for i, (y, x) in enumerate(rng.integers(6, 17, (n, 2))):
        out[i, y:y + 5, x:x + 5] = 255
    return out.reshape(n, 784)


def test_deterministic_given_the_seed():
    a = Augmenter(FULL)
    x = digits()
    first = a(x, np.random.default_rng(3))
    assert np.array_equal(first, a(x, np.random.default_rng(3)))
    assert not np.array_equal(first, a(x, np.random.default_rng(4)))
    assert not np.array_equal(first, x)


def test_zero_ranges_are_a_no_op():
    x = digits()
    assert AugmentConfig().enabled is False
    assert Augmenter(AugmentConfig())(x, np.random.default_rng(0)) is x
    assert np.array_equal(Augmenter(AugmentConfig(rotate=30, probability=0))(x, np.random.default_rng(0)), x)


def test_identity_sampling_is_exact():
    x = digits().reshape(-1, 28, 28)
    ys, xs = np.mgrid[0:28, 0:28].astype(np.float32)
    y = np.broadcast_to(ys.reshape(1, -1), (len(x), 784)).copy()
    out = _bilinear(x, y, np.broadcast_to(xs.reshape(1, -1), (len(x), 784)).copy())
    assert np.array_equal(out, x.reshape(len(x), -1))


def test_values_stay_in_range_and_ink_is_kept():
    x = blobs(64)
    out = Augmenter(FULL)(x, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == x.shape
    ink_in, ink_out = x.sum(axis=1).astype(float), out.sum(axis=1).astype(float)
    ratio = ink_out / ink_in
    assert 0.4 < ratio.min() and ratio.max() < 2.0  # elastic stretching moves a small blob's area most


def test_each_image_stays_in_its_place():
    # Labels stay aligned only if image i comes out of image i. Give each image a blob of a
    # brightness of its own: a blob's flat interior keeps its exact value under resampling.
    n = 48
    x = blobs(n, seed=1).reshape(n, 28, 28)
    brightness = (60 + 4 * np.arange(n)).astype(np.uint8)
    x = np.where(x > 0, brightness[:, None, None], 0).astype(np.uint8).reshape(n, 784)
    out = Augmenter(FULL)(x, np.random.default_rng(0))
    assert np.array_equal(out.max(axis=1), brightness)


class Extreme:
    """A stand-in generator that always draws the upper end of every range."""

    def uniform(self, low, high, size):
        return np.full(size, high, float)


def test_geometry_a_90_degree_rotation():
    x = digits(3)
    out = Augmenter(AugmentConfig(rotate=90))._distort(x, Extreme())
    turned = np.rot90(x.reshape(3, 28, 28), k=1, axes=(1, 2)).reshape(3, 784)
    assert np.array_equal(out, turned)


def test_geometry_a_translation_by_whole_pixels():
    x = digits(3)
    out = Augmenter(AugmentConfig(translate=2))._distort(x, Extreme())
    shifted = np.zeros((3, 28, 28), np.uint8)
    shifted[:, 2:, 2:] = x.reshape(3, 28, 28)[:, :-2, :-2]
    assert np.array_equal(out.reshape(3, 28, 28), shifted)


def test_elastic_displacements_are_smooth_and_of_simards_size():
    a = Augmenter(AugmentConfig(elastic_alpha=34, elastic_sigma=4))
    dy, dx = a._elastic_field(200, np.random.default_rng(0))
    magnitude = np.hypot(dy, dx)
    assert 0.5 < magnitude.mean() < 4  # pixels: visible, not destructive
    field = dy.reshape(200, 28, 28)
    neighbour = np.abs(np.diff(field, axis=2)).mean()
    assert neighbour < 0.2 * np.abs(field).mean()  # neighbours move together


@pytest.mark.parametrize("batch", [1, 16, 17, 128])
def test_any_batch_size(batch):
    x = digits(batch)
    assert Augmenter(FULL)(x, np.random.default_rng(0)).shape == (batch, 784)


def test_flip_mirrors_exactly_the_chosen_share():
    x = digits(400)
    out = Augmenter(AugmentConfig(flip=0.5))(x, np.random.default_rng(0))
    square, original = out.reshape(-1, 28, 28), x.reshape(-1, 28, 28)
    mirrored = np.array([np.array_equal(a, b[:, ::-1]) for a, b in zip(square, original)])
    same = np.array([np.array_equal(a, b) for a, b in zip(square, original)])
    assert (mirrored | same).all()
    assert 0.4 < mirrored.mean() < 0.6
