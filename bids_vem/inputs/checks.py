"""Faults of the runs' files found before any work starts, each named in one line.

An hour of feature extraction or alignment should never end on a confounds file one row
short or a BOLD series cut off at its last volume. These checks read headers, the first
line and the row count of TSVs, and the gzip trailer of compressed images; the voxel data
are read later, once.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_vem.errors import DataError, InputMissingError
from bids_vem.inputs.events import read_tsv_columns
from bids_vem.inputs.runs import Run

__all__ = ["check_runs", "check_image_complete"]


def check_image_complete(path: Path) -> None:
    """Check that a NIfTI file holds every byte its header announces.

    An uncompressed file is checked by its size; a gzipped one by the uncompressed size its
    gzip trailer records (the stream is decompressed only when the trailer disagrees: files
    of several gzip members).

    Raises
    ------
    InputMissingError
        The file is shorter than its header says (a copy or download cut off; exit 66).
    """
    path = Path(path)
    try:
        header = nib.load(path).header
    except Exception:  # noqa: BLE001 - read_bold_header reports unreadable headers
        return
    shape = header.get_data_shape()
    expected = (
        int(header.get_data_offset()) + int(np.prod(shape)) * header.get_data_dtype().itemsize
    )
    if path.name.endswith(".gz"):
        with open(path, "rb") as handle:
            handle.seek(-4, 2)
            recorded = int.from_bytes(handle.read(4), "little")
        if recorded == expected % 2**32:
            return
        try:
            with gzip.open(path, "rb") as stream:
                size = 0
                while block := stream.read(1 << 24):
                    size += len(block)
        except (OSError, EOFError, zlib.error) as err:
            raise InputMissingError(
                f"{path}: the file is truncated ({type(err).__name__}: {err}); its header "
                f"announces {shape} voxels x volumes"
            ) from err
    else:
        size = path.stat().st_size
    if size < expected:
        raise InputMissingError(
            f"{path}: the file is truncated: {size} of the {expected} bytes its header "
            f"announces ({shape})"
        )


def _count_rows(path: Path) -> int:
    with open(path, encoding="utf-8-sig") as handle:
        return sum(1 for line in handle if line.strip()) - 1


def _check_confounds(run: Run, confounds: Sequence[str]) -> None:
    from bids_vem.encoding.bold import legacy_confound_name

    if run.confounds is None:
        if confounds:
            raise InputMissingError(
                f"{run.name}: confounds {', '.join(confounds)} requested but the run has no "
                "confounds file"
            )
        return
    columns = read_tsv_columns(run.confounds)
    absent = [c for c in confounds if c not in columns and legacy_confound_name(c) not in columns]
    if absent:
        shown = ", ".join(columns[:8]) + (", ..." if len(columns) > 8 else "")
        raise DataError(
            f"{run.confounds}: no confound column(s) {', '.join(absent)} "
            f"({len(columns)} available: {shown})"
        )
    rows = _count_rows(run.confounds)
    if rows != run.n_volumes:
        raise DataError(
            f"{run.confounds}: {rows} rows of confounds for {run.n_volumes} volumes of "
            f"{run.bold.name}; fMRIPrep writes one row per volume"
        )


def check_runs(
    runs: Sequence[Run],
    *,
    confounds: Sequence[str],
    delays: Sequence[int] = (),
    delays_seconds: Sequence[float] = (),
) -> None:
    """Check every run's files before any work starts.

    Parameters
    ----------
    runs : sequence of Run
    confounds : sequence of str
        The confound columns requested (``--confounds``).
    delays, delays_seconds : sequence
        FIR delays in TRs, or in seconds (which win): a run needs more volumes than the
        longest delay (none for trial-wise designs).

    Raises
    ------
    InputMissingError
        A truncated BOLD series, or confounds requested of a run without a confounds file.
    DataError
        Confound columns absent or not one row per volume; a run too short for the delays;
        an empty or unreadable brain mask.
    """
    from bids_vem.encoding.bold import load_mask
    from bids_vem.inputs.surfaces import bold_kind

    for run in runs:
        if bold_kind(run.bold) == "volume":  # GIFTI is read whole when collected
            check_image_complete(run.bold)
        if run.mask is not None:
            load_mask(run.mask)  # small: read whole, so that an empty mask stops us now
        _check_confounds(run, list(confounds))
        longest = max(delays_seconds) if delays_seconds else max(delays, default=0) * run.tr
        delay_volumes = int(np.ceil(longest / run.tr - 1e-9))
        if delay_volumes and run.n_volumes <= delay_volumes + 2:
            raise DataError(
                f"{run.bold}: {run.n_volumes} volumes of {run.tr:g} s; FIR delays up to "
                f"{longest:g} s need more than {delay_volumes + 2}"
            )
