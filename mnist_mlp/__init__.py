"""mnist_mlp: a from-scratch NumPy multilayer perceptron for MNIST, driven from the command line."""

__version__ = "0.1.0"
