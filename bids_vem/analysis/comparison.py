"""Feature spaces side by side: mean r in the brain mask and in regions of interest, and the
voxels where one feature space predicts better than a reference (aligned vs unaligned).

Voxel counts are descriptive: neighbouring voxels are not independent, so no voxel-count test
is given here; the group level tests r maps across participants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_vem.config import option_name
from bids_vem.errors import DataError

__all__ = [
    "roi_voxels",
    "roi_points",
    "surface_region",
    "compare_feature_spaces",
    "best_space",
    "COMPARISON_COLUMNS",
]

#: descriptions of the comparison table's fixed columns (the TSV's JSON sidecar)
COMPARISON_COLUMNS = {
    "feature_space": "Name of the feature space (desc- of its maps)",
    "role": "aligned, unaligned (the image encoder before alignment), caption text (the "
    "alignment targets) or other",
    "n_voxels": "Voxels in the brain mask",
    "mean_r": "Mean held-out Pearson r over the brain mask",
    "median_r": "Median held-out r over the brain mask",
    "n_voxels_r_above_threshold": "Voxels with held-out r above the threshold",
    "n_voxels_beat_reference": "Voxels where this feature space's r exceeds the reference's "
    "(the unaligned encoder)",
    "fraction_beat_reference": "n_voxels_beat_reference / n_voxels",
    "fraction_beat_reference_predicted": "Among voxels where either r exceeds the threshold, the "
    "fraction where this feature space's r is higher",
    "mean_r_gain": "Mean of r minus the reference's r over the brain mask",
}


def roi_voxels(
    rois: Sequence[tuple[str, Path | str]], mask: np.ndarray, affine: np.ndarray
) -> dict[str, np.ndarray]:
    """Which mask voxels lie in each region of interest.

    Parameters
    ----------
    rois : sequence of (name, path)
        Region masks (NIfTI, non-zero inside); resampled to the mask's grid by nearest
        neighbour when their grid differs (nilearn).
    mask : ndarray of shape (X, Y, Z), bool
        The brain mask whose voxels order the r values.
    affine : ndarray of shape (4, 4)

    Returns
    -------
    dict of str to ndarray of shape (n_voxels,), bool

    Raises
    ------
    DataError
        A region that is not a 3-D image or holds no voxel of the mask.
    """
    from nilearn.image import resample_img

    out = {}
    for name, path in rois:
        image = nib.load(str(path))
        if len(image.shape) != 3 and not (len(image.shape) == 4 and image.shape[3] == 1):
            raise DataError(
                f"{option_name('rois')} {name}={path}: expected a 3-D mask, got shape {image.shape}"
            )
        data = np.asarray(image.dataobj).reshape(image.shape[:3])
        if image.shape[:3] != mask.shape or not np.allclose(image.affine, affine, atol=1e-3):
            resampled = resample_img(
                nib.Nifti1Image((data != 0).astype(np.uint8), image.affine),
                target_affine=affine,
                target_shape=mask.shape,
                interpolation="nearest",
                force_resample=True,
                copy_header=True,
            )
            data = np.asarray(resampled.dataobj)
        inside = (data != 0)[mask]
        if not inside.any():
            raise DataError(
                f"{option_name('rois')} {name}={path}: no voxel of the brain mask lies in the region"
            )
        out[name] = inside
    return out


def roi_points(rois: Sequence[tuple[str, Path | str]], mask) -> dict[str, np.ndarray]:
    """Which points of surface maps lie in each region of interest.

    Parameters
    ----------
    rois : sequence of (name, path)
        GIFTI files of one hemisphere (``.label.gii`` or a mask, non-zero inside; the
        hemisphere from ``hemi-L``/``hemi-R``, ``.L.``/``.R.``, ``lh.``/``rh.`` in the name or
        the file's ``AnatomicalStructurePrimary``) for GIFTI maps; CIFTI files (``.dlabel.nii``,
        ``.dscalar.nii``; the first map, non-zero inside) for CIFTI maps, matched to the maps'
        grayordinates by structure and vertex (or voxel).
    mask : SurfaceMask
        The points of the maps.

    Returns
    -------
    dict of str to ndarray of shape (n_points_in_mask,), bool

    Raises
    ------
    DataError
        A region of another kind or size than the maps, or holding none of their points.
    """
    out = {}
    for name, path in rois:
        inside = surface_region(f"{option_name('rois')} {name}={path}", Path(path), mask.geometry)
        inside = inside[mask.inside]
        if not inside.any():
            raise DataError(f"{option_name('rois')} {name}={path}: holds no point of the maps")
        out[name] = inside
    return out


def _hemisphere_of(path: Path, image) -> str | None:
    name = path.name
    for hemi, marks in (("L", ("hemi-L", ".L.", "lh.")), ("R", ("hemi-R", ".R.", "rh."))):
        if any(mark in name for mark in marks):
            return hemi
    structure = str(image.meta.get("AnatomicalStructurePrimary", "")) if image.meta else ""
    return {"CortexLeft": "L", "CortexRight": "R"}.get(structure)


def _grayordinate_keys(axis) -> list[tuple]:
    return [
        (str(name), int(vertex)) if surface else (str(name), tuple(int(v) for v in voxel))
        for name, vertex, voxel, surface in zip(
            axis.name, axis.vertex, axis.voxel, axis.surface_mask, strict=True
        )
    ]


def surface_region(text: str, path: Path, geometry) -> np.ndarray:
    """The points of surface maps inside one region file (see :func:`roi_points`); ``text``
    names the region in messages.

    Raises
    ------
    DataError
        Unreadable, or of another kind or size than the maps.
    """
    try:
        image = nib.load(str(path))
    except Exception as err:  # nibabel raises several types for broken files
        raise DataError(f"{text}: not a readable GIFTI or CIFTI region ({err})") from err
    if isinstance(image, nib.Cifti2Image):
        if geometry.kind != "cifti":
            raise DataError(f"{text}: a CIFTI region for {geometry.space} GIFTI maps")
        values = np.asarray(image.get_fdata())[0]
        lookup = dict(zip(_grayordinate_keys(image.header.get_axis(1)), values, strict=True))
        keys = _grayordinate_keys(geometry.brain_models)
        return np.array([lookup.get(key, 0) != 0 for key in keys], dtype=bool)
    if not isinstance(image, nib.GiftiImage) or not image.darrays:
        raise DataError(f"{text}: not a GIFTI or CIFTI region")
    if geometry.kind != "gifti":
        raise DataError(f"{text}: a GIFTI region for CIFTI maps; give a .dlabel.nii")
    hemi = _hemisphere_of(path, image)
    if hemi is None:
        raise DataError(f"{text}: which hemisphere? name it hemi-L/hemi-R (or .L./.R.)")
    values = np.asarray(image.darrays[0].data).ravel()
    n_left, n_right = geometry.n_vertices
    size = n_left if hemi == "L" else n_right
    if values.size != size:
        raise DataError(
            f"{text}: {values.size} vertices, but the maps' hemisphere {hemi} has {size}"
        )
    inside = np.zeros(n_left + n_right, dtype=bool)
    start = 0 if hemi == "L" else n_left
    inside[start : start + size] = values != 0
    return inside


def compare_feature_spaces(
    r_by_space: Mapping[str, np.ndarray],
    *,
    roles: Mapping[str, str] | None = None,
    reference: str | None = None,
    rois: Mapping[str, np.ndarray] | None = None,
    threshold: float = 0.1,
) -> list[dict]:
    """One row per feature space: r in the mask and in each region, and wins over ``reference``.

    Parameters
    ----------
    r_by_space : mapping of str to ndarray of shape (n_voxels,)
        Held-out r of each feature space over the same voxels.
    roles : mapping of str to str, optional
        Role of each feature space in the comparison (default ``"other"``).
    reference : str, optional
        The feature space the others are compared with voxel by voxel (the unaligned encoder).
    rois : mapping of str to ndarray of shape (n_voxels,), bool, optional
        From :func:`roi_voxels`; adds ``mean_r_roi-<name>`` columns.
    threshold : float
        r above which a voxel counts as predicted.

    Returns
    -------
    list of dict
        Rows in the order of ``r_by_space``.
    """
    roles = dict(roles or {})
    rois = dict(rois or {})
    sizes = {np.asarray(r).shape for r in r_by_space.values()}
    if len(sizes) > 1:
        raise ValueError(f"r maps of different sizes: {sorted(sizes)}")
    ref = None if reference is None else np.asarray(r_by_space[reference], dtype=np.float64)
    rows = []
    for name, r in r_by_space.items():
        r = np.asarray(r, dtype=np.float64)
        row: dict = {
            "feature_space": name,
            "role": roles.get(name, "other"),
            "n_voxels": int(r.size),
            "mean_r": float(r.mean()) if r.size else float("nan"),
            "median_r": float(np.median(r)) if r.size else float("nan"),
            "n_voxels_r_above_threshold": int(np.sum(r > threshold)),
        }
        for roi, inside in rois.items():
            row[f"mean_r_roi-{roi}"] = float(r[inside].mean())
        if ref is not None and name != reference:
            wins = r > ref
            predicted = (r > threshold) | (ref > threshold)
            row["n_voxels_beat_reference"] = int(wins.sum())
            row["fraction_beat_reference"] = float(wins.mean()) if r.size else float("nan")
            row["fraction_beat_reference_predicted"] = (
                float(wins[predicted].mean()) if predicted.any() else float("nan")
            )
            row["mean_r_gain"] = float((r - ref).mean()) if r.size else float("nan")
        rows.append(row)
    return rows


def best_space(r_by_space: np.ndarray, significant: np.ndarray | None = None) -> np.ndarray:
    """Per voxel, which feature space predicts best: 1 + the index of the largest held-out r,
    0 where no space reaches r > 0 (or, given ``significant``, q < 0.05 in the best one).

    Parameters
    ----------
    r_by_space : ndarray of shape (n_spaces, n_voxels)
    significant : ndarray of bool, same shape, optional
        Each space's voxels with q < 0.05 (permutation maps); None: r > 0 suffices.
    """
    r = np.asarray(r_by_space, dtype=np.float64)
    finite = np.where(np.isfinite(r), r, -np.inf)
    best = np.argmax(finite, axis=0)
    voxels = np.arange(r.shape[1])
    keep = finite[best, voxels] > 0
    if significant is not None:
        keep &= np.asarray(significant, bool)[best, voxels]
    return np.where(keep, best + 1, 0).astype(np.int16)
