"""Leave-one-group-out and nested leave-one-group-out from one decomposition, against refits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

from bids_vem.encoding.logo import NestedLeaveOneGroupOut


def _refit(X, Y, train, test, alpha):
    """scikit-learn's ridge without intercept, fitted on rows ``train``, predicting ``test``."""
    model = Ridge(alpha=alpha, fit_intercept=False, solver="cholesky").fit(X[train], Y[train])
    return model.predict(X[test])


def _correlation(y, p):
    y, p = y - y.mean(0), p - p.mean(0)
    return (y * p).sum(0) / np.sqrt((y * y).sum(0) * (p * p).sum(0))


def _r2(y, p):
    return 1 - ((y - p) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)


@pytest.mark.parametrize("n_features", [90, 12], ids=["dual", "primal"])
@pytest.mark.parametrize("score", ["correlation", "r2"])
def test_nested_scores_and_predictions_equal_refitting_every_fold(n_features, score):
    rng = np.random.default_rng(0)
    sizes = [14, 20, 11, 17]  # unequal groups
    n = sum(sizes)
    X = rng.standard_normal((n, n_features))
    Y = X @ rng.standard_normal((n_features, 6)) * 0.3 + rng.standard_normal((n, 6))
    bounds = np.cumsum([0, *sizes])
    rows = [np.arange(bounds[g], bounds[g + 1]) for g in range(len(sizes))]
    engine = NestedLeaveOneGroupOut(torch.as_tensor(X), sizes)
    assert engine.primal == (n_features < n)
    coefs = engine.coefficients(torch.as_tensor(Y))
    data = engine.group_data(torch.as_tensor(Y))
    metric = _correlation if score == "correlation" else _r2
    # 1e-3: in the dual the model nearly interpolates, (I - H) is nearly singular
    for alpha in (1e-3, 1.0, 1e3):
        outer, inner = engine.scores(data, coefs, engine.operators(alpha), score)
        for h, test in enumerate(rows):
            others = np.concatenate([rows[g] for g in range(len(sizes)) if g != h])
            expected = _refit(X, Y, others, test, alpha)
            held = engine.held_out_at(torch.as_tensor(Y), coefs, h, alpha).numpy()
            np.testing.assert_allclose(held, expected, atol=1e-8)
            np.testing.assert_allclose(outer[h].numpy(), metric(Y[test], expected), atol=1e-8)
            # the inner CV of outer fold h: each other group predicted without it and h
            total = 0.0
            for g, inner_test in enumerate(rows):
                if g != h:
                    train = np.concatenate([rows[k] for k in range(len(sizes)) if k not in (g, h)])
                    total = total + metric(Y[inner_test], _refit(X, Y, train, inner_test, alpha))
            np.testing.assert_allclose(inner[h].numpy(), total, atol=1e-7)


def test_nested_needs_three_groups_and_matching_sizes():
    X = torch.zeros((10, 3), dtype=torch.float64)
    with pytest.raises(ValueError, match="at least 3 groups"):
        NestedLeaveOneGroupOut(X, [5, 5])
    with pytest.raises(ValueError, match="do not add up to 10"):
        NestedLeaveOneGroupOut(X, [3, 3, 3])
