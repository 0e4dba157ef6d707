"""Predict the digits in users' image files with a trained checkpoint."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_mlp import checkpoint as ckpt_mod
from mnist_mlp import images, model
from mnist_mlp.errors import MlpError

LATEST = Path("runs") / "latest" / "checkpoint.npz"


@dataclass
class Prediction:
    """One file's result: a prediction, or the error that prevented it."""

    file: str
    prediction: int | None = None
    probability: float | None = None
    top_k: list | None = None
    pixels: np.ndarray | None = None  # the 28x28 input the network saw
    error: str | None = None

    def as_dict(self) -> dict:
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        return {"file": self.file, "prediction": self.prediction, "probability": self.probability,
                "top_k": self.top_k}


def default_checkpoint() -> Path:
    """The newest run's best checkpoint (``runs/latest/checkpoint.npz``)."""
    if LATEST.exists():
        return LATEST
    raise MlpError(f"no trained model found at {LATEST}: train one first "
                   f"(mlp train --config configs/default.yaml) or pass --checkpoint PATH")


def predict_files(paths: list[str | os.PathLike], checkpoint: str | os.PathLike | None = None,
                  top_k: int = 3) -> list[Prediction]:
    """Prepare every image as MNIST was made and classify them in one batch.

    A file that cannot be read, or holds no digit, gets a :class:`Prediction` with ``error``
    set; the others are still predicted.
    """
    ckpt = ckpt_mod.load(checkpoint or default_checkpoint())
    files = images.list_images(paths)
    if not files:
        raise MlpError("no image files given (a folder counts its .png, .jpg, .bmp, .gif, .tif, .webp files)")
    results, ready = [], []
    for f in files:
        try:
            prepared = images.prepare(f)
        except images.ImageError as exc:
            results.append(Prediction(str(f), error=str(exc).split(": ", 1)[-1]))
            continue
        results.append(Prediction(str(f), pixels=prepared.pixels))
        ready.append(results[-1])
    if ready:
        # Prepared pixels are MNIST's pixel values / 255; apply the checkpoint's own scaling.
        scale, offset = ckpt.scaling
        x = np.stack([r.pixels.reshape(-1) for r in ready]).astype(np.float32) * np.float32(255 * scale)
        x += np.float32(offset)
        probs = model.predict_proba(ckpt.params, x, ckpt.activation)
        k = max(1, min(top_k, probs.shape[1]))
        for r, p in zip(ready, probs):
            order = np.argsort(-p, kind="stable")[:k]
            r.prediction, r.probability = int(order[0]), float(p[order[0]])
            r.top_k = [[int(c), float(p[c])] for c in order]
    return results
