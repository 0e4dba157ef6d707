"""Read and write IDX, the file format MNIST and Fashion-MNIST are published in.

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then ``ndim``
big-endian uint32 dimensions, then the values in C order. See
http://yann.lecun.com/exdb/mnist/ (section "FILE FORMATS FOR THE MNIST DATABASE").
"""

from __future__ import annotations

import math
import os
import struct
import zlib

import numpy as np

from mnist_mlp.errors import IdxError

# dtype code -> NumPy dtype; multi-byte values are big-endian in the file.
DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
CODES = {dtype.newbyteorder("="): code for code, dtype in DTYPES.items()}
GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(data: bytes) -> np.ndarray:
    """Parse the bytes of an uncompressed IDX file.

    Parameters
    ----------
    data : bytes
        The whole file.

    Returns
    -------
    ndarray of shape given by the header
        A read-only view of ``data`` (native byte order for uint8/int8, big-endian otherwise).

    Raises
    ------
    IdxError
        (a ``ValueError``) if the magic number, the dimensions or the payload size are wrong.
    """
    data = bytes(data)
    if len(data) < 4:
        raise IdxError(
            f"not an IDX file: {len(data)} bytes is shorter than the 4-byte magic number"
        )
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in DTYPES:
        raise IdxError(f"not an IDX file: bad magic number 0x{data[:4].hex()} ({_describe(data)})")
    if ndim == 0:
        raise IdxError("bad IDX header: zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(
            f"truncated IDX header: {ndim} dimensions need {header} bytes, got {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = DTYPES[code]
    # in Python's integers: a corrupt header's dimensions can overflow any fixed width
    expected = math.prod(shape) * dtype.itemsize
    if math.prod(d for d in shape if d) * dtype.itemsize >= 2**63:
        # NumPy refuses such a shape even when a zero dimension makes it empty
        raise IdxError(f"bad IDX header: dimensions {shape} are beyond any array's size")
    payload = len(data) - header
    if payload != expected:
        what = "truncated" if payload < expected else "has extra bytes"
        raise IdxError(
            f"IDX payload {what}: shape {shape} of {dtype.name} needs {expected} bytes, got "
            f"{payload}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def idx_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The IDX header for an array of ``shape`` and ``dtype`` (the inverse of :func:`parse_idx`)."""
    code = CODES[np.dtype(dtype).newbyteorder("=")]
    return struct.pack(f">HBB{len(shape)}I", 0, code, len(shape), *shape)


def to_idx(array: np.ndarray) -> bytes:
    """Serialise ``array`` as IDX bytes."""
    code = CODES[array.dtype.newbyteorder("=")]
    big = array.astype(DTYPES[code], copy=False)
    return idx_header(array.shape, array.dtype) + np.ascontiguousarray(big).tobytes()


def maybe_gunzip(data: bytes, limit: int | None = None) -> bytes:
    """Decompress ``data`` if it is gzip, else return it unchanged.

    Parameters
    ----------
    data : bytes
    limit : int, optional
        Refuse to inflate more than this many bytes (a guard against gzip bombs).

    Raises
    ------
    IdxError
        For a truncated or corrupt gzip stream, or one that inflates past ``limit``.
    """
    if not data.startswith(GZIP_MAGIC):
        return data
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1 if limit else 0)
    except zlib.error as exc:
        raise IdxError(f"corrupt gzip data ({exc})") from None
    if limit and len(out) > limit:
        raise IdxError(f"gzip data inflates to more than the expected {limit} bytes")
    if not inflater.eof:
        raise IdxError("truncated gzip data: the stream ends before its end marker")
    return out


def read_idx(source: str | os.PathLike | bytes) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not, from a path or from bytes.

    Parameters
    ----------
    source : path-like or bytes

    Returns
    -------
    ndarray
        See :func:`parse_idx`.
    """
    data = source if isinstance(source, (bytes, bytearray, memoryview)) else _read(source)
    return parse_idx(maybe_gunzip(bytes(data)))


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _describe(data: bytes) -> str:
    """A short guess at what non-IDX bytes are, for error messages."""
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "looks like an HTML page"
    if data.startswith(GZIP_MAGIC):
        return "gzip data"
    return f"starts with {data[:8]!r}"
