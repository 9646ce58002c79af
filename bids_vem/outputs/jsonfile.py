"""JSON files written by bids_vem: numpy values made plain, written atomically."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bids_vem.outputs.atomic import write_text_atomic

__all__ = ["jsonable", "write_json_atomic"]


def jsonable(value: Any) -> Any:
    """A copy of ``value`` that :func:`json.dumps` accepts and that is strict JSON.

    numpy scalars and arrays become Python numbers and lists, paths become strings,
    tuples and sets become lists, and non-finite floats become ``None`` (JSON has no NaN).
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [jsonable(v) for v in items]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot write a {type(value).__name__} to JSON: {value!r}")


def write_json_atomic(path: Path | str, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented UTF-8 JSON to ``path`` atomically; returns the path."""
    text = json.dumps(jsonable(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return write_text_atomic(path, text)
