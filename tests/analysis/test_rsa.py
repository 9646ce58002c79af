"""RSA against rsatoolbox on the same data, and simulations with a planted RDM."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from bids_vem.analysis.rsa import (
    brain_rdm,
    compare_rdms,
    correlation_rdm,
    crossvalidated_rdm,
    noise_ceiling,
    permutation_p,
    stimulus_patterns,
)
from bids_vem.encoding.lss import TrialBetas

rsatoolbox = pytest.importorskip("rsatoolbox")


def _rdms(vectors):
    return rsatoolbox.rdm.RDMs(np.atleast_2d(vectors))


def test_rdms_and_comparisons_equal_rsatoolboxs():
    rng = np.random.default_rng(0)
    patterns = rng.standard_normal((12, 40))
    data = rsatoolbox.data.Dataset(patterns)
    expected = rsatoolbox.rdm.calc_rdm(data, method="correlation").get_vectors()[0]
    np.testing.assert_allclose(correlation_rdm(patterns), expected, atol=1e-10)
    # cross-validated Euclidean: rsatoolbox's crossnobis without a noise model
    half_a, half_b = patterns + rng.standard_normal((2, 12, 40))
    stacked = rsatoolbox.data.Dataset(
        np.vstack([half_a, half_b]),
        obs_descriptors={"stim": list(range(12)) * 2, "half": [0] * 12 + [1] * 12},
    )
    expected = rsatoolbox.rdm.calc_rdm(
        stacked, method="crossnobis", descriptor="stim", cv_descriptor="half"
    ).get_vectors()[0]
    np.testing.assert_allclose(crossvalidated_rdm(half_a, half_b), expected, atol=1e-10)
    a, b = rng.standard_normal((2, 66))
    b[:10] = b[0]  # ties, where tau-a and tau-b differ
    for method in ("spearman", "tau-a"):
        expected = rsatoolbox.rdm.compare(_rdms(a), _rdms(b), method=method)[0, 0]
        assert compare_rdms(a, b, method) == pytest.approx(expected, abs=1e-10)


def test_noise_ceiling_equals_rsatoolboxs():
    rng = np.random.default_rng(1)
    truth = rng.random(45)
    rdms = truth + 0.3 * rng.standard_normal((6, 45))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in ("spearman", "tau-a"):
            expected = rsatoolbox.inference.boot_noise_ceiling(_rdms(rdms), method=method)
            np.testing.assert_allclose(noise_ceiling(rdms, method), expected, atol=1e-10)


def _trials(n_stimuli=30, n_voxels=80, repeats=2, noise=1.0, seed=0, features=None):
    """Single trials whose patterns are a linear read-out of ``features`` plus noise."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n_stimuli, 6)) if features is None else features
    patterns = features @ rng.standard_normal((features.shape[1], n_voxels))
    rows, betas = [], []
    for r in range(repeats):
        for s in rng.permutation(n_stimuli):
            rows.append({"stim_id": f"s{s:02d}", "session": None, "run": str(r + 1),
                         "onset": float(len(rows)), "duration": 1.0})  # fmt: skip
            betas.append(patterns[s] + noise * rng.standard_normal(n_voxels))
    return TrialBetas(np.asarray(betas, np.float32), pd.DataFrame(rows)), features


def test_a_planted_rdm_is_found_and_a_random_model_is_not():
    trial_betas, features = _trials(noise=2.0)
    patterns = stimulus_patterns(trial_betas)
    assert patterns.measure == "crossvalidated euclidean"
    order = [int(s[1:]) for s in patterns.stim_ids]
    brain = brain_rdm(patterns)
    planted = correlation_rdm(features[order])
    random = correlation_rdm(np.random.default_rng(5).standard_normal(features.shape)[order])
    assert compare_rdms(brain, planted, "spearman") > 0.4
    assert permutation_p(brain, planted, 30, "spearman", 200) == 1 / 201
    assert permutation_p(brain, planted, 30, "tau-a", 50) == 1 / 51
    assert abs(compare_rdms(brain, random, "spearman")) < 0.15
    assert permutation_p(brain, random, 30, "spearman", 200) > 0.05


