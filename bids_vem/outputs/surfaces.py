"""Surface stat maps: one GIFTI per hemisphere, or one CIFTI dense scalar.

A GIFTI map is ``..._hemi-L_space-fsaverage5_desc-<fs>_stat-r_statmap.func.gii``: functional
data (``.func.gii``, not ``.shape.gii``, which BIDS keeps for morphometry such as thickness),
one float32 data array whose intent says what the values are, so that FreeSurfer, Connectome
Workbench and nilearn read them as statistics: ``NIFTI_INTENT_CORREL`` for correlations (r,
meanr), ``NIFTI_INTENT_TTEST`` for t, ``NIFTI_INTENT_PVAL`` for p, q and pfwe, and
``NIFTI_INTENT_ESTIMATE`` for everything else (R², penalties, noise ceilings). A CIFTI map is
``..._space-fsLR_den-91k_desc-<fs>_stat-r_statmap.dscalar.nii``: a scalar axis naming the map
and the brain-model axis of the input BOLD, as FitLins writes its CIFTI stat maps. Points
outside the mask (the medial wall, vertices without signal) are 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bids_vem.errors import DataError, InputMissingError
from bids_vem.inputs.surfaces import SurfaceGeometry
from bids_vem.outputs.atomic import atomic_path
from bids_vem.outputs.jsonfile import write_json_atomic
from bids_vem.outputs.names import derivative_path

__all__ = [
    "GIFTI_INTENTS",
    "SurfaceMask",
    "is_surface_map",
    "read_surface_map",
    "write_surface_statmap",
]

#: the GIFTI intent of each statistic (others: NIFTI_INTENT_ESTIMATE)
GIFTI_INTENTS = {
    "r": "NIFTI_INTENT_CORREL",
    "meanr": "NIFTI_INTENT_CORREL",
    "t": "NIFTI_INTENT_TTEST",
    "p": "NIFTI_INTENT_PVAL",
    "q": "NIFTI_INTENT_PVAL",
    "pfwe": "NIFTI_INTENT_PVAL",
}


@dataclass(frozen=True)
class SurfaceMask:
    """The data points of surface maps: where they lie and which are in.

    Attributes
    ----------
    geometry : SurfaceGeometry
    inside : ndarray of bool, shape (n_points,)
    """

    geometry: SurfaceGeometry
    inside: np.ndarray

    def __post_init__(self) -> None:
        inside = np.asarray(self.inside, dtype=bool).reshape(-1)
        if inside.size != self.geometry.n_points:
            raise DataError(
                f"a mask of {inside.size} points for a {self.geometry.space} surface of "
                f"{self.geometry.n_points}"
            )
        object.__setattr__(self, "inside", inside)

    def unmask(self, data: np.ndarray) -> np.ndarray:
        """Values over every point (0 outside the mask) from values inside it."""
        data = np.asarray(data).reshape(-1)
        if data.size != int(self.inside.sum()):
            raise DataError(
                f"map has {data.size} values but the mask has {int(self.inside.sum())} points"
            )
        values = np.zeros(self.inside.size, dtype=np.float32)
        values[self.inside] = data
        return values


def is_surface_map(path: Path | str) -> bool:
    """Whether a stat map is a surface map (``.func.gii`` or ``.dscalar.nii``)."""
    return Path(path).name.endswith((".func.gii", ".dscalar.nii"))


def _right(path: Path) -> Path:
    return path.with_name(path.name.replace("_hemi-L_", "_hemi-R_"))


def read_surface_map(path: Path | str) -> tuple[np.ndarray, SurfaceGeometry]:
    """The values over all points of a surface map and its geometry.

    A GIFTI map is named by its left hemisphere (``hemi-L``); its right hemisphere is read
    from the ``hemi-R`` file beside it.

    Raises
    ------
    InputMissingError
        A file of the map is missing.
    DataError
        Unreadable, or not a map with one value per point.
    """
    path = Path(path)
    space = (re.search(r"_space-([A-Za-z0-9]+)_", path.name) or [None, ""])[1]
    if path.name.endswith(".dscalar.nii"):
        try:
            img = nib.load(path)
            values = np.asarray(img.get_fdata(dtype=np.float32))
        except FileNotFoundError as err:
            raise InputMissingError(f"{path}: map not found") from err
        except Exception as err:  # nibabel raises several types for broken files
            raise DataError(f"{path}: not a readable CIFTI map ({err})") from err
        if values.ndim != 2 or values.shape[0] != 1:
            raise DataError(f"{path}: a stat map holds one map, this one {values.shape[0]}")
        density = (re.search(r"_den-([A-Za-z0-9]+)_", path.name) or [None, None])[1]
        return values[0], SurfaceGeometry("cifti", space, (0, 0), path, density)
    hemispheres = []
    for hemi_path in (path, _right(path)) if "_hemi-L_" in path.name else (path,):
        if not hemi_path.exists():
            raise InputMissingError(f"{hemi_path}: hemisphere of the map {path.name} not found")
        try:
            img = nib.load(hemi_path)
        except Exception as err:  # nibabel raises several types for broken files
            raise DataError(f"{hemi_path}: not a readable GIFTI map ({err})") from err
        if len(img.darrays) != 1:
            raise DataError(
                f"{hemi_path}: a stat map holds one data array, this one {len(img.darrays)}"
            )
        hemispheres.append(np.asarray(img.darrays[0].data, dtype=np.float32).ravel())
    sizes = tuple(h.size for h in hemispheres) + (0,) * (2 - len(hemispheres))
    return np.concatenate(hemispheres), SurfaceGeometry("gifti", space, sizes)


def write_surface_statmap(
    output_dir: Path | str,
    data: np.ndarray,
    mask: SurfaceMask,
    *,
    entities: Mapping[str, Any],
    stat: str,
    sidecar: Mapping[str, Any],
    datatype: str | None = "func",
) -> list[Path]:
    """Write one surface stat map (GIFTI: one file per hemisphere) with its JSON sidecar(s).

    Parameters
    ----------
    data : ndarray, shape (n_points_in_mask,)
    mask : SurfaceMask
    entities : mapping
        BIDS entities of the map (``hemi`` is added per GIFTI file, ``den`` for CIFTI).
    sidecar : mapping
        The sidecar's contents.

    Returns
    -------
    list of Path
        The left then right GIFTI, or the CIFTI.
    """
    values = mask.unmask(data)
    geometry = mask.geometry
    entities = {**entities, "stat": stat}
    paths = []
    if geometry.kind == "cifti":
        if geometry.density:
            entities["den"] = geometry.density
        path = derivative_path(output_dir, entities, "statmap", ".dscalar.nii", datatype=datatype)
        header = nib.cifti2.Cifti2Header.from_axes(
            (nib.cifti2.ScalarAxis([stat]), geometry.brain_models)
        )
        image = nib.Cifti2Image(values[None, :], header=header)
        image.nifti_header.set_intent("NIFTI_INTENT_CONNECTIVITY_DENSE_SCALARS")
        write_json_atomic(path.with_name(path.name[: -len(".dscalar.nii")] + ".json"), sidecar)
        with atomic_path(path) as tmp:
            image.to_filename(str(tmp))
        return [path]
    for hemi, part in geometry.hemispheres(values).items():
        path = derivative_path(
            output_dir, {**entities, "hemi": hemi}, "statmap", ".func.gii", datatype=datatype
        )
        array = nib.gifti.GiftiDataArray(
            part.astype(np.float32),
            intent=GIFTI_INTENTS.get(stat, "NIFTI_INTENT_ESTIMATE"),
            datatype="NIFTI_TYPE_FLOAT32",
            meta=nib.gifti.GiftiMetaData({"Name": f"stat-{stat}"}),
        )
        structure = "CortexLeft" if hemi == "L" else "CortexRight"
        image = nib.GiftiImage(
            darrays=[array], meta=nib.gifti.GiftiMetaData({"AnatomicalStructurePrimary": structure})
        )
        write_json_atomic(path.with_name(path.name[: -len(".func.gii")] + ".json"), sidecar)
        with atomic_path(path) as tmp:
            nib.save(image, str(tmp))
        paths.append(path)
    return paths
