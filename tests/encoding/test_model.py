"""Nested leave-one-run-out encoding model: simulations with known truth, himalaya as reference."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from himalaya.ridge import RidgeCV
from himalaya.scoring import correlation_score
from scipy import stats

from bids_vem.encoding.design import build_run_design
from bids_vem.encoding.model import EncodingResult, encode_runs, fit_encoding_model
from bids_vem.encoding.stimulus_folds import samples_from_rows
from bids_vem.errors import DataError
from bids_vem.features.feature_set import FeatureSet
from bids_vem.inputs.runs import Run

ALPHAS = np.logspace(-2, 8, 21)


def _simulation(n_runs=4, n_per_run=150, n_features=10, n_signal=40, n_noise=40, seed=0):
    """Y = X w + noise with unit noise; voxel v's ceiling r = |w_v| / sqrt(|w_v|^2 + 1)."""
    rng = np.random.default_rng(seed)
    ceilings = np.linspace(0.3, 0.8, n_signal)
    directions = rng.standard_normal((n_features, n_signal))
    directions /= np.linalg.norm(directions, axis=0)
    weights = np.zeros((n_features, n_signal + n_noise))
    weights[:, :n_signal] = directions * np.sqrt(ceilings**2 / (1 - ceilings**2))
    Xs = [rng.standard_normal((n_per_run, n_features)) for _ in range(n_runs)]
    signals = [X @ weights for X in Xs]
    Ys = [s + rng.standard_normal(s.shape) for s in signals]
    return Xs, Ys, signals, n_signal


def test_held_out_r_reaches_the_ceiling_and_separates_signal_from_noise(device):
    n_runs, n_per_run, n_features = 4, 250, 6
    Xs, Ys, signals, n_signal = _simulation(n_runs, n_per_run, n_features)
    result = fit_encoding_model(Xs, Ys, ALPHAS, device=device)
    Y, signal = np.concatenate(Ys), np.concatenate(signals)
    # ceiling: r of the true signal itself with the simulated data
    ceiling = np.array([np.corrcoef(Y[:, v], signal[:, v])[0, 1] for v in range(n_signal)])
    # what estimation from n_train samples leaves of it (least squares, unit noise):
    # the prediction carries extra variance n_features / n_train
    snr = ceiling**2 / (1 - ceiling**2)
    attainable = ceiling * np.sqrt(snr / (snr + n_features / ((n_runs - 1) * n_per_run)))
    r_signal, r_noise = result.r[:n_signal], result.r[n_signal:]
    assert np.all(r_signal <= ceiling + 0.01)
    assert np.all(r_signal >= attainable - 0.06)
    assert np.mean(ceiling - r_signal) < 0.025
    assert np.all(np.abs(r_noise) < 0.12)
    assert r_signal.min() > r_noise.max()
    # R^2 is at most about r^2 and reaches it for most voxels (not for those where some run's
    # model took a huge penalty: same time course, shrunken scale); noise voxels do worse
    # than the mean
    assert np.all(result.r2[:n_signal] <= r_signal**2 + 0.02)
    assert np.median(r_signal**2 - result.r2[:n_signal]) < 0.03
    assert np.median(result.r2[n_signal:]) < 0.005
    # noise voxels want the strongest penalties, signal voxels moderate ones
    assert np.median(result.alpha[n_signal:]) > 100 * np.median(result.alpha[:n_signal])
    assert result.nested and result.n_runs == 4 and result.n_samples == 1000
    assert result.n_features == n_features


def test_random_and_time_shuffled_features_score_at_chance(device):
    """Controls: features unrelated to the BOLD, and the true features with their time order
    shuffled within each run, predict held-out runs at chance; the true features do not."""
    Xs, Ys, _, n_signal = _simulation(4, 250, 6)
    rng = np.random.default_rng(7)
    true = fit_encoding_model(Xs, Ys, ALPHAS, device=device)
    assert true.r[:n_signal].mean() > 0.3  # the controls below could fail: there is signal
    random = [rng.standard_normal(X.shape) for X in Xs]
    shuffled = [X[rng.permutation(len(X))] for X in Xs]
    for designs in (random, shuffled):
        result = fit_encoding_model(designs, Ys, ALPHAS, device=device)
        assert abs(result.r.mean()) < 0.03
        assert result.r[:n_signal].mean() < 0.05


