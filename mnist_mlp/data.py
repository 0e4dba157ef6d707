"""Datasets as arrays: the train/validation/test splits, input scaling, and minibatches.

Images stay uint8 in memory (47 MB for MNIST's training set, against 188 MB as float32) and
are scaled to float32 one batch at a time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from mnist_mlp import download
from mnist_mlp.fast import kernels

# Inputs are standardised with the training set's pixel mean and standard deviation
# (declared with each dataset in datasets.DATASETS): x = pixel * scale + offset. Centred
# inputs of unit spread make SGD's steps equally sized in every direction. The pair is
# recorded in every checkpoint, so that `mlp predict` prepares an image exactly as training did.


def scaling_for(mean: float, std: float) -> tuple[float, float]:
    """(scale, offset) that standardise uint8 pixels with mean and std given in [0, 1] units."""
    return 1 / (255 * std), -mean / std


SCALE, OFFSET = scaling_for(0.1307, 0.3081)  # MNIST's, the default


def rng_for(seed: int, *purpose: int) -> np.random.Generator:
    """An independent generator for one purpose (initialisation, the split, epoch k, ...).

    Deriving each stream from (seed, purpose) rather than drawing them all from one
    generator keeps every stream the same whatever the others consumed, which makes
    interrupted and resumed runs exact.
    """
    return np.random.default_rng([seed, *purpose])


# purposes for rng_for
INIT, SPLIT, EPOCH, AUGMENT = 1, 2, 3, 4


@dataclass
class Split:
    """Images and labels of one split.

    Attributes
    ----------
    images : ndarray of shape (n, 784), uint8
    labels : ndarray of shape (n,), uint8
    """

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Data:
    """A dataset's splits and identity."""

    name: str
    classes: tuple[str, ...]
    digest: str
    train: Split
    val: Split
    test: Split
    scaling: tuple[float, float] = (SCALE, OFFSET)  # (scale, offset) for these images


def load(
    name: str = "mnist",
    validation: int = 5000,
    seed: int = 0,
    subset: int = 0,
    root: str | None = None,
    progress: bool = True,
) -> Data:
    """Load (downloading if needed) a dataset and split off a validation set.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist"}
    validation : int
        Training examples held out for validation, chosen at random with ``seed``.
    seed : int
    subset : int
        If > 0, keep only this many of the remaining training examples (quick runs).
    root : str, optional
        Cache folder (see :func:`mnist_mlp.download.cache_root`).
    progress : bool
        Show download progress bars.
    """
    spec = download.get_spec(name)
    entries = download.ensure(name, root, download.FetchOptions(progress=progress))
    images = entries["train-images"].array.reshape(-1, 28 * 28)
    labels = entries["train-labels"].array
    order = rng_for(seed, SPLIT).permutation(len(labels))
    val_idx, train_idx = np.sort(order[:validation]), np.sort(order[validation:])
    if subset:
        train_idx = train_idx[:subset]
    test = Split(entries["test-images"].array.reshape(-1, 28 * 28), entries["test-labels"].array)
    return Data(
        spec.name,
        spec.classes,
        spec.digest,
        train=Split(images[train_idx], labels[train_idx]),
        val=Split(images[val_idx], labels[val_idx]),
        test=test,
        scaling=scaling_for(spec.pixel_mean, spec.pixel_std),
    )


def load_arrays(
    dataset: str = "mnist", root: str | None = None, progress: bool = True, flatten: bool = True
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A dataset's training and test arrays, through the verified cache (downloaded if need be).

    As ``keras.datasets.mnist.load_data()`` returns them, except that the images are flattened
    to rows of 784 pixels unless ``flatten`` is False, ready for ``MLPClassifier.fit``.

    Parameters
    ----------
    dataset : {"mnist", "fashion-mnist"}
    root : str, optional
        Cache folder (see :func:`mnist_mlp.download.cache_root`).
    progress : bool
        Show download progress bars.
    flatten : bool

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        uint8 images of shape (60000, 784) and (10000, 784) (or (n, 28, 28)), pixels 0..255,
        and uint8 labels 0..9.
    """
    entries = download.ensure(dataset, root, download.FetchOptions(progress=progress))
    shape = (-1, 28 * 28) if flatten else (-1, 28, 28)
    return (
        (entries["train-images"].array.reshape(shape), entries["train-labels"].array),
        (entries["test-images"].array.reshape(shape), entries["test-labels"].array),
    )


def scale(
    images: np.ndarray,
    out: np.ndarray | None = None,
    scale: float = SCALE,
    offset: float = OFFSET,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 pixels (n, 784) -> float32 inputs ``pixel * scale + offset``, into ``out`` if given.

    With ``rows``, only ``images[rows]``: a batch gathered and scaled in one go. The defaults
    standardise; a checkpoint records the pair it was trained with
    (:attr:`mnist_mlp.checkpoint.Checkpoint.scaling`).
    """
    if out is None:
        out = np.empty(images.shape if rows is None else (len(rows), *images.shape[1:]), np.float32)
    if (
        out.ndim == 2
        and kernels.fits(out)
        and images.dtype == np.uint8
        and images.flags.c_contiguous
    ):
        return kernels.scale_pixels(images, out, scale, offset, rows)  # one pass instead of three
    if rows is not None:
        images = images[rows]
    np.multiply(images, np.float32(scale), out=out, casting="unsafe")
    out += np.float32(offset)
    return out


def for_config(config, progress: bool = True, normalised: bool = True) -> Data:
    """The data a :class:`~mnist_mlp.config.Config` trains on: its ``data`` section's dataset,
    validation split, subset and cache folder, the split drawn from ``training.seed``, and the
    images in the view ``data.normalise`` names (as they are, with ``normalised=False``)."""
    d = config.data
    data = load(d.dataset, d.validation, config.training.seed, d.subset, d.dir, progress)
    if not normalised or d.normalise.kind == "none":
        return data
    return dataclasses.replace(
        data,
        train=viewed(data.train, config),
        val=viewed(data.val, config),
        test=viewed(data.test, config),
    )


def viewed(split: Split, config) -> Split:
    """``split``'s images in the view ``config.data.normalise`` names
    (:mod:`mnist_mlp.normalise`), as the network trained by ``config`` sees them."""
    view = config.data.normalise
    if view.kind == "none":
        return split
    from mnist_mlp import normalise

    return Split(normalise.apply(split.images, view.kind, view.width), split.labels)
