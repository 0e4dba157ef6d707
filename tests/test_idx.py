"""The IDX parser: good files round-trip; anything else is a clear ValueError."""

from __future__ import annotations

import contextlib
import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnist_mlp.errors import IdxError
from mnist_mlp.idx import idx_header, maybe_gunzip, parse_idx, read_idx, to_idx


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_round_trip(dtype):
    array = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    parsed = parse_idx(to_idx(array))
    assert parsed.shape == (2, 3, 4)
    np.testing.assert_array_equal(parsed, array)


def test_read_idx_from_gzip_path_and_bytes(tmp_path):
    array = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(to_idx(array)))
    np.testing.assert_array_equal(read_idx(path), array)
    np.testing.assert_array_equal(read_idx(to_idx(array)), array)


def test_mnist_like_header_layout():
    assert idx_header((60000, 28, 28), np.uint8) == bytes.fromhex("00000803") + struct.pack(
        ">3I", 60000, 28, 28
    )
    assert idx_header((10,), np.uint8) == bytes.fromhex("00000801") + struct.pack(">I", 10)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "shorter than the 4-byte magic"),
        (b"\x00\x00\x08", "shorter than the 4-byte magic"),
        (b"\x12\x34\x08\x01" + b"\x00" * 8, "bad magic"),
        (b"\x00\x00\x07\x01" + b"\x00" * 8, "bad magic"),
        (b"<!DOCTYPE html><html>", "HTML page"),
        (b"\x00\x00\x08\x00", "zero dimensions"),
        (b"\x00\x00\x08\x03" + struct.pack(">2I", 2, 2), "truncated IDX header"),
        (b"\x00\x00\x08\x02" + struct.pack(">2I", 2, 3) + b"\x00" * 5, "truncated"),
        (b"\x00\x00\x08\x02" + struct.pack(">2I", 2, 3) + b"\x00" * 7, "extra bytes"),
        (b"\x00\x00\x0d\x01" + struct.pack(">I", 2) + b"\x00" * 7, "truncated"),
    ],
)
def test_malformed_files(data, message):
    with pytest.raises(ValueError, match=message):
        parse_idx(data)


def test_wrong_dimension_count_is_caught_by_size():
    # Claims 3 dimensions but the payload fits 2: the size check refuses it.
    good = to_idx(np.zeros((4, 5), np.uint8))
    bad = good[:3] + b"\x03" + good[4:12] + struct.pack(">I", 7) + good[12:]
    with pytest.raises(ValueError, match="truncated"):
        parse_idx(bad)


def test_truncated_and_corrupt_gzip():
    data = gzip.compress(to_idx(np.zeros((50, 50), np.uint8)))
    with pytest.raises(ValueError, match="truncated gzip"):
        maybe_gunzip(data[:-20])
    with pytest.raises(ValueError, match="corrupt gzip"):
        maybe_gunzip(data[:10] + b"\xff" * 20 + data[30:])


def test_gzip_bomb_guard():
    data = gzip.compress(b"\x00" * 1_000_000)
    with pytest.raises(ValueError, match="more than the expected"):
        maybe_gunzip(data, limit=1000)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_value_error(data):
    with contextlib.suppress(ValueError):
        parse_idx(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=32), st.integers(0, 3))
def test_random_bytes_after_a_valid_magic(tail, ndim):
    with contextlib.suppress(ValueError):
        read_idx(b"\x00\x00\x08" + bytes([ndim]) + tail)
    with contextlib.suppress(ValueError):
        read_idx(gzip.compress(b"\x00\x00\x08" + bytes([ndim]) + tail)[:-3])


def test_dimensions_beyond_any_array_are_refused_even_with_a_zero_among_them():
    # found by fuzz/run.py idx: an empty payload and dimensions (0, 6291456, 134283360, ...)
    data = bytes.fromhex("00000804000000000060000008010060642b642b")
    with pytest.raises(IdxError, match="beyond any array's size"):
        parse_idx(data)
