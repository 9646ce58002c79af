"""Layer profiles on a simulation with a planted best layer per voxel."""

from __future__ import annotations

import numpy as np
import pytest

from bids_vem.analysis.layers import best_layer, layer_profile_rows
from bids_vem.encoding.model import fit_encoding_model


def _zscore(x):
    return (x - x.mean(0)) / x.std(0)


def test_the_planted_best_layer_is_found():
    """Voxels 0-39 are driven by layer 2's features, 40-79 by layer 6's, 80-119 by none:
    the best-layer map finds 2 and 6 where they were planted, and the profile's share of
    'best' voxels follows."""
    rng = np.random.default_rng(0)
    n_runs, n, p = 4, 120, 20
    layers = {2: [], 6: [], 9: []}
    Ys = []
    W2, W6 = rng.standard_normal((p, 40)), rng.standard_normal((p, 40))
    for _ in range(n_runs):
        X = {k: _zscore(rng.standard_normal((n, p))) for k in layers}
        signal = np.concatenate([X[2] @ W2, X[6] @ W6, np.zeros((n, 40))], axis=1)
        Ys.append(_zscore(signal / np.sqrt(p) + rng.standard_normal((n, 120))).astype(np.float32))
        for k in layers:
            layers[k].append(X[k].astype(np.float32))
    alphas = np.logspace(-2, 4, 7)
    r = np.stack([fit_encoding_model(layers[k], Ys, alphas, device="cpu").r for k in layers])
    best = best_layer(r, list(layers))
    assert (best[:40] == 2).mean() > 0.95 and (best[40:80] == 6).mean() > 0.95
    rows = layer_profile_rows("lm", list(layers), r, {"planted2": np.arange(120) < 40})
    by_layer = {row["layer"]: row for row in rows}
    assert by_layer[2]["mean_r_roi-planted2"] > 0.3 > by_layer[6]["mean_r_roi-planted2"]
    assert by_layer[2]["percent_best"] > 100 / 3 - 5 and by_layer[6]["percent_best"] > 100 / 3 - 5
    assert sum(row["percent_best"] for row in rows) == pytest.approx(100)


def test_voxels_without_a_finite_r_have_no_best_layer():
    r = np.array([[0.1, np.nan, 0.3], [0.2, np.nan, np.nan]])
    np.testing.assert_array_equal(best_layer(r, [1, 2]), [2, np.nan, 1])
