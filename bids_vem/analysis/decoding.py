"""Caption decoding: from brain responses to a caption-embedding space, stimulus-disjoint.

Doerig et al. (2025) decode the sentence embedding of an image's captions from its fMRI
response and ask whether the predicted embedding picks out the image's own caption among many.
Here, per participant and run group:

1. each stimulus's response is the mean of its single-trial responses (z-scored per session
   first, :mod:`bids_vem.encoding.trialwise`), a pattern over the voxels of the mask;
2. the unique stimuli are dealt into folds (:func:`~bids_vem.encoding.stimulus_folds.
   deal_stimuli`): a stimulus is predicted by a model that never saw it, nor any of its
   repeats;
3. per fold, the voxels are z-scored over the training stimuli, and a linear kernel ridge
   (one penalty for the whole embedding, chosen by an inner stimulus-disjoint CV; the same
   model as himalaya's ``KernelRidgeCV(kernel="linear")``, its reference in the tests) maps
   responses to the embeddings, centred on the training stimuli's mean. Each fold's kernels
   are eigendecomposed once, so a refit for another pairing costs matrix products;
4. each predicted embedding ranks candidate caption embeddings by Pearson correlation: the
   captions of the fold's held-out stimuli plus an optional corpus of other captions
   (``--decode-corpus``), all as deviations from the training stimuli's mean. Rank 1 is a
   correct identification. Candidates are ranked within the fold because only there are they
   exchangeable: the fold's model saw none of them, and each fold's training mean excludes
   exactly them (ranking against other folds' captions would tilt every prediction away
   from its own caption, and shuffled data would rank below chance).

Figures: top-1 and top-5 accuracy and the mean rank, with their chance levels (1/N, 5/N and
(N + 1)/2 for N candidates, averaged over the stimuli), and a permutation test that pairs the
responses with shuffled embeddings and repeats the whole cross-validation, penalty choice
included: ``p = (1 + #{null >= observed}) / (1 + n_permutations)``. Relabelling the fixed
predictions would be cheaper but wrong: the folds of a K-fold CV share training stimuli, so
their identifications are correlated, and that null is too narrow (under random data, 13% of
its p-values fell below 0.05). The null ranks among each fold's held-out captions, without the
corpus.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bids_vem.encoding.stimulus_folds import deal_stimuli
from bids_vem.errors import DataError
from bids_vem.outputs.atomic import write_text_atomic

__all__ = [
    "DecodingResult",
    "decode_captions",
    "decode_embeddings",
    "identification_ranks",
    "DEFAULT_FOLDS",
]

#: folds of stimuli (each fold's model trains on the other 80%; its held-out captions are the candidates)
DEFAULT_FOLDS = 5
#: permutations of the null (each repeats the whole cross-validation)
DEFAULT_PERMUTATIONS = 100


@dataclass
class DecodingResult:
    """Identification of each stimulus's caption from its decoded embedding.

    Attributes
    ----------
    feature_space : str
        The caption-embedding space decoded.
    stim_ids : list of str
        The decoded stimuli.
    rank : list of int
        Per stimulus, the rank of its own caption embedding among the candidates (1 = best).
    best : list of str
        Per stimulus, the candidate ranked first (a stimulus id of its fold, or
        ``corpus:<row>``).
    n_candidates : int
        Candidates of the largest fold: its held-out captions plus the corpus's.
    n_corpus : int
    top1, top5, mean_rank : float
    chance_top1, chance_top5, chance_mean_rank : float
    p_top1, p_top5, p_mean_rank : float or None
        Permutation p-values (None without permutations).
    n_permutations : int
    n_folds : int
    n_voxels : int
    alphas : list of float
        The penalty each fold chose.
    captions : dict of str to str
        The caption of each stimulus and of each corpus caption ranked first (``corpus:<row>``),
        for the reports (filled by the caller that read them).
    """

    feature_space: str
    stim_ids: list[str]
    rank: list[int]
    best: list[str]
    n_candidates: int
    n_corpus: int
    top1: float
    top5: float
    mean_rank: float
    chance_top1: float
    chance_top5: float
    chance_mean_rank: float
    p_top1: float | None = None
    p_top5: float | None = None
    p_mean_rank: float | None = None
    n_permutations: int = 0
    n_folds: int = 0
    n_voxels: int = 0
    alphas: list[float] = field(default_factory=list)
    captions: dict[str, str] = field(default_factory=dict)

    def save(self, path: Path | str) -> Path:
        return write_text_atomic(Path(path), json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path | str) -> DecodingResult:
        return cls(**json.loads(Path(path).read_text()))


def _correlations(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Pearson correlation of every row of ``A`` with every row of ``B``."""
    A = A - A.mean(axis=1, keepdims=True)
    B = B - B.mean(axis=1, keepdims=True)
    A /= np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)
    B /= np.maximum(np.linalg.norm(B, axis=1, keepdims=True), 1e-12)
    return A @ B.T


