"""What the drawing page's API answers: a prediction with its pictures, and the model's card."""

from __future__ import annotations

import numpy as np

from mnist_mlp import __version__
from mnist_mlp.predict import Predictor
from mnist_mlp.serve.limits import MAX_PIXELS


def model_info(predictor: Predictor) -> dict:
    """What ``GET /api/model`` says about the checkpoint being served."""
    ckpt = predictor.ckpt
    test = ckpt.meta.get("test") or {}
    dataset = ckpt.meta.get("dataset", {})
    return {
        "checkpoint": str(predictor.path),
        "dataset": dataset.get("name"),
        "digest": dataset.get("digest"),
        "classes": ckpt.classes,
        "layers": ckpt.sizes,
        "activation": ckpt.activation,
        "dropout": ckpt.config.model.dropout,
        "test_accuracy": test.get("accuracy"),
        "test_images": test.get("n"),
        "epoch": ckpt.meta.get("epoch"),
        "best": ckpt.meta.get("best"),
        "input": {"scale": ckpt.scaling[0], "offset": ckpt.scaling[1]},
        "mnist_mlp_version": __version__,
    }


def answer(predictor: Predictor, body: bytes, top_k: int) -> dict:
    """The prediction for one image's bytes, with the input and its sensitivity (a JSON-able dict).

    Raises
    ------
    ImageError
        If the bytes are not an image, hold no digit, or have too many pixels.
    """
    r = predictor.predict_image(body, "the image", top_k, explain=True, max_pixels=MAX_PIXELS)
    # predict_image raises rather than return a result without them
    assert r.prediction is not None and r.pixels is not None and r.sensitivity is not None
    return {
        "prediction": r.prediction,
        "label": predictor.ckpt.classes[r.prediction],
        "probability": r.probability,
        "top_k": r.top_k,
        "input": np.round(r.pixels, 4).tolist(),
        "sensitivity": _rounded(r.sensitivity).tolist(),
    }


def _rounded(a: np.ndarray, digits: int = 4) -> np.ndarray:
    """``a`` to ``digits`` significant figures of its largest magnitude (a shorter JSON)."""
    peak = float(np.abs(a).max())
    if peak == 0:
        return a.astype(np.float64)
    step = 10.0 ** (np.floor(np.log10(peak)) - digits + 1)
    return np.round(a / step) * step
