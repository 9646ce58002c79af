"""Group statistics against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bids_vem.encoding.stats import fisher_z, group_ttest


def _r_maps(seed=0, n_subjects=8, n_voxels=300):
    rng = np.random.default_rng(seed)
    true = np.where(np.arange(n_voxels) < 100, 0.15, 0.0)  # 100 voxels with an effect
    return np.tanh(np.arctanh(true) + 0.1 * rng.standard_normal((n_subjects, n_voxels)))


@pytest.mark.parametrize("alternative", ["greater", "two-sided", "less"])
def test_matches_scipy_ttest_and_fdr(alternative):
    r = _r_maps()
    out = group_ttest(r, alternative=alternative)
    reference = stats.ttest_1samp(np.arctanh(r), 0.0, axis=0, alternative=alternative)
    np.testing.assert_allclose(out["t"], reference.statistic, rtol=1e-10)
    np.testing.assert_allclose(out["p"], reference.pvalue, rtol=1e-8, atol=1e-300)
    np.testing.assert_allclose(out["q"], stats.false_discovery_control(reference.pvalue))
    np.testing.assert_allclose(out["mean_r"], r.mean(0))
    assert np.all(out["n"] == 8)


def test_fdr_finds_the_effect_and_controls_false_discoveries():
    out = group_ttest(_r_maps(seed=1, n_subjects=12))
    discovered = out["q"] < 0.05
    assert discovered[:100].mean() > 0.9
    false = discovered[100:].sum()
    assert false / max(discovered.sum(), 1) < 0.1


def test_voxels_missing_in_some_subjects():
    r = _r_maps(seed=2)
    r[:3, 0] = np.nan  # outside three participants' masks
    r[1:, 1] = np.nan  # only one participant: untestable
    r[:, 2] = 0.2  # all equal: no variance
    out = group_ttest(r)
    reference = stats.ttest_1samp(np.arctanh(r[3:, 0]), 0.0, alternative="greater")
    assert out["n"][0] == 5 and out["n"][1] == 1
    np.testing.assert_allclose(out["t"][0], reference.statistic, rtol=1e-10)
    np.testing.assert_allclose(out["p"][0], reference.pvalue, rtol=1e-8)
    np.testing.assert_allclose(out["mean_r"][0], np.nanmean(r[:, 0]))
    assert np.isnan(out["t"][1]) and np.isnan(out["p"][1]) and np.isnan(out["q"][1])
    assert np.isnan(out["p"][2]) and out["mean_r"][2] == pytest.approx(0.2)
    tested = np.isfinite(out["p"])
    np.testing.assert_allclose(out["q"][tested], stats.false_discovery_control(out["p"][tested]))


def test_fisher_z_is_finite_at_one():
    z = fisher_z(np.array([1.0, -1.0, 0.5, np.nan]))
    assert np.all(np.isfinite(z[:3])) and np.isnan(z[3])
    assert z[2] == pytest.approx(np.arctanh(0.5))
