"""Searchlight RSA (Kriegeskorte et al. 2006): the brain RDM of a sphere around every voxel,
compared with each model RDM by Spearman's rho.

The sphere holds the voxels of the mask within ``radius`` mm of its centre (voxel centres,
through the affine, so anisotropic voxels are handled); a sphere with fewer than
:data:`MIN_VOXELS` voxels gets NaN. Kendall's tau-a, quadratic in the number of stimulus pairs
without ties handling tricks, is left to the region analyses.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import rankdata
from tqdm.auto import tqdm

from bids_vem.analysis.rsa import StimulusPatterns, brain_rdm

__all__ = ["MIN_VOXELS", "DEFAULT_RADIUS", "sphere_neighbourhoods", "searchlight_rsa"]

#: fewest voxels a sphere needs for a brain RDM
MIN_VOXELS = 3
#: sphere radius in mm (Kriegeskorte et al. 2006 used 4 mm at 1.95 mm voxels; 6 mm at 2-3 mm)
DEFAULT_RADIUS = 6.0


def sphere_neighbourhoods(
    mask: np.ndarray, affine: np.ndarray, radius: float = DEFAULT_RADIUS
) -> list[np.ndarray]:
    """For every voxel of ``mask`` (in ``mask[mask]`` order), the mask voxels within ``radius``
    mm of it (indices in the same order)."""
    ijk = np.argwhere(np.asarray(mask, dtype=bool))
    xyz = ijk @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]
    tree = cKDTree(xyz)
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
