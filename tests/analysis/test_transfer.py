"""Cross-modal transfer against simulations with a planted mapping, and its controls.

Two "tasks" show different stimulus sequences whose features live in one latent space; the
planted voxels respond to that space with the same weights in both tasks. A model of one task
must predict the other where planted and nowhere else; unrelated target features, a rotated
(unimodal, unmapped) target space and null data must stay at chance, and the map fitted on
paired rows must bring the rotated space back.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from bids_vem.analysis.transfer import (
    VoxelColumns,
    block_permutation,
    fit_feature_map,
    fit_transfer,
)
from bids_vem.encoding.design import add_delays, zscore
from bids_vem.encoding.voxel_data import InMemoryVoxelData

N_FEATURES, DELAYS, N_VOXELS, N_PLANTED = 12, (1, 2, 3), 200, 50
ALPHAS = np.logspace(-1, 4, 11)


def _ar1(rng, n, d, phi=0.5):
    x = rng.standard_normal((n, d))
    for t in range(1, n):
        x[t] += phi * x[t - 1]
    return x


def _designs(features):
    return [add_delays(zscore(f), DELAYS).astype(np.float32) for f in features]


def _task(rng, Xs, weights, noise=1.0):
    return [(X @ weights + noise * _ar1(rng, len(X), N_VOXELS)).astype(np.float32) for X in Xs]


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(7)
    weights = np.zeros((N_FEATURES * len(DELAYS), N_VOXELS))
    weights[:, :N_PLANTED] = rng.standard_normal((N_FEATURES * len(DELAYS), N_PLANTED)) * 0.4
    source_features = [_ar1(rng, 150, N_FEATURES) for _ in range(4)]
    target_features = [_ar1(rng, 120, N_FEATURES) for _ in range(3)]
    source_Xs, target_Xs = _designs(source_features), _designs(target_features)
    return {
        "rng": rng,
        "source_Xs": source_Xs,
        "target_features": target_features,
        "target_Xs": target_Xs,
        "source": InMemoryVoxelData(_task(rng, source_Xs, weights)),
        "target": InMemoryVoxelData(_task(rng, target_Xs, weights)),
    }


def _transfer(planted, target_Xs, n_permutations=100, target=None):
    return fit_transfer(
        planted["source_Xs"], planted["source"], target_Xs, target or planted["target"],
        alphas=ALPHAS, n_permutations=n_permutations, seed=1,
    )  # fmt: skip


def test_planted_mapping_transfers_where_planted_and_nowhere_else(planted):
    from scipy import stats

    out = _transfer(planted, planted["target_Xs"])
    r, p = out["r"], out["p"]
    q = stats.false_discovery_control(p, method="bh")
    assert np.median(r[:N_PLANTED]) > 0.4
    assert np.mean(q[:N_PLANTED] < 0.05) > 0.9
    assert abs(np.median(r[N_PLANTED:])) < 0.03
    assert np.mean(q[N_PLANTED:] < 0.05) < 0.03
    # the source model's own cross-validated r is high where planted too
    assert np.median(out["source_r"][:N_PLANTED]) > 0.4


def test_unrelated_target_features_are_at_chance(planted):
    rng = np.random.default_rng(3)
    random_Xs = _designs([_ar1(rng, len(X), N_FEATURES) for X in planted["target_Xs"]])
    out = _transfer(planted, random_Xs, n_permutations=200)
    assert abs(np.median(out["r"][:N_PLANTED])) < 0.05
    # the block null holds its level on autocorrelated data: about 5% of p < 0.05
    assert np.mean(out["p"] < 0.05) < 0.1


def test_shuffled_target_stimuli_are_at_chance(planted):
    """The target features in the wrong order (stimuli shuffled across TRs in blocks)."""
    rng = np.random.default_rng(4)
    shuffled = [f[rng.permutation(len(f))] for f in planted["target_features"]]
    out = _transfer(planted, _designs(shuffled), n_permutations=0)
    assert out["p"] is None
    assert abs(np.median(out["r"][:N_PLANTED])) < 0.05


def test_unmapped_rotated_space_fails_and_the_fitted_map_restores_it(planted):
    """The unimodal control: the target stimuli embedded by another encoder (a rotation of
    the shared space plus noise). Unmapped, the source weights do not apply; a ridge map
    fitted on paired corpus rows brings the transfer back."""
    rng = np.random.default_rng(5)
    rotation, _ = np.linalg.qr(rng.standard_normal((N_FEATURES, N_FEATURES)))
    rotated = [f @ rotation for f in planted["target_features"]]
    unmapped = _transfer(planted, _designs(rotated), n_permutations=0)
    assert np.median(unmapped["r"][:N_PLANTED]) < 0.15
    corpus = rng.standard_normal((300, N_FEATURES))
    feature_map = fit_feature_map(
        corpus @ rotation + 0.1 * rng.standard_normal((300, N_FEATURES)), corpus,
        source="other", target="shared",
    )  # fmt: skip
    assert feature_map.r2 > 0.9
    mapped = [(f - feature_map.mean_in) @ feature_map.coef + feature_map.mean_out for f in rotated]
    shared = _transfer(planted, planted["target_Xs"], n_permutations=0)
    out = _transfer(planted, _designs(mapped), n_permutations=0)
    assert np.median(out["r"][:N_PLANTED]) > 0.9 * np.median(shared["r"][:N_PLANTED])


def test_equals_ridge_fitted_on_the_source_and_scored_by_hand(planted):
    """With one penalty the transfer is scikit-learn's Ridge on the stacked source runs,
    scored as the correlation of the run-wise z-scored target series."""
    out = fit_transfer(
        planted["source_Xs"], planted["source"], planted["target_Xs"], planted["target"],
        alphas=[30.0], n_permutations=0,
    )  # fmt: skip
    Y = np.concatenate(planted["source"].arrays)
    model = Ridge(alpha=30.0, fit_intercept=False).fit(np.concatenate(planted["source_Xs"]), Y)
    predicted = [model.predict(X) for X in planted["target_Xs"]]
    measured = planted["target"].arrays
    z = lambda a: (a - a.mean(0)) / a.std(0)  # noqa: E731
    expected = np.concatenate([z(m) * z(p) for m, p in zip(measured, predicted, strict=True)]).mean(
        0
    )
    np.testing.assert_allclose(out["r"], expected, atol=2e-5)


def test_voxel_columns_and_block_permutation():
    rng = np.random.default_rng(0)
    data = InMemoryVoxelData([rng.standard_normal((5, 10)) for _ in range(2)])
    columns = np.array([1, 4, 5, 9])
    picked = VoxelColumns(data, columns)
    np.testing.assert_array_equal(picked.read(1, slice(1, 3)), data.arrays[1][:, [4, 5]])
    order = block_permutation([23, 7], 10, rng)
    assert sorted(order) == list(range(30))
    assert set(order[:23]) == set(range(23))  # runs stay apart
    blocks = [order[i : i + 10] for i in (0, 10)]
    assert all(np.all(np.diff(b[: min(len(b), 3)]) == 1) for b in blocks)


def test_feature_map_recovers_a_known_linear_map():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((8, 5))
    X = rng.standard_normal((200, 8))
    fitted = fit_feature_map(X, X @ A + 3.0, source="a", target="b")
    new = rng.standard_normal((20, 8))
    np.testing.assert_allclose(
        (new - fitted.mean_in) @ fitted.coef + fitted.mean_out, new @ A + 3.0, atol=0.05
    )


def test_block_null_holds_its_level_without_signal():
    """Autocorrelated features and noise, nothing planted: over 8 datasets about 5% of voxels
    reach p < 0.05 (measured 5.4% over 15 datasets)."""
    rates = []
    for seed in range(8):
        rng = np.random.default_rng(100 + seed)
        source_Xs = _designs([_ar1(rng, 150, N_FEATURES) for _ in range(4)])
        target_Xs = _designs([_ar1(rng, 120, N_FEATURES) for _ in range(3)])
        nothing = np.zeros((N_FEATURES * len(DELAYS), N_VOXELS))
        out = fit_transfer(
            source_Xs, InMemoryVoxelData(_task(rng, source_Xs, nothing)),
            target_Xs, InMemoryVoxelData(_task(rng, target_Xs, nothing)),
            alphas=ALPHAS, n_permutations=200, seed=seed,
        )  # fmt: skip
        rates.append(np.mean(out["p"] < 0.05))
    assert 0.02 < np.mean(rates) < 0.08
