"""A session's state as JSON: NumPy arrays made lists, at full float precision.

JSON has no NaN or infinity, and a browser's ``JSON.parse`` refuses them: a net that has blown
up (``health.diverged``) may hold such numbers, sent as null.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """``value`` with every array, NumPy number and tuple made a JSON value; NaN and ±inf None."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            out = value.astype(object)
            out[~np.isfinite(value)] = None
            return out.tolist()
        return value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any) -> bytes:
    """``value`` as compact JSON bytes (:func:`plain` first)."""
    return json.dumps(plain(value), separators=(",", ":"), allow_nan=False).encode()


def packed(array: np.ndarray) -> dict:
    """``array`` as ``{"shape": [...], "float64": base64 of its little-endian bytes}``: exact,
    2.5x smaller than its numbers in JSON, and read by a browser straight into a Float64Array."""
    data = np.ascontiguousarray(array, dtype="<f8").tobytes()
    return {"shape": list(array.shape), "float64": base64.b64encode(data).decode("ascii")}


def unpacked(value: dict) -> np.ndarray:
    """The array :func:`packed` made."""
    return np.frombuffer(base64.b64decode(value["float64"]), "<f8").reshape(value["shape"])
