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
from mnist_mlp.errors import MlpError, Stopped


class _Group(click.Group):
    """A group that turns the user's mistakes into one line instead of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Stopped as exc:  # Ctrl-C: what was saved and how to resume, not an "Error"
            click.echo(str(exc), err=True)
            sys.exit(exc.exit_code)
        except MlpError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:  # a file or folder the user named: missing, forbidden, full
            from mnist_mlp.fsutil import describe

            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{describe(exc)}") from None


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
@click.option(
    "--dataset",
    type=click.Choice(["mnist", "fashion-mnist", "all"]),
    default="mnist",
    show_default=True,
    help="Which dataset to fetch.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or notices.")
def download(dataset, quiet):
    """Fetch a dataset, verify its checksums and cache it as arrays."""
    from mnist_mlp import datasets
    from mnist_mlp import download as dl

    _setup_logging(quiet)
    for name in list(datasets.DATASETS) if dataset == "all" else [dataset]:
        entries = dl.ensure(name, options=dl.FetchOptions(progress=not quiet))
        for key, entry in entries.items():
            click.echo(entry.line(name, key))


# --tta, as mlp eval and mlp predict take it
_tta_option = click.option(
    "--tta",
    type=click.IntRange(1, 13),
    default=1,
    show_default=True,
    help="Average each digit's probabilities over this many fixed views of it (shifts by a "
    "pixel, turns of 5 degrees, sizes of 5%).",
)

# --report-to, as mlp train and mlp sweep take it
_report_to_option = click.option(
    "--report-to",
    "report_to",
    multiple=True,
    metavar="TRACKER",
    help="Also send the run to tensorboard or mlflow (repeatable; the tensorboard and mlflow "
    "extras) [default: the config's output.report_to].",
)


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="A YAML config (see configs/); defaults for every key not in it.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one key, e.g. --set training.lr=0.05 (repeatable).",
)
@click.option(
    "--out", type=click.Path(file_okay=False), help="Run folder [default: runs/<config name>]."
)
@click.option(
    "--resume",
    type=click.Path(dir_okay=False),
    metavar="CKPT",
    help="Continue the run saved in CKPT (its last.npz).",
)
@click.option("--force", is_flag=True, help="Replace a run already in the run folder.")
@_report_to_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or per-epoch lines.")
def train(config_path, overrides, out, resume, force, report_to, quiet):
    """Train the network, checkpointing the best epoch, and test it.

    Ctrl-C stops after the current step and saves a checkpoint to resume from.
    """
    from mnist_mlp import run

    _setup_logging(quiet)
    config, folder = _what_to_train(config_path, overrides, out, resume)
    run.train_run(
        config,
        folder,
        resume=resume,
        overrides=overrides if resume else (),
        force=force,
        progress=not quiet,
        echo=(lambda line: None) if quiet else click.echo,
        report_to=report_to or None,
    )


def _what_to_train(config_path, overrides, out, resume):
    """(config, run folder) of ``mlp train``'s options; the config is None when resuming (the
    checkpoint has its own)."""
    from pathlib import Path

    from mnist_mlp import config as config_mod
    from mnist_mlp import run

    if resume and config_path:
        raise click.UsageError(
            "--resume continues a run with its own config; drop --config "
            "(--set training.epochs=N may extend it)"
        )
    if resume:
        return None, Path(out) if out else Path(resume).parent
    if not config_path and not overrides:
        raise click.UsageError("give --config PATH (e.g. configs/default.yaml), or --set KEY=VALUE")
    config = config_mod.load_config(config_path, overrides)
    name = Path(config_path).stem if config_path else "custom"
    return config, Path(out) if out else run.default_folder(config, name)


@main.command(name="eval")
@click.argument("checkpoints", nargs=-1, type=click.Path())
@click.option(
    "--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True
)
@_tta_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout, nothing else.")
def eval_(checkpoints, split, tta, as_json):
    """Accuracy, loss, per-class precision/recall and the confusion matrix of a checkpoint.

    Several checkpoints are evaluated as a committee: the mean of their probabilities, with
    each member's accuracy beside the committee's. [default: runs/latest/checkpoint.npz]
    """
    from mnist_mlp import evaluation

    _setup_logging(as_json)
    paths = list(checkpoints) or ["runs/latest/checkpoint.npz"]
    if len(paths) == 1:
        result = evaluation.evaluate_checkpoint(paths[0], split, not as_json, tta)
    else:
        result = evaluation.evaluate_committee(paths, split, not as_json, tta)
    if as_json:
        _echo_json(result)
        return
    click.echo(evaluation.format_evaluation(result))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout, nothing else.")
@click.option("--quick", is_flag=True, help="A smaller run (about 20 s) for a first look.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Config whose training run measures peak memory "
    "[default: configs/default.yaml if present].",
)
def bench(as_json, quick, config_path):
    """Measure training speed against this machine's matrix-multiply floor, and memory."""
    from mnist_mlp import bench as bench_mod

    _setup_logging(as_json)
    log = (lambda line: None) if as_json else (lambda line: click.echo(line, err=True))
    result = bench_mod.run(quick=quick, config_path=config_path, log=log)
    if as_json:
        _echo_json(result)
    else:
        click.echo(bench_mod.format_table(result))


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option(
    "--checkpoint",
    "-c",
    "checkpoints",
    type=click.Path(),
    multiple=True,
    help="[default: runs/latest/checkpoint.npz]; repeat it for a committee (the mean of their "
    "probabilities).",
)
@click.option(
    "--top-k",
    "-k",
    type=click.IntRange(1, 10),
    default=3,
    show_default=True,
    help="How many of the likeliest digits to list.",
)
@_tta_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array on stdout, nothing else.")
@click.option("--show", is_flag=True, help="Draw the 28x28 input the network saw.")
@click.option(
    "--explain",
    type=click.Path(dir_okay=False),
    metavar="OUT.png",
    help="Write the input beside its sensitivity map: which pixels push the prediction "
    "up (red) or down (blue). Several images: OUT-<image>.png each.",
)
def predict(images, checkpoints, top_k, tta, as_json, show, explain):
    """Classify your own digit images (files or folders of them).

    Each image is prepared the way MNIST was made: ink made white on black, noise and uneven
    lighting removed, strokes brought to MNIST's width, the digit fitted into 20x20 and centred
    by its centre of mass in 28x28. Exit code 1 if any file could not be read.
    """
    from mnist_mlp import predict as predict_mod

    results = predict_mod.predict_files(
        list(images), list(checkpoints) or None, top_k, explain_to=explain, tta=tta
    )
    if as_json:
        _echo_json([r.as_dict() for r in results])
    for line, to_stderr in predict_mod.lines(results, show, as_json):
        click.echo(line, err=to_stderr)
    if any(r.error is not None for r in results):
        sys.exit(1)


