"""Checkpoints: weights and optimiser state as arrays, everything else as JSON, no pickle.

A checkpoint is an ``.npz`` file holding

- ``param/W1``, ``param/b1``, ... : the network's float32 parameters;
- ``momentum/W1``, ...            : the optimiser's momentum buffers (same shapes), in the
                                    form ``meta["momentum_form"]`` names (velocities or
                                    previous weights, see :mod:`mnist_mlp.optim`);
- ``averaged/W1``, ...            : the moving average of the weights (``training.ema``), in
                                    a run's ``last.npz`` only, to resume it exactly;
- ``meta``                        : UTF-8 JSON as a uint8 array (see :func:`metadata`).

It is loaded with ``allow_pickle=False``, so opening a checkpoint can never run code, and
checked against its own metadata: every array present, of the right shape and dtype.
Saving writes a temporary file and renames it, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnist_mlp import config as config_mod
from mnist_mlp.errors import CheckpointError, ConfigError, one_line
from mnist_mlp.fsutil import atomic_write
from mnist_mlp.model import Params, layer_sizes, param_shapes
from mnist_mlp.optim import FORMS

FORMAT = "mnist_mlp.checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """Everything needed to use a trained network, or to resume training it.

    Attributes
    ----------
    params : dict of float32 arrays
    momentum : dict of float32 arrays
        Momentum buffers; empty for a checkpoint saved without optimiser state.
    averaged : dict of float32 arrays
        The weights' moving average (``training.ema``) of a run to resume; else empty.
    config : Config
    meta : dict
        JSON-able training state: ``epoch`` (completed), ``step``, ``batch`` (within the
        current epoch, for a mid-epoch save), ``epoch_totals``, ``rng`` (bit-generator
        state of the current epoch's stream), ``history``, ``best``, ``dataset``,
        ``input``, ``classes``.
    """

    params: Params
    config: config_mod.Config
    meta: dict = field(default_factory=dict)
    momentum: Params = field(default_factory=dict)
    averaged: Params = field(default_factory=dict)

    @property
    def activation(self) -> str:
        return self.config.model.activation

    @property
    def scaling(self) -> tuple[float, float]:
        """(scale, offset) that turned uint8 pixels into the network's inputs in training."""
        return float(self.meta["input"]["scale"]), float(self.meta["input"]["offset"])

    @property
    def classes(self) -> list[str]:
        return self.meta.get("classes") or [str(d) for d in range(10)]

    @property
    def sizes(self) -> list[int]:
        """The layer widths, input first: ``[784, 1024, 10]`` for the default net."""
        return sizes_of(self.config, self.meta)


def sizes_of(config: config_mod.Config, meta: dict) -> list[int]:
    """Layer widths from a checkpoint's config and metadata: the input's shape and the classes
    it records (MNIST's 28x28 and ten digits where a checkpoint predates them)."""
    shape = (meta.get("input") or {}).get("shape") or [28, 28]
    n_classes = len(meta.get("classes") or range(10))
    return layer_sizes(config.model.hidden, int(np.prod(shape)), n_classes)


def check_pixels(path: str | os.PathLike, ckpt: Checkpoint) -> None:
    """Refuse, in one line, a net that does not take the 784 pixels of a 28x28 image (one fitted
    from Python on other arrays), where a command would feed it images."""
    if ckpt.sizes[0] != 28 * 28:
        raise CheckpointError(
            f"{path} takes {ckpt.sizes[0]} features, not the 784 pixels of a 28x28 image; use it "
            f"from Python (mnist_mlp.MLPClassifier.from_checkpoint)"
        )


def save(path: str | os.PathLike, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` to ``path`` atomically (the previous file survives any failure)."""
    meta = {
        **ckpt.meta,
        "format": FORMAT,
        "version": VERSION,
        "config": config_mod.to_dict(ckpt.config),
    }
    arrays = {f"param/{k}": v for k, v in ckpt.params.items()}
    arrays.update({f"momentum/{k}": v for k, v in ckpt.momentum.items()})
    arrays.update({f"averaged/{k}": v for k, v in ckpt.averaged.items()})
    for key, value in arrays.items():
        if not np.all(np.isfinite(value)):
            raise CheckpointError(f"refusing to save {path}: {key} holds NaN or infinity")
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # (NumPy's stubs take **arrays for its allow_pickle keyword)
    atomic_write(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]


def load(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a checkpoint.

    Raises
    ------
    CheckpointError
        If the file is missing, not an npz, holds pickled objects, or its arrays do not fit
        its own metadata (missing, extra, wrong shape or dtype, unknown format version).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} not found")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; give the .npz file inside it")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
            raise CheckpointError(f"{path}: not a valid checkpoint (not an .npz file)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise CheckpointError(
                f"{path}: holds pickled objects, which are never loaded"
            ) from None
        raise CheckpointError(f"{path}: not a valid checkpoint ({one_line(exc)})") from None
    except Exception as exc:
        # (OSError, EOFError, BadZipFile, KeyError, the tokenizer's errors for a mangled header)
        raise CheckpointError(
            f"{path}: not a valid checkpoint ({type(exc).__name__}: {one_line(exc)})"
        ) from None
    odd = sorted(k for k, v in arrays.items() if not isinstance(v, np.ndarray))
    if odd:  # NumPy hands over a member that is not an array as its raw bytes
        raise CheckpointError(
            f"{path}: not a valid checkpoint ({one_line(odd[0])!r} is not an array)"
        )
    return _validate(path, arrays)


class _Refused(Exception):
    """Why a file is not a checkpoint this mlp reads (the caller adds the path)."""


def _validate(path: Path, arrays: dict[str, np.ndarray]) -> Checkpoint:
    """The checkpoint the arrays of ``path`` hold, every part checked against its metadata."""
    try:
        meta = _metadata(arrays.pop("meta", None))
        config = _check_meta(meta)
        for key in [k for k in arrays if k.startswith("velocity/")]:  # before 'momentum/' was
            arrays[key.replace("velocity/", "momentum/", 1)] = arrays.pop(key)
        sizes = sizes_of(config, meta)
        params = _group(arrays, "param", sizes, required=True)
        momentum = _group(arrays, "momentum", sizes, required=False)
        averaged = _group(arrays, "averaged", sizes, required=False)
        if arrays:
            raise _Refused(f"unexpected arrays {sorted(arrays)}")
    except _Refused as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return Checkpoint(params, config, meta, momentum, averaged)


def _metadata(raw: np.ndarray | None) -> dict:
    """The JSON metadata, of this format and version."""
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise _Refused("no metadata; not a checkpoint written by mnist_mlp")
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError):
        raise _Refused("its metadata is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _Refused("not a checkpoint written by mnist_mlp")
    if meta.get("version") != VERSION:
        raise _Refused(
            f"format version {meta.get('version')!r} is not supported (this mlp reads version "
            f"{VERSION}); use the mnist_mlp release that wrote it"
        )
    return meta


def _check_meta(meta: dict) -> config_mod.Config:
    """The config the metadata holds (taken out of it), its other parts checked."""
    recorded = meta.get("input")
    if not (
        isinstance(recorded, dict)
        and all(isinstance(recorded.get(k), (int, float)) for k in ("scale", "offset"))
    ):
        raise _Refused("its metadata does not record the input scaling (input.scale, input.offset)")
    try:
        config = config_mod.from_dict(meta.pop("config", {}), "its config")
    except ConfigError as exc:
        raise _Refused(str(exc)) from None
    form = meta.setdefault("momentum_form", "velocity")
    if form not in FORMS:
        raise _Refused(f"its momentum_form {form!r} is not one of {', '.join(FORMS)}")
    input_shape = recorded.get("shape", [28, 28])
    if not (
        isinstance(input_shape, list)
        and input_shape
        and all(isinstance(d, int) and d > 0 for d in input_shape)
    ):
        raise _Refused(f"its metadata's input.shape {input_shape!r} is not a list of sizes")
    classes = meta.get("classes", [str(d) for d in range(10)])
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise _Refused(f"its metadata's classes {classes!r} are not a list of names")
    return config


def _group(arrays: dict[str, np.ndarray], group: str, sizes: list[int], required: bool) -> Params:
    """The arrays ``<group>/W1``, ... taken out of ``arrays``, each of its shape, float32 and
    finite; an absent group that is not ``required`` is empty."""
    shapes = param_shapes(sizes)
    present = {k.split("/", 1)[1] for k in arrays if k.startswith(group + "/")}
    if not present and not required:
        return {}
    missing, extra = set(shapes) - present, present - set(shapes)
    if missing or extra:
        what = f"missing {sorted(missing)}" if missing else f"unexpected {sorted(extra)}"
        raise _Refused(f"{group} arrays {what} for a {'-'.join(map(str, sizes))} net")
    out: Params = {}
    for key, shape in shapes.items():
        array = arrays.pop(f"{group}/{key}")
        if array.shape != shape:
            raise _Refused(f"{group}/{key} has shape {array.shape}, expected {shape}")
        if array.dtype != np.float32:
            raise _Refused(f"{group}/{key} has dtype {array.dtype}, expected float32")
        if not np.all(np.isfinite(array)):
            raise _Refused(f"{group}/{key} holds NaN or infinity")
        out[key] = array
    return out


def check_committee(paths: list, members: list[Checkpoint]) -> None:
    """Refuse a committee whose members were trained on other data or classes than the first's.

    (Their input size needs no check: :func:`load` accepts only 784-input networks.)

    Raises
    ------
    CheckpointError
        Naming the member that differs, and how.
    """

    def dataset(c: Checkpoint) -> tuple:
        d = c.meta.get("dataset", {})
        return d.get("name") or "an unrecorded dataset", d.get("digest")

    first = members[0]
    for path, other in zip(paths[1:], members[1:]):
        if dataset(other) != dataset(first):
            (name, _), (first_name, _) = dataset(other), dataset(first)
            why = (
                f"was trained on {name}, {paths[0]} on {first_name}"
                if name != first_name
                else f"was trained on another copy of {name} than {paths[0]} (its checksum differs)"
            )
        elif other.classes != first.classes:
            why = f"has the classes {other.classes}, {paths[0]} {first.classes}"
        else:
            continue
        raise CheckpointError(
            f"{path} {why}; the members of a committee must share their dataset and classes"
        )
