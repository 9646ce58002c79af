"""Atomic writes: a file appears under its final name complete, or not at all."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "atomic_path",
    "write_text_atomic",
    "write_bytes_atomic",
    "write_npz_atomic",
    "current_umask",
    "remove_stale_temporaries",
    "temporary_prefix",
]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux allows (``/proc``); else by
    setting and restoring it under a lock."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    The temporary name keeps the final suffixes (``.nii.gz``, ``.npy``) so that
    libraries choosing a format by extension write the right one. On error the
    temporary file is removed and ``path`` is left as it was.

    Examples
    --------
    >>> with atomic_path(out / "map.nii.gz") as tmp:  # doctest: +SKIP
    ...     img.to_filename(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; the file gets the mode any new file would (the user's umask),
        # so colleagues, web servers and shared group folders can read the outputs
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def temporary_prefix(path: Path | str) -> str:
    """``.<stem>.tmp-<host>-<pid>-``: the start of a temporary's name beside ``path``.

    Hidden (BIDS validators and ``ls`` skip it), and naming its writer, so that a later run
    can remove what a killed one left (:func:`remove_stale_temporaries`) without touching the
    temporaries of jobs still running into the same folder.
    """
    return f".{Path(path).name.split('.')[0]}.tmp-{_HOST}-{os.getpid()}-"


_HOST = socket.gethostname().split(".")[0].replace("-", "_") or "host"
_TEMPORARY = re.compile(r"^\.[^.]*\.tmp-(?P<host>[^-]+)-(?P<pid>\d+)-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(root: Path | str) -> list[Path]:
    """Remove the temporaries under ``root`` left by writers that died (SIGKILL, a node lost).

    Temporaries written on this host by a process that no longer exists are removed, and
    those of any host untouched for a day (a container's host name changes with every run);
    those of live processes, and recent ones of other hosts (whose processes cannot be
    checked from here), are left. Returns the removed paths.
    """
    removed = []
    root = Path(root)
    if not root.is_dir():
        return removed
    day_ago = time.time() - 86400
    for folder, dirs, files in os.walk(root):
        for name in [*files, *dirs]:
            match = _TEMPORARY.match(name)
            if not match:
                continue
            path = Path(folder) / name
            try:
                old = path.lstat().st_mtime < day_ago
            except FileNotFoundError:
                continue
            here = match["host"] == _HOST
            if not old and (not here or _alive(int(match["pid"]))):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                dirs.remove(name)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            removed.append(path)
    return removed


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8); returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes_atomic(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_npz_atomic(path: Path | str, arrays: dict) -> Path:
    """Write ``arrays`` as one ``.npz`` (no pickle) atomically; returns the path."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a file object: no suffix added
        np.savez(handle, **arrays)
    return Path(path)