def test_cross_validated_distances_are_unbiased_by_noise():
    """Identical patterns (every stimulus the same) with noise: the cross-validated distance
    is 0 on average, the distance between noisy means is not."""
    trial_betas, _ = _trials(features=np.zeros((30, 6)), noise=1.0, repeats=4, seed=2)
    patterns = stimulus_patterns(trial_betas)
    assert abs(np.mean(brain_rdm(patterns))) < 0.02
    naive = np.mean((patterns.mean[:, None] - patterns.mean[None]) ** 2, axis=-1)
    assert naive[np.triu_indices(30, 1)].mean() > 0.3


def test_noise_ceilings_bracket_the_true_model():
    """Participants share the planted representation with their own noise (and their own
    read-out of it): the true RDM (the expected cross-validated distance, the squared
    Euclidean distance of the features) lies between the ceilings, a random model far below."""
    from scipy.spatial.distance import pdist

    features = np.random.default_rng(3).standard_normal((30, 6))
    truth = pdist(features, "sqeuclidean")
    rdms, true_rho = [], []
    for subject in range(6):
        trial_betas, _ = _trials(features=features, noise=3.0, seed=10 + subject)
        patterns = stimulus_patterns(trial_betas)
        order = [int(s[1:]) for s in patterns.stim_ids]
        assert order == sorted(order)
        rdms.append(brain_rdm(patterns))
        true_rho.append(compare_rdms(rdms[-1], truth, "spearman"))
    lower, upper = noise_ceiling(np.asarray(rdms), "spearman")
    assert lower < np.mean(true_rho) < upper
    random = correlation_rdm(np.random.default_rng(4).standard_normal((30, 6)))
    assert np.mean([compare_rdms(r, random, "spearman") for r in rdms]) < lower - 0.5


def test_searchlight_finds_the_planted_region():
    """A 10 x 10 x 10 grid of 2 mm voxels; only a 3 x 3 x 3 cube carries the planted
    representation. The searchlight's rho is high around the cube and at chance far from it,
    and matches compare_rdms on the same sphere."""
    from bids_vem.analysis.searchlight import (
        searchlight_rsa,
        sphere_neighbourhoods,
        voxel_coordinates,
    )

    rng = np.random.default_rng(6)
    mask = np.ones((10, 10, 10), dtype=bool)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    n_stimuli = 24
    features = rng.standard_normal((n_stimuli, 4))
    inside = np.zeros(mask.shape, dtype=bool)
    inside[3:6, 3:6, 3:6] = True
    inside = inside[mask]
    rows, betas = [], []
    signal = np.zeros((n_stimuli, mask.sum()))
    signal[:, inside] = features @ rng.standard_normal((4, inside.sum())) * 2
    for r in range(2):
        for s in range(n_stimuli):
            rows.append({"stim_id": f"s{s:02d}", "session": None, "run": str(r + 1),
                         "onset": float(len(rows)), "duration": 1.0})  # fmt: skip
            betas.append(signal[s] + rng.standard_normal(mask.sum()))
    patterns = stimulus_patterns(TrialBetas(np.asarray(betas, np.float32), pd.DataFrame(rows)))
    neighbourhoods = sphere_neighbourhoods(voxel_coordinates(mask, affine), radius=2.5)
    assert len(neighbourhoods[555]) == 7  # the centre and its 6 face neighbours
    from scipy.spatial.distance import pdist

    model = pdist(features, "sqeuclidean")
    rho = searchlight_rsa(patterns, neighbourhoods, model[None], progress=False)[0]
    centre = np.ravel_multi_index((4, 4, 4), mask.shape)
    far = np.ravel_multi_index((8, 8, 8), mask.shape)
    assert rho[centre] > 0.5
    assert abs(np.nanmedian(rho[~inside])) < 0.05
    assert rho[centre] == pytest.approx(
        compare_rdms(brain_rdm(patterns, neighbourhoods[centre]), model, "spearman")
    )
    assert abs(rho[far]) < 0.3