def _repeated_stimuli(
    seed: int = 3,
    n_runs: int = 4,
    n_voxels: int = 500,
    signal: float = 0.0,
    n_stimuli: int = 8,
    block: int = 10,
):
    """Every image in every run, in blocks of 10 samples; responses image-specific (no
    feature explains them) plus, with ``signal``, a part driven by the true features."""
    rng = np.random.default_rng(seed)
    responses = rng.standard_normal((n_stimuli, n_voxels))  # image-specific, feature-free
    features = rng.standard_normal((n_stimuli, 16))  # a random vector per image
    weights = rng.standard_normal((16, n_voxels)) / 4
    Xs, Ys, rows = [], [], []
    for _ in range(n_runs):
        order = np.repeat(rng.permutation(n_stimuli), block)
        Xs.append(features[order])
        Ys.append(
            responses[order]
            + signal * (features[order] @ weights)
            + rng.standard_normal((len(order), n_voxels))
        )
        rows.append([f"img{i}" for i in order])
    return Xs, Ys, samples_from_rows(rows, trialwise=False)


def test_random_per_stimulus_features_with_repeated_stimuli_score_at_chance():
    """The repeated-stimulus leakage control: held-out runs show the training runs' images, so
    features that merely tell images apart predict them under run folds (the inflation is
    reproduced, so the test can fail); the default stimulus-disjoint folds bring r to chance."""
    Xs, Ys, samples = _repeated_stimuli()
    leaky = fit_encoding_model(Xs, Ys, ALPHAS, stimulus_samples=samples, folds="groups")
    assert leaky.r.mean() > 0.3
    assert leaky.test_stimuli_in_training == (8, 8, 8, 8)
    assert "8 of 8 unique stimuli shown in more than one run" in leaky.cross_validation
    result = fit_encoding_model(Xs, Ys, ALPHAS, stimulus_samples=samples)
    assert result.evaluation == "stimulus-folds"
    assert result.cross_validation.startswith("stimulus-disjoint: 4 folds")
    assert abs(result.r.mean()) < 0.03


def test_planted_feature_signal_is_recovered_under_stimulus_folds():
    Xs, Ys, samples = _repeated_stimuli(signal=1.0, n_runs=6, n_stimuli=60, block=3)
    result = fit_encoding_model(Xs, Ys, ALPHAS, stimulus_samples=samples)
    assert result.evaluation == "stimulus-folds"
    assert result.n_folds == 6
    assert result.r.mean() > 0.3


def test_r2_scored_penalties_keep_the_scale_of_predictions():
    Xs, Ys, _, n_signal = _simulation(4, 250, 6)
    result = fit_encoding_model(Xs, Ys, ALPHAS, score="r2")
    r_signal = result.r[:n_signal]
    # penalties chosen for R^2 never shrink a predictive voxel's time course to nothing
    np.testing.assert_allclose(result.r2[:n_signal], r_signal**2, atol=0.03)
    assert np.all(result.cv_score[:n_signal] > 0)