@main.command(name="augment-preview")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default="configs/augment.yaml",
    show_default=True,
    help="Config whose data.augment settings to show.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a key, e.g. --set data.augment.rotate=20.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False), default="augment-preview.png", show_default=True
)
@click.option(
    "--count", type=click.IntRange(1, 50), default=8, show_default=True, help="Digits (rows)."
)
@click.option("--seed", type=int, default=0, show_default=True)
def augment_preview(config_path, overrides, out, count, seed):
    """Write a PNG grid of training digits beside their random distortions."""
    import numpy as np

    from mnist_mlp import augment
    from mnist_mlp import config as config_mod
    from mnist_mlp import data as data_mod
    from mnist_mlp.pictures import save_png

    _setup_logging(False)
    config = config_mod.load_config(config_path, overrides)
    if not config.data.augment.enabled:
        raise MlpError(
            f"{config_path} has no augmentation (every data.augment range is 0); try "
            f"--config configs/augment.yaml or --set data.augment.rotate=15"
        )
    d = data_mod.for_config(config)
    picks = np.random.default_rng(seed).choice(len(d.train), count, replace=False)
    save_png(augment.preview(d.train.images[picks], config.data.augment, seed=seed), out)
    click.echo(f"wrote {out}")


@main.command()
@click.argument("target", type=click.Path(), default="runs/latest")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Folder for the files [default: the run folder].",
)
def report(target, out):
    """Learning curves, confusion matrix, the most confident mistakes, and one HTML page.

    TARGET is a run folder (default: runs/latest), a checkpoint file, or a sweep folder
    (mlp sweep's: the trials, the metric against each setting, their importances).
    """
    from mnist_mlp import report as report_mod

    _setup_logging(False)
    result = report_mod.make(target, out)
    for path in result["paths"].values():
        click.echo(f"wrote {path}")


