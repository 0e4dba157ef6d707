"""mnist_mlp: a from-scratch NumPy multilayer perceptron for MNIST, from the command line and
from Python.

From Python (a notebook, say)::

    import mnist_mlp

    (x_train, y_train), (x_test, y_test) = mnist_mlp.load_mnist()
    clf = mnist_mlp.MLPClassifier().fit(x_train, y_train)   # needs mnist-mlp[sklearn]
    clf.score(x_test, y_test)
    clf.predict(mnist_mlp.prepare_image("my-digit.png").reshape(1, -1))

The names are imported when first used, so ``import mnist_mlp`` stays quick and needs only the
core dependencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"  # the one place the version is written (pyproject.toml reads it)

__all__ = ["MLPClassifier", "__version__", "load_mnist", "prepare_image"]

if TYPE_CHECKING:
    from mnist_mlp.data import load_arrays as load_mnist
    from mnist_mlp.estimator import MLPClassifier
    from mnist_mlp.images import prepare_image

_LAZY = {
    "MLPClassifier": ("mnist_mlp.estimator", "MLPClassifier"),
    "load_mnist": ("mnist_mlp.data", "load_arrays"),
    "prepare_image": ("mnist_mlp.images", "prepare_image"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'mnist_mlp' has no attribute {name!r}")
