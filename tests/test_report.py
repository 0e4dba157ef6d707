"""mlp report: valid, non-blank pictures of the right size, and an HTML page that embeds them."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mnist_mlp import evaluation, pictures, report, run
from mnist_mlp.cli import main
from mnist_mlp.config import load_config

pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")

TINY = ["data.validation=16", "model.hidden=[32]", "training.epochs=4", "training.batch_size=8"]


@pytest.fixture
def tiny_run(tiny_as_mnist, tmp_path):
    folder = tmp_path / "runs" / "tiny"
    run.train_run(load_config(overrides=TINY), folder, progress=False, echo=lambda s: None)
    return folder


def assert_picture(path, min_size):
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.width >= min_size[0] and im.height >= min_size[1]
        gray = np.asarray(im.convert("L"), np.float32)
    assert gray.std() > 10  # not blank: a real picture has dark text, lines and light paper
    assert (gray < 100).mean() > 0.003 and (gray > 200).mean() > 0.3


def test_training_leaves_a_curves_picture(tiny_run):
    assert_picture(tiny_run / "curves.png", (800, 300))


def test_report_writes_every_picture_and_the_page(tiny_run):
    result = CliRunner().invoke(main, ["report", str(tiny_run)])
    assert result.exit_code == 0, result.output
    for name, size in (
        ("curves.png", (800, 300)),
        ("confusion.png", (500, 500)),
        ("mistakes.png", (300, 100)),
        ("units.png", (700, 300)),
    ):
        assert_picture(tiny_run / name, size)
        assert f"wrote {tiny_run / name}" in result.stdout
    page = (tiny_run / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4  # self-contained: every picture inside the page
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data in images)
    accuracy = evaluation.evaluate_checkpoint(tiny_run / "checkpoint.npz", progress=False)[
        "accuracy"
    ]
    assert f"{100 * accuracy:.2f}%" in page
    assert "precision" in page and "hidden" in page  # per-class table and the config


def test_report_into_another_folder_from_a_checkpoint(tiny_run, tmp_path):
    out = tmp_path / "elsewhere"
    paths = report.make(tiny_run / "checkpoint.npz", out, progress=False)["paths"]
    assert set(paths) == {"curves", "confusion", "mistakes", "units", "html"}
    assert all(p.startswith(str(out)) for p in paths.values())


def test_mistakes_grid_orders_by_confidence():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (30, 784), dtype=np.uint8)
    labels = np.zeros(30, int)
    probs = np.full((30, 10), 0.01)
    probs[:, 0] = 0.91  # right
    probs[5, :] = 0.0
    probs[5, 3] = 0.99  # wrong, sure
    probs[9, :] = 0.0
    probs[9, 7] = 0.6  # wrong, less sure
    probs[9, 0] = 0.4
    grid = pictures.mistakes_grid(images, labels, probs, [str(d) for d in range(10)], per_row=5)
    assert grid.width > 2 * 84 and grid.height > 84


def test_without_matplotlib_the_message_says_how_to_install(tiny_run, monkeypatch):
    monkeypatch.setattr(report, "have_matplotlib", lambda: False)
    result = CliRunner().invoke(main, ["report", str(tiny_run)])
    assert result.exit_code == 1
    assert "pip install 'mnist-mlp[plot]'" in result.stderr


def test_not_a_run(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "holds no checkpoint.npz" in result.stderr


def test_hidden_units_shows_the_most_used_first_layer_units(tiny_run):
    from mnist_mlp import checkpoint

    ckpt = checkpoint.load(tiny_run / "checkpoint.npz")
    ckpt.params["W2"][5] = 0  # unit 5 passes nothing on: never among the most used
    ckpt.params["W2"][7] *= 100  # unit 7 passes on the most (if it is ever active)
    images = np.random.default_rng(0).integers(0, 256, (50, 784)).astype(np.uint8)
    grid = report.hidden_units(ckpt, images, count=8)
    assert grid.size == (8 + 8 * (84 + 8), 28 + 8 + 84 + 15 + 8)  # one row of 8 tiles under a title
    rgb = np.asarray(grid, np.float32)
    assert (rgb[..., 0] - rgb[..., 2] > 100).any() and (
        rgb[..., 2] - rgb[..., 0] > 100
    ).any()  # red and blue
    units = report.most_used_units(ckpt, images, count=32)
    assert units[0] == 7 and sorted(units.tolist()) == list(range(32))
    assert 5 in units[-8:]  # among the last: it passes nothing on
