"""Checkpoints: round trip, atomic writes, and a clear error for every kind of bad file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnist_mlp import checkpoint, model
from mnist_mlp.config import load_config
from mnist_mlp.errors import CheckpointError, WriteError


def make(hidden=(16,)):
    config = load_config(overrides=[f"model.hidden={list(hidden)}"])
    params = model.init_params(model.layer_sizes(list(hidden)), "relu", np.random.default_rng(0))
    momentum = {k: np.full_like(v, 0.5) for k, v in params.items()}
    meta = {
        "epoch": 3,
        "history": [{"epoch": 1}],
        "input": {"scale": 0.5, "offset": -1.0},
        "momentum_form": "previous",
    }
    return checkpoint.Checkpoint(params, config, meta, momentum)


def test_round_trip(tmp_path):
    ck = make()
    checkpoint.save(tmp_path / "c.npz", ck)
    back = checkpoint.load(tmp_path / "c.npz")
    assert back.config == ck.config
    assert back.meta["epoch"] == 3 and back.meta["history"] == [{"epoch": 1}]
    assert back.scaling == (0.5, -1.0)
    assert back.meta["momentum_form"] == "previous"
    for group in ("params", "momentum"):
        for k, v in getattr(ck, group).items():
            np.testing.assert_array_equal(getattr(back, group)[k], v)


def _rewrite(path, **changes):
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for key, value in changes.items():
        key = key.replace("__", "/")
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(path, **arrays)


def _meta_with(path, **fields):
    with np.load(path) as npz:
        meta = json.loads(npz["meta"].tobytes())
    meta.update(fields)
    return np.frombuffer(json.dumps(meta).encode(), np.uint8)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: _rewrite(p, param__W1=None), "missing ['W1']"),
        (lambda p: _rewrite(p, param__W9=np.zeros(3, np.float32)), "unexpected ['W9']"),
        (
            lambda p: _rewrite(p, param__W1=np.zeros((784, 15), np.float32)),
            "shape (784, 15), expected (784, 16)",
        ),
        (
            lambda p: _rewrite(p, param__b1=np.zeros(16, np.float64)),
            "dtype float64, expected float32",
        ),
        (lambda p: _rewrite(p, param__b1=np.full(16, np.nan, np.float32)), "NaN"),
        (lambda p: _rewrite(p, meta=None), "no metadata"),
        (lambda p: _rewrite(p, meta=np.frombuffer(b"{not json", np.uint8)), "not valid JSON"),
        (
            lambda p: _rewrite(p, meta=_meta_with(p, version=99)),
            "format version 99 is not supported",
        ),
        (
            lambda p: _rewrite(p, meta=_meta_with(p, format="other")),
            "not a checkpoint written by mnist_mlp",
        ),
        (
            lambda p: _rewrite(p, meta=_meta_with(p, config={"model": {"hidden": "x"}})),
            "model.hidden must be",
        ),
        (lambda p: _rewrite(p, extra=np.zeros(2)), "unexpected arrays ['extra']"),
        (lambda p: _rewrite(p, momentum__b1=None), "momentum arrays missing ['b1']"),
        (
            lambda p: _rewrite(p, meta=_meta_with(p, momentum_form="acceleration")),
            "momentum_form 'acceleration'",
        ),
        (
            lambda p: _rewrite(p, meta=_meta_with(p, input={"scale": "x"})),
            "does not record the input scaling",
        ),
        (lambda p: np.savez(p, meta=np.array([{"a": 1}], dtype=object)), "pickled objects"),
        (lambda p: p.write_bytes(b"PK\x03\x04 truncated zip"), "not a valid checkpoint"),
        (lambda p: p.write_bytes(b""), "not a valid checkpoint"),
        (lambda p: p.write_bytes(b"hello"), "not a valid checkpoint"),
    ],
)
def test_bad_checkpoints_give_one_clear_error(tmp_path, damage, message):
    path = tmp_path / "c.npz"
    checkpoint.save(path, make())
    damage(path)
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_files_from_before_momentum_forms_hold_velocities(tmp_path):
    path = tmp_path / "old.npz"
    checkpoint.save(path, make())
    with np.load(path) as npz:
        arrays = {k.replace("momentum/", "velocity/"): npz[k] for k in npz.files}
    meta = json.loads(arrays["meta"].tobytes())
    del meta["momentum_form"]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)
    back = checkpoint.load(path)
    assert back.meta["momentum_form"] == "velocity"
    np.testing.assert_array_equal(back.momentum["W1"], make().momentum["W1"])


def test_missing_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.load(tmp_path / "none.npz")
    with pytest.raises(CheckpointError, match="is a folder"):
        checkpoint.load(tmp_path)


def test_a_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "c.npz"
    checkpoint.save(path, make())
    before = path.read_bytes()
    bad = make()
    bad.params["W1"][0, 0] = np.inf
    with pytest.raises(CheckpointError, match="NaN or infinity"):
        checkpoint.save(path, bad)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary file left


def test_a_crash_mid_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    checkpoint.save(path, make())
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(WriteError, match="disk full"):  # one line for the user, not an OSError
        checkpoint.save(path, make())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]
