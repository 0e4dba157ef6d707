"""The MLflow model a run logs (``runs:/<run id>/model``), defined as code: MLflow loads this
file rather than unpickling an object.

``predict`` takes N images in MNIST's form, raw 0-255 pixels, as an N x 784 array or DataFrame
(or N x 28 x 28), and returns one label per row: the class index, as ``mlp eval`` counts them.
The network is the run's best ``checkpoint.npz``, logged beside this file as an artifact.
"""

from __future__ import annotations

import mlflow.models
import numpy as np
from mlflow.pyfunc import PythonModel


class CheckpointModel(PythonModel):
    """A mnist_mlp checkpoint as an MLflow pyfunc model."""

    # MLflow would wrap predict to check its input against type hints; this one takes arrays
    # and DataFrames alike, and checks their width itself
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from mnist_mlp import checkpoint

        self.ckpt = checkpoint.load(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None) -> np.ndarray:
        from mnist_mlp import metrics, normalise

        pixels = np.asarray(model_input)
        pixels = pixels.reshape(len(pixels), -1)
        if pixels.shape[1] != self.ckpt.sizes[0]:
            raise ValueError(
                f"each row must hold {self.ckpt.sizes[0]} pixels (0-255), got {pixels.shape[1]}"
            )
        seen = normalise.as_trained(pixels, self.ckpt.config)  # the view it was trained on
        probs = metrics.probabilities(
            self.ckpt.params, self.ckpt.activation, seen, scaling=self.ckpt.scaling
        )
        return probs.argmax(axis=1)


mlflow.models.set_model(CheckpointModel())
