"""The ridge solver against himalaya and scikit-learn, and against itself (primal/dual, chunks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from himalaya.ridge import RidgeCV
from himalaya.scoring import correlation_score, r2_score
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score as sk_r2_score

from bids_vem.encoding.ridge import (
    fit_ridge,
    ridge_cv_alphas,
    ridge_predict,
    score_correlation,
    score_r2,
)

ALPHAS = np.logspace(-2, 7, 19)


def _problem(n_runs=4, n_per_run=90, n_features=24, n_voxels=400, seed=0):
    """Correlated features, voxels whose signal-to-noise ratio spans four decades."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((n_features, n_features)) / np.sqrt(n_features)
    mixing += np.eye(n_features)
    Xs = [rng.standard_normal((n_per_run, n_features)) @ mixing for _ in range(n_runs)]
    weights = rng.standard_normal((n_features, n_voxels)) * np.logspace(-2.5, 0.5, n_voxels)
    Ys = [X @ weights + rng.standard_normal((n_per_run, n_voxels)) for X in Xs]
    return Xs, Ys


def _loro_splits(Xs):
    groups = np.concatenate([np.full(len(X), i) for i, X in enumerate(Xs)])
    index = np.arange(len(groups))
    return [(index[groups != k], index[groups == k]) for k in range(len(Xs))]


@pytest.mark.filterwarnings("ignore:Solving ridge is slower")
@pytest.mark.parametrize(
    ("n_per_run", "n_features"),
    [(90, 24), (30, 140)],  # primal (n > p) and dual (n < p) training designs
)
def test_alpha_selection_and_predictions_agree_with_himalaya(n_per_run, n_features):
    Xs, Ys = _problem(n_per_run=n_per_run, n_features=n_features)
    best, cv_scores = ridge_cv_alphas(Xs, Ys, ALPHAS)  # float32 voxel products
    X, Y = np.concatenate(Xs), np.concatenate(Ys)
    reference = RidgeCV(
        alphas=ALPHAS,
        cv=_loro_splits(Xs),
        solver_params=dict(score_func=correlation_score, local_alpha=True),
    ).fit(X, Y)
    same = np.isclose(best, reference.best_alphas_, rtol=1e-6)
    assert same.mean() >= 0.99
    assert 3 <= len(np.unique(best))  # the problem makes voxels choose different penalties
    # himalaya's cv_scores_ is the mean score of the chosen penalty (+1e-10 log alpha)
    np.testing.assert_allclose(cv_scores.max(0), reference.cv_scores_, atol=1e-5)
    X_new = np.random.default_rng(9).standard_normal((20, n_features))
    ours = X_new @ fit_ridge(X, Y, reference.best_alphas_)
    np.testing.assert_allclose(ours, reference.predict(X_new), rtol=1e-4, atol=1e-4)


def test_float64_selection_is_identical_to_himalaya_and_r2_scoring_too():
    Xs, Ys = _problem(seed=1)
    X, Y = np.concatenate(Xs), np.concatenate(Ys)
    for score, score_func in (("correlation", correlation_score), ("r2", r2_score)):
        best, _ = ridge_cv_alphas(Xs, Ys, ALPHAS, score=score, dtype=torch.float64)
        reference = RidgeCV(
            alphas=ALPHAS,
            cv=_loro_splits(Xs),
            solver_params=dict(score_func=score_func, local_alpha=True),
        ).fit(X, Y)
        np.testing.assert_allclose(best, reference.best_alphas_, rtol=1e-9)


@pytest.mark.parametrize("shape", [(200, 15), (25, 60)])
def test_fit_ridge_equals_sklearn_ridge(shape, device):
    rng = np.random.default_rng(2)
    X = rng.standard_normal(shape)
    Y = rng.standard_normal((shape[0], 7))
    for alpha in (0.01, 3.0, 1e4):
        expected = Ridge(alpha=alpha, fit_intercept=False).fit(X, Y).coef_.T
        np.testing.assert_allclose(
            fit_ridge(X, Y, alpha, device=device), expected, rtol=1e-4, atol=1e-6
        )
    # one penalty per voxel: each column as sklearn with that voxel's penalty
    per_voxel = np.array([0.1, 1, 10, 100, 1e3, 1e4, 0.1])
    weights = fit_ridge(X, Y, per_voxel, device=device)
    for v, alpha in enumerate(per_voxel):
        expected = Ridge(alpha=alpha, fit_intercept=False).fit(X, Y[:, v]).coef_
        np.testing.assert_allclose(weights[:, v], expected, rtol=1e-4, atol=1e-6)


