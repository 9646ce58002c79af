"""Event schedule, HRF regressors, noise, confounds, PCA and regions of the demo."""

from __future__ import annotations

import numpy as np
import pytest

from bids_vem.demo.bold import ar1_noise, framewise_displacement, hrf_regressors
from bids_vem.demo.events import RunEvents, schedule_runs
from bids_vem.demo.truth import semantic_features
from bids_vem.demo.volume import brain_mask, mni_grid, region_profile, voxel_coordinates


def test_schedule_shows_every_image_before_repeating_and_runs_have_equal_length():
    runs = schedule_runs(96, 4, 48, np.random.default_rng(0), tr=2.0, duration=3.0)
    order = np.concatenate([r.stim_index for r in runs])
    assert sorted(order[:96]) == list(range(96)) and sorted(order[96:]) == list(range(96))
    assert len({r.n_volumes for r in runs}) == 1
    for run in runs:
        gaps = run.onsets[1:] - (run.onsets[:-1] + run.durations[:-1])
        assert gaps.min() >= 2.0
        assert run.onsets[-1] + run.durations[-1] <= run.n_volumes * run.tr
    # images repeat across runs, not within the first permutation
    assert set(runs[0].stim_index).isdisjoint(runs[1].stim_index)


def test_hrf_regressors_match_a_direct_convolution():
    from nilearn.glm.first_level import spm_hrf

    events = RunEvents(
        onsets=np.array([4.0, 15.0, 30.0]),
        durations=np.full(3, 3.0),
        stim_index=np.array([0, 1, 0]),
        n_volumes=40,
        tr=2.0,
    )
    features = np.array([[1.0, 0.0], [-2.0, 1.0]])
    regressors = hrf_regressors(events, features)
    # reference: boxcars on a 0.02 s grid convolved with SPM's HRF, sampled at the TRs
    dt = 0.02
    fine_time = np.arange(0, events.n_volumes * events.tr + 40, dt)
    hrf = spm_hrf(events.tr, oversampling=int(round(events.tr / dt)))
    reference = []
    for j in range(2):
        boxcar = np.zeros_like(fine_time)
        for onset, duration, stim in zip(
            events.onsets, events.durations, events.stim_index, strict=True
        ):
            boxcar[(fine_time >= onset) & (fine_time < onset + duration)] += features[stim, j]
        response = np.convolve(boxcar, hrf)[: len(fine_time)]
        reference.append(np.interp(events.frame_times, fine_time, response))
    reference = np.column_stack(reference)
    # the demo scales regressors so that one unit event peaks at 1: compare shapes
    scale = np.linalg.lstsq(reference[:, :1], regressors[:, :1], rcond=None)[0][0, 0]
    np.testing.assert_allclose(regressors, reference * scale, atol=0.02)
    # one isolated unit event peaks at 1
    single = RunEvents(np.array([2.0]), np.array([3.0]), np.array([0]), 30, 0.5)
    assert hrf_regressors(single, np.ones((1, 1))).max() == pytest.approx(1.0, abs=0.01)


def test_ar1_noise_has_unit_variance_and_the_asked_autocorrelation():
    noise = ar1_noise(4000, 50, 0.35, np.random.default_rng(0))
    assert noise.var() == pytest.approx(1.0, abs=0.03)
    lag1 = np.mean([np.corrcoef(noise[1:, k], noise[:-1, k])[0, 1] for k in range(50)])
    assert lag1 == pytest.approx(0.35, abs=0.02)


def test_framewise_displacement_follows_power_2012():
    motion = np.zeros((3, 6))
    motion[1] = [0.1, -0.2, 0.0, 0.001, 0.0, -0.002]
    motion[2] = motion[1]
    fd = framewise_displacement(motion)
    assert np.isnan(fd[0])
    assert fd[1] == pytest.approx(0.1 + 0.2 + 50 * (0.001 + 0.002))
    assert fd[2] == 0


def test_semantic_features_match_scikit_learn_pca():
    from sklearn.decomposition import PCA

    embeddings = np.random.default_rng(0).standard_normal((60, 20)) @ np.diag(
        np.linspace(3, 0.1, 20)
    )
    scores, components, mean, scale = semantic_features(embeddings, 5)
    reference = PCA(n_components=5).fit(embeddings)
    np.testing.assert_allclose(np.abs(components), np.abs(reference.components_), atol=1e-8)
    np.testing.assert_allclose(
        np.abs(scores * scale), np.abs(reference.transform(embeddings)), atol=1e-8
    )
    assert scores[:, 0].std() == pytest.approx(1.0)
    np.testing.assert_allclose((embeddings - mean) @ components.T / scale, scores)


def test_brain_mask_is_an_mni_grid_of_a_few_thousand_voxels():
    mask = brain_mask(8.0)
    affine, shape = mni_grid(8.0)
    assert mask.shape == shape
    np.testing.assert_array_equal(mask.affine, affine)
    assert 3000 < int(np.asarray(mask.dataobj).sum()) < 5000
    coordinates = voxel_coordinates(mask)
    # the brain spans the MNI bounding box roughly symmetrically
    assert coordinates[:, 0].min() < -60 and coordinates[:, 0].max() > 60


def test_region_profile_is_one_at_the_centre_and_half_at_the_border():
    from bids_vem.demo.volume import Region

    region = (Region("r", (0.0, 0.0, 0.0), 10.0),)
    points = np.array([[0.0, 0, 0], [10.0, 0, 0], [10.5, 0, 0], [0, 3.0, 0]])
    profile = region_profile(points, region)
    np.testing.assert_allclose(profile, [1.0, 0.5, 0.0, 1 - 0.5 * 0.09])
    shifted = region_profile(points, region, shift=np.array([10.0, 0, 0]))
    assert shifted[1] == 1.0 and shifted[0] == 0.5
