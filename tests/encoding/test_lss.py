"""Least-squares-separate single-trial betas: nilearn FirstLevelModel as reference, simulations."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.glm.first_level import FirstLevelModel

from bids_vem.encoding.lss import (
    estimate_trial_betas,
    frame_times,
    lss_betas,
    lss_weights,
    nuisance_regressors,
    trial_regressors,
)
from bids_vem.errors import DataError, UsageError
from bids_vem.inputs.events import read_events
from bids_vem.inputs.runs import Run

TR = 1.5
SHAPE = (3, 2, 2)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _events(rng, n_scans: int, spacing: float = 5.0) -> pd.DataFrame:
    onsets = np.arange(3.0, n_scans * TR - 15, spacing) + rng.uniform(0, 1.5, 1)
    onsets = onsets + rng.uniform(0, 1.0, len(onsets))
    events = pd.DataFrame(
        {
            "onset": np.round(onsets, 2),
            "duration": 1.0,
            "stim_file": [f"images/img{i}.png" for i in range(len(onsets))],
            "trial_type": "image",
        }
    )
    # a button press: an event without stimulus, modelled as nuisance
    events.loc[2, ["stim_file", "trial_type", "duration"]] = ["n/a", "press", 0.0]
    return events


def _write_run(root: Path, rng, n_scans: int = 110) -> tuple[Run, pd.DataFrame, np.ndarray]:
    events = _events(rng, n_scans)
    events_path = root / "sub-01_task-x_run-1_events.tsv"
    events.to_csv(events_path, sep="\t", index=False)
    n_voxels = int(np.prod(SHAPE))
    motion = rng.standard_normal(n_scans)
    data = (
        800
        + 20 * rng.standard_normal((n_scans, n_voxels))
        + 5 * motion[:, None]
        + np.linspace(0, 30, n_scans)[:, None]
    )
    bold = root / "sub-01_task-x_run-1_desc-preproc_bold.nii.gz"
    nib.Nifti1Image(data.T.reshape(*SHAPE, n_scans).astype("f4"), AFFINE).to_filename(bold)
    mask = root / "sub-01_task-x_run-1_desc-brain_mask.nii.gz"
    nib.Nifti1Image(np.ones(SHAPE, np.uint8), AFFINE).to_filename(mask)
    confounds = root / "sub-01_task-x_run-1_desc-confounds_timeseries.tsv"
    table = pd.DataFrame({"motion": motion, "csf": rng.standard_normal(n_scans)})
    table.to_csv(confounds, sep="\t", index=False)
    run = Run("01", "1", "x", "1", None, "T1w", bold, mask, events_path, confounds, TR, n_scans)
    return run, table, events


@pytest.mark.parametrize("hrf_model", ["glover", "spm"])
def test_betas_match_nilearn_first_level_model_fitted_per_trial(tmp_path, hrf_model):
    rng = np.random.default_rng(0)
    run, confounds, events = _write_run(tmp_path, rng)
    estimated = estimate_trial_betas(
        [run], hrf_model=hrf_model, confounds=["motion", "csf"], stim_column="stim_file"
    )
    trial_rows = np.flatnonzero(events["stim_file"] != "n/a")
    assert estimated.n_trials == len(trial_rows) and estimated.n_voxels == int(np.prod(SHAPE))
    assert estimated.betas.dtype == np.float32
    assert list(estimated.trials["events_row"]) == list(trial_rows)
    assert set(estimated.trials["run"]) == {run.name} and set(estimated.trials["session"]) == {"1"}

    mask = nib.load(run.mask)
    expected = np.empty_like(estimated.betas, dtype=np.float64)
    for k, row in enumerate(trial_rows):
        table = events[["onset", "duration"]].copy()
        table["trial_type"] = np.where(events["stim_file"] == "n/a", "press", "others")
        table.loc[row, "trial_type"] = "trial"
        # the same single-trial model, one ordinary least-squares fit per trial
        model = FirstLevelModel(
            t_r=TR, hrf_model=hrf_model, noise_model="ols", mask_img=mask, minimize_memory=False
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(run.bold, events=table, confounds=confounds)
            effect = model.compute_contrast("trial", output_type="effect_size")
        expected[k] = effect.get_fdata()[np.asarray(mask.dataobj) > 0]
    scale = np.abs(expected).max()
    np.testing.assert_allclose(estimated.betas, expected, atol=1e-4 * scale)
    np.testing.assert_array_equal(estimated.mask, np.ones(SHAPE, bool))


def test_closed_form_equals_the_pseudo_inverse_of_each_trial_model():
    rng = np.random.default_rng(1)
    n_scans, n_trials = 80, 12
    times = frame_times(n_scans, 2.0)
    onsets = np.sort(rng.uniform(0, 140, n_trials))
    T = trial_regressors(onsets, np.full(n_trials, 2.0), times)
    confounds = rng.standard_normal((n_scans, 2))
    # a duplicated confound column: the nuisance is rank deficient, the estimate is not
    N = np.column_stack([nuisance_regressors(times, confounds).to_numpy(), confounds[:, 0]])
    W = lss_weights(T, N)
    for i in range(n_trials):
        design = np.column_stack([T[:, i], T.sum(axis=1) - T[:, i], N])
        np.testing.assert_allclose(W[i], np.linalg.pinv(design)[0], atol=1e-9 * np.abs(W).max())


def _simulated_run(rng, n_scans=200, n_voxels=30, spacing=6.0):
    onsets = np.arange(4.0, n_scans * TR - 20, spacing)
    onsets = onsets + rng.uniform(0, 2, len(onsets))
    events = pd.DataFrame(
        {"onset": onsets, "duration": 2.0, "stim_id": [f"s{i}" for i in range(len(onsets))]}
    )
    times = frame_times(n_scans, TR)
    T = trial_regressors(onsets, np.full(len(onsets), 2.0), times)
    confounds = pd.DataFrame({"motion": rng.standard_normal(n_scans)})
    nuisance = nuisance_regressors(times, confounds).to_numpy()
    baseline = nuisance @ rng.standard_normal((nuisance.shape[1], n_voxels))
    return events, T, confounds, baseline


def test_constant_trial_amplitudes_are_recovered_exactly():
    """Each trial's model holds t_i + s_i: data whose trials share one amplitude are fitted
    exactly, whatever the drift and confounds add."""
    rng = np.random.default_rng(2)
    events, T, confounds, baseline = _simulated_run(rng)
    amplitude = rng.standard_normal(baseline.shape[1])
    clean = T.sum(axis=1, keepdims=True) * amplitude + baseline
    betas = lss_betas(clean, events, TR, confounds=confounds, n_voxels_chunk=7)
    np.testing.assert_allclose(betas.betas, np.tile(amplitude, (len(events), 1)), atol=1e-5)
    assert list(betas.trials["stim_id"]) == list(events["stim_id"])
    np.testing.assert_array_equal(betas.trials["onset"], events["onset"])


def test_varying_trial_amplitudes_are_recovered_without_shrinkage():
    rng = np.random.default_rng(3)
    events, T, confounds, baseline = _simulated_run(rng)
    amplitudes = 1 + 0.5 * rng.standard_normal((len(events), baseline.shape[1]))
    signal = T @ amplitudes
    data = signal + baseline + 0.2 * signal.std() * rng.standard_normal(signal.shape)
    betas = lss_betas(data, events, TR, confounds=confounds).betas
    r = np.array([np.corrcoef(betas[:, v], amplitudes[:, v])[0, 1] for v in range(data.shape[1])])
    # LSS lumps the other trials into one regressor: their deviations from a common
    # amplitude leak a little into each trial's beta, but the estimate stays unbiased
    assert r.mean() > 0.88 and r.min() > 0.75
    slope = np.polyfit(amplitudes.ravel(), betas.ravel(), 1)[0]
    assert abs(slope - 1) < 0.05


def _frame(onsets, stims=None):
    stims = stims if stims is not None else [f"s{i}" for i in range(len(onsets))]
    return pd.DataFrame({"onset": onsets, "duration": 1.0, "stim_id": stims})


def test_trials_that_cannot_be_separated_are_refused_naming_the_events_file():
    Y = np.random.default_rng(3).standard_normal((100, 4))
    with pytest.raises(DataError, match="too close in time") as info:
        lss_betas(Y, _frame([10.0, 30.0, 30.0, 50.0]), 2.0, source="run-1_events.tsv")
    message = str(info.value)
    assert message.startswith("run-1_events.tsv: ") and "\n" not in message
    assert "data row 2 (onset 30 s)" in message and "data row 3" in message
    assert "rank deficient" in message
    with pytest.raises(DataError, match="no response within the run's scans"):
        lss_betas(Y, _frame([10.0, 30.0, 400.0]), 2.0, source="run-1_events.tsv")
    # a lone trial has no "others": its model is the trial and the nuisance
    single = lss_betas(Y, _frame([20.0]), 2.0)
    assert single.betas.shape == (1, 4)


def test_events_without_stimulus_and_unknown_hrf_are_refused(tmp_path):
    path = tmp_path / "sub-01_task-x_events.tsv"
    pd.DataFrame({"onset": [1.0, 5.0], "duration": 1.0, "stim_file": "n/a"}).to_csv(
        path, sep="\t", index=False
    )
    Y = np.random.default_rng(4).standard_normal((40, 3))
    with pytest.raises(DataError, match="no event names a stimulus") as info:
        lss_betas(Y, read_events(path, "stim_file"), 2.0, source=str(path))
    assert str(info.value).startswith(str(path))
    with pytest.raises(UsageError, match="hrf-model must be one of glover, spm"):
        lss_betas(Y, _frame([4.0, 20.0]), 2.0, hrf_model="fir")
    with pytest.raises(DataError, match="confounds have 10 rows but the run 40"):
        lss_betas(Y, _frame([4.0, 20.0]), 2.0, confounds=np.zeros((10, 1)), source="x")


def test_frame_times_follow_the_slice_timing_reference_of_the_bold_sidecar(tmp_path):
    """fMRIPrep corrected slice timing to StartTime = 0.75 s of each 1.5 s TR: the volumes
    show the brain half-way through their TR. The trial model must be sampled there too:
    data simulated so are fitted exactly with the sidecar read, and not without it."""
    import json

    from bids_vem.inputs.runs import slice_time_reference

    rng = np.random.default_rng(4)
    n_scans = 160
    events, _, _, _ = _simulated_run(rng, n_scans=n_scans, n_voxels=12)
    shifted = frame_times(n_scans, TR, slice_time_ref=0.5)
    T = trial_regressors(events["onset"].to_numpy(), events["duration"].to_numpy(), shifted)
    amplitude = 1 + rng.random(12)
    data = 500 + T.sum(axis=1, keepdims=True) * amplitude  # one amplitude for every trial
    events_path = tmp_path / "sub-01_task-x_run-1_events.tsv"
    events.rename(columns={"stim_id": "stim_file"}).to_csv(events_path, sep="\t", index=False)
    shape = (3, 2, 2)
    bold = tmp_path / "sub-01_task-x_run-1_desc-preproc_bold.nii.gz"
    nib.Nifti1Image(data.T.reshape(*shape, n_scans).astype("f8"), AFFINE).to_filename(bold)
    sidecar = bold.with_name("sub-01_task-x_run-1_desc-preproc_bold.json")
    sidecar.write_text(json.dumps({"RepetitionTime": TR, "SliceTimingCorrected": True,
                                   "StartTime": 0.75}))  # fmt: skip
    mask = tmp_path / "mask.nii.gz"
    nib.Nifti1Image(np.ones(shape, np.uint8), AFFINE).to_filename(mask)
    run = Run("01", None, "x", "1", None, "T1w", bold, mask, events_path, None, TR, n_scans)
    assert slice_time_reference(run) == 0.5

    read = estimate_trial_betas([run], signal_scaling=False)
    np.testing.assert_allclose(read.betas, np.tile(amplitude, (len(events), 1)), rtol=1e-4)
    assert set(read.trials["slice_time_ref"]) == {0.5}
    # the same run without the sidecar's word on slice timing: volumes at the TR's start
    sidecar.write_text(json.dumps({"RepetitionTime": TR, "StartTime": 0.75}))
    assert slice_time_reference(run) == 0.0
    start = estimate_trial_betas([run], signal_scaling=False)
    assert np.abs(start.betas - amplitude).max() > 100 * np.abs(read.betas - amplitude).max()
    # an explicit reference overrides the sidecar
    given = estimate_trial_betas([run], signal_scaling=False, slice_time_ref=0.5)
    np.testing.assert_allclose(given.betas, read.betas, rtol=1e-6)
