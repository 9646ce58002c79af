"""Searchlight RSA (Kriegeskorte et al. 2006): the brain RDM of a sphere around every voxel
(or surface vertex), compared with each model RDM by Spearman's rho.

The sphere holds the points of the mask within ``radius`` mm of its centre: voxel centres
through the affine (anisotropic voxels are handled), or vertices of the template mesh's pial
(fsaverage5, nilearn's bundled mesh) or midthickness (fsLR 32k, brainspace's conte69) surface
by Euclidean distance, each hemisphere (and each CIFTI structure) on its own, so no sphere
spans the midline; a sphere with fewer than :data:`MIN_VOXELS` points gets NaN. Kendall's
tau-a is left to the region analyses (one per region, not per sphere).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import rankdata
from tqdm.auto import tqdm

from bids_vem.analysis.rsa import StimulusPatterns, brain_rdm

__all__ = [
    "MIN_VOXELS",
    "DEFAULT_RADIUS",
    "voxel_coordinates",
    "surface_coordinates",
    "sphere_neighbourhoods",
    "searchlight_rsa",
]

#: fewest voxels a sphere needs for a brain RDM
MIN_VOXELS = 3
#: sphere radius in mm (Kriegeskorte et al. 2006 used 4 mm at 1.95 mm voxels; 6 mm at 2-3 mm)
DEFAULT_RADIUS = 6.0


#: apart by this many mm, two hemispheres (or CIFTI structures) share no sphere
_APART = 10_000.0


def voxel_coordinates(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of the voxels of ``mask``, in ``mask[mask]`` order."""
    ijk = np.argwhere(np.asarray(mask, dtype=bool))
    return ijk @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


def surface_coordinates(geometry, inside: np.ndarray) -> np.ndarray:
    """Coordinates (mm) of the surface points ``inside`` (bool over the geometry's points),
    each hemisphere or CIFTI structure moved far from the others.

    Raises
    ------
    DataError
        No template mesh offline for the space (fsaverage5 and fsLR 32k have one).
    """
    from bids_vem.errors import DataError

    if geometry.kind == "cifti":
        import nibabel as nib

        from bids_vem.reports.surface_figures import _conte69

        meshes = _conte69()
        cortex = {"CIFTI_STRUCTURE_CORTEX_LEFT": "left", "CIFTI_STRUCTURE_CORTEX_RIGHT": "right"}
        models = geometry.brain_models
        xyz = np.zeros((len(models), 3))
        for k, (structure, sl, model) in enumerate(models.iter_structures()):
            if structure in cortex:
                mesh = nib.load(str(meshes[cortex[structure]])).darrays[0].data
                if len(mesh) != model.nvertices[structure]:
                    raise DataError(
                        f"a {model.nvertices[structure]}-vertex cortex is not fsLR 32k: no mesh "
                        "for a searchlight"
                    )
                xyz[sl] = mesh[model.vertex]
            else:
                xyz[sl] = model.voxel @ model.affine[:3, :3].T + model.affine[:3, 3]
            xyz[sl, 0] += k * _APART
        return xyz[np.asarray(inside, dtype=bool)]
    if geometry.space != "fsaverage5":
        raise DataError(
            f"space {geometry.space} has no template mesh offline for a searchlight "
            "(fsaverage5 and fsLR do)"
        )
    from nilearn.datasets import load_fsaverage

    pial = load_fsaverage("fsaverage5")["pial"]
    parts = []
    for k, (name, n) in enumerate(zip(("left", "right"), geometry.n_vertices, strict=True)):
        coordinates = np.asarray(pial.parts[name].coordinates, dtype=np.float64)
        if n != len(coordinates):
            raise DataError(f"{n} vertices are not fsaverage5's {len(coordinates)}")
        parts.append(coordinates + [k * _APART, 0.0, 0.0])
    return np.vstack(parts)[np.asarray(inside, dtype=bool)]


def sphere_neighbourhoods(xyz: np.ndarray, radius: float = DEFAULT_RADIUS) -> list[np.ndarray]:
    """For every point, the points within ``radius`` mm of it (indices into ``xyz``)."""
    tree = cKDTree(np.asarray(xyz, dtype=np.float64))
    return [np.asarray(sorted(n), dtype=np.int64) for n in tree.query_ball_point(xyz, radius)]


def searchlight_rsa(
    patterns: StimulusPatterns,
    neighbourhoods: list[np.ndarray],
    model_rdms: np.ndarray,
    *,
    progress: bool = True,
) -> np.ndarray:
    """Spearman's rho between each sphere's brain RDM and each model RDM.

    Parameters
    ----------
    patterns : StimulusPatterns
    neighbourhoods : list of ndarray
        Voxel indices of each sphere (:func:`sphere_neighbourhoods`).
    model_rdms : ndarray of shape (n_models, n_pairs)
        Condensed model RDMs over ``patterns.stim_ids``.

    Returns
    -------
    ndarray of shape (n_models, n_centres)
        NaN where a sphere has fewer than :data:`MIN_VOXELS` voxels.
    """
    models = np.vstack([rankdata(m) for m in np.atleast_2d(model_rdms)])
    models -= models.mean(axis=1, keepdims=True)
    models /= np.linalg.norm(models, axis=1, keepdims=True)
    out = np.full((len(models), len(neighbourhoods)), np.nan)
    for c, voxels in enumerate(
        tqdm(
            neighbourhoods,
            desc="searchlight",
            unit="sphere",
            disable=None if progress else True,
            leave=False,
        )  # fmt: skip
    ):
        if len(voxels) < MIN_VOXELS:
            continue
        ranked = rankdata(brain_rdm(patterns, voxels))
        ranked -= ranked.mean()
        norm = np.linalg.norm(ranked)
        if norm > 0:
            out[:, c] = models @ (ranked / norm)
    return out
