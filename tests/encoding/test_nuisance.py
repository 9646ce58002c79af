"""Nuisance regressors out of the design as out of the BOLD: against nilearn, against the joint
model they stand for, and simulations in which leaving them in the design misleads."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn import signal

from bids_vem.encoding.design import build_run_design
from bids_vem.encoding.model import RunDesigns, _run_events, encode_runs
from bids_vem.encoding.nuisance import (
    ProjectedVoxelData,
    cleaning_regressors,
    orthonormal_basis,
    project_out,
)
from bids_vem.encoding.resample import lanczos_resample
from bids_vem.encoding.voxel_data import InMemoryVoxelData
from bids_vem.errors import UsageError
from bids_vem.features.feature_set import FeatureSet
from bids_vem.inputs.runs import Run

TR = 2.0
SHAPE = (4, 4, 2)
AFFINE = np.diag([2.5, 2.5, 2.5, 1.0])
ALPHAS = np.logspace(-2, 4, 13)


@pytest.mark.parametrize("high_pass", [0.0, 0.01])
@pytest.mark.parametrize("kind", ["none", "confounds", "collinear"])
def test_projection_is_what_nilearn_clean_removes(kind, high_pass):
    rng = np.random.default_rng(0)
    n = 180
    confounds = None
    if kind != "none":
        confounds = rng.standard_normal((n, 3)) * [1.0, 1e-3, 50.0]  # any units
        if kind == "collinear":
            confounds[:, 2] = 2 * confounds[:, 0] + 1  # fMRIPrep's columns often are
    X = rng.standard_normal((n, 12)) + np.linspace(0, 4, n)[:, None]
    filtering = {"filter": "cosine", "high_pass": high_pass} if high_pass else {"filter": False}
    expected = signal.clean(
        X, detrend=True, standardize=None, confounds=confounds, t_r=TR, **filtering
    )
    basis = orthonormal_basis(cleaning_regressors(n, TR, confounds, high_pass))
    np.testing.assert_allclose(project_out(X, basis), expected, atol=1e-10)
    np.testing.assert_allclose(basis.T @ basis, np.eye(basis.shape[1]), atol=1e-10)
    # float32 designs stay float32
    assert project_out(X.astype(np.float32), basis).dtype == np.float32


def test_ridge_on_projected_data_is_the_joint_model_with_unpenalised_nuisance():
    """Frisch-Waugh-Lovell: the claim the sidecars and the methods text make."""
    rng = np.random.default_rng(1)
    n, p, alpha = 150, 8, 30.0
    X = rng.standard_normal((n, p))
    N = cleaning_regressors(n, TR, rng.standard_normal((n, 2)) + X[:, :1], 0.01)
    y = X @ rng.standard_normal(p) + N @ rng.standard_normal(N.shape[1]) + rng.standard_normal(n)
    Q = orthonormal_basis(N)
    Xp, yp = project_out(X, Q), project_out(y[:, None], Q)[:, 0]
    ours = np.linalg.solve(Xp.T @ Xp + alpha * np.eye(p), Xp.T @ yp)
    # one model over [X, N], the penalty on the features only
    A = np.hstack([X, N])
    penalty = np.diag([alpha] * p + [0.0] * N.shape[1])
    joint = np.linalg.lstsq(A.T @ A + penalty, A.T @ y, rcond=None)[0][:p]
    np.testing.assert_allclose(ours, joint, rtol=1e-6, atol=1e-9)


def test_projected_voxel_data_projects_each_run_as_it_is_read():
    rng = np.random.default_rng(2)
    Ys = [rng.standard_normal((40, 7)).astype(np.float32) for _ in range(2)]
    bases = [orthonormal_basis(rng.standard_normal((40, 2))), np.zeros((40, 0))]
    data = ProjectedVoxelData(InMemoryVoxelData(Ys), bases)
    np.testing.assert_allclose(
        data.read(0, slice(2, 6)), project_out(Ys[0], bases[0])[:, 2:6], atol=1e-5
    )
    np.testing.assert_array_equal(data.read(1, slice(0, 7)), Ys[1])
    with pytest.raises(ValueError, match="1 nuisance bases for 2 runs"):
        ProjectedVoxelData(InMemoryVoxelData(Ys), bases[:1])


# ------------------------------------------------------------------- runs on files


def _image_features(rng, n_images=12, width=4) -> FeatureSet:
    ids = tuple(f"images/img{i}.png" for i in range(n_images))
    values = rng.standard_normal((n_images, width)).astype("f4")
    return FeatureSet("toy", "test:toy", "image", ids, values)


def _write_run(root: Path, index: int, events: pd.DataFrame, data: np.ndarray, confounds=None):
    """One run's events, BOLD, mask and confounds as fMRIPrep names them."""
    stem = root / f"sub-01_task-x_run-{index}"
    events_path = Path(f"{stem}_events.tsv")
    events.to_csv(events_path, sep="\t", index=False)
    n_volumes = len(data)
    bold = Path(f"{stem}_desc-preproc_bold.nii.gz")
    nib.Nifti1Image(data.T.reshape(*SHAPE, n_volumes).astype("f4"), AFFINE).to_filename(bold)
    mask = Path(f"{stem}_desc-brain_mask.nii.gz")
    nib.Nifti1Image(np.ones(SHAPE, np.uint8), AFFINE).to_filename(mask)
    table = None
    if confounds is not None:
        table = Path(f"{stem}_desc-confounds_timeseries.tsv")
        pd.DataFrame(confounds).to_csv(table, sep="\t", index=False)
    return Run("01", None, "x", str(index), None, "T1w", bold, mask, events_path, table, TR,
               n_volumes)  # fmt: skip