def test_nested_cv_matches_himalaya_run_by_run():
    Xs, Ys, _, _ = _simulation(n_runs=3, n_per_run=80, n_signal=10, n_noise=10, seed=1)
    result = fit_encoding_model(Xs, Ys, ALPHAS, dtype=torch.float64)
    predictions = []
    for test in range(3):
        train = [i for i in range(3) if i != test]
        X, Y = np.concatenate([Xs[i] for i in train]), np.concatenate([Ys[i] for i in train])
        groups = np.repeat([0, 1], [len(Xs[i]) for i in train])
        index = np.arange(len(groups))
        inner = [(index[groups != k], index[groups == k]) for k in (0, 1)]
        model = RidgeCV(
            alphas=ALPHAS,
            cv=inner,
            solver_params=dict(score_func=correlation_score, local_alpha=True),
        ).fit(X, Y)
        predictions.append(model.predict(Xs[test]))
    # r: each run's data and predictions z-scored, then pooled
    Y_pred = np.concatenate([stats.zscore(P) for P in predictions])
    Y = np.concatenate([stats.zscore(Y) for Y in Ys])
    expected = [np.corrcoef(Y[:, v], Y_pred[:, v])[0, 1] for v in range(Y.shape[1])]
    np.testing.assert_allclose(result.r, expected, atol=1e-5)
    # r2: raw predictions pooled
    Y_pred, Y = np.concatenate(predictions), np.concatenate(Ys)
    expected = 1 - ((Y - Y_pred) ** 2).sum(0) / ((Y - Y.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(result.r2, expected, atol=1e-5)
    # the alpha map: LORO over all three runs
    all_runs = RidgeCV(
        alphas=ALPHAS,
        cv=[
            (np.flatnonzero(np.repeat(np.arange(3), 80) != k), np.arange(80 * k, 80 * (k + 1)))
            for k in range(3)
        ],
        solver_params=dict(score_func=correlation_score, local_alpha=True),
    ).fit(np.concatenate(Xs), Y)
    np.testing.assert_allclose(result.alpha, all_runs.best_alphas_, rtol=1e-5)
    np.testing.assert_allclose(result.cv_score, all_runs.cv_scores_, atol=1e-5)


def test_fold_designs_predict_their_held_out_run_as_himalaya_does():
    """Aligned features: run 0 is predicted (inner CV, refit, prediction) from the designs of
    an alignment that held it out; the other runs and the penalty map keep the main designs."""
    Xs, Ys, _, _ = _simulation(n_runs=3, n_per_run=80, n_signal=10, n_noise=10, seed=2)
    rng = np.random.default_rng(3)
    Xs_fold = [X + 0.5 * rng.standard_normal(X.shape) for X in Xs]
    result = fit_encoding_model(Xs, Ys, ALPHAS, dtype=torch.float64, test_designs={0: Xs_fold})
    predictions = []
    for test in range(3):
        designs = Xs_fold if test == 0 else Xs
        train = [i for i in range(3) if i != test]
        X = np.concatenate([designs[i] for i in train])
        Y = np.concatenate([Ys[i] for i in train])
        groups = np.repeat([0, 1], [len(designs[i]) for i in train])
        index = np.arange(len(groups))
        model = RidgeCV(
            alphas=ALPHAS,
            cv=[(index[groups != k], index[groups == k]) for k in (0, 1)],
            solver_params=dict(score_func=correlation_score, local_alpha=True),
        ).fit(X, Y)
        predictions.append(model.predict(designs[test]))
    Y_pred, Y = np.concatenate(predictions), np.concatenate(Ys)
    expected = 1 - ((Y - Y_pred) ** 2).sum(0) / ((Y - Y.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(result.r2, expected, atol=1e-5)
    plain = fit_encoding_model(Xs, Ys, ALPHAS, dtype=torch.float64)
    np.testing.assert_array_equal(result.alpha, plain.alpha)
    assert not np.allclose(result.r2, plain.r2)
    with pytest.raises(ValueError, match="held-out run 1"):
        fit_encoding_model(Xs, Ys, ALPHAS, test_designs={1: Xs_fold[:2]})


def test_two_runs_fall_back_to_two_fold_and_one_run_is_refused():
    Xs, Ys, _, _ = _simulation(n_runs=2, n_signal=5, n_noise=5)
    result = fit_encoding_model(Xs, Ys, ALPHAS, run_names=["run-1", "run-2"])
    assert not result.nested and result.runs == ("run-1", "run-2")
    assert result.r[:5].min() > 0.2
    with pytest.raises(DataError) as info:
        fit_encoding_model(Xs[:1], Ys[:1], ALPHAS, run_names=["sub-01_task-x_run-1"])
    assert info.value.exit_code == 65
    assert str(info.value) == (
        "leave-one-run-out needs at least 2 runs; found 1: sub-01_task-x_run-1"
    )


def test_chunks_do_not_change_the_model(device):
    Xs, Ys, _, _ = _simulation(n_runs=3, n_per_run=60, n_signal=15, n_noise=16, seed=2)
    whole = fit_encoding_model(Xs, Ys, ALPHAS, device=device)
    chunked = fit_encoding_model(Xs, Ys, ALPHAS, n_voxels_chunk=4, device=device)
    np.testing.assert_array_equal(whole.alpha, chunked.alpha)
    np.testing.assert_allclose(whole.r, chunked.r, atol=1e-6)
    np.testing.assert_allclose(whole.r2, chunked.r2, atol=1e-6)


def test_edge_counts_summary_and_npz_round_trip(tmp_path):
    Xs, Ys, _, n_signal = _simulation(n_runs=3, n_per_run=60, n_signal=10, n_noise=10)
    narrow = np.array([1e-2, 1e-1, 1.0])
    result = fit_encoding_model(Xs, Ys, narrow, delays=(1, 2), feature_space="clip")
    assert result.n_alpha_low == np.sum(result.alpha == np.float32(1e-2))
    assert result.n_alpha_high == np.sum(result.alpha == np.float32(1.0))
    assert result.n_alpha_high >= 10  # noise voxels pile up at the strongest penalty
    summary = result.summary()
    assert summary["n_alpha_high"] == result.n_alpha_high
    assert summary["mean_r"] == pytest.approx(float(np.mean(result.r)))
    assert summary["n_voxels_r_above_0.1"] == int(np.sum(result.r > 0.1))
    assert summary["feature_space"] == "clip" and summary["delays"] == [1, 2]

    path = result.save(tmp_path / "sub-01_desc-clip_encoding.npz")
    assert path.exists() and not list(tmp_path.glob(".*"))
    loaded = EncodingResult.load(path)
    for name in ("r", "r2", "alpha", "cv_score", "alphas"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(result, name))
    assert loaded.summary() == summary and loaded.runs == result.runs and loaded.mask is None


# ---------------------------------------------------------------- encode_runs on files

TR = 2.0
SHAPE = (3, 3, 2)
AFFINE = np.diag([2.5, 2.5, 2.5, 1.0])


def _feature_set(rng) -> FeatureSet:
    ids = tuple(f"images/img{i}.png" for i in range(8))
    return FeatureSet("toy", "test:toy", "image", ids, rng.standard_normal((8, 5)).astype("f4"))


def _write_run(root: Path, index: int, features: FeatureSet, weights, rng, tr=TR, affine=AFFINE):
    n_volumes = 90
    onsets = np.arange(0, n_volumes * tr - 4, 3.0)
    stims = rng.choice(features.stim_ids, len(onsets))
    events = pd.DataFrame({"onset": onsets, "duration": 2.0, "stim_file": stims})
    events.loc[3, "stim_file"] = "n/a"
    events_path = root / f"sub-01_task-x_run-{index}_events.tsv"
    events.to_csv(events_path, sep="\t", index=False)

    table = events.rename(columns={"stim_file": "stim_id"}).replace("n/a", None)
    X = build_run_design(table, features, n_volumes, tr, (1, 2)).astype(float)
    drift = rng.standard_normal(n_volumes).cumsum()
    n_voxels = int(np.prod(SHAPE))
    data = 500 + X @ weights + rng.standard_normal((n_volumes, n_voxels)) + 3 * drift[:, None]
    bold = root / f"sub-01_task-x_run-{index}_desc-preproc_bold.nii.gz"
    nib.Nifti1Image(data.T.reshape(*SHAPE, n_volumes).astype("f4"), affine).to_filename(bold)
    mask = np.ones(SHAPE, np.uint8)
    mask[0, 0, index % 2] = 0  # run masks differ: the model uses their intersection
    mask_path = root / f"sub-01_task-x_run-{index}_desc-brain_mask.nii.gz"
    nib.Nifti1Image(mask, affine).to_filename(mask_path)
    confounds = root / f"sub-01_task-x_run-{index}_desc-confounds_timeseries.tsv"
    pd.DataFrame({"drift": drift, "framewise_displacement": [np.nan, *rng.random(89)]}).to_csv(
        confounds, sep="\t", index=False, na_rep="n/a"
    )
    return Run(
        "01",
        None,
        "x",
        str(index),
        None,
        "T1w",
        bold,
        mask_path,
        events_path,
        confounds,
        tr,
        n_volumes,
    )


def _runs(tmp_path, n_runs=3, **kwargs):
    rng = np.random.default_rng(4)
    features = _feature_set(rng)
    n_voxels = int(np.prod(SHAPE))
    weights = rng.standard_normal((10, n_voxels)) * 0.6
    weights[:, n_voxels // 2 :] = 0  # the second half of the voxels is noise only
    runs = [_write_run(tmp_path, i + 1, features, weights, rng, **kwargs) for i in range(n_runs)]
    return runs, features


def test_encode_runs_end_to_end(tmp_path):
    runs, features = _runs(tmp_path)
    options = dict(stim_column="stim_file", delays=(1, 2), alphas=ALPHAS, confounds=["drift"])
    # the 8 images repeat across runs: by default the folds hold out images, not runs
    default = encode_runs(runs, features, **options)
    assert default.cv_groups == "stimulus" and default.evaluation == "stimulus-folds"
    assert "8 of 8 unique stimuli shown in more than one run" in default.cross_validation
    result = encode_runs(runs, features, cv_groups="run", **options)
    assert result.test_stimuli_in_training == (8, 8, 8)
    signal = np.zeros(SHAPE, bool).ravel()
    signal[: signal.size // 2] = True
    signal = signal.reshape(SHAPE)[result.mask]
    # held-out images are predicted from their features: less well than seen ones, but well
    assert default.r[signal].mean() > 0.4 and abs(default.r[~signal].mean()) < 0.1
    expected_mask = np.ones(SHAPE, bool)
    expected_mask[0, 0, :] = False
    np.testing.assert_array_equal(result.mask, expected_mask)
    assert result.n_voxels == 16 and result.n_features == 10 and result.delays == (1, 2)
    assert result.feature_space == "toy" and result.runs[0] == "sub-01_task-x_run-1"
    signal = np.zeros(SHAPE, bool).ravel()
    signal[: signal.size // 2] = True
    signal = signal.reshape(SHAPE)[expected_mask]  # voxel order of the maps
    assert result.r[signal].min() > 0.5
    assert np.abs(result.r[~signal]).max() < 0.3
    image = result.to_nifti("r")
    assert image.shape == SHAPE and np.allclose(image.affine, AFFINE)
    np.testing.assert_allclose(image.get_fdata()[expected_mask], result.r)


def test_encode_runs_refuses_mixed_runs(tmp_path):
    runs, features = _runs(tmp_path)
    options = dict(stim_column="stim_file", delays=(1, 2), alphas=ALPHAS)
    with pytest.raises(DataError, match="repetition times") as info:
        encode_runs(
            [runs[0], runs[1].__class__(**{**runs[1].__dict__, "tr": 1.5})], features, **options
        )
    assert "sub-01_task-x_run-2 (1.5 s)" in str(info.value)
    with pytest.raises(DataError, match="found 1: sub-01_task-x_run-1"):
        encode_runs(runs[:1], features, **options)
    other = tmp_path / "other"
    other.mkdir()
    shifted, _ = _runs(other, n_runs=1, affine=np.diag([3.0, 3.0, 3.0, 1.0]))
    with pytest.raises(DataError, match="grid"):
        encode_runs([runs[0], shifted[0]], features, **options)


def test_nested_cv_over_interleaved_sessions_matches_himalaya_in_the_dual():
    """Folds of sessions whose runs interleave, more design columns than samples (the dual):
    the nested CV from one decomposition equals himalaya's fold-by-fold refits."""
    Xs, Ys, _, _ = _simulation(n_runs=6, n_per_run=30, n_features=200, n_signal=8, n_noise=4)
    sessions = ["a", "b", "a", "c", "b", "c"]
    result = fit_encoding_model(Xs, Ys, ALPHAS, dtype=torch.float64, cv_groups=sessions)
    assert result.nested and result.n_folds == 3
    folds = [[0, 2], [1, 4], [3, 5]]
    zy, zp = [], []
    for fold in folds:
        train = [i for i in range(6) if i not in fold]
        inner_folds = [f for f in folds if f != fold]
        X, Y = np.concatenate([Xs[i] for i in train]), np.concatenate([Ys[i] for i in train])
        labels = np.concatenate([np.full(30, 0 if i in inner_folds[0] else 1) for i in train])
        index = np.arange(len(labels))
        model = RidgeCV(
            alphas=ALPHAS,
            cv=[(index[labels != k], index[labels == k]) for k in (0, 1)],
            solver_params=dict(score_func=correlation_score, local_alpha=True, warn=False),
        ).fit(X, Y)
        for i in fold:
            zy.append(stats.zscore(Ys[i]))
            zp.append(stats.zscore(model.predict(Xs[i])))
    Y, P = np.concatenate(zy), np.concatenate(zp)
    expected = [np.corrcoef(Y[:, v], P[:, v])[0, 1] for v in range(Y.shape[1])]
    np.testing.assert_allclose(result.r, expected, atol=1e-5)


def test_fold_encoders_do_not_keep_a_design_per_fold_pair(tmp_path, monkeypatch):
    """With a fold's own encoder (an alignment that never saw the fold's stimuli), the
    held-out designs of each (outer, inner) fold pair are built when needed, not kept: kept,
    they were n_folds^2 full designs and a NOD-sized participant ran out of memory. Only the
    shared encoder's designs, asked again by every outer fold, stay cached."""
    from bids_vem.encoding import model as model_module
    from bids_vem.encoding.stimulus_folds import deal_stimuli

    runs, features = _runs(tmp_path)
    options = dict(stim_column="stim_file", delays=(1, 2), alphas=ALPHAS, confounds=["drift"])
    held_sets = deal_stimuli(features.stim_ids, 3)
    rng = np.random.default_rng(7)
    fold_sets = [
        (held, FeatureSet("toy", "test:toy", "image", features.stim_ids,
                          (features.values + 0.1 * rng.standard_normal(features.values.shape))
                          .astype("f4")))
        for held in held_sets
    ]  # fmt: skip
    cached = {}
    original = model_module._Fit.stimulus_disjoint

    def spy(self, folds):
        out = original(self, folds)
        cached["entries"], cached["folds"] = len(self._partial), len(folds)
        return out

    monkeypatch.setattr(model_module._Fit, "stimulus_disjoint", spy)
    result = encode_runs(runs, features, stimulus_fold_feature_sets=fold_sets, **options)
    assert result.evaluation == "stimulus-folds" and cached["folds"] == 3
    assert cached["entries"] <= cached["folds"]
    assert np.isfinite(result.r).all()
