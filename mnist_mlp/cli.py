"""The ``mlp`` command line: parse, call one library function, print.

Only this module imports click. Library modules are imported inside each command so that
``mlp --help`` and ``mlp predict`` start fast (no requests, tqdm or training code loaded).
A :class:`~mnist_mlp.errors.MlpError` becomes one line on stderr and exit code 1.
"""

from __future__ import annotations

import json
import logging
import sys

import click

from mnist_mlp import __version__
from mnist_mlp.errors import MlpError


class _Group(click.Group):
    """A group that turns the user's mistakes into one line instead of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MlpError as exc:
            raise click.ClickException(str(exc)) from None
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            raise click.ClickException(f"{exc.strerror}: {exc.filename}") from None


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("mnist_mlp")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlp")
def main():
    """Train, evaluate and use a from-scratch NumPy MLP on MNIST.

    \b
    Quick start:
      mlp download                              fetch and verify MNIST
      mlp train --config configs/default.yaml   train, writing runs/default/
      mlp eval runs/default/checkpoint.npz      test accuracy, confusion matrix
      mlp predict digit.png                     your own digit image -> 0-9

    \b
    Environment:
      MNIST_MLP_HOME    cache folder (default: the user's cache folder)
      MNIST_MLP_MIRROR  a folder or URL laid out as <dataset>/<file>, tried first
    """


@main.command()
@click.option("--dataset", type=click.Choice(["mnist", "fashion-mnist", "all"]), default="mnist",
              show_default=True, help="Which dataset to fetch.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or notices.")
def download(dataset, quiet):
    """Fetch a dataset, verify its checksums and cache it as arrays."""
    from mnist_mlp import download as dl

    _setup_logging(quiet)
    names = list(dl.DATASETS) if dataset == "all" else [dataset]
    for name in names:
        entries = dl.ensure(name, options=dl.FetchOptions(progress=not quiet))
        for key, entry in entries.items():
            how = "downloaded from" if entry.fetched else "cached, from"
            click.echo(f"{name:<13} {key:<12} {str(entry.array.shape):<15} {entry.path}  "
                       f"({how} {entry.source})")