def _stimulus_locked_runs(
    root, rng, features, weights, n_runs=4, n_volumes=150, gain=1.0, n_slow=0
):
    """Runs whose motion follows the stimulus: the first feature at the first delay, with
    jitter. Motion does not move the BOLD; the stimulus does (``gain``). ``n_slow`` more
    confounds wander as random walks (``slow_0``...)."""
    runs = []
    for index in range(1, n_runs + 1):
        onsets = np.arange(0, n_volumes * TR - 6, 4.0)
        stims = rng.choice(features.stim_ids, len(onsets))
        events = pd.DataFrame({"onset": onsets, "duration": 2.0, "stim_file": stims})
        table = events.rename(columns={"stim_file": "stim_id"})
        X = build_run_design(table, features, n_volumes, TR, (1, 2)).astype(float)
        motion = X[:, 0] + 0.5 * rng.standard_normal(n_volumes)
        n_voxels = weights.shape[1]
        data = 500 + gain * X @ weights + rng.standard_normal((n_volumes, n_voxels))
        data += np.linspace(0, 5, n_volumes)[:, None]  # scanner drift
        confounds = {"trans_x": motion}
        confounds |= {f"slow_{j}": rng.standard_normal(n_volumes).cumsum() for j in range(n_slow)}
        runs.append(_write_run(root, index, events, data, confounds))
    return runs


def test_stimulus_locked_confound_biases_the_weights_only_when_left_in_the_design(tmp_path):
    rng = np.random.default_rng(3)
    features = _image_features(rng)
    n_voxels = int(np.prod(SHAPE))
    weights = rng.standard_normal((8, n_voxels))
    runs = _stimulus_locked_runs(tmp_path, rng, features, weights)
    options = dict(delays=(1, 2), alphas=ALPHAS, confounds=["trans_x"], cv_groups="run",
                   high_pass=0.01)  # fmt: skip
    ratios = {}
    for where in ("bold-and-design", "bold"):
        path = tmp_path / f"weights-{where}.npy"
        result = encode_runs(runs, features, confound_regression=where, weights_path=path,
                             **options)  # fmt: skip
        fitted = np.load(path)
        # each design column's weights against the truth, on the scale of the other columns
        ratio = (fitted * weights).sum(1) / (weights * weights).sum(1)
        ratios[where] = ratio / np.median(ratio[1:])
        if where == "bold-and-design":
            assert "projected out of the design" in result.nuisance
            assert "confounds trans_x" in result.nuisance
    # the column that motion follows: unbiased with the projection, shrunk towards 0 without
    assert 0.8 < ratios["bold-and-design"][0] < 1.25
    assert ratios["bold"][0] < 0.4
    np.testing.assert_allclose(ratios["bold-and-design"][1:], 1.0, atol=0.2)


