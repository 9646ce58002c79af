"""Parcel-by-parcel summaries of surface maps with atlases that work offline.

The brainspace wheel ships cortical parcellations on the fsLR 32k (conte69) meshes, one label
per vertex of both hemispheres (left then right, 0 on the medial wall): Schaefer et al. 2018
(100 to 1000 parcels, 7 networks), Vos de Wael et al. 2020 and Mesulam 1998. They are read as
data files of the wheel (brainspace itself, and its VTK, are never imported). A CIFTI map's
cortical grayordinates take the label of their vertex; subcortical voxels have none.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from bids_vem.config import option_name
from bids_vem.errors import DataError, InputMissingError

__all__ = ["ATLASES", "ATLAS_COLUMNS", "atlas_labels", "point_parcels", "parcel_rows"]

#: atlas name (the --atlas value and the atlas- entity of the TSV) to brainspace's file
ATLASES = {
    **{f"schaefer{n}": f"schaefer_{n}_conte69.csv" for n in (100, 200, 300, 400, 1000)},
    **{f"vosdewael{n}": f"vosdewael_{n}_conte69.csv" for n in (100, 200, 300, 400)},
    "mesulam": "mesulam_conte69.csv",
}
_FSLR_VERTICES = 32492

#: columns of the parcel summaries (the TSV's sidecar)
ATLAS_COLUMNS = {
    "atlas": "Parcellation (brainspace's conte69 files: Schaefer et al. 2018, Vos de Wael et "
    "al. 2020, Mesulam 1998).",
    "parcel": "Parcel label in the atlas (its value in the atlas file).",
    "n_points": "Grayordinates of the parcel inside the maps' mask.",
    "mean_r": "Mean held-out r over the parcel's grayordinates.",
    "median_r": "Median held-out r over the parcel's grayordinates.",
    "max_r": "Largest held-out r in the parcel.",
}


def atlas_labels(name: str) -> np.ndarray:
    """The label of each fsLR 32k vertex, left hemisphere then right (64,984 values).

    Raises
    ------
    InputMissingError
        brainspace is not installed, or its file is missing.
    """
    spec = importlib.util.find_spec("brainspace")
    if spec is None or not spec.submodule_search_locations:
        raise InputMissingError(
            f"{option_name('atlases')} {name}: needs the brainspace package (pip install brainspace)"
        )
    path = (
        Path(next(iter(spec.submodule_search_locations)))
        / "datasets"
        / "parcellations"
        / ATLASES[name]
    )
    if not path.is_file():
        raise InputMissingError(f"{option_name('atlases')} {name}: {path} not found")
    labels = np.loadtxt(path).astype(np.int64)
    if labels.size != 2 * _FSLR_VERTICES:
        raise DataError(f"{path}: {labels.size} labels, expected {2 * _FSLR_VERTICES}")
    return labels


def point_parcels(name: str, geometry) -> np.ndarray:
    """The parcel of each point of CIFTI maps on fsLR 32k (0: none).

    Raises
    ------
    DataError
        Maps that are not fsLR 32k CIFTI grayordinates.
    """
    if geometry.kind != "cifti":
        raise DataError(
            f"{option_name('atlases')} {name}: the atlases are on fsLR 32k; use "
            f"{option_name('space')} fsLR"
        )
    labels = atlas_labels(name)
    offsets = {"CIFTI_STRUCTURE_CORTEX_LEFT": 0, "CIFTI_STRUCTURE_CORTEX_RIGHT": _FSLR_VERTICES}
    models = geometry.brain_models
    out = np.zeros(len(models), dtype=np.int64)
    for structure, part, model in models.iter_structures():
        if structure not in offsets:
            continue
        if model.nvertices[structure] != _FSLR_VERTICES:
            raise DataError(
                f"{option_name('atlases')} {name}: a cortex of {model.nvertices[structure]} "
                f"vertices is not fsLR 32k"
            )
        out[part] = labels[offsets[structure] + model.vertex]
    return out


def parcel_rows(name: str, parcels: np.ndarray, r: np.ndarray, **ids) -> list[dict]:
    """One row per parcel with points in the mask: ``ids``, atlas, parcel, n and r stats.

    Parameters
    ----------
    parcels : ndarray of int, shape (n_points_in_mask,)
        The parcel of each point of ``r`` (0: none).
    r : ndarray, shape (n_points_in_mask,)
    """
    rows = []
    for parcel in np.unique(parcels[parcels > 0]):
        values = np.asarray(r, dtype=np.float64)[parcels == parcel]
        values = values[np.isfinite(values)]
        rows.append(
            {
                **ids,
                "atlas": name,
                "parcel": int(parcel),
                "n_points": int(values.size),
                "mean_r": float(values.mean()) if values.size else float("nan"),
                "median_r": float(np.median(values)) if values.size else float("nan"),
                "max_r": float(values.max()) if values.size else float("nan"),
            }
        )
    return rows
