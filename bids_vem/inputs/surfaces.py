"""Surface BOLD as data points: fMRIPrep's GIFTI hemisphere pairs and CIFTI dense time series.

fMRIPrep writes cortical surfaces as one ``.func.gii`` per hemisphere (fsaverage, fsaverage5,
fsaverage6, fsnative), one data array per volume, and grayordinates as a CIFTI-2 dense time
series (``space-fsLR_den-91k_bold.dtseries.nii``: both cortices and subcortical voxels). Here
both become data points, left hemisphere then right (GIFTI) or in the CIFTI's own order, so
that cleaning, the voxel store, the ridge, evaluation and statistics treat vertices as they
treat voxels. The core keeps its masks as images: the points of a surface are laid out along
the first axis of an ``(n_points, 1, 1)`` grid with an identity affine (:func:`points_image`,
NIfTI-2 since NIfTI-1 holds at most 32,767 along an axis); only reading (this module),
writing (:mod:`bids_vem.outputs.surfaces`) and figures know the geometry
(:class:`SurfaceGeometry`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_vem._utils import first_line
from bids_vem.errors import DataError, InputMissingError

__all__ = [
    "SURFACE_SPACES",
    "SurfaceGeometry",
    "bold_kind",
    "hemisphere",
    "points_image",
    "read_points",
    "surface_header",
]

#: spaces of surface data (fMRIPrep ``--output-spaces``); fsLR is CIFTI grayordinates
SURFACE_SPACES = ("fsaverage", "fsaverage3", "fsaverage4", "fsaverage5", "fsaverage6",
                  "fsaverage7", "fsnative", "fsLR")  # fmt: skip
#: vertices per hemisphere of the fsaverage meshes
FSAVERAGE_VERTICES = {
    "fsaverage3": 642,
    "fsaverage4": 2562,
    "fsaverage5": 10242,
    "fsaverage6": 40962,
    "fsaverage": 163842,
    "fsaverage7": 163842,
}
#: the den- label of fMRIPrep's CIFTI outputs by their number of grayordinates
_CIFTI_DENSITIES = {91282: "91k", 170494: "170k"}
_LEGACY_HEMI = re.compile(r"\.([LR])\.func\.gii$")


def bold_kind(path: Path | str) -> str:
    """``"gifti"`` (``.func.gii``), ``"cifti"`` (``.dtseries.nii``) or ``"volume"``."""
    name = Path(path).name
    if name.endswith(".func.gii"):
        return "gifti"
    if name.endswith(".dtseries.nii"):
        return "cifti"
    return "volume"


def hemisphere(path: Path | str, hemi: str | None = None) -> str | None:
    """``"L"`` or ``"R"``: the ``hemi-`` entity, else fMRIPrep 1.x's ``.L.func.gii``."""
    if hemi in ("L", "R"):
        return hemi
    found = _LEGACY_HEMI.search(Path(path).name) or re.search(r"_hemi-([LR])_", Path(path).name)
    return found.group(1) if found else None


def _load(path: Path, what: str):
    path = Path(path)
    if not path.exists():
        raise InputMissingError(f"{path}: {what} not found")
    if path.stat().st_size == 0:
        raise InputMissingError(
            f"{path}: empty file (0 bytes): its content was not fetched (`datalad get` it?)"
        )
    try:
        return nib.load(path)
    except Exception as err:  # nibabel raises several types for broken files
        raise DataError(f"{path}: not a readable {what} ({first_line(err)})") from err


def _gifti_series(path: Path) -> tuple[np.ndarray, float | None]:
    """(n_volumes, n_vertices) float32 of one hemisphere, and the TR in seconds if stated."""
    img = _load(path, "GIFTI surface BOLD")
    if not isinstance(img, nib.GiftiImage) or not img.darrays:
        raise DataError(f"{path}: a GIFTI surface BOLD needs one data array per volume")
    lengths = {d.data.size for d in img.darrays}
    if len(lengths) != 1:
        raise DataError(f"{path}: its data arrays have different lengths {sorted(lengths)}")
    data = np.stack([np.asarray(d.data, dtype=np.float32).ravel() for d in img.darrays])
    step = img.darrays[0].meta.get("TimeStep") if img.darrays[0].meta else None
    try:
        tr = float(step) if step else None
    except ValueError:
        tr = None
    # GIFTI's TimeStep is in milliseconds (FreeSurfer's mri_vol2surf writes 2000 for 2 s);
    # some writers give seconds: no TR is 50 ms or less, nor 50 s or more
    if tr is not None and tr >= 50:
        tr /= 1000.0
    return data, (tr if tr and tr > 0 else None)


def _n_vertices(path: Path) -> int:
    """Vertices of a GIFTI surface BOLD (its first data array; the series is not stacked)."""
    img = _load(path, "GIFTI surface BOLD")
    if not isinstance(img, nib.GiftiImage) or not img.darrays:
        raise DataError(f"{path}: a GIFTI surface BOLD needs one data array per volume")
    return int(img.darrays[0].data.size)