def test_primal_and_dual_forms_agree():
    Xs, Ys = _problem(n_per_run=40, n_features=50, n_voxels=120, seed=4)
    primal = ridge_cv_alphas(Xs, Ys, ALPHAS, primal=True, dtype=torch.float64)
    dual = ridge_cv_alphas(Xs, Ys, ALPHAS, primal=False, dtype=torch.float64)
    np.testing.assert_array_equal(primal[0], dual[0])
    np.testing.assert_allclose(primal[1], dual[1], atol=1e-8)
    X, Y = np.concatenate(Xs), np.concatenate(Ys)
    alpha = primal[0]
    np.testing.assert_allclose(
        fit_ridge(X, Y, alpha, primal=True), fit_ridge(X, Y, alpha, primal=False), atol=1e-5
    )
    np.testing.assert_allclose(
        ridge_predict(X[:100], Y[:100], X[100:], alpha, primal=True),
        ridge_predict(X[:100], Y[:100], X[100:], alpha, primal=False),
        atol=1e-4,
    )


def test_voxel_chunks_do_not_change_results(device):
    Xs, Ys = _problem(n_voxels=203, seed=5)
    whole = ridge_cv_alphas(Xs, Ys, ALPHAS, device=device)
    chunked = ridge_cv_alphas(Xs, Ys, ALPHAS, n_voxels_chunk=17, device=device)
    np.testing.assert_array_equal(whole[0], chunked[0])
    np.testing.assert_allclose(whole[1], chunked[1], atol=1e-6)
    X, Y = np.concatenate(Xs), np.concatenate(Ys)
    np.testing.assert_allclose(
        fit_ridge(X, Y, whole[0]), fit_ridge(X, Y, whole[0], n_voxels_chunk=10), atol=1e-6
    )


def test_ridge_predict_is_x_test_times_weights():
    Xs, Ys = _problem(seed=6)
    X, Y = np.concatenate(Xs[:3]), np.concatenate(Ys[:3])
    alpha = np.geomspace(0.1, 1e5, Y.shape[1])
    np.testing.assert_allclose(
        ridge_predict(X, Y, Xs[3], alpha), Xs[3] @ fit_ridge(X, Y, alpha), rtol=1e-4, atol=1e-4
    )


def test_constant_voxel_takes_the_largest_penalty_and_scores_zero():
    Xs, Ys = _problem(n_voxels=5, seed=7)
    Ys = [np.column_stack([Y, np.zeros(len(Y))]) for Y in Ys]
    best, cv_scores = ridge_cv_alphas(Xs, Ys, ALPHAS)
    assert best[-1] == ALPHAS.max()
    assert np.all(cv_scores[:, -1] == 0)


def test_scores_match_numpy_and_sklearn():
    rng = np.random.default_rng(8)
    Y = rng.standard_normal((50, 6))
    Y_pred = Y + rng.standard_normal((50, 6))
    Y_pred[:, 5] = 1.0  # constant prediction
    r = score_correlation(Y, Y_pred)
    expected = [np.corrcoef(Y[:, v], Y_pred[:, v])[0, 1] for v in range(5)]
    np.testing.assert_allclose(r[:5], expected, atol=1e-12)
    assert r[5] == 0
    np.testing.assert_allclose(
        score_r2(Y, Y_pred), sk_r2_score(Y, Y_pred, multioutput="raw_values"), atol=1e-12
    )
    Y[:, 0] = 2.0
    assert score_r2(Y, Y_pred)[0] == 0 and score_correlation(Y, Y_pred)[0] == 0


def test_bad_arguments_are_refused():
    Xs, Ys = _problem(n_voxels=3)
    with pytest.raises(ValueError, match="at least 2 blocks"):
        ridge_cv_alphas(Xs[:1], Ys[:1], ALPHAS)
    with pytest.raises(ValueError, match="positive"):
        ridge_cv_alphas(Xs, Ys, [1.0, -1.0])
    with pytest.raises(ValueError, match="score"):
        ridge_cv_alphas(Xs, Ys, ALPHAS, score="mse")
    with pytest.raises(ValueError, match="shape"):
        fit_ridge(Xs[0], Ys[0], np.ones(4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    Xs, Ys = _problem(seed=10)
    cpu = ridge_cv_alphas(Xs, Ys, ALPHAS, device="cpu")
    gpu = ridge_cv_alphas(Xs, Ys, ALPHAS, device="cuda")
    assert np.isclose(cpu[0], gpu[0]).mean() >= 0.99
    np.testing.assert_allclose(cpu[1], gpu[1], atol=1e-4)
    X, Y = np.concatenate(Xs), np.concatenate(Ys)
    np.testing.assert_allclose(
        fit_ridge(X, Y, cpu[0], "cpu"), fit_ridge(X, Y, cpu[0], "cuda"), rtol=1e-3, atol=1e-4
    )