@main.command()
@click.argument("checkpoint", type=click.Path(), default="runs/latest/checkpoint.npz")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option(
    "--out", "-o", type=click.Path(dir_okay=False), help="[default: CHECKPOINT with .onnx]"
)
@click.option(
    "--opset",
    type=int,
    default=17,
    show_default=True,
    help="ONNX operator set version (13 or later).",
)
@click.option(
    "--input-shape",
    type=click.Choice(["28x28", "784"]),
    default="28x28",
    show_default=True,
    help="Declare the input as (N, 28, 28) images or (N, 784) rows.",
)
def export(checkpoint, fmt, out, opset, input_shape):
    """Write a checkpoint's network as an ONNX model any ONNX runtime can load.

    Input 'pixels': float32 (N, 28, 28) (or (N, 784) with --input-shape 784), values 0..255
    as in MNIST (the input scaling is in the graph); outputs 'probabilities' (N, 10) and
    'label' (N,) int64. Needs the export extra: pip install 'mnist-mlp[export]'.
    """
    from mnist_mlp import export as export_mod

    done = export_mod.export(checkpoint, out, fmt, opset, input_shape)
    click.echo(
        f"wrote {done.path} ({done.architecture} net, input pixels {done.input_shape}, "
        f"ONNX opset {done.opset}, IR version "
        f"{done.ir_version}, {done.bytes / 1e6:.1f} MB)"
    )
    if done.note:
        click.echo(done.note, err=True)


def _listen_options(command):
    """--host and --port, as mlp serve and mlp learn take them."""
    command = click.option(
        "--port",
        type=click.IntRange(0, 65535),
        default=8000,
        show_default=True,
        help="Port to listen on (0: any free one).",
    )(command)
    return click.option(
        "--host",
        default="127.0.0.1",
        show_default=True,
        help="Address to listen on (0.0.0.0: every network this machine is on).",
    )(command)


@main.command()
@click.option("--checkpoint", "-c", type=click.Path(), help="[default: runs/latest/checkpoint.npz]")
@_listen_options
def serve(checkpoint, host, port):
    """A page to draw digits on and watch the network decide, and a JSON API.

    \b
    GET  /              the page: draw or drop a photo, see the answer and why
    POST /api/predict   one image (raw bytes or an upload) -> digit, probabilities
    /v2/...             the Open Inference Protocol (KServe, Triton): model mnist_mlp
    GET  /learn         the Learn page (see mlp learn --help); /docs: the API

    Bodies over 10 MiB and images over 40 megapixels are refused (413). Ctrl-C stops the
    server. Needs the serve extra: pip install 'mnist-mlp[serve]'.
    """
    from mnist_mlp import serve as serve_mod

    _setup_logging(False)
    serve_mod.serve(checkpoint, host, port, echo=click.echo)


@main.command()
@_listen_options
def learn(host, port):
    """Watch a small network learn MNIST, neuron by neuron and link by link.

    \b
    GET  /learn          the page: the net drawn, training live, the forward pass
                         and the sensitivities flowing back
    POST /api/learn      a session {hidden, activation, lr, ...}; then /api/learn/ID,
                         .../step, .../follow, .../gradcheck (see /docs)

    No trained checkpoint is needed: the net starts from random weights. MNIST is downloaded
    first if it is not cached. Ctrl-C stops the server. Needs the serve extra.
    """
    from mnist_mlp import serve as serve_mod

    _setup_logging(False)
    serve_mod.serve(None, host, port, echo=click.echo, learn_only=True)


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option(
    "--run-cap",
    type=click.IntRange(1),
    help="Trials in the whole study [default: the file's run_cap].",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Trials at once on this machine, each with its share of the cores.",
)
@click.option(
    "--storage",
    metavar="URL",
    help="An Optuna storage shared by several machines, e.g. "
    "postgresql://user:pass@host/db [default: a journal file in the sweep folder].",
)
@click.option(
    "--out", type=click.Path(file_okay=False), help="Sweep folder [default: runs/sweep-<name>]."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON document on stdout: the summary and every trial.",
)
@_report_to_option
@click.option("--quiet", "-q", is_flag=True, help="No progress line.")
def sweep(spec, run_cap, workers, storage, out, as_json, report_to, quiet):
    """Search settings with Optuna: trials of a base config, chosen on validation.

    SPEC is a W&B-style sweep file (see configs/sweep.yaml). Each trial is a run folder under
    trials/; results.csv lists them, best.yaml is the best trial's complete config, and the
    best trial is tested once at the end. Ctrl-C stops; the same command continues. Needs the
    sweep extra: pip install 'mnist-mlp[sweep]'.
    """
    from mnist_mlp import sweep as sweep_mod

    _setup_logging(quiet or as_json)
    summary = sweep_mod.sweep(
        spec,
        run_cap=run_cap,
        workers=workers,
        storage=storage,
        out=out,
        progress=not quiet and not as_json,
        log=lambda line: click.echo(line, err=True),
        report_to=report_to or None,
    )
    if as_json:
        _echo_json(summary)
        return
    click.echo(sweep_mod.format_summary(summary))