def _cifti(path: Path):
    img = _load(path, "CIFTI dense time series")
    if not isinstance(img, nib.Cifti2Image):
        raise DataError(f"{path}: not a CIFTI-2 image")
    series, models = img.header.get_axis(0), img.header.get_axis(1)
    if not isinstance(series, nib.cifti2.SeriesAxis) or not isinstance(
        models, nib.cifti2.BrainModelAxis
    ):
        raise DataError(
            f"{path}: a dense time series needs a series axis and a brain-model axis, found "
            f"{type(series).__name__} and {type(models).__name__}"
        )
    return img, series, models


def surface_header(bold: Path, bold_right: Path | None = None) -> tuple[int, float | None]:
    """Number of volumes and the TR (seconds, None if not stated) of surface BOLD.

    Raises
    ------
    InputMissingError
        A file is missing or empty.
    DataError
        Unreadable, or the two hemispheres have different numbers of volumes.
    """
    if bold_kind(bold) == "cifti":
        _, series, _ = _cifti(bold)
        step = float(series.step)
        step = {"msec": step / 1000.0, "usec": step / 1e6}.get(series.unit.lower(), step)
        return int(series.size), (step if step > 0 else None)
    left, tr = _gifti_series(bold)
    if bold_right is not None:
        right, _ = _gifti_series(bold_right)
        if right.shape[0] != left.shape[0]:
            raise DataError(
                f"{bold_right}: {right.shape[0]} volumes but the left hemisphere "
                f"{Path(bold).name} has {left.shape[0]}"
            )
    return int(left.shape[0]), tr


def read_points(bold: Path, bold_right: Path | None = None) -> np.ndarray:
    """Surface BOLD as (n_volumes, n_points) float32: left then right hemisphere, or the
    grayordinates of a CIFTI in its order."""
    if bold_kind(bold) == "cifti":
        img, _, _ = _cifti(bold)
        try:
            return np.asarray(img.get_fdata(dtype=np.float32))
        except (OSError, EOFError, ValueError) as err:
            raise InputMissingError(
                f"{bold}: cannot read the CIFTI data, the file looks truncated ({first_line(err)})"
            ) from err
    left, _ = _gifti_series(bold)
    if bold_right is None:
        return left
    right, _ = _gifti_series(bold_right)
    if right.shape[0] != left.shape[0]:
        raise DataError(
            f"{bold_right}: {right.shape[0]} volumes but the left hemisphere has {left.shape[0]}"
        )
    return np.concatenate([left, right], axis=1)


def points_image(inside: np.ndarray) -> nib.Nifti2Image:
    """A mask over data points as an ``(n_points, 1, 1)`` image (identity affine)."""
    inside = np.asarray(inside).reshape(-1)
    return nib.Nifti2Image(inside.astype(np.int8).reshape(-1, 1, 1), np.eye(4))


@dataclass(frozen=True)
class SurfaceGeometry:
    """Where the data points of surface maps lie.

    Attributes
    ----------
    kind : {"gifti", "cifti"}
    space : str
        ``fsaverage5``, ``fsLR``...
    n_vertices : tuple of (int, int)
        Vertices of the left and right hemispheres (GIFTI); (0, 0) for CIFTI.
    reference : Path or None
        A CIFTI file (dense time series or scalars) whose brain-model axis the maps take.
    density : str or None
        The ``den-`` label of CIFTI data (``91k``).
    """

    kind: str
    space: str
    n_vertices: tuple[int, int] = (0, 0)
    reference: Path | None = None
    density: str | None = None

    @classmethod
    def of_bold(cls, bold: Path, bold_right: Path | None, space: str) -> SurfaceGeometry:
        """The geometry of one run's surface BOLD."""
        if bold_kind(bold) == "cifti":
            found = re.search(r"_den-([A-Za-z0-9]+)_", Path(bold).name)
            n_points = len(_cifti(bold)[2])
            density = found.group(1) if found else _CIFTI_DENSITIES.get(n_points)
            return cls("cifti", space, (0, 0), Path(bold), density)
        right = _n_vertices(bold_right) if bold_right is not None else 0
        return cls("gifti", space, (_n_vertices(bold), right))

    @cached_property
    def brain_models(self) -> nib.cifti2.BrainModelAxis:
        """The brain-model axis of the reference CIFTI (its header read once)."""
        if self.reference is None:
            raise ValueError("a GIFTI geometry has no brain-model axis")
        axis = _load(self.reference, "CIFTI file").header.get_axis(1)
        if not isinstance(axis, nib.cifti2.BrainModelAxis):
            raise DataError(f"{self.reference}: no brain-model axis")
        return axis

    @property
    def n_points(self) -> int:
        if self.kind == "cifti":
            return len(self.brain_models)
        return sum(self.n_vertices)

    def hemispheres(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """Values over all points split per hemisphere (GIFTI), left first."""
        values = np.asarray(values).reshape(-1)
        n_left = self.n_vertices[0]
        out = {"L": values[:n_left]}
        if self.n_vertices[1]:
            out["R"] = values[n_left:]
        return out

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "space": self.space,
            "n_vertices": list(self.n_vertices),
            "reference": None if self.reference is None else str(self.reference),
            "density": self.density,
        }

    @classmethod
    def from_dict(cls, data: dict) -> SurfaceGeometry:
        return cls(
            data["kind"],
            data["space"],
            tuple(data.get("n_vertices", (0, 0))),
            None if data.get("reference") is None else Path(data["reference"]),
            data.get("density"),
        )