def test_random_features_with_many_confounds_score_at_chance_under_stimulus_folds(tmp_path):
    """Chance control through the projected designs, stimulus folds and the relabelling null.

    A run's confounds and drifts are projected out over all its samples, held-out ones
    included, so a little of the held-out stimuli's features reaches the training rows of the
    design, and of their BOLD the training rows of the data. Wide features fit that pair: with
    the training rows only centred, pure noise scored a mean r of 0.11 here. Residualising the
    training rows against the nuisance on those rows brings it back to chance."""
    rng = np.random.default_rng(4)
    features = _image_features(rng)
    n_voxels = int(np.prod(SHAPE))
    truth = rng.standard_normal((8, n_voxels))
    runs = _stimulus_locked_runs(tmp_path, rng, features, truth, gain=0.0, n_volumes=100,
                                 n_slow=8)  # fmt: skip
    unrelated = _image_features(np.random.default_rng(99), width=200)
    confounds = ["trans_x", *(f"slow_{j}" for j in range(8))]
    result = encode_runs(
        runs, unrelated, delays=(1, 2), alphas=ALPHAS, confounds=confounds, high_pass=0.01,
        n_permutations=200,
    )  # fmt: skip
    assert result.cv_groups == "stimulus"
    assert abs(float(result.r.mean())) < 0.03
    assert np.mean(result.p < 0.05) < 0.15
    assert not np.any(result.q < 0.05)


def test_relabelling_null_places_stimuli_as_the_projected_designs_do(tmp_path):
    """The null rebuilds predictions from where each held-out stimulus sits; with the nuisance
    projected out of the designs it must project those places alike (identity = observed)."""
    rng = np.random.default_rng(5)
    features = _image_features(rng)
    n_voxels = int(np.prod(SHAPE))
    runs = _stimulus_locked_runs(tmp_path, rng, features, rng.standard_normal((8, n_voxels)))
    events = [_run_events(run.events, "stim_file") for run in runs]
    designer = RunDesigns(runs, events, [run.n_volumes for run in runs], (1, 2), 10)
    designer.remove_nuisance([features], confounds=["trans_x"], high_pass=0.01)
    Xs, scales = designer.designs(features)
    samples = designer.samples(features, scales)
    held = np.zeros(samples.n_stimuli, dtype=bool)
    held[[0, 3, 7]] = True
    block = 1
    rows = samples.split(held).test[block][1]
    weights = rng.standard_normal(Xs[0].shape[1])
    expected = samples.partial_designs(held)[block][rows] @ weights
    slots = samples.slots(held, block, rows)
    G = samples.held_features(held, block)
    width = G.shape[1]
    rebuilt = sum(
        slots[d] @ (G @ weights[d * width : (d + 1) * width]) for d in range(slots.shape[0])
    )
    np.testing.assert_allclose(rebuilt, expected, rtol=1e-4, atol=1e-5)
    # the projected designs are the sum of the stimuli's projected parts
    everything = np.ones(samples.n_stimuli, dtype=bool)
    full = samples.partial_designs(everything)[block]
    np.testing.assert_allclose(full, Xs[block], atol=1e-4)


# ------------------------------------------------------------------- stories: word rate


def _story_runs(root, rng, n_runs=3, n_volumes=160, semantic_gain=0.0):
    """Stories told in bursts: the word rate swings between silence and fast speech. Half the
    voxels follow the word rate only; with ``semantic_gain``, the others follow the words'
    features (their zero-mean part)."""
    n_voxels = int(np.prod(SHAPE))
    rate_voxels = np.arange(n_voxels) < n_voxels // 2
    word_weights = rng.standard_normal(6)
    runs, stim_ids, values, times = [], [], [], []
    for index in range(1, n_runs + 1):
        name = f"stories/story{index}.txt"
        onsets = []
        t = 0.0
        while t < n_volumes * TR - 8:
            speed = rng.choice([0.5, 4.0])  # words per second in this stretch
            stop = t + rng.uniform(6, 20)
            while t < stop:
                onsets.append(t)
                t += rng.exponential(1 / speed)
        onsets = np.array([o for o in onsets if o < n_volumes * TR - 8])
        # word embeddings share a mean direction, as a sentence encoder's do
        words = 1.0 + 0.5 * rng.standard_normal((len(onsets), 6))
        stim_ids += [name] * len(onsets)
        values.append(words)
        times.append(onsets)
        rate = lanczos_resample(onsets, np.ones((len(onsets), 1)), n_volumes, TR)[:, 0]
        meaning = lanczos_resample(onsets, words - 1.0, n_volumes, TR) @ word_weights
        delayed_rate, delayed_meaning = np.zeros(n_volumes), np.zeros(n_volumes)
        delayed_rate[2:], delayed_meaning[2:] = rate[:-2], meaning[:-2]
        data = 800 + rng.standard_normal((n_volumes, n_voxels))
        data[:, rate_voxels] += (delayed_rate / delayed_rate.std())[:, None]
        data[:, ~rate_voxels] += semantic_gain * (delayed_meaning / delayed_meaning.std())[:, None]
        events = pd.DataFrame({"onset": [0.0], "duration": [n_volumes * TR], "stim_file": [name]})
        runs.append(_write_run(root, index, events, data))
    features = FeatureSet(
        "words", "test:words", "text", tuple(stim_ids), np.vstack(values).astype("f4"),
        metadata={"resample": "lanczos"}, times=np.concatenate(times),
    )  # fmt: skip
    return runs, features, rate_voxels


