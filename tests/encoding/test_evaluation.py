"""Evaluation modes: explicit test runs (vs himalaya), averaged repeats (vs the noise ceiling),
session folds, test-run labels and repeat detection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from himalaya.ridge import RidgeCV
from himalaya.scoring import correlation_score
from scipy import stats

from bids_vem.encoding.evaluation import HeldOutScores, repeated_sequences, select_test_runs
from bids_vem.encoding.model import EncodingResult, fit_encoding_model
from bids_vem.encoding.ridge import ridge_cv_alphas, score_correlation, score_r2
from bids_vem.errors import DataError, UsageError
from bids_vem.inputs.runs import Run

ALPHAS = np.logspace(-2, 8, 21)


def _problem(n_runs=5, n_per_run=80, n_features=8, n_voxels=30, seed=0):
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((n_features, n_voxels)) * np.linspace(0.0, 0.6, n_voxels)
    Xs = [rng.standard_normal((n_per_run, n_features)) for _ in range(n_runs)]
    Ys = [X @ weights + rng.standard_normal((n_per_run, n_voxels)) for X in Xs]
    return Xs, Ys


def _loro(lengths):
    groups = np.repeat(np.arange(len(lengths)), lengths)
    index = np.arange(len(groups))
    return [(index[groups != k], index[groups == k]) for k in range(len(lengths))]


def test_explicit_test_runs_match_himalaya_fitted_on_the_training_runs():
    Xs, Ys = _problem(seed=1)
    result = fit_encoding_model(
        Xs, Ys, ALPHAS, test_runs=[3, 1], dtype=torch.float64, run_names=list("abcde")
    )
    train, test = [0, 2, 4], [1, 3]
    model = RidgeCV(
        alphas=ALPHAS,
        cv=_loro([80, 80, 80]),
        solver_params=dict(score_func=correlation_score, local_alpha=True),
    ).fit(np.concatenate([Xs[i] for i in train]), np.concatenate([Ys[i] for i in train]))
    predictions = [model.predict(Xs[i]) for i in test]
    # r: each test run z-scored, then pooled; r2: raw predictions pooled
    expected_r = score_correlation(
        np.concatenate([stats.zscore(Ys[i]) for i in test]),
        np.concatenate([stats.zscore(P) for P in predictions]),
    )
    expected_r2 = score_r2(np.concatenate([Ys[i] for i in test]), np.concatenate(predictions))
    np.testing.assert_allclose(result.r, expected_r, atol=1e-5)
    np.testing.assert_allclose(result.r2, expected_r2, atol=1e-5)
    np.testing.assert_allclose(result.alpha, model.best_alphas_, rtol=1e-5)
    assert result.evaluation == "test-runs" and result.test_runs == ("b", "d")
    assert result.nested and result.repeats == ()
    summary = result.summary()
    assert summary["evaluation"] == "test-runs" and summary["n_test_runs"] == 2


def test_averaged_repeats_bring_r_towards_the_noise_ceiling():
    """Three test runs repeat one stimulus sequence (same design, fresh noise): their average
    has a third of the noise variance, and r approaches the ceiling of the averaged data."""
    rng = np.random.default_rng(2)
    n_features, n_voxels, n_per_run = 6, 40, 150
    weights = rng.standard_normal((n_features, n_voxels)) * 0.35
    train_X = [rng.standard_normal((n_per_run, n_features)) for _ in range(5)]
    test_X = rng.standard_normal((n_per_run, n_features))
    Xs = train_X + [test_X] * 3
    signals = [X @ weights for X in Xs]
    Ys = [s + rng.standard_normal(s.shape) for s in signals]
    test = [5, 6, 7]
    single = fit_encoding_model(Xs, Ys, ALPHAS, test_runs=test)
    averaged = fit_encoding_model(Xs, Ys, ALPHAS, test_runs=test, repeats=[test])
    assert averaged.evaluation == "test-runs-averaged"
    assert averaged.repeats == (("run 6", "run 7", "run 8"),)
    # noise ceilings: r of the true signal with one run's data, and with the average
    signal = signals[5]
    ceiling_single = score_correlation(
        np.concatenate([Ys[i] for i in test]), np.tile(signal, (3, 1))
    )
    ceiling_average = score_correlation(np.mean([Ys[i] for i in test], axis=0), signal)
    assert np.mean(ceiling_average) > np.mean(ceiling_single) + 0.1
    assert np.mean(averaged.r) > np.mean(single.r) + 0.1
    # each estimate stays below its ceiling (up to estimation noise) and close to it
    assert np.all(averaged.r <= ceiling_average + 0.03)
    assert np.mean(ceiling_average - averaged.r) < 0.03
    assert np.mean(ceiling_single - single.r) < 0.03
    with pytest.raises(ValueError, match="partition"):
        fit_encoding_model(Xs, Ys, ALPHAS, test_runs=test, repeats=[[5, 6]])


def test_session_folds_equal_runs_concatenated_per_session():
    Xs, Ys = _problem(n_runs=6, seed=3)
    sessions = ["1", "1", "2", "2", "3", "3"]
    best, scores = ridge_cv_alphas(Xs, Ys, ALPHAS, groups=sessions, dtype=torch.float64)
    merged = ridge_cv_alphas(
        [np.concatenate(Xs[i : i + 2]) for i in (0, 2, 4)],
        [np.concatenate(Ys[i : i + 2]) for i in (0, 2, 4)],
        ALPHAS,
        dtype=torch.float64,
    )
    np.testing.assert_array_equal(best, merged[0])
    np.testing.assert_allclose(scores, merged[1], atol=1e-12)
    result = fit_encoding_model(Xs, Ys, ALPHAS, cv_groups=sessions, cv_groups_name="session")
    assert result.cv_groups == "session" and result.nested
    with pytest.raises(DataError, match="leave-one-session-out needs at least 2 sessions"):
        fit_encoding_model(Xs, Ys, ALPHAS, cv_groups=["1"] * 6, cv_groups_name="session")


def test_held_out_scores_accumulate_like_the_pooled_formulas():
    rng = np.random.default_rng(4)
    Ys = [rng.standard_normal((30, 5)) + i for i in range(3)]
    Ps = [Y + rng.standard_normal(Y.shape) for Y in Ys]
    Ps[1][:, 4] = 2.0  # a constant prediction in one unit
    scores = HeldOutScores(5)
    for Y, P in zip(Ys, Ps, strict=True):  # two chunks of voxels
        scores.add(slice(0, 2), torch.as_tensor(Y[:, :2]), torch.as_tensor(P[:, :2]))
        scores.add(slice(2, 5), torch.as_tensor(Y[:, 2:]), torch.as_tensor(P[:, 2:]))
    z = [stats.zscore(P) for P in (Ps[0], Ps[2])]
    z.insert(1, np.column_stack([stats.zscore(Ps[1][:, :4]), np.zeros(30)]))
    expected = score_correlation(np.concatenate([stats.zscore(Y) for Y in Ys]), np.concatenate(z))
    np.testing.assert_allclose(scores.r, expected, atol=1e-12)
    np.testing.assert_allclose(scores.r2, score_r2(np.concatenate(Ys), np.concatenate(Ps)))


def _run(session, run, tmp="/tmp"):
    return Run("01", session, "x", run, None, "T1w", tmp, tmp, tmp, None, 2.0, 10)


def test_test_run_labels_sessions_and_names():
    runs = [_run("1", "1"), _run("1", "2"), _run("2", "1"), _run("2", "2")]
    assert select_test_runs(runs, ["ses-2"]) == [2, 3]
    assert select_test_runs(runs, ["sub-01_ses-1_task-x_run-2"]) == [1]
    assert select_test_runs(runs, ["run-1"]) == [0, 2]
    plain = [_run(None, str(i)) for i in range(1, 5)]
    assert select_test_runs(plain, ["4", "03"]) == [2, 3]
    with pytest.raises(UsageError) as info:
        select_test_runs(plain, ["7"], "sub-01_task-x")
    assert info.value.exit_code == 64
    assert str(info.value).startswith("--test-runs 7: no run of sub-01_task-x matches")
    with pytest.raises(UsageError, match="leaves 1 run"):
        select_test_runs(plain, ["1", "2", "3"])


def test_repeated_sequences_group_identical_events():
    def events(stims, onsets=(0.0, 4.0, 8.0)):
        return pd.DataFrame({"onset": onsets, "duration": 2.0, "stim_id": stims})

    same = events(["a", "b", None])
    table = [
        events(["x", "y", "z"]),
        same,
        events(["a", "b", None]),
        events(["a", "b", "c"]),
        events(["a", "b", None], onsets=(0.0, 4.0005, 8.0)),
    ]
    names = [f"run-{i}" for i in range(5)]
    assert repeated_sequences([1, 2, 3, 4], table, names) == [[1, 2, 4], [3]]
    with pytest.raises(DataError, match="no two test runs show the same stimuli"):
        repeated_sequences([0, 3], table, names)


def test_result_round_trip_keeps_the_evaluation(tmp_path):
    Xs, Ys = _problem(n_runs=4, n_voxels=6, seed=5)
    result = fit_encoding_model(Xs, Ys, ALPHAS, test_runs=[2, 3], repeats=[[2, 3]])
    loaded = EncodingResult.load(result.save(tmp_path / "result.npz"))
    assert loaded.evaluation == "test-runs-averaged"
    assert loaded.repeats == (("run 3", "run 4"),) and loaded.test_runs == ("run 3", "run 4")
    assert loaded.summary() == result.summary()
