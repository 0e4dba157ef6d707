"""mnist_mlp: a from-scratch NumPy multilayer perceptron for MNIST, driven from the command line."""

__version__ = "0.2.0"  # the one place the version is written (pyproject.toml reads it)
