"""Training-time distortions: seeded, label-preserving, in range, exact when switched off."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_tiny_arrays

from mnist_mlp.augment import Augmenter, bilinear
from mnist_mlp.config import AugmentConfig
from mnist_mlp.fast import kernels

FULL = AugmentConfig(translate=2, rotate=12, scale=0.1, shear=8, elastic_alpha=34, elastic_sigma=4)


def digits(n=40, seed=0):
    return make_tiny_arrays(n, 1, seed)["train-images"].reshape(n, 784)


@pytest.fixture(params=["compiled", "numpy"])
def path(request, monkeypatch):
    """Each test below runs on both ways of resampling: the compiled kernel and its NumPy
    definition."""
    if request.param == "numpy":
        monkeypatch.setattr(kernels, "WIDE", False)
    elif not kernels.WIDE:
        pytest.skip(
            "the compiled kernels are not built, or this CPU lacks AVX2 and FMA: NumPy resamples"
        )
    return request.param


def blobs(n=40, seed=0):
    """Images with one bright 5x5 blob each at a random place (easy to track)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 28, 28), np.uint8)
    for i, (y, x) in enumerate(rng.integers(6, 17, (n, 2))):
        out[i, y : y + 5, x : x + 5] = 255
    return out.reshape(n, 784)


def test_deterministic_given_the_seed(path):
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
    assert np.array_equal(
        Augmenter(AugmentConfig(rotate=30, probability=0))(x, np.random.default_rng(0)), x
    )


def test_identity_sampling_is_exact():
    x = digits().reshape(-1, 28, 28)
    ys, xs = np.mgrid[0:28, 0:28].astype(np.float32)
    y = np.broadcast_to(ys.reshape(1, -1), (len(x), 784)).copy()
    out = bilinear(x, y, np.broadcast_to(xs.reshape(1, -1), (len(x), 784)).copy())
    assert np.array_equal(out, x.reshape(len(x), -1))


