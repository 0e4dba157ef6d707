"""Dataset splits, scaling and the seeded random streams."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_mlp import data


def test_split_sizes_disjoint_and_seeded(tiny_as_mnist):
    a = data.load("mnist", validation=16, seed=0, progress=False)
    assert (len(a.train), len(a.val), len(a.test)) == (48, 16, 32)
    assert a.train.images.shape == (48, 784) and a.train.images.dtype == np.uint8
    rows = {tuple(r) for r in a.train.images}
    assert not any(tuple(r) in rows for r in a.val.images)  # no image in both
    b = data.load("mnist", validation=16, seed=0, progress=False)
    c = data.load("mnist", validation=16, seed=1, progress=False)
    assert np.array_equal(a.val.images, b.val.images)
    assert not np.array_equal(a.val.images, c.val.images)
    assert len(data.load("mnist", validation=16, subset=10, progress=False).train) == 10


def test_labels_follow_their_images(tiny_as_mnist):
    d = data.load("mnist", validation=16, progress=False)
    # The tiny dataset writes each label as a bright pixel at row 4 + 2 * label, column 14.
    for split in (d.train, d.val, d.test):
        rows = np.argmax(split.images.reshape(-1, 28, 28)[:, :, 14], axis=1)
        assert np.array_equal((rows - 4) // 2, split.labels)


def test_scale_standardises():
    scale, offset = data.scaling_for(0.5, 0.25)
    x = data.scale(np.array([[0, 255, 127]], np.uint8), scale=scale, offset=offset)
    np.testing.assert_allclose(x, [[-2.0, 2.0, (127 / 255 - 0.5) / 0.25]], rtol=1e-6, atol=1e-6)
    assert x.dtype == np.float32
    out = np.empty((1, 3), np.float32)
    assert data.scale(np.zeros((1, 3), np.uint8), out) is out


def test_scale_gathers_the_rows_asked_for():
    images = np.arange(12, dtype=np.uint8).reshape(4, 3)
    np.testing.assert_array_equal(
        data.scale(images, scale=1.0, offset=0.5, rows=np.array([2, 0, 2])), images[[2, 0, 2]] + 0.5
    )


def test_random_streams_are_independent_of_each_other():
    a = data.rng_for(0, data.EPOCH, 3).random(4)
    data.rng_for(0, data.EPOCH, 2).random(1000)  # drawing from another stream changes nothing
    assert np.array_equal(a, data.rng_for(0, data.EPOCH, 3).random(4))
    assert not np.array_equal(a, data.rng_for(0, data.EPOCH, 4).random(4))


@pytest.mark.realdata
def test_real_mnist_pixel_statistics_match_the_declared_ones(real_env):
    d = data.load("mnist", validation=0, progress=False)
    x = d.train.images.astype(np.float64) / 255
    assert x.mean() == pytest.approx(0.1307, abs=1e-4) and x.std() == pytest.approx(
        0.3081, abs=1e-4
    )