def identification_ranks(
    predicted: np.ndarray, embeddings: np.ndarray, corpus: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Every prediction's rank of every stimulus's caption among all candidates.

    Parameters
    ----------
    predicted : ndarray of shape (n_stimuli, n_dims)
    embeddings : ndarray of shape (n_stimuli, n_dims)
        The stimuli's caption embeddings (candidates 0..n-1).
    corpus : ndarray of shape (n_corpus, n_dims), optional
        More candidates, read in chunks (a corpus of millions of captions fits).

    Returns
    -------
    ranks : ndarray of shape (n_stimuli, n_stimuli), int
        ``ranks[i, c]``: 1 + the candidates (stimuli and corpus) more correlated with
        prediction ``i`` than stimulus ``c``'s caption (ties count for ``c``); the diagonal
        is each stimulus's own rank.
    best : ndarray of shape (n_stimuli,), int
        Each prediction's most correlated candidate (``>= n_stimuli``: a corpus row).
    """
    from scipy.stats import rankdata

    own = _correlations(predicted, embeddings)
    ranks = rankdata(-own, method="min", axis=1).astype(np.int64)
    best = np.argmax(own, axis=1)
    best_value = own[np.arange(len(own)), best]
    if corpus is not None and len(corpus):
        n = len(own)
        step = max(1, 20_000_000 // max(1, n))
        for start in range(0, len(corpus), step):
            block = _correlations(predicted, np.asarray(corpus[start : start + step], np.float64))
            ordered = np.sort(block, axis=1)
            for i in range(n):
                ranks[i] += block.shape[1] - np.searchsorted(ordered[i], own[i], side="right")
            top = np.argmax(block, axis=1)
            value = block[np.arange(n), top]
            better = value > best_value
            best[better] = n + start + top[better]
            best_value[better] = value[better]
    return ranks, best


class _Centred:
    """A corpus read as deviations from ``centre``, chunk by chunk (no centred copy)."""

    def __init__(self, corpus: np.ndarray, centre: np.ndarray) -> None:
        self.corpus, self.centre = corpus, centre

    def __len__(self) -> int:
        return len(self.corpus)

    def __getitem__(self, rows: slice) -> np.ndarray:
        return np.asarray(self.corpus[rows], dtype=np.float64) - self.centre


class _FoldKernel:
    """The linear kernels of one outer fold and of its inner folds, eigendecomposed once, so
    that any pairing of responses and embeddings (the observed one, every permutation) is
    fitted by matrix products.

    Voxels are z-scored over the fold's training stimuli. The ridge has no intercept: the
    embeddings are centred on the training stimuli's mean, as in himalaya's
    ``KernelRidgeCV(kernel="linear")``; the inner CV chooses one penalty for the whole
    embedding (mean squared error over the inner folds' validation stimuli).
    """

    def __init__(self, R: np.ndarray, train: np.ndarray, test: np.ndarray, inner_folds: int):
        mean, std = R[train].mean(axis=0), R[train].std(axis=0)
        std[std == 0] = 1.0
        X_train, X_test = (R[train] - mean) / std, (R[test] - mean) / std
        K = X_train @ X_train.T
        self.train, self.test = train, test
        self.eigen = np.linalg.eigh(K)
        self.K_test = X_test @ X_train.T
        self.inner = []
        for val in np.array_split(np.arange(len(train)), inner_folds):
            fit = np.setdiff1d(np.arange(len(train)), val)
            self.inner.append((fit, val, np.linalg.eigh(K[np.ix_(fit, fit)]), K[np.ix_(val, fit)]))

    def fit_predict(
        self, T: np.ndarray, alphas: np.ndarray
    ) -> tuple[np.ndarray, float, np.ndarray]:
        """Predicted (centred) embeddings of the test stimuli, the chosen penalty and the
        training mean, for the embeddings ``T`` of all stimuli (in the fold's pairing)."""
        offset = T[self.train].mean(axis=0)
        Tc = T[self.train] - offset
        loss = np.zeros(len(alphas))
        for fit, val, (lam, U), K_val in self.inner:
            projected = U.T @ Tc[fit]
            left = K_val @ U
            for k, alpha in enumerate(alphas):
                predicted = left @ (projected / (lam + alpha)[:, None])
                loss[k] += np.mean((Tc[val] - predicted) ** 2)
        best = int(np.argmin(loss))
        lam, U = self.eigen
        dual = U @ ((U.T @ Tc) / (lam + alphas[best])[:, None])
        return self.K_test @ dual, float(alphas[best]), offset


def _inner_order(train: np.ndarray, stim_ids: Sequence[str]) -> np.ndarray:
    """The training stimuli in the order of their inner folds (dealt by id, seed-stable)."""
    ids = [stim_ids[i] for i in train]
    position = {s: k for k, s in enumerate(ids)}
    order = [position[s] for fold in deal_stimuli(ids, min(5, len(ids) // 2)) for s in fold]
    return train[np.asarray(order)]


def decode_embeddings(
    responses: np.ndarray,
    embeddings: np.ndarray,
    stim_ids: Sequence[str],
    *,
    alphas: Sequence[float],
    feature_space: str = "",
    corpus: np.ndarray | None = None,
    n_folds: int = DEFAULT_FOLDS,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> DecodingResult:
    """Decode caption embeddings from responses and identify each stimulus (module docstring).

    Parameters
    ----------
    responses : ndarray of shape (n_stimuli, n_voxels)
        One response pattern per unique stimulus.
    embeddings : ndarray of shape (n_stimuli, n_dims)
        Each stimulus's caption embedding, in the same order.
    stim_ids : sequence of str
    alphas : sequence of float
        Penalty grid of the kernel ridge.
    feature_space : str
        The embedding space's name (recorded).
    corpus : ndarray of shape (n_corpus, n_dims), optional
        More candidate captions, embedded by the same model.
    n_folds : int
        Folds of stimuli (at least 2 stimuli per fold).
    n_permutations : int
        Permutations of the null (0: none): each pairs the responses with shuffled
        embeddings and repeats the whole cross-validation, penalty choice included.
    seed : int
        Seed of the permutations.

    Returns
    -------
    DecodingResult

    Raises
    ------
    DataError
        Fewer than 10 stimuli, or responses and embeddings that do not pair up.
    """
    R = np.asarray(responses, dtype=np.float64)
    T = np.asarray(embeddings, dtype=np.float64)
    alphas = np.asarray(alphas, dtype=np.float64)
    stim_ids = [str(s) for s in stim_ids]
    n = len(stim_ids)
    if R.shape[0] != n or T.shape[0] != n:
        raise ValueError(f"{R.shape[0]} responses, {T.shape[0]} embeddings, {n} stimuli")
    if n < 10:
        raise DataError(f"caption decoding needs at least 10 stimuli; found {n}")
    n_folds = max(2, min(n_folds, n // 2))
    index = {s: i for i, s in enumerate(stim_ids)}
    folds = [np.array([index[s] for s in fold]) for fold in deal_stimuli(stim_ids, n_folds)]
    kernels = []
    for test in folds:
        train = _inner_order(np.setdiff1d(np.arange(n), test), stim_ids)
        kernels.append(_FoldKernel(R, train, test, min(5, len(train) // 2)))

    def ranks_of(T_paired: np.ndarray, with_corpus: bool):
        """Per fold, every prediction's rank of every held-out caption, and the best
        candidates; the penalties chosen."""
        out, chosen = [], []
        for kernel in kernels:
            predicted, alpha, offset = kernel.fit_predict(T_paired, alphas)
            source = _Centred(corpus, offset) if with_corpus and corpus is not None else None
            out.append(identification_ranks(predicted, T_paired[kernel.test] - offset, source))
            chosen.append(alpha)
        return out, chosen

    def figures(ranks: np.ndarray) -> tuple[float, float, float]:
        return float(np.mean(ranks == 1)), float(np.mean(ranks <= 5)), float(np.mean(ranks))

    observed, chosen = ranks_of(T, True)
    rank = np.zeros(n, dtype=np.int64)
    best = [""] * n
    for kernel, (ranks, best_index) in zip(kernels, observed, strict=True):
        rank[kernel.test] = np.diag(ranks)
        for i, j in zip(kernel.test, best_index, strict=True):
            m = len(kernel.test)
            best[i] = stim_ids[kernel.test[j]] if j < m else f"corpus:{j - m}"
    n_corpus = 0 if corpus is None else len(corpus)
    # chance per stimulus: its fold's held-out captions plus the corpus
    size = np.zeros(n)
    for kernel in kernels:
        size[kernel.test] = len(kernel.test) + n_corpus
    top1, top5, mean_rank = figures(rank)
    p = [None, None, None]
    if n_permutations:
        # the whole cross-validation again with shuffled pairings: folds of a K-fold CV share
        # training stimuli, so their identifications are correlated; relabelling fixed
        # predictions would ignore that and give too small p-values. The null ranks among
        # the held-out captions only (the corpus would cost n_corpus per permutation), so it
        # tests the figures without the corpus.
        within, _ = (observed, None) if not n_corpus else ranks_of(T, False)
        stats = figures(np.concatenate([np.diag(r) for r, _ in within]))
        rng = np.random.default_rng(seed)
        null = []
        for _ in tqdm(range(n_permutations), desc="decoding null", unit="perm", disable=None,
                      leave=False):  # fmt: skip
            shuffled, _ = ranks_of(T[rng.permutation(n)], False)
            null.append(figures(np.concatenate([np.diag(r) for r, _ in shuffled])))
        null = np.asarray(null)
        p = [
            float((1 + np.sum(null[:, 0] >= stats[0])) / (1 + n_permutations)),
            float((1 + np.sum(null[:, 1] >= stats[1])) / (1 + n_permutations)),
            float((1 + np.sum(null[:, 2] <= stats[2])) / (1 + n_permutations)),
        ]
    return DecodingResult(
        feature_space=feature_space,
        stim_ids=stim_ids,
        rank=[int(r) for r in rank],
        best=best,
        n_candidates=int(np.max(size)),
        n_corpus=int(n_corpus),
        top1=top1,
        top5=top5,
        mean_rank=mean_rank,
        chance_top1=float(np.mean(1.0 / size)),
        chance_top5=float(np.mean(np.minimum(1.0, 5.0 / size))),
        chance_mean_rank=float(np.mean((size + 1) / 2.0)),
        p_top1=p[0],
        p_top5=p[1],
        p_mean_rank=p[2],
        n_permutations=int(n_permutations),
        n_folds=int(n_folds),
        n_voxels=int(R.shape[1]),
        alphas=chosen,
    )


def decode_captions(
    runs_or_betas,
    feature_set,
    *,
    alphas: Sequence[float],
    corpus: np.ndarray | None = None,
    n_folds: int = DEFAULT_FOLDS,
    n_permutations: int = 100,
    seed: int = 0,
    **betas_options,
) -> DecodingResult:
    """Caption decoding of one participant's run group from single-trial responses.

    Trials come from :func:`~bids_vem.encoding.trialwise.load_trial_betas` (LSS from the runs,
    or the user's betas; ``betas_options`` go there), z-scored per session and averaged per
    stimulus (all repeats: the folds are of stimuli).

    Returns
    -------
    DecodingResult
    """
    from bids_vem.encoding.trialwise import average_repeats, load_trial_betas, zscore_per_session

    trial_betas = load_trial_betas(runs_or_betas, feature_set.stim_ids, **betas_options)
    stim_ids = [str(s) for s in trial_betas.trials["stim_id"]]
    ids, responses, _ = average_repeats(zscore_per_session(trial_betas), stim_ids)
    return decode_embeddings(
        responses, feature_set.rows(ids), ids, alphas=alphas, feature_space=feature_set.name,
        corpus=corpus, n_folds=n_folds, n_permutations=n_permutations, seed=seed,
    )  # fmt: skip
