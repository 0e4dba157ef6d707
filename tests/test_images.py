"""Preparing users' images the way MNIST was made: geometry, polarity, strokes, bad input."""

from __future__ import annotations

import imagegen
import numpy as np
import pytest
from PIL import Image

from mnist_mlp import images


def center_of_mass(p):
    m = p.sum()
    return (p.sum(axis=1) @ np.arange(28)) / m, (p.sum(axis=0) @ np.arange(28)) / m


def ink_box(p):
    rows, cols = np.nonzero(p > 0)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def mnist_like(seed=0):
    """A white-on-black 28x28 digit made as MNIST was: drawn large, then fitted and centred."""
    big = imagegen.drawn(
        seed % 10, 25, canvas=400, rng=np.random.default_rng(seed), dark_on_light=False
    )
    field = images.to_field(np.asarray(big, np.float32) / 255)
    return (field * 255).astype(np.uint8)


def save(tmp_path, image, name="x.png", **kw):
    path = tmp_path / name
    image.save(path, **kw)
    return path


@pytest.mark.parametrize("digit", range(10))
def test_a_large_off_centre_drawing_is_fitted_and_centred(tmp_path, digit):
    path = save(tmp_path, imagegen.drawn(digit, 40, canvas=900, rng=np.random.default_rng(digit)))
    p = images.prepare(path).pixels
    assert p.shape == (28, 28) and p.dtype == np.float32
    assert p.min() >= 0 and p.max() == pytest.approx(1.0)
    assert max(ink_box(p)) in (20, 21)  # the longer side fitted to MNIST's 20 px box
    cy, cx = center_of_mass(p)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_an_mnist_like_image_passes_through_unchanged(tmp_path):
    for seed in range(5):
        digit = mnist_like(seed)
        p = images.prepare(save(tmp_path, Image.fromarray(digit))).pixels
        assert np.abs(p - digit / 255).max() < 0.05


def test_polarity_is_read_from_the_paper(tmp_path):
    light = imagegen.drawn(3, 30, canvas=500)
    dark = Image.fromarray(255 - np.asarray(light))
    a = images.prepare(save(tmp_path, light, "a.png")).pixels
    b = images.prepare(save(tmp_path, dark, "b.png")).pixels
    assert np.abs(a - b).max() < 0.03


@pytest.mark.parametrize("width", [1, 2, 8, 40, 120])
def test_stroke_width_is_brought_to_mnists(tmp_path, width):
    p = images.prepare(save(tmp_path, imagegen.drawn(4, width, canvas=1200))).pixels
    box = max(ink_box(p))
    ratio = images.stroke_width(p) / box
    assert images.STROKE_RANGE[0] * 0.8 <= ratio <= images.STROKE_RANGE[1] * 1.2, ratio


def test_uneven_lighting_and_noise_leave_only_the_digit(tmp_path):
    rng = np.random.default_rng(3)
    digit = mnist_like(7)
    photo = imagegen.photo_like(digit, rng)
    p = images.prepare(save(tmp_path, photo, "p.jpg", quality=90)).pixels
    reference = digit / 255
    assert np.abs(p - reference).mean() < 0.08  # close to the digit it was made from
    assert (p[reference == 0] > 0.5).mean() < 0.02  # hardly any ink where there was none


def test_ruled_paper_lines_are_erased(tmp_path):
    # Left in, these lines differ from the clean drawing by ~0.15 per pixel on average.
    diffs = []
    for digit in range(10):
        clean = images.prepare(save(tmp_path, imagegen.drawn(digit, 25), "a.png")).pixels
        ruled = images.prepare(
            save(tmp_path, imagegen.on_ruled_paper(imagegen.drawn(digit, 25)), "b.png")
        ).pixels
        diffs.append(np.abs(ruled - clean).mean())
    assert np.mean(diffs) < 0.03 and max(diffs) < 0.06, diffs


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "I;16", "LA"])
def test_image_modes(tmp_path, mode):
    base = imagegen.drawn(2, 30, canvas=300)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(base, np.uint16) * 257)
    elif mode == "LA":
        image = base.convert("LA")
    else:
        image = base.convert(mode)
    reference = images.prepare(save(tmp_path, base, "ref.png")).pixels
    p = images.prepare(save(tmp_path, image, f"m.{'tiff' if mode == 'I;16' else 'png'}")).pixels
    assert np.abs(p - reference).max() < 0.05


