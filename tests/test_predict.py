"""mlp predict: agreement with eval on MNIST's own digits, robustness on users' images, bad
files."""

from __future__ import annotations

import json

import imagegen
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mnist_mlp import checkpoint, data, evaluation, metrics, predict
from mnist_mlp.cli import main


def write_digits(folder, n=3):
    folder.mkdir(exist_ok=True)
    for d in range(n):
        imagegen.drawn(d, 30, canvas=300).save(folder / f"{d}.png")


def test_json_output_and_per_file_errors(tmp_path, random_checkpoint):
    write_digits(tmp_path / "imgs")
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png")
    Image.new("L", (50, 50), 255).save(tmp_path / "imgs" / "blank.png")
    result = CliRunner().invoke(
        main,
        ["predict", str(tmp_path / "imgs"), "-c", str(random_checkpoint), "--json", "--top-k", "4"],
    )
    assert result.exit_code == 1  # some files failed
    items = json.loads(result.stdout)  # stdout is one JSON array, nothing else
    by_name = {item["file"].rsplit("/", 1)[-1]: item for item in items}
    assert set(by_name) == {"0.png", "1.png", "2.png", "broken.png", "blank.png"}
    assert "not an image" in by_name["broken.png"]["error"]
    assert "blank" in by_name["blank.png"]["error"]
    good = by_name["0.png"]
    assert set(good) == {"file", "prediction", "probability", "top_k"}
    assert isinstance(good["prediction"], int) and 0 <= good["probability"] <= 1
    assert len(good["top_k"]) == 4 and good["top_k"][0] == [good["prediction"], good["probability"]]
    assert [p for _, p in good["top_k"]] == sorted((p for _, p in good["top_k"]), reverse=True)


def test_text_output_and_show(tmp_path, random_checkpoint):
    write_digits(tmp_path / "imgs", 1)
    result = CliRunner().invoke(
        main, ["predict", str(tmp_path / "imgs" / "0.png"), "-c", str(random_checkpoint), "--show"]
    )
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "0.png" in lines[0] and "%" in lines[0] and "then" in lines[0]
    assert len(lines) == 29 and "█" in result.stdout


def test_no_trained_model_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_digits(tmp_path / "imgs", 1)
    result = CliRunner().invoke(main, ["predict", "imgs/0.png"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: no trained model found at runs/latest/checkpoint.npz: train one "
        "first (mlp train --config configs/default.yaml) or pass --checkpoint PATH"
    )


def test_every_file_bad_still_reports_each(tmp_path, random_checkpoint):
    (tmp_path / "a.png").write_bytes(b"")
    results = predict.predict_files(
        [tmp_path / "a.png", tmp_path / "missing.png"], random_checkpoint
    )
    assert [r.error for r in results] == ["empty file", "no such file"]


# --- on the real data, with a model trained by configs/smoke.yaml ------------------------------


def _accuracy(results, labels):
    return np.mean([r.prediction == y for r, y in zip(results, labels)])


@pytest.mark.realdata
def test_mnist_test_images_as_png_agree_with_eval(smoke_checkpoint, mnist_test, tmp_path):
    images, labels = mnist_test
    picks = np.random.default_rng(0).permutation(len(labels))[:1000]
    for i in picks:
        Image.fromarray(images[i]).save(tmp_path / f"{i:05d}.png")
    results = predict.predict_files([tmp_path], smoke_checkpoint)
    ckpt = checkpoint.load(smoke_checkpoint)
    reference = metrics.evaluate(
        ckpt.params,
        ckpt.activation,
        data.Split(images[picks].reshape(-1, 784), labels[picks]),
        scaling=ckpt.scaling,
    )
    order = np.argsort(picks)  # files are listed sorted by name
    agree = np.mean([r.prediction for r in results] == reference.predictions[order])
    assert agree >= 0.99


@pytest.mark.realdata
def test_photo_like_digits_within_1_5_points_of_the_test_set(
    smoke_checkpoint, mnist_test, tmp_path
):
    images, labels = mnist_test
    rng = np.random.default_rng(1)
    picks = rng.permutation(len(labels))[:500]
    for i in picks:
        imagegen.photo_like(images[i], rng).save(tmp_path / f"{i:05d}.jpg", quality=95)
    results = predict.predict_files([tmp_path], smoke_checkpoint)
    assert all(r.error is None for r in results)
    photo = _accuracy(results, labels[np.sort(picks)])
    test = evaluation.evaluate_checkpoint(smoke_checkpoint, progress=False)["accuracy"]
    assert photo >= test - 0.015, (photo, test)


@pytest.mark.realdata
@pytest.mark.parametrize("width", [2, 25, 90])
def test_drawn_digits_thin_and_thick(smoke_checkpoint, tmp_path, width):
    truth = []
    for d in range(10):
        for s in range(3):
            imagegen.drawn(d, width, rng=np.random.default_rng(10 * d + s)).save(
                tmp_path / f"{d}_{s}.png"
            )
            truth.append(d)
    results = predict.predict_files([tmp_path], smoke_checkpoint)
    assert _accuracy(results, sorted(truth)) >= 0.9


@pytest.mark.realdata
def test_font_digits(smoke_checkpoint, tmp_path):
    if not imagegen.FONTS:
        pytest.skip("no DejaVu fonts under /usr/share/fonts")
    files, truth = [], []
    for font in imagegen.FONTS[:6]:
        for d in range(10):
            path = tmp_path / f"{len(files):03d}.png"
            imagegen.font_digit(d, font).save(path)
            files.append(path)
            truth.append(d)
    assert _accuracy(predict.predict_files(files, smoke_checkpoint), truth) >= 0.85
