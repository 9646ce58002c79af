"""Trial-wise encoding models: simulations with known weights, betas given as a derivative."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bids_vem.encoding.lss import TrialBetas, estimate_trial_betas, frame_times, trial_regressors
from bids_vem.encoding.trialwise import (
    average_repeats,
    betas_table_path,
    encode_trials,
    read_trial_betas,
    trial_blocks,
    write_trial_betas,
    zscore_per_session,
)
from bids_vem.errors import DataError, InputMissingError, UsageError
from bids_vem.features.feature_set import FeatureSet
from bids_vem.inputs.runs import Run

TR = 1.5
N_SCANS = 130
SHAPE = (4, 3, 2)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
N_SESSIONS, RUNS_PER_SESSION, PER_SESSION = 4, 2, 34
N_FEATURES = 5
ALPHAS = np.logspace(-2, 6, 17)


def _write_run(root: Path, session: int, run: int, stims, amplitudes, rng) -> Run:
    """One run: trials every ~5 s, BOLD = 1000 + 10 * (trial regressors @ amplitudes) +
    motion + slow drift + noise; amplitudes in percent signal change."""
    prefix = f"sub-01_ses-{session}_task-x_run-{run}"
    onsets = np.arange(3.0, 3.0 + 5.0 * len(stims), 5.0) + rng.uniform(0, 1, len(stims))
    events = pd.DataFrame({"onset": np.round(onsets, 3), "duration": 2.0, "stim_file": stims})
    events_path = root / f"{prefix}_events.tsv"
    events.to_csv(events_path, sep="\t", index=False)
    times = frame_times(N_SCANS, TR)
    T = trial_regressors(events["onset"], events["duration"], times)
    motion = rng.standard_normal(N_SCANS)
    drift = np.cos(np.pi * times / times[-1])
    n_voxels = int(np.prod(SHAPE))
    data = (
        1000
        + 10 * T @ amplitudes
        + 4 * motion[:, None]
        + 20 * drift[:, None]
        + 6 * rng.standard_normal((N_SCANS, n_voxels))
    )
    bold = root / f"{prefix}_desc-preproc_bold.nii.gz"
    nib.Nifti1Image(data.T.reshape(*SHAPE, N_SCANS).astype("f4"), AFFINE).to_filename(bold)
    mask = root / f"{prefix}_desc-brain_mask.nii.gz"
    nib.Nifti1Image(np.ones(SHAPE, np.uint8), AFFINE).to_filename(mask)
    confounds = root / f"{prefix}_desc-confounds_timeseries.tsv"
    pd.DataFrame({"motion": motion}).to_csv(confounds, sep="\t", index=False)
    return Run(
        "01", str(session), "x", str(run), None, "T1w", bold, mask, events_path, confounds,
        TR, N_SCANS,
    )  # fmt: skip


@pytest.fixture(scope="module")
def simulation(tmp_path_factory):
    """4 sessions of 2 runs; each session shows 34 stimuli twice (once per run, in random
    order). Half the voxels respond with known weights, the other half only to noise."""
    root = tmp_path_factory.mktemp("trialwise")
    rng = np.random.default_rng(7)
    n_stimuli = N_SESSIONS * PER_SESSION
    ids = tuple(f"images/img{i:03d}.png" for i in range(n_stimuli))
    features = FeatureSet(
        "toy", "test:toy", "image", ids, rng.standard_normal((n_stimuli, N_FEATURES)).astype("f4")
    )
    n_voxels = int(np.prod(SHAPE))
    weights = 0.35 * rng.standard_normal((N_FEATURES, n_voxels))
    weights[:, n_voxels // 2 :] = 0
    signal = features.values.astype(np.float64) @ weights  # (n_stimuli, n_voxels)
    runs = []
    for session in range(1, N_SESSIONS + 1):
        shown = list(ids[(session - 1) * PER_SESSION : session * PER_SESSION])
        for run in range(1, RUNS_PER_SESSION + 1):
            stims = list(rng.permutation(shown))
            rows = [ids.index(s) for s in stims]
            # every trial: a mean response, the stimulus's signal and trial-to-trial variability
            amplitudes = 1.0 + signal[rows] + 0.3 * rng.standard_normal((len(rows), n_voxels))
            runs.append(_write_run(root, session, run, stims, amplitudes, rng))
    trial_betas = estimate_trial_betas(runs, confounds=["motion"])
    truth = dict(zip(ids, signal, strict=True))
    return runs, features, trial_betas, truth, n_voxels // 2, root


def _ceiling(blocks, truth) -> np.ndarray:
    """r of the true signal with the data, pooled over groups as the held-out r is."""
    Y = np.concatenate([stats.zscore(Y) for Y in blocks.Ys])
    S = np.concatenate([stats.zscore(np.array([truth[s] for s in ids])) for ids in blocks.stim_ids])
    return np.array([np.corrcoef(Y[:, v], S[:, v])[0, 1] for v in range(Y.shape[1])])


def test_held_out_r_approaches_the_simulated_ceiling(simulation):
    _, features, trial_betas, truth, n_signal, _ = simulation
    assert trial_betas.n_trials == N_SESSIONS * RUNS_PER_SESSION * PER_SESSION
    result = encode_trials(trial_betas, features, alphas=ALPHAS, cv_groups="session")
    assert result.runs == ("ses-1", "ses-2", "ses-3", "ses-4") and result.nested
    assert result.cv_groups == "session" and result.n_features == N_FEATURES
    # repeats averaged within each session: one row per stimulus
    assert result.n_samples == N_SESSIONS * PER_SESSION
    blocks = trial_blocks(trial_betas, features, cv_groups="session")
    assert all(np.all(n == 2) for n in blocks.n_trials)
    ceiling = _ceiling(blocks, truth)[:n_signal]
    r_signal, r_noise = result.r[:n_signal], result.r[n_signal:]
    assert ceiling.min() > 0.4  # the simulation leaves something to find
    assert np.all(r_signal <= ceiling + 0.03)
    assert np.mean(ceiling - r_signal) < 0.05
    assert np.all(np.abs(r_noise) < 0.25)
    assert r_signal.min() > r_noise.max()
    np.testing.assert_array_equal(result.mask, np.ones(SHAPE, bool))
    np.testing.assert_allclose(result.affine, AFFINE)


def test_averaging_repeats_raises_held_out_r(simulation):
    _, features, trial_betas, _, n_signal, _ = simulation
    averaged = encode_trials(trial_betas, features, alphas=ALPHAS, cv_groups="session")
    single = encode_trials(trial_betas, features, alphas=ALPHAS, cv_groups="session", average=False)
    assert single.n_samples == 2 * averaged.n_samples
    gain = averaged.r[:n_signal] - single.r[:n_signal]
    assert np.mean(gain) > 0.05 and np.mean(gain > 0) >= 0.9


def test_betas_given_as_a_derivative_give_the_same_model(simulation, tmp_path):
    runs, features, trial_betas, _, _, _ = simulation
    from_runs = encode_trials(runs, features, alphas=ALPHAS, confounds=["motion"])
    assert from_runs.runs[0] == "sub-01_ses-1_task-x_run-1" and from_runs.n_runs == 8
    image, table = write_trial_betas(trial_betas, tmp_path / "sub-01_desc-lss_betas.nii.gz")
    assert table == tmp_path / "sub-01_desc-lss_betas.tsv" == betas_table_path(image)
    written = pd.read_csv(table, sep="\t")
    assert list(written.columns) == ["stim_id", "session", "run", "onset", "duration"]
    from_file = encode_trials(image, features, alphas=ALPHAS)
    np.testing.assert_array_equal(from_file.mask, from_runs.mask)
    assert from_file.runs == from_runs.runs
    np.testing.assert_allclose(from_file.r, from_runs.r, atol=1e-6)
    np.testing.assert_allclose(from_file.alpha, from_runs.alpha, rtol=1e-6)
    np.testing.assert_allclose(from_file.cv_score, from_runs.cv_score, atol=1e-6)


def test_user_betas_with_stim_file_sessions_and_a_mask(tmp_path):
    """A GLMsingle-like derivative: stim_file names, session and run labels, NaN outside the
    brain; the default mask keeps the finite, nonzero voxels."""
    rng = np.random.default_rng(11)
    volumes = rng.standard_normal((*SHAPE, 6)).astype("f4")
    volumes[0, 0, 0] = np.nan
    volumes[1, 0, 0] = 0.0
    nib.Nifti1Image(volumes, AFFINE).to_filename(tmp_path / "betas.nii.gz")
    pd.DataFrame(
        {
            "stim_file": ["a.png", "./b.png", "a.png", "c.png", "a.png", "b.png"],
            "session": [1, 1, 1, 2, 2, 2],
            "run": [1, 1, 2, 1, 1, 1],
        }
    ).to_csv(tmp_path / "betas.tsv", sep="\t", index=False)
    betas = read_trial_betas(tmp_path / "betas.nii.gz")
    inside = np.ones(SHAPE, bool)
    inside[0, 0, 0] = inside[1, 0, 0] = False
    np.testing.assert_array_equal(betas.mask, inside)
    np.testing.assert_array_equal(betas.betas, volumes[inside].T)
    assert list(betas.trials["stim_id"]) == ["a.png", "b.png", "a.png", "c.png", "a.png", "b.png"]
    assert list(betas.trials["session"]) == ["1", "1", "1", "2", "2", "2"]
    features = FeatureSet(
        "toy", "t", "image", ("a.png", "b.png", "c.png"), rng.standard_normal((3, 2)).astype("f4")
    )
    # z-scored per session, averaged within each run only: a.png of ses-1 run-1 and run-2
    # stay apart, a.png of ses-2 is averaged with nothing
    blocks = trial_blocks(betas, features, cv_groups="run")
    assert blocks.names == ["ses-1_run-1", "ses-1_run-2", "ses-2_run-1"]
    assert blocks.stim_ids == [["a.png", "b.png"], ["a.png"], ["c.png", "a.png", "b.png"]]
    zscored = stats.zscore(betas.betas[:3].astype(np.float64))
    np.testing.assert_allclose(blocks.Ys[0], zscored[:2] - zscored[:2].mean(0), atol=1e-6)
    sessions = trial_blocks(betas, features, cv_groups="session")
    assert sessions.names == ["ses-1", "ses-2"]
    assert sessions.stim_ids == [["a.png", "b.png"], ["c.png", "a.png", "b.png"]]
    np.testing.assert_array_equal(sessions.n_trials[0], [2, 1])
    np.testing.assert_allclose(
        sessions.Ys[0][0] - sessions.Ys[0][1], zscored[[0, 2]].mean(0) - zscored[1], atol=1e-6
    )
    # the design: features z-scored over all rows, centred per group
    rows = features.rows([s for ids in sessions.stim_ids for s in ids]).astype(np.float64)
    X = stats.zscore(rows)
    np.testing.assert_allclose(sessions.Xs[1], X[2:] - X[2:].mean(0), atol=1e-6)

    # an explicit mask reads those voxels; non-finite ones become 0
    mask = np.zeros(SHAPE, np.uint8)
    mask[0, 0, 0] = mask[2, 2, 1] = 1
    nib.Nifti1Image(mask, AFFINE).to_filename(tmp_path / "mask.nii.gz")
    masked = read_trial_betas(tmp_path / "betas.nii.gz", mask=tmp_path / "mask.nii.gz")
    np.testing.assert_array_equal(masked.betas[:, 0], 0)
    np.testing.assert_array_equal(masked.betas[:, 1], volumes[2, 2, 1])


def test_zscore_and_average_against_direct_computation():
    rng = np.random.default_rng(5)
    betas = rng.standard_normal((7, 3)) * [1, 5, 10] + 3
    trials = pd.DataFrame(
        {"stim_id": list("abcabca"), "session": [None] * 4 + ["2"] * 3, "run": list("xxyyzzz")}
    )
    zscored = zscore_per_session(TrialBetas(betas.astype("f4"), trials))
    # no session: per run; with a session: per session
    for rows in ([0, 1], [2, 3], [4, 5, 6]):
        np.testing.assert_allclose(zscored[rows], stats.zscore(betas[rows]), atol=1e-5)
    ids, means, counts = average_repeats(betas, list("abcabca"))
    assert ids == ["a", "b", "c"] and list(counts) == [3, 2, 2]
    np.testing.assert_allclose(means[0], betas[[0, 3, 6]].mean(0), rtol=1e-6)
    np.testing.assert_allclose(means[2], betas[[2, 5]].mean(0), rtol=1e-6)


def _write_betas(root: Path, n_volumes: int, table: pd.DataFrame) -> Path:
    path = root / "betas.nii.gz"
    volumes = np.random.default_rng(0).standard_normal((*SHAPE, n_volumes)).astype("f4")
    nib.Nifti1Image(volumes, AFFINE).to_filename(path)
    table.to_csv(betas_table_path(path), sep="\t", index=False)
    return path


def test_bad_betas_derivatives_are_refused_naming_the_file(tmp_path):
    table = pd.DataFrame({"stim_id": ["a", "b", "c"], "run": [1, 1, 2]})
    path = _write_betas(tmp_path, 4, table)
    tsv = betas_table_path(path)
    with pytest.raises(DataError, match="3 rows but the betas image betas.nii.gz has 4") as info:
        read_trial_betas(path)
    assert str(info.value).startswith(str(tsv)) and "\n" not in str(info.value)

    path = _write_betas(tmp_path, 3, table.assign(stim_id=["a", "n/a", "c"]))
    with pytest.raises(DataError, match="row 2 names no stimulus") as info:
        read_trial_betas(path)
    assert str(info.value).startswith(str(tsv))

    path = _write_betas(tmp_path, 3, table.rename(columns={"stim_id": "image"}))
    with pytest.raises(DataError, match="no stimulus column"):
        read_trial_betas(path)

    betas_table_path(path).unlink()
    with pytest.raises(InputMissingError, match="betas.tsv: table naming the stimulus"):
        read_trial_betas(path)


def test_trial_labels_features_and_groups_are_checked(tmp_path, caplog):
    features = FeatureSet("toy", "t", "image", ("a", "b"), np.eye(2, dtype="f4"))
    path = _write_betas(tmp_path, 3, pd.DataFrame({"stim_id": ["a", "b", "a"], "run": [1, 1, 1]}))
    with pytest.raises(UsageError, match="--cv-groups session needs a session label"):
        encode_trials(path, features, alphas=ALPHAS, cv_groups="session")
    with pytest.raises(DataError, match="form 1 run"):
        encode_trials(path, features, alphas=ALPHAS)
    with pytest.raises(UsageError, match="--cv-groups must be auto, run, session or stimulus"):
        encode_trials(path, features, alphas=ALPHAS, cv_groups="trial")
    # a volume of a stimulus no event names (THINGS' catch trials) is dropped, and counted
    path = _write_betas(tmp_path, 3, pd.DataFrame({"stim_id": ["a", "b", "z"], "run": [1, 1, 2]}))
    with caplog.at_level("WARNING", logger="bids_vem.encoding.trialwise"):
        with pytest.raises(DataError, match="form 1 run"):
            encode_trials(path, features, alphas=ALPHAS)
    assert "1 of 3 betas volumes show a stimulus no event names" in caplog.text
    path = _write_betas(tmp_path, 2, pd.DataFrame({"stim_id": ["y", "z"], "run": [1, 2]}))
    with pytest.raises(DataError, match="no betas volume shows a stimulus of the events"):
        encode_trials(path, features, alphas=ALPHAS)


def test_betas_stimuli_map_to_the_events_names_by_unique_file_name():
    from bids_vem.encoding.trialwise import match_stimuli

    trials = pd.DataFrame(
        {"stim_id": ["dog/dog_1.jpg", "dog_1.jpg", "cat_2.jpg", "x.jpg", "a.jpg"]}
    )
    known = ["dog/dog_1.jpg", "cat/cat_2.jpg", "one/a.jpg", "two/a.jpg"]
    keep, dropped = match_stimuli(trials, known)
    # exact, by file name, by file name; unknown and ambiguous (two a.jpg) dropped
    assert keep.tolist() == [True, True, True, False, False] and dropped == 2
    assert trials["stim_id"][:3].tolist() == ["dog/dog_1.jpg", "dog/dog_1.jpg", "cat/cat_2.jpg"]
