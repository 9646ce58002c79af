"""Where the libraries may write: keep every cache inside the work directory when HOME is not usable.

Containers run bids_vem with a read-only root file system (``docker run --read-only``,
Apptainer images), under an arbitrary user id (``-u $(id -u):$(id -g)``) or with HOME not
bound. matplotlib, fontconfig, the Hugging Face libraries, torch, numba, triton, the CUDA JIT
and the deno runtime of the BIDS validator then try to write caches under ``~`` and fail, or
fall back to folders of their own in ``/tmp`` or in the current directory.
:func:`prepare_environment` points them at folders under the work directory instead, before
any of them is imported; the user's own settings of these variables are kept.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from bids_vem._utils import inside

__all__ = ["CACHE_VARIABLES", "EnvironmentChanges", "is_writable_dir", "prepare_environment"]

logger = logging.getLogger(__name__)

#: variable -> folder under ``<work dir>/caches`` it is pointed at when HOME is not writable
CACHE_VARIABLES: dict[str, str] = {
    "MPLCONFIGDIR": "matplotlib",
    "XDG_CACHE_HOME": "xdg-cache",  # fontconfig, pip, huggingface's default root
    "XDG_CONFIG_HOME": "xdg-config",
    "HF_HOME": "huggingface",
    "TORCH_HOME": "torch",
    "NUMBA_CACHE_DIR": "numba",
    "TRITON_CACHE_DIR": "triton",
    "CUDA_CACHE_PATH": "cuda",  # the CUDA JIT's ComputeCache, ~/.nv by default
    "NIPYPE_CONFIG_DIR": "nipype",
    "DENO_DIR": "deno",  # bids-validator-deno's compile cache
}

#: folder of the work directory that holds the redirected caches
CACHES_FOLDER = "caches"


@dataclass(frozen=True)
class EnvironmentChanges:
    """What :func:`prepare_environment` changed.

    Attributes
    ----------
    home : Path or None
        HOME as found (None: unset).
    home_writable : bool
        Whether HOME was a writable folder (then no cache variable is changed).
    variables : dict
        The variables set, name -> value (only those the user had not set).
    tmpdir : Path or None
        The temporary folder set in ``TMPDIR`` because the default one was not writable.
    """

    home: Path | None
    home_writable: bool
    variables: dict[str, str] = field(default_factory=dict)
    tmpdir: Path | None = None


def is_writable_dir(path: Path | str | None) -> bool:
    """Whether ``path`` is an existing folder this process may create files in."""
    if not path:
        return False
    path = Path(path)
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def prepare_environment(
    work_dir: Path,
    *,
    bids_dir: Path | None = None,
    environ: MutableMapping[str, str] | None = None,
) -> EnvironmentChanges:
    """Send library caches and temporary files to ``work_dir`` when HOME or /tmp is not writable.

    Call it before matplotlib, torch, transformers or nilearn are imported: most of them read
    these variables once, at import. Nothing changes when HOME is a writable folder and the
    temporary folder is writable. Logs one line when something changes.

    Parameters
    ----------
    work_dir : Path
        The run's work directory (``-w``); the caches go to ``work_dir/caches/<library>``.
    bids_dir : Path, optional
        The input dataset: no folder is ever created inside it (the run then stops with its
        own error about the work directory).
    environ : mapping, optional
        The environment to change (default ``os.environ``).

    Returns
    -------
    EnvironmentChanges
    """
    env = os.environ if environ is None else environ
    home_text = env.get("HOME")
    home = Path(home_text) if home_text else None
    home_writable = is_writable_dir(home)
    caches = Path(work_dir).absolute() / CACHES_FOLDER
    variables: dict[str, str] = {}
    if not home_writable:
        if home is None:
            # expanduser("~") would otherwise stay "~" (or a passwd home) for a uid without an entry
            variables["HOME"] = str(caches / "home")
        for name, folder in CACHE_VARIABLES.items():
            if not env.get(name):
                variables[name] = str(caches / folder)
    tmpdir = None
    current_tmp = env.get("TMPDIR") or "/tmp"
    if not is_writable_dir(current_tmp) and not inside(caches, bids_dir):
        # tempfile would fall back to the current directory, or fail: use the work dir
        tmpdir = caches / "tmp"
        try:
            tmpdir.mkdir(parents=True, exist_ok=True)
        except OSError:
            tmpdir = None  # the run stops on the unwritable work directory with its own message
        else:
            variables["TMPDIR"] = str(tmpdir)
    env.update(variables)
    if tmpdir is not None and environ is None:
        tempfile.tempdir = None  # re-read TMPDIR on next use
    changes = EnvironmentChanges(
        home=home, home_writable=home_writable, variables=variables, tmpdir=tmpdir
    )
    if variables:
        why = []
        if not home_writable:
            why.append(f"HOME ({home_text or 'unset'}) is not a writable folder")
        if tmpdir is not None:
            why.append(f"the temporary folder {current_tmp} is not writable")
        logger.info(
            "%s: library caches and temporary files go to %s (%s)",
            " and ".join(why),
            caches,
            ", ".join(sorted(variables)),
        )
    return changes