def test_transparent_pixels_are_paper(tmp_path):
    ink = np.asarray(imagegen.drawn(6, 30, canvas=300)) < 128
    for colour in (0, 255):  # black or white strokes on a transparent background
        rgba = np.zeros((300, 300, 4), np.uint8)
        rgba[..., :3] = colour
        rgba[..., 3] = ink * 255
        p = images.prepare(save(tmp_path, Image.fromarray(rgba, "RGBA"), f"t{colour}.png")).pixels
        reference = images.prepare(
            save(tmp_path, imagegen.drawn(6, 30, canvas=300), "r.png")
        ).pixels
        assert np.abs(p - reference).max() < 0.05


def test_exif_orientation_is_honoured(tmp_path):
    upright = imagegen.drawn(7, 30, canvas=300).convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a sensor held sideways saves it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rot.jpg"
    stored.save(path, exif=exif, quality=95)
    reference = images.prepare(save(tmp_path, upright, "up.jpg", quality=95)).pixels
    sideways = images.prepare(save(tmp_path, stored, "side.jpg", quality=95)).pixels  # no tag
    assert np.abs(images.prepare(path).pixels - reference).mean() < 0.04
    assert np.abs(sideways - reference).mean() > 0.1


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: Image.new("L", (200, 200), 255).save(p), "blank image"),
        (lambda p: Image.new("RGB", (64, 64), (90, 140, 200)).save(p), "blank image"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"this is not an image at all"), "not an image"),
        (lambda p: p.write_bytes(_png_bytes()[:200]), "unreadable image"),
    ],
)
def test_bad_input(tmp_path, make, message):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(images.ImageError, match=message):
        images.prepare(path)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = save(tmp_path, imagegen.drawn(1, 20, canvas=400))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(images.ImageError, match="decompression-bomb"):
        images.prepare(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(images.ImageError, match="no such file"):
        images.prepare(tmp_path / "none.png")
    with pytest.raises(images.ImageError, match="is a folder"):
        images.prepare(tmp_path)


def test_list_images_expands_folders(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in images.list_images([tmp_path])] == ["a.JPG", "b.png"]


def test_render_shows_the_input():
    text = images.render(np.eye(28, dtype=np.float32))
    lines = text.splitlines()
    assert len(lines) == 28 and all(len(line) == 56 for line in lines)
    assert lines[3][6:8] == "██" and lines[3][0:2] == "  "


def _png_bytes():
    import io

    buf = io.BytesIO()
    imagegen.drawn(8, 20, canvas=300).save(buf, "PNG")
    return buf.getvalue()


def _flood_fill(mask):
    """Plain 8-connected flood fill: the oracle for images._components."""
    h, w = mask.shape
    labels, n = np.zeros((h, w), int), 0
    for y, x in zip(*np.nonzero(mask)):
        if labels[y, x]:
            continue
        n += 1
        labels[y, x], stack = n, [(y, x)]
        while stack:
            a, b = stack.pop()
            for c in range(max(a - 1, 0), min(a + 2, h)):
                for d in range(max(b - 1, 0), min(b + 2, w)):
                    if mask[c, d] and not labels[c, d]:
                        labels[c, d] = n
                        stack.append((c, d))
    return labels


def test_components_match_a_flood_fill():
    rng = np.random.default_rng(0)
    for _ in range(100):
        mask = rng.random((rng.integers(1, 40), rng.integers(1, 40))) < rng.uniform(0.2, 0.7)
        ours, oracle = images._components(mask), _flood_fill(mask)
        pairs = set(zip(ours[mask].tolist(), oracle[mask].tolist()))
        # same partition
        assert len(pairs) == len(np.unique(ours[mask])) == len(np.unique(oracle[mask]))
        assert not ours[~mask].any()


@pytest.mark.parametrize("k", [3, 5, 9])
def test_square_filter_matches_pillows_rank_filters(k):
    from PIL import ImageFilter

    a = np.random.default_rng(k).random((37, 50)).astype(np.float32)
    inner = (slice(k, -k), slice(k, -k))  # Pillow and we treat the edges differently
    for reduce, rank in ((np.min, ImageFilter.MinFilter), (np.max, ImageFilter.MaxFilter)):
        expected = np.asarray(Image.fromarray(a, "F").filter(rank(k)))
        np.testing.assert_array_equal(images.square_filter(a, k, reduce)[inner], expected[inner])
