"""A run in TensorBoard: event files in ``<run folder>/tensorboard/`` (tensorboardX writes them).

Per epoch, the epoch as the step: ``train/loss``, ``train/accuracy``, ``val/loss``,
``val/accuracy``, ``lr``, ``time/epoch_s``. Every :data:`~mnist_mlp.trackers.base.HISTOGRAM_EVERY`
epochs and at the last, histograms of each layer's weights (``weights/W1``, ...) and of their
gradients on a fixed batch of training digits (``grads/W1``, ...: the reference backward pass,
:func:`mnist_mlp.model.loss_and_grads`). At the end, the test confusion matrix and the most
confident mistakes as images (``test/confusion``, ``test/mistakes``) and the hyper-parameters
with the final figures in TensorBoard's HParams view. The HParams summaries go into this run's
own event file: ``add_hparams`` would start a timestamped run folder of its own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_mlp import config as config_mod
from mnist_mlp import data as data_mod
from mnist_mlp import model
from mnist_mlp.trackers.base import HISTOGRAM_EVERY, RunEnd, Tracker, epoch_metrics, flat_config

GRAD_BATCH = 512  # training digits the gradients' histograms are taken on


class TensorBoard(Tracker):
    """Writes the run's events under ``folder / "tensorboard"``."""

    name = "tensorboard"

    def __init__(self, folder: Path, config: config_mod.Config, data: data_mod.Data):
        from tensorboardX import SummaryWriter

        self.folder, self.config, self.data = folder, config, data
        self.logdir = folder / "tensorboard"
        self.writer_class, self.writer = SummaryWriter, None

    def on_fit_start(self, state) -> None:
        # purge_step: a resumed run drops the events of epochs it will write again
        self.writer = self.writer_class(
            str(self.logdir), purge_step=state.epoch + 1 if state.epoch else None, flush_secs=30
        )

    def on_epoch_end(self, state, row: dict, is_best: bool) -> None:
        assert self.writer is not None
        epoch = int(row["epoch"])
        for tag, value in epoch_metrics(row).items():
            self.writer.add_scalar(tag, value, epoch)
        if epoch % HISTOGRAM_EVERY == 0 or epoch == self.config.training.epochs:
            self._histograms(state.params, epoch)
        self.writer.flush()

    def _histograms(self, params: model.Params, epoch: int) -> None:
        assert self.writer is not None
        train = self.data.train
        n = min(GRAD_BATCH, len(train))
        x = data_mod.scale(train.images[:n], None, *self.data.scaling)
        y = train.labels[:n].astype(np.intp)
        dense = {k: np.asarray(v, np.float32) for k, v in params.items()}
        _, grads, _ = model.loss_and_grads(
            dense, x, y, self.config.model.activation, self.config.training.l2
        )
        for key in sorted(params):
            self.writer.add_histogram(f"weights/{key}", dense[key], epoch)
            self.writer.add_histogram(f"grads/{key}", grads[key], epoch)

    def on_run_end(self, end: RunEnd) -> None:
        from tensorboardX.summary import hparams

        from mnist_mlp import metrics, pictures

        writer = self.writer or self.writer_class(str(self.logdir))
        step = int(self.config.training.epochs)
        if end.test is not None and end.probabilities is not None and len(end.test):
            labels = end.test.labels.astype(np.intp)
            cm = metrics.confusion_matrix(
                labels, end.probabilities.argmax(axis=1), len(end.classes)
            )
            images = {
                "test/confusion": pictures.confusion_image(cm, end.classes),
                "test/mistakes": pictures.mistakes_grid(
                    end.test.images, labels, end.probabilities, end.classes
                ),
            }
            for tag, image in images.items():
                writer.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")
        final = {f"hparam/{k}": v for k, v in end.metrics.items()}
        for summary in hparams(flat_config(self.config), final):
            writer.file_writer.add_summary(summary)
        for tag, value in final.items():
            writer.add_scalar(tag, value, step)
        writer.close()
        self.writer = None

    def on_fit_end(self, state) -> None:
        if self.writer is None:
            return
        self.writer.flush()
        if state.status in ("interrupted", "running"):  # stopped or failed: no end to hear of
            self.writer.close()
            self.writer = None