def test_word_rate_voxels_are_not_credited_to_the_word_features(tmp_path):
    rng = np.random.default_rng(6)
    runs, features, rate_voxels = _story_runs(tmp_path, rng, semantic_gain=1.0)
    options = dict(delays=(1, 2, 3), alphas=ALPHAS)
    kept = encode_runs(runs, features, word_rate="none", **options)
    regressed = encode_runs(runs, features, **options)  # the default
    # without it, voxels that only follow the word rate pass for semantic ones
    assert np.median(kept.r[rate_voxels]) > 0.3
    assert abs(np.median(regressed.r[rate_voxels])) < 0.1
    # what the words mean is still found
    assert np.median(regressed.r[~rate_voxels]) > 0.3
    assert "word rate" in regressed.nuisance and "word rate" not in kept.nuisance


def test_word_rate_concerns_stories_only(tmp_path):
    rng = np.random.default_rng(7)
    features = _image_features(rng)
    n_voxels = int(np.prod(SHAPE))
    runs = _stimulus_locked_runs(tmp_path, rng, features, rng.standard_normal((8, n_voxels)))
    result = encode_runs(runs, features, delays=(1, 2), alphas=ALPHAS, cv_groups="run")
    assert "word rate" not in result.nuisance
    with pytest.raises(UsageError, match="word_rate|--word-rate"):
        encode_runs(runs, features, delays=(1, 2), alphas=ALPHAS, word_rate="subtract")
    with pytest.raises(UsageError, match="confound"):
        encode_runs(runs, features, delays=(1, 2), alphas=ALPHAS, confound_regression="design")


def test_joint_model_of_random_features_with_many_confounds_scores_at_chance(tmp_path):
    """The banded ridge's training rows get the same treatment (:func:`training_basis`)."""
    from bids_vem.encoding.banded import encode_joint_runs

    rng = np.random.default_rng(8)
    features = _image_features(rng)
    n_voxels = int(np.prod(SHAPE))
    runs = _stimulus_locked_runs(tmp_path, rng, features, rng.standard_normal((8, n_voxels)),
                                 gain=0.0, n_volumes=100, n_slow=8)  # fmt: skip
    spaces = [
        dataclasses.replace(_image_features(np.random.default_rng(seed), width=100), name=name)
        for seed, name in ((98, "a"), (99, "b"))
    ]
    result = encode_joint_runs(
        runs, spaces, delays=(1, 2), alphas=np.logspace(-1, 5, 7), n_iterations=4,
        confounds=["trans_x", *(f"slow_{j}" for j in range(8))], high_pass=0.01,
    )  # fmt: skip
    assert "stimulus-disjoint" in result.cross_validation
    assert "projected out of the design" in result.nuisance
    assert abs(float(result.r.mean())) < 0.03
    # --test-runs: held out of all fitting, as the single-space models hold them out
    held_out = encode_joint_runs(
        runs, spaces, delays=(1, 2), alphas=np.logspace(-1, 5, 7), n_iterations=2,
        test_runs=["4"],
    )  # fmt: skip
    assert held_out.cross_validation.startswith("test runs sub-01_task-x_run-4 held out")
