"""Layer profiles: which layer of a model predicts each voxel best, and r layer by layer.

A ``#layers=`` spec fits one encoding model per layer (feature spaces ``<name>L<k>``); their
held-out r maps share the voxels of the run group. The best layer of a voxel is the layer of
largest held-out r (Schrimpf et al. 2021 and Tang et al. 2023 read layer preferences this way);
the profile is r averaged over the mask and over each region, layer by layer. Only numbered
layers enter (a ``pooler`` output has no place on the depth axis).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["LAYER_COLUMNS", "best_layer", "layer_profile_rows"]

#: columns of the layer-profile tables (their sidecar; ROI columns are added per region)
LAYER_COLUMNS = {
    "feature_space": "The model spec's name; its layers are the feature spaces <name>L<k>.",
    "layer": "Layer number (1 = the first block after the embeddings).",
    "mean_r": "Mean held-out r of the layer's encoding model over the voxels of the mask.",
    "median_r": "Median held-out r over the voxels of the mask.",
    "percent_best": "Percent of the mask's voxels whose best layer (largest r) is this one.",
}


def best_layer(r_by_layer: np.ndarray, layers: Sequence[int]) -> np.ndarray:
    """The layer of largest held-out r per voxel (NaN where no layer has a finite r).

    Parameters
    ----------
    r_by_layer : ndarray of shape (n_layers, n_voxels)
    layers : sequence of int
        The layer number of each row.
    """
    r = np.asarray(r_by_layer, dtype=np.float64)
    finite = np.isfinite(r)
    best = np.argmax(np.where(finite, r, -np.inf), axis=0)
    out = np.asarray(layers, dtype=np.float64)[best]
    out[~finite.any(axis=0)] = np.nan
    return out


def layer_profile_rows(
    name: str,
    layers: Sequence[int],
    r_by_layer: np.ndarray,
    rois: Mapping[str, np.ndarray] | None = None,
) -> list[dict]:
    """One row per layer: mean and median r, the share of voxels it is best for, and mean r
    in each region (``mean_r_roi-<name>``).

    Parameters
    ----------
    rois : mapping of str to ndarray of bool, shape (n_voxels,), optional
    """
    r = np.asarray(r_by_layer, dtype=np.float64)
    best = best_layer(r, layers)
    n_voxels = max(int(np.isfinite(best).sum()), 1)
    rows = []
    for k, layer in enumerate(layers):
        values = r[k]
        row = {
            "feature_space": name,
            "layer": int(layer),
            "mean_r": float(np.nanmean(values)),
            "median_r": float(np.nanmedian(values)),
            "percent_best": 100.0 * float(np.sum(best == layer)) / n_voxels,
        }
        for roi, inside in (rois or {}).items():
            row[f"mean_r_roi-{roi}"] = float(np.nanmean(values[inside]))
        rows.append(row)
    return rows
