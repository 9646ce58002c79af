"""Small deterministic, atomic writers for the demo's files (JSON, TSV, NIfTI, PNG, NPZ)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_vem._utils import tsv_cell
from bids_vem.outputs.atomic import atomic_path, write_bytes_atomic, write_text_atomic

__all__ = ["write_json", "write_tsv", "write_nifti", "write_png", "write_npz"]

#: zip entries get this fixed date, so the same arrays give the same bytes
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def write_json(path: Path, data: Mapping) -> Path:
    """Write ``data`` as indented JSON (keys in the given order)."""
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def write_tsv(path: Path, columns: Mapping[str, Sequence]) -> Path:
    """Write a TSV with a header row; None and NaN become ``n/a``.

    Parameters
    ----------
    path : Path
    columns : mapping of str to sequence
        Column name -> values, all of the same length.
    """
    names = list(columns)
    lengths = {len(columns[name]) for name in names}
    if len(lengths) > 1:
        raise ValueError(f"{path}: columns of different lengths {sorted(lengths)}")
    rows = ["\t".join(names)]
    for i in range(lengths.pop() if lengths else 0):
        rows.append("\t".join(tsv_cell(columns[name][i]) for name in names))
    return write_text_atomic(path, "\n".join(rows) + "\n")


def write_nifti(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    tr: float | None = None,
    template_space: bool = True,
) -> Path:
    """Write a NIfTI-1 image with spatial (and temporal) units set.

    Parameters
    ----------
    path : Path
        ``.nii.gz`` (nibabel's gzip output has no timestamp: same data, same bytes).
    data : ndarray of shape (n_x, n_y, n_z) or (n_x, n_y, n_z, n_volumes)
    affine : ndarray of shape (4, 4)
    tr : float, optional
        Repetition time (seconds) stored as the 4th zoom of a 4D image.
    template_space : bool
        Mark the affine as MNI (sform/qform code 4) rather than scanner (code 1).
    """
    image = nib.Nifti1Image(data, affine)
    code = 4 if template_space else 1
    image.set_sform(affine, code=code)
    image.set_qform(affine, code=code)
    if data.ndim == 4:
        if tr is None:
            raise ValueError(f"{path}: a 4D image needs its repetition time")
        image.header.set_xyzt_units("mm", "sec")
        image.header.set_zooms((*image.header.get_zooms()[:3], float(tr)))
    else:
        image.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        image.to_filename(tmp)
    return Path(path)


def write_png(path: Path, image) -> Path:
    """Write a PIL image as PNG (no timestamp chunk)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return write_bytes_atomic(path, buffer.getvalue())


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write arrays as a compressed ``.npz`` readable by :func:`numpy.load` (no pickle).

    Unlike :func:`numpy.savez_compressed`, entries get a fixed date: same arrays, same bytes.
    """
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)
    return Path(path)
