"""Predict the digits in users' images with a trained checkpoint, and say why (sensitivity).

:class:`Predictor` holds one loaded checkpoint; ``mlp predict`` and ``mlp serve`` both use it,
so an image gets the same answer from the command line and from the page.
"""

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
    """One image's result: a prediction, or the error that prevented it."""

    file: str
    prediction: int | None = None
    probability: float | None = None
    top_k: list | None = None
    pixels: np.ndarray | None = None  # (28, 28) in [0, 1]: the input the network saw
    sensitivity: np.ndarray | None = None  # (28, 28): d logit[prediction] / d pixel, if asked for
    explanation: Path | None = None  # the PNG of the input and its sensitivity, if written
    error: str | None = None

    def as_dict(self) -> dict:
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        return {
            "file": self.file,
            "prediction": self.prediction,
            "probability": self.probability,
            "top_k": self.top_k,
        }

    def line(self, width: int = 0) -> str:
        """``file  digit  (probability)   then the runners-up``, the file padded to ``width``."""
        assert self.probability is not None and self.top_k is not None
        others = "  ".join(f"{c}: {100 * p:.1f}%" for c, p in self.top_k[1:])
        return f"{self.file:<{width}}  {self.prediction}  ({100 * self.probability:.1f}%)" + (
            f"   then {others}" if others else ""
        )


def lines(results: list[Prediction], show: bool = False, quiet: bool = False) -> list[tuple]:
    """What ``mlp predict`` prints of ``results``: (line, whether it goes to stderr) pairs. A
    line per image (an error to stderr), with its 28x28 input drawn in text if ``show``, and
    the explanations written; ``quiet`` (``--json``): those last only, on stderr."""
    out: list[tuple] = []
    width = max((len(r.file) for r in results), default=0)
    for r in results if not quiet else []:
        if r.error is not None:
            out.append((f"{r.file:<{width}}  error: {r.error}", True))
            continue
        out.append((r.line(width), False))
        if show and r.pixels is not None:
            out.append((images.render(r.pixels), False))
    out += [(f"wrote {r.explanation}", quiet) for r in results if r.explanation is not None]
    return out


def default_checkpoint() -> Path:
    """The newest run's best checkpoint (``runs/latest/checkpoint.npz``)."""
    if LATEST.exists():
        return LATEST
    raise MlpError(
        f"no trained model found at {LATEST}: train one first "
        f"(mlp train --config configs/default.yaml) or pass --checkpoint PATH"
    )


