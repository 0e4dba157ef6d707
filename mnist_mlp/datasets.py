"""The datasets mnist_mlp knows, declared as data: each one's files with their checksums and
shapes, its public mirrors in the order they are tried, its class names and its pixel statistics
(as torchvision lists ``mirrors`` and ``resources``). :mod:`mnist_mlp.download` fetches them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from mnist_mlp.errors import MlpError


@dataclass(frozen=True)
class Resource:
    """One IDX file of a dataset.

    Attributes
    ----------
    split : {"train", "test"}
    kind : {"images", "labels"}
    filename : str
        Name of the gzip file on the mirrors.
    shape : tuple of int
        Shape of the array it holds.
    sha256 : str
        SHA-256 of the decompressed IDX bytes.
    """

    split: str
    kind: str
    filename: str
    shape: tuple[int, ...]
    sha256: str

    @property
    def key(self) -> str:
        return f"{self.split}-{self.kind}"

    @property
    def idx_size(self) -> int:
        return 4 + 4 * len(self.shape) + int(np.prod(self.shape))


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its files, its public mirrors (tried in order) and its class names."""

    name: str
    resources: tuple[Resource, ...]
    mirrors: tuple[str, ...]
    classes: tuple[str, ...]
    pixel_mean: float = 0.0  # of the training images, as a fraction of full scale
    pixel_std: float = 1.0

    def resource(self, split: str, kind: str) -> Resource:
        return next(r for r in self.resources if r.split == split and r.kind == kind)

    @property
    def digest(self) -> str:
        """A short identity of the dataset's content, recorded in checkpoints."""
        joined = "\n".join(r.sha256 for r in self.resources).encode()
        return hashlib.sha256(joined).hexdigest()[:16]


def _resources(checksums: dict[str, str]) -> tuple[Resource, ...]:
    shapes = {"train": 60000, "t10k": 10000}
    out = []
    for prefix, n in shapes.items():
        split = "train" if prefix == "train" else "test"
        out.append(
            Resource(
                split,
                "images",
                f"{prefix}-images-idx3-ubyte.gz",
                (n, 28, 28),
                checksums[f"{prefix}-images"],
            )
        )
        out.append(
            Resource(
                split,
                "labels",
                f"{prefix}-labels-idx1-ubyte.gz",
                (n,),
                checksums[f"{prefix}-labels"],
            )
        )
    return tuple(out)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        resources=_resources(
            {
                "train-images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "train-labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "t10k-images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "t10k-labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            }
        ),
        # yann.lecun.com is left out: in 2026 its domain answered with an HTML error page.
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        classes=tuple(str(d) for d in range(10)),
        pixel_mean=0.1307,
        pixel_std=0.3081,
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        resources=_resources(
            {
                "train-images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "train-labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "t10k-images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "t10k-labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            }
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        pixel_mean=0.2860,
        pixel_std=0.3530,
    ),
}


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` called ``name``; an :class:`MlpError` naming the choices if none."""
    try:
        return DATASETS[name]
    except KeyError:
        raise MlpError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None
