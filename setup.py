"""The optional C extension (see mnist_mlp/fast/kernels.py), which pyproject.toml can declare only
experimentally (setuptools 74.1 and later).

``optional=True``: where no C compiler is at hand the build warns and goes on without it, and
mnist_mlp runs its NumPy code instead.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mnist_mlp.fast._kernels",
            ["mnist_mlp/fast/_kernels.c"],
            optional=True,
            extra_compile_args=["-O3", "-Wno-psabi"],
        )
    ]
)
