"""Caption decoding: a decodable planted embedding is identified far above chance; shuffled
brain data, and embeddings the brain does not carry, stay at chance."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from bids_vem.analysis.decoding import (
    DecodingResult,
    _FoldKernel,
    decode_embeddings,
    identification_ranks,
)

ALPHAS = np.logspace(-3, 5, 9)


def _planted(n_stimuli=120, n_voxels=300, n_dims=32, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    embeddings = rng.standard_normal((n_stimuli, n_dims))
    mixing = rng.standard_normal((n_dims, n_voxels)) / np.sqrt(n_dims)
    responses = embeddings @ mixing + noise * rng.standard_normal((n_stimuli, n_voxels))
    ids = [f"im{i:03d}" for i in range(n_stimuli)]
    return responses, embeddings, ids, rng


def test_ranks_match_a_direct_count_with_and_without_a_corpus():
    rng = np.random.default_rng(3)
    predicted, embeddings = rng.standard_normal((8, 5)), rng.standard_normal((8, 5))
    corpus = rng.standard_normal((50, 5))
    ranks, best = identification_ranks(predicted, embeddings, corpus)
    candidates = np.vstack([embeddings, corpus])
    sim = np.corrcoef(predicted, candidates)[:8, 8:]
    for i in range(8):
        expected = rankdata(-sim[i], method="min")[:8]
        np.testing.assert_array_equal(ranks[i], expected)
    np.testing.assert_array_equal(best, np.argmax(sim, axis=1))


def test_a_planted_embedding_is_identified_far_above_chance():
    responses, embeddings, ids, _ = _planted()
    result = decode_embeddings(responses, embeddings, ids, alphas=ALPHAS, n_permutations=200)
    # 5 folds of 24: each stimulus ranks its caption among its fold's 24
    assert result.n_folds == 5 and result.chance_top1 == pytest.approx(1 / 24)
    assert result.top1 > 0.5 and result.top5 > 0.8
    assert result.mean_rank < 3 < result.chance_mean_rank == 12.5
    assert result.p_top1 == result.p_mean_rank == 1 / 201
    # the identification is of held-out stimuli: every stimulus decoded once
    assert sorted(result.stim_ids) == ids and len(result.rank) == 120


def test_shuffled_brain_data_and_unrelated_embeddings_are_at_chance():
    responses, embeddings, ids, rng = _planted(seed=1)
    shuffled = responses[rng.permutation(len(ids))]
    for brain, target in (
        (shuffled, embeddings),
        (responses, rng.standard_normal(embeddings.shape)),
    ):
        result = decode_embeddings(brain, target, ids, alphas=ALPHAS, n_permutations=200)
        assert result.top1 < 0.06
        assert abs(result.mean_rank - result.chance_mean_rank) < 3
        assert result.p_mean_rank > 0.01


def test_a_corpus_of_distractors_makes_identification_harder(tmp_path):
    responses, embeddings, ids, rng = _planted(noise=2.0, seed=2)
    corpus = rng.standard_normal((2000, embeddings.shape[1]))
    alone = decode_embeddings(responses, embeddings, ids, alphas=ALPHAS, n_permutations=0)
    with_corpus = decode_embeddings(
        responses, embeddings, ids, alphas=ALPHAS, corpus=corpus, n_permutations=50
    )
    assert with_corpus.n_candidates == 2024 and with_corpus.n_corpus == 2000
    assert np.all(np.asarray(with_corpus.rank) >= np.asarray(alone.rank))
    assert with_corpus.mean_rank > alone.mean_rank
    assert with_corpus.top1 > 10 * with_corpus.chance_top1
    assert any(b.startswith("corpus:") for b in with_corpus.best)
    back = DecodingResult.load(with_corpus.save(tmp_path / "decoding.json"))
    assert back == with_corpus


def test_the_fold_kernel_ridge_is_himalayas_kernel_ridge():
    """The eigendecomposed kernel ridge gives himalaya's KernelRidge predictions for the
    penalty its inner CV chose, and that penalty is the one with the lowest inner error."""
    from himalaya.backend import set_backend
    from himalaya.kernel_ridge import KernelRidge

    responses, embeddings, _, _ = _planted(n_stimuli=60, seed=5)
    train, test = np.arange(12, 60), np.arange(12)
    kernel = _FoldKernel(responses, train, test, 4)
    predicted, alpha, offset = kernel.fit_predict(embeddings, ALPHAS)
    np.testing.assert_allclose(offset, embeddings[train].mean(0))
    mean, std = responses[train].mean(0), responses[train].std(0)
    backend = set_backend("numpy")
    model = KernelRidge(alpha=alpha, kernel="linear").fit(
        (responses[train] - mean) / std, embeddings[train] - offset
    )
    reference = backend.to_numpy(model.predict((responses[test] - mean) / std))
    np.testing.assert_allclose(predicted, reference, rtol=1e-6, atol=1e-8)
    errors = []
    for candidate in ALPHAS:
        loss = 0.0
        for val in np.array_split(np.arange(48), 4):
            fit = np.setdiff1d(np.arange(48), val)
            X = (responses[train] - mean) / std
            m = KernelRidge(alpha=candidate, kernel="linear").fit(
                X[fit], (embeddings[train] - offset)[fit]
            )
            loss += np.mean(
                ((embeddings[train] - offset)[val] - backend.to_numpy(m.predict(X[val]))) ** 2
            )
        errors.append(loss)
    assert alpha == ALPHAS[int(np.argmin(errors))]


def test_the_permutation_null_holds_its_level_on_random_data():
    """Random responses and embeddings, 60 datasets: the refitted null's p-values are not
    below 0.05 more often than chance allows (binomial 95% bound for 60 draws at 0.05: 7)."""
    p_values = []
    for seed in range(60):
        rng = np.random.default_rng(100 + seed)
        result = decode_embeddings(
            rng.standard_normal((40, 60)), rng.standard_normal((40, 8)),
            [f"s{i}" for i in range(40)], alphas=ALPHAS, n_permutations=40, seed=seed,
        )  # fmt: skip
        p_values.append(result.p_mean_rank)
    assert np.sum(np.asarray(p_values) < 0.05) <= 7