def test_values_stay_in_range_and_ink_is_kept(path):
    x = blobs(256)
    out = Augmenter(FULL)(x, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == x.shape
    ink_in, ink_out = x.sum(axis=1).astype(float), out.sum(axis=1).astype(float)
    ratio = ink_out / ink_in
    assert 0.9 < ratio.mean() < 1.1  # kept on average
    # Elastic stretching changes a small blob's area most: over seeds, between 0.39x and 2.7x.
    assert ratio.min() > 0.25 and ratio.max() < 4


def test_each_image_stays_in_its_place(path):
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


def test_geometry_a_90_degree_rotation(path):
    x = digits(3)
    out = Augmenter(AugmentConfig(rotate=90))(x, Extreme())
    turned = np.rot90(x.reshape(3, 28, 28), k=1, axes=(1, 2)).reshape(3, 784)
    assert np.array_equal(out, turned)


def test_geometry_a_translation_by_whole_pixels(path):
    x = digits(3)
    out = Augmenter(AugmentConfig(translate=2))(x, Extreme())
    shifted = np.zeros((3, 28, 28), np.uint8)
    shifted[:, 2:, 2:] = x.reshape(3, 28, 28)[:, :-2, :-2]
    assert np.array_equal(out.reshape(3, 28, 28), shifted)


def test_elastic_displacements_are_smooth_and_of_simards_size():
    a = Augmenter(AugmentConfig(elastic_alpha=34, elastic_sigma=4))
    uniform = np.random.default_rng(0).random((2, 200, 28, 28), dtype=np.float32)
    dy, dx = a._elastic_field(uniform[0]), a._elastic_field(uniform[1])
    magnitude = np.hypot(dy, dx)
    assert 0.5 < magnitude.mean() < 4  # pixels: visible, not destructive
    field = dy.reshape(200, 28, 28)
    neighbour = np.abs(np.diff(field, axis=2)).mean()
    assert neighbour < 0.2 * np.abs(field).mean()  # neighbours move together


@pytest.mark.parametrize("batch", [1, 16, 17, 128])
def test_any_batch_size(batch, path):
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


def _draws(augmenter, n, seed):
    rng = np.random.default_rng(seed)
    return augmenter._draw_affine(n, rng), rng.random((2, n, 28, 28), dtype=np.float32)


@pytest.mark.parametrize(
    "config",
    [FULL, AugmentConfig(rotate=15, translate=3), AugmentConfig(elastic_alpha=36, elastic_sigma=6)],
)
def test_the_kernel_resamples_as_its_numpy_definition(config):
    if not kernels.WIDE:
        pytest.skip("the compiled kernels are not built, or this CPU lacks AVX2 and FMA")
    a = Augmenter(config)
    x = digits(300)
    inverse, uniform = _draws(a, 300, 0)
    field = uniform if config.elastic_alpha else None
    compiled = kernels.distort(x, inverse, field, a._g, config.elastic_alpha)
    reference = a._resample(x, inverse, field)
    # The same arithmetic in another order (fused multiply-adds, the blur's sums): a pixel may
    # land on the other side of a rounding boundary, by one level, now and then.
    diff = np.abs(compiled.astype(int) - reference.astype(int))
    assert diff.max() <= 1 and np.count_nonzero(diff) <= 1e-4 * diff.size


def test_the_kernel_keeps_sources_inside_the_image_for_absurd_maps():
    if not kernels.WIDE:
        pytest.skip("the compiled kernels are not built, or this CPU lacks AVX2 and FMA")
    x = digits(4)
    inverse = np.array(
        [
            [np.nan, 0, 0, 1, 0, 0],
            [np.inf, -np.inf, 1e30, 1, 0, 0],
            [1, 0, 0, 1, 1e9, -1e9],
            [1, 0, 0, 1, 0, 0],
        ],
        np.float32,
    )
    out = kernels.distort(x, inverse, None, Augmenter(FULL)._g, 0.0)
    assert np.array_equal(out[3], x[3])  # identity
    assert out.shape == x.shape


def _per_image(images):
    """Ink, centre of ink (y, x) and the share of bright pixels, per image of (n, 784) uint8
    digits."""
    square = images.reshape(-1, 28, 28).astype(np.float64)
    ink = square.sum(axis=(1, 2))
    ys = (square.sum(axis=2) * np.arange(28)).sum(axis=1) / ink
    xs = (square.sum(axis=1) * np.arange(28)).sum(axis=1) / ink
    return {"ink": ink, "centre_y": ys, "centre_x": xs, "bright": (square > 128).mean(axis=(1, 2))}


def _old_distortions(augmenter, images, rng):
    """The distortions as made before the compiled kernel: NumPy, 16 digits at a time, each
    chunk's affine maps drawn and then its elastic fields (a different order of draws)."""
    out = []
    for i in range(0, len(images), 16):
        chunk = images[i : i + 16]
        inverse = augmenter._draw_affine(len(chunk), rng)
        uniform = rng.random((2, len(chunk), 28, 28), dtype=np.float32)
        out.append(augmenter._resample(chunk, inverse, uniform))
    return np.concatenate(out)


def test_new_distortions_have_the_statistics_of_the_old(real_cache):
    """The same 6,000 real digits distorted the old way and the new (compiled where built), each
    with its own draws: paired per digit, every statistic's mean difference is within four
    standard errors of zero, as it would be for two draws of one distribution; and the
    displacement of the digits' centres has the same size."""
    images = np.load(real_cache / "mnist" / "train-images.npy")[:6000].reshape(-1, 784)
    a = Augmenter(
        AugmentConfig(rotate=10, scale=0.1, translate=2, elastic_alpha=34, elastic_sigma=4)
    )
    rng = np.random.default_rng(1)
    old = _per_image(_old_distortions(a, images, rng))
    new = _per_image(
        np.concatenate([a(images[i : i + 128], rng) for i in range(0, len(images), 128)])
    )
    original = _per_image(images)
    for key in ("ink", "centre_y", "centre_x", "bright"):
        diff = new[key] - old[key]
        se = diff.std() / np.sqrt(len(diff))
        assert abs(diff.mean()) <= 4 * se, (
            f"{key}: mean difference {diff.mean():.4g}, standard error {se:.4g}"
        )
    for axis in ("centre_y", "centre_x"):
        moved_old, moved_new = (old[axis] - original[axis]) ** 2, (new[axis] - original[axis]) ** 2
        diff = moved_new - moved_old
        assert abs(diff.mean()) <= 4 * diff.std() / np.sqrt(len(diff))
        # pixels: shifted by up to 2, plus rotation and elastic
        assert 0.5 < np.sqrt(moved_new.mean()) < 3