class Predictor:
    """A checkpoint (or a committee of them) loaded once, applied to prepared 28x28 digits.

    Parameters
    ----------
    checkpoint : path-like or list of path-like, optional
        [default: :func:`default_checkpoint`]. Several: a committee, whose probabilities are the
        mean of its members' (checkpoints of the same dataset and classes).
    """

    def __init__(self, checkpoint: str | os.PathLike | list | None = None, tta: int = 1):
        given = checkpoint if isinstance(checkpoint, (list, tuple)) else [checkpoint]
        paths = [Path(p or default_checkpoint()) for p in given]
        self.path = paths[0]
        self.members = [ckpt_mod.load(p) for p in paths]
        for path, member in zip(paths, self.members):
            ckpt_mod.check_pixels(path, member)
        ckpt_mod.check_committee(paths, self.members)
        self.ckpt = self.members[0]
        self.tta = tta  # views of each digit its probabilities are averaged over

    @staticmethod
    def _scaling(ckpt) -> tuple[np.float32, np.float32]:
        # Prepared pixels are MNIST's pixel values / 255; a checkpoint's scaling maps 0..255.
        scale, offset = ckpt.scaling
        return np.float32(255 * scale), np.float32(offset)

    def inputs(self, pixels: np.ndarray, ckpt=None) -> np.ndarray:
        """(N, 28, 28) pixels in [0, 1] -> (N, 784) float32 inputs of ``ckpt`` (the first
        member's)."""
        ckpt = ckpt or self.ckpt
        scale, offset = self._scaling(ckpt)
        if ckpt.config.data.normalise.kind != "none":  # the view the member was trained on
            from mnist_mlp import normalise

            pixels = normalise.as_trained(pixels * 255, ckpt.config) / np.float32(255)
        x = pixels.reshape(len(pixels), -1).astype(np.float32) * scale
        x += offset
        return x

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities, ndarray of shape (N, 10), for ``pixels`` (N, 28, 28) in [0, 1]."""
        total = sum(self._member(c, pixels) for c in self.members)
        return total / np.float32(len(self.members))

    def _member(self, ckpt, pixels: np.ndarray) -> np.ndarray:
        """One member's probabilities: its view of the digits, then the ``tta`` views of that."""
        if self.tta == 1:
            return model.predict_proba(ckpt.params, self.inputs(pixels, ckpt), ckpt.activation)
        from mnist_mlp import metrics, normalise, tta

        raw = np.clip(np.rint(pixels.reshape(len(pixels), -1) * 255), 0, 255).astype(np.uint8)
        seen = normalise.as_trained(raw, ckpt.config)

        def forward(px: np.ndarray) -> np.ndarray:
            return metrics.probabilities(ckpt.params, ckpt.activation, px, scaling=ckpt.scaling)

        return tta.probabilities(forward, seen, self.tta)

    def sensitivity(self, pixels: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """d logit[classes[i]] / d pixel for each of the 784 pixels, per unit of ink (0..1).

        For a committee, the members' mean. Taken with respect to the raw pixel, so the
        scaling's offset drops out.

        Returns
        -------
        ndarray of shape (N, 28, 28), float32
            Positive where more ink would raise the class's score, negative where it would
            lower it.
        """
        grads = [
            model.input_gradient(c.params, self.inputs(pixels, c), c.activation, classes)
            * self._scaling(c)[0]
            for c in self.members
        ]
        return (sum(grads[1:], grads[0]) / np.float32(len(grads))).reshape(-1, 28, 28)

    def fill(self, results: list[Prediction], top_k: int = 3, explain: bool = False) -> None:
        """Predict, in one batch, every result that has pixels and no error."""
        ready = [r for r in results if r.error is None and r.pixels is not None]
        if not ready:
            return
        pixels = np.stack([r.pixels for r in ready if r.pixels is not None])
        probs = self.probabilities(pixels)
        k = max(1, min(top_k, probs.shape[1]))
        for r, p in zip(ready, probs):
            order = np.argsort(-p, kind="stable")[:k]
            r.prediction, r.probability = int(order[0]), float(p[order[0]])
            r.top_k = [[int(c), float(p[c])] for c in order]
        if explain:
            maps = self.sensitivity(pixels, np.array([r.prediction for r in ready]))
            for r, m in zip(ready, maps):
                r.sensitivity = m

    def predict_image(
        self,
        source: str | os.PathLike | bytes,
        name: str,
        top_k: int = 3,
        explain: bool = False,
        max_pixels: int | None = None,
    ) -> Prediction:
        """Prepare one image (a file or its bytes) as MNIST was made, and classify it.

        Raises
        ------
        ImageError
            If it cannot be read or holds no digit.
        """
        result = Prediction(name, pixels=images.prepare(source, name, max_pixels).pixels)
        self.fill([result], top_k, explain)
        return result


def predict_files(
    paths: list[str | os.PathLike],
    checkpoint: str | os.PathLike | list | None = None,
    top_k: int = 3,
    explain_to: str | os.PathLike | None = None,
    tta: int = 1,
) -> list[Prediction]:
    """Prepare every image as MNIST was made and classify them in one batch.

    A file that cannot be read, or holds no digit, gets a :class:`Prediction` with ``error``
    set; the others are still predicted. ``checkpoint`` may be a list: a committee (see
    :class:`Predictor`). With ``explain_to``, each prediction's sensitivity map is computed and
    drawn (see :func:`write_explanations`).
    """
    predictor = Predictor(checkpoint, tta)
    files = images.list_images(paths)
    if not files:
        raise MlpError(
            "no image files given (a folder counts its .png, .jpg, .bmp, .gif, .tif, .webp files)"
        )
    results = []
    for f in files:
        try:
            results.append(Prediction(str(f), pixels=images.prepare(f).pixels))
        except images.ImageError as exc:
            results.append(Prediction(str(f), error=str(exc).split(": ", 1)[-1]))
    predictor.fill(results, top_k, explain=explain_to is not None)
    if explain_to is not None:
        write_explanations(results, explain_to, predictor.ckpt.classes)
    return results


def write_explanations(
    results: list[Prediction], out: str | os.PathLike, classes: list[str]
) -> None:
    """Save each predicted image's input and sensitivity map as a PNG (``result.explanation``).

    One image: ``out`` itself. Several: ``out``'s name with each image's name added
    (``why.png`` -> ``why-digit.png``), so no picture overwrites another.
    """
    from mnist_mlp.pictures import explanation, save_png

    out = Path(out)
    for r in results:
        if r.sensitivity is None or r.pixels is None or r.prediction is None:
            continue
        path = (
            out
            if len(results) == 1
            else out.with_name(f"{out.stem}-{Path(r.file).stem}{out.suffix or '.png'}")
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(
            explanation(r.pixels, r.sensitivity, classes[r.prediction], r.probability or 0.0), path
        )
        r.explanation = path
