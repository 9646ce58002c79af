"""Small helpers every layer uses: BIDS labels, paths, JSON, TSV cells, error messages.

Private to bids_vem (the leading underscore); one copy each instead of one per module.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LABEL", "file_lock", "first_line", "inside", "is_label", "jsonable", "tsv_cell"]

#: a BIDS label (the part after ``sub-``, ``task-``, ``desc-``...): letters and digits
LABEL = re.compile(r"^[A-Za-z0-9]+$")


def is_label(text: str) -> bool:
    """Whether ``text`` is a valid BIDS label (letters and digits only, not empty)."""
    return bool(LABEL.match(str(text)))


def inside(path: Path, parent: Path | None) -> bool:
    """Whether ``path`` is ``parent`` or lies below it, links resolved."""
    if parent is None:
        return False
    try:
        Path(path).resolve().relative_to(Path(parent).resolve())
    except ValueError:
        return False
    return True


def jsonable(value: Any) -> Any:
    """``value`` with tuples and sets as lists, paths and unknown objects as strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def tsv_cell(value: Any) -> str:
    """One BIDS TSV cell: ``n/a`` for missing or non-finite values, numbers to 6 digits,
    booleans as ``true``/``false``, text on one line (a tab or newline would break the row)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        return "n/a" if not np.isfinite(value) else f"{float(value):.6g}"
    if isinstance(value, int | np.integer):
        return str(int(value))
    return " ".join(str(value).split()) or "n/a"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the block.

    Jobs sharing a work or output folder (array jobs, parallel participants) take turns on
    what they would otherwise do twice or half each: one computes, the others then find
    the result. Where the file system offers no locks (some network mounts) or the folder
    is read-only, the block runs without one: a lost race costs a recomputation, not a
    corrupt file, since every write is atomic.
    """
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    except (ImportError, OSError):
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
