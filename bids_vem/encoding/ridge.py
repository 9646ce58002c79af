# Longer than 500 lines: one solver: eigendecompositions, primal/dual forms, chunked CV and scoring.
"""Ridge regression with one penalty per voxel, cross-validated over runs (torch, CPU or CUDA).

The solver is a set of pure functions over arrays: numpy in, numpy out, torch inside. Voxel
data come as per-run arrays or as any :class:`~bids_vem.encoding.voxel_data.VoxelData` (e.g.
a :class:`~bids_vem.encoding.voxel_data.VoxelStore` on disk): they are read one voxel chunk
at a time, so memory is set by the chunk, not by the number of voxels.

One eigendecomposition of the training design per fold serves every penalty and every voxel.
With ``X`` of shape (n_samples, n_features) and ``r = min(n_samples, n_features)``:

- primal (``n_samples >= n_features``): ``X^T X = V diag(lam) V^T``, ``L = X V``, ``F = V``;
- dual (``n_samples < n_features``): ``X X^T = U diag(lam) U^T``, ``L = U``, ``F = X^T U``;

and in both cases the ridge weights for penalty ``alpha`` are ``W = F diag(1 / (lam + alpha)) L^T Y``
(shape (n_features, n_voxels)), so a held-out prediction is ``A diag(s) C`` with
``A = X_test F`` (n_test, r), ``s = 1 / (lam + alpha)`` and ``C = L^T Y`` (r, n_voxels): one
product ``C`` per fold (``2 n r v`` flops) and one ``(n_test, r) x (r, v)`` product per penalty.

Scores come from moments, not from stored predictions. With ``A = Q R`` (``Q`` orthonormal,
(n_test, m), ``m = min(n_test, r)``), the predictions ``A S C = Q (R S C)`` live in the span
of ``Q``: per penalty, ``R S C`` (m, n_voxels_chunk) is formed (``2 m r v`` flops, fewer than
``2 n_test r v`` when ``r < n_test``) and reduced to ``sum(p^2)`` and ``sum(y p)`` (with
``Q^T y``) along contiguous rows, so that a voxel's score does not depend on the chunk it is
in; ``sum(p)`` is the small product ``(S A^T 1)^T C``. The moments are combined in float64.
The decomposition (size ``r``, independent of the number
of voxels) is done in float64; the products with voxel data in ``dtype`` (float32 by default).

Objective (no intercept: designs and BOLD are z-scored per run)::

    W = argmin ||X W - Y||^2 + alpha ||W||^2        (alpha per column of Y)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bids_vem.encoding.chunks import ChunkPlan, voxel_chunk_for_memory
from bids_vem.encoding.device import resolve_device
from bids_vem.encoding.nuisance import project_out, training_basis
from bids_vem.encoding.voxel_data import VoxelData, as_voxel_data

__all__ = [
    "Split",
    "ridge_cv_alphas",
    "ridge_cv_splits",
    "fit_ridge",
    "ridge_predict",
    "score_correlation",
    "score_r2",
    "leave_one_group_out",
    "read_selection",
    "solve_chunks",
]

#: scores are nudged by this times log(alpha) before the argmax, as in himalaya: among penalties
#: whose mean CV scores tie (to ~1e-10), the largest (simplest model) is chosen
TIE_SLOPE = 1e-10

#: a prediction whose variance is below this fraction of its mean square is constant up to
#: rounding (float32 / float64 products): its correlation is 0, as for an exactly constant one
_CONSTANT_TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


@dataclass(frozen=True)
class _Decomposition:
    """Eigen-decomposition of one training design (see the module docstring)."""

    eigenvalues: torch.Tensor  # (r,) float64, >= 0
    left: torch.Tensor  # L: (n_samples, r), dtype (multiplies voxel data)
    to_features: torch.Tensor  # F: (n_features, r), float64
    primal: bool


#: on CPU, matrices with up to this many columns are factorised by one thread
_SERIAL_EIGH_MAX = 1024


def _serial_cpu(function: Callable, matrix: torch.Tensor, max_size: int = _SERIAL_EIGH_MAX):
    """``function(matrix)``, single-threaded on CPU for matrices up to 1024 columns.

    LAPACK's factorisations (eigh, QR) synchronise their threads at every column: on a CPU
    shared with other processes, 2 threads took 7 s where 1 thread took 0.03 s (eigh,
    r = 512, measured on the 2-core development machine), and on a quiet machine threads
    gain little at this size.
    """
    threads = torch.get_num_threads()
    if matrix.device.type != "cpu" or matrix.shape[-1] > max_size or threads == 1:
        return function(matrix)
    torch.set_num_threads(1)
    try:
        return function(matrix)
    finally:
        torch.set_num_threads(threads)


#: the last eigendecompositions, by the content of their design: nested CV decomposes an outer
#: fold's training design for its inner CV (:mod:`bids_vem.encoding.logo`) and again to refit
_EIGH_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
_EIGH_CACHE_SIZE = 2


def gram_eigh(X64: torch.Tensor, primal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (clamped at 0) and eigenvectors of ``X^T X`` (primal) or ``X X^T``, float64;
    the last two designs' are kept (keyed by their bytes) and not computed again."""
    data = X64.detach().cpu().numpy()
    key = (
        primal,
        data.shape,
        str(X64.device),
        hashlib.blake2b(data.tobytes(), digest_size=16).digest(),
    )
    if key not in _EIGH_CACHE:
        gram = X64.T @ X64 if primal else X64 @ X64.T
        eigenvalues, vectors = _serial_cpu(torch.linalg.eigh, gram)
        # rounding can leave tiny negative eigenvalues of a positive semi-definite matrix
        while len(_EIGH_CACHE) >= _EIGH_CACHE_SIZE:
            _EIGH_CACHE.pop(next(iter(_EIGH_CACHE)))
        _EIGH_CACHE[key] = (eigenvalues.clamp_min(0.0), vectors)
    return _EIGH_CACHE[key]


def _decompose(X: torch.Tensor, dtype: torch.dtype, primal: bool | None = None) -> _Decomposition:
    """Decompose ``X`` (n_samples, n_features), choosing primal or dual by the smaller dimension."""
    X64 = X.to(torch.float64)
    n_samples, n_features = X64.shape
    if primal is None:
        primal = n_samples >= n_features
    eigenvalues, vectors = gram_eigh(X64, primal)
    if primal:
        left, to_features = X64 @ vectors, vectors
    else:
        left, to_features = vectors, X64.T @ vectors
    return _Decomposition(eigenvalues, left.to(dtype), to_features, primal)


def _check_alphas(alphas) -> np.ndarray:
    alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if alphas.ndim != 1 or alphas.size == 0:
        raise ValueError("alphas must be a non-empty 1-D sequence")
    if not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
        raise ValueError(f"alphas must be positive and finite, got {alphas.tolist()}")
    return alphas


def _check_blocks(Xs: Sequence[np.ndarray], data: VoxelData) -> tuple[int, int]:
    if len(Xs) != data.n_runs:
        raise ValueError(f"{len(Xs)} design blocks but {data.n_runs} data blocks")
    if len(Xs) < 2:
        raise ValueError(f"leave-one-block-out needs at least 2 blocks, got {len(Xs)}")
    n_features = {np.shape(X)[1] for X in Xs}
    if len(n_features) != 1:
        raise ValueError(f"blocks disagree: n_features {sorted(n_features)}")
    for i, (X, n) in enumerate(zip(Xs, data.run_lengths, strict=True)):
        if np.ndim(X) != 2 or len(X) != n:
            raise ValueError(
                f"block {i}: X {np.shape(X)} and Y ({n}, {data.n_voxels}) do not pair up"
            )
    return n_features.pop(), data.n_voxels


def leave_one_group_out(n_blocks: int, groups: Sequence[Hashable] | None = None) -> list[list[int]]:
    """Test blocks of each fold: one block per fold, or all blocks of one group per fold.

    Parameters
    ----------
    n_blocks : int
    groups : sequence of hashable, optional
        Label of each block (e.g. its session); folds follow the order of first appearance.

    Returns
    -------
    list of list of int
        Indices of the held-out blocks of each fold.
    """
    if groups is None:
        return [[i] for i in range(n_blocks)]
    groups = list(groups)
    if len(groups) != n_blocks:
        raise ValueError(f"{len(groups)} group labels for {n_blocks} blocks")
    order = list(dict.fromkeys(groups))
    return [[i for i, g in enumerate(groups) if g == label] for label in order]


def _chunk_plan(
    chunks: ChunkPlan | None,
    n_voxels_chunk: int | None,
    *,
    n_samples: int,
    n_features: int,
    n_alphas: int,
    n_voxels: int,
    dtype: torch.dtype,
) -> ChunkPlan:
    if chunks is not None:
        return chunks
    if n_voxels_chunk is not None:
        return ChunkPlan(n_voxels_chunk)
    itemsize = torch.empty((), dtype=dtype).element_size()
    return ChunkPlan(
        voxel_chunk_for_memory(
            None,
            n_samples=n_samples,
            n_features=n_features,
            n_alphas=n_alphas,
            n_voxels=n_voxels,
            itemsize=itemsize,
        )
    )


def _to_device(a: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a)).to(device=device, dtype=dtype)


#: samples of a fit: whole blocks (an int), or some rows of a block (block, row indices)
Selection = Sequence["int | tuple[int, np.ndarray]"]


def _parts(selection: Selection) -> list[tuple[int, np.ndarray | None]]:
    return [
        (int(s[0]), np.asarray(s[1])) if isinstance(s, tuple) else (int(s), None) for s in selection
    ]


def selection_length(run_lengths: Sequence[int], selection: Selection) -> int:
    """Number of samples a selection holds."""
    return sum(run_lengths[b] if rows is None else len(rows) for b, rows in _parts(selection))


def stack_designs(
    Xs: Sequence[np.ndarray],
    selection: Selection,
    *,
    training: bool = False,
    nuisance: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """The design rows of a selection, stacked.

    With ``training``, the rows taken from part of a block are centred, or residualised
    against the block's ``nuisance`` on those rows (the data's ``nuisance``; see
    :func:`read_selection`).
    """
    out = []
    for b, rows in _parts(selection):
        X = np.asarray(Xs[b])
        if rows is not None:
            X = X[rows]
            if training:
                basis = training_basis(None if nuisance is None else nuisance[b], rows)
                if basis is None:
                    X = X - X.mean(axis=0, dtype=np.float64).astype(X.dtype)
                else:
                    X = project_out(X, basis)
        out.append(X)
    return np.concatenate(out)


def read_selection(
    data: VoxelData,
    selection: Selection,
    part: slice,
    device: torch.device,
    dtype: torch.dtype,
    *,
    training: bool = False,
) -> torch.Tensor:
    """The chunk ``part`` of the selected samples, stacked: (n_samples, n_voxels_chunk).

    With ``training``, the rows taken from part of a block are centred. Whole blocks are
    z-scored already; but a block's z-scoring (data) and its design's (features) include the
    samples a stimulus fold holds out, and through the two means a model without intercept
    would learn the held-out stimuli's responses. Centring the training rows of each block on
    their own removes them (an intercept per block fitted on training rows only). When the
    data carry a ``nuisance`` (confounds and drifts projected out of data and designs over
    the whole block), the training rows are residualised against it on those rows instead
    (:func:`~bids_vem.encoding.nuisance.training_basis`), for the same reason.
    """
    blocks = []
    for block, rows in _parts(selection):
        values = np.asarray(data.read(block, part))
        tensor = _to_device(values if rows is None else values[rows], device, dtype)
        if rows is not None and training:
            basis = training_basis(None if data.nuisance is None else data.nuisance[block], rows)
            if basis is None:
                tensor = tensor - tensor.mean(0, dtype=torch.float64).to(dtype)
            else:
                Q = _to_device(basis, device, torch.float64)
                tensor = (tensor - Q @ (Q.T @ tensor.to(torch.float64))).to(dtype)
        blocks.append(tensor)
    return blocks[0].contiguous() if len(blocks) == 1 else torch.cat(blocks)


def _correlation(y: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Pearson r per column of ``y`` (n, v) with ``pred`` (n, v) or (k, n, v); 0 where either is
    constant. Computed in float64, one prediction at a time (temporaries of (n, v) only)."""
    if pred.ndim == 3:
        return torch.stack([_correlation(y, p) for p in pred])
    yc = y.to(torch.float64)
    yc = yc - yc.mean(0)
    pc = pred.to(torch.float64, copy=True)
    pc -= pc.mean(0)
    den = torch.linalg.vector_norm(yc, dim=0) * torch.linalg.vector_norm(pc, dim=0)
    num = (pc.mul_(yc)).sum(0)
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)


def _r2(y: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """1 - SSE / SST per column (float64, one prediction at a time); 0 where ``y`` is constant."""
    if pred.ndim == 3:
        return torch.stack([_r2(y, p) for p in pred])
    y = y.to(torch.float64)
    sse = torch.linalg.vector_norm(pred.to(torch.float64) - y, dim=0) ** 2
    sst = torch.linalg.vector_norm(y - y.mean(0), dim=0) ** 2
    return torch.where(sst > 0, 1.0 - sse / torch.where(sst > 0, sst, 1.0), 0.0)


_SCORES = ("correlation", "r2")


def ridge_scorer(score: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The per-voxel scorer of ``score`` (``"correlation"`` or ``"r2"``): ``scorer(y, pred)``."""
    if score not in _SCORES:
        raise ValueError(f"score must be one of {sorted(_SCORES)}, got {score!r}")
    return _correlation if score == "correlation" else _r2


def _scores_from_moments(
    score: str,
    Y_test: torch.Tensor,
    basis: torch.Tensor,
    triangle: torch.Tensor,
    coefs: torch.Tensor,
    shrink: torch.Tensor,
    shrink_sum: torch.Tensor,
) -> torch.Tensor:
    """Score of every penalty for a chunk of voxels (module docstring).

    In the compute dtype: ``Y_test`` (n_test, c), ``basis = Q`` (n_test, m) and ``triangle = R``
    (m, r) with ``A = Q R`` (``m = min(n_test, r)``), and ``coefs = C`` (r, c); in float64:
    ``shrink`` (k, r) = 1 / (lam + alpha) and ``shrink_sum`` = shrink * A.sum(0).
    Returns (k, c) float64.
    """
    n_test = Y_test.shape[0]
    dtype = coefs.dtype
    # the predictions A S C = Q (R S C) live in the span of Q: their products with y are those
    # of R S C with Q^T y. sum(y p) and sum(p^2) come from the same rounded R S C, so that
    # rounding errors cancel in the correlation (scores of close penalties stay ordered)
    projected_t = (basis.T @ Y_test).T  # (c, m)
    coefs_t = coefs.T
    shrink_dtype = shrink.to(dtype)
    sum_pp = torch.empty(
        (shrink.shape[0], coefs.shape[1]), dtype=torch.float64, device=coefs.device
    )
    sum_yp = torch.empty_like(sum_pp)
    for j in range(shrink.shape[0]):
        predictions_t = coefs_t @ (triangle * shrink_dtype[j]).T  # (c, m), rows = voxels
        sum_pp[j] = torch.linalg.vector_norm(predictions_t, dim=1).to(torch.float64) ** 2
        sum_yp[j] = torch.linalg.vecdot(predictions_t, projected_t, dim=1)
    sum_p = shrink_sum @ coefs.to(torch.float64)
    y64 = Y_test.to(torch.float64)
    sum_y = y64.sum(0)
    var_y = (torch.linalg.vector_norm(y64 - sum_y / n_test, dim=0) ** 2)[None]
    if score == "r2":
        sse = (torch.linalg.vector_norm(y64, dim=0) ** 2)[None] - 2.0 * sum_yp + sum_pp
        return torch.where(var_y > 0, 1.0 - sse / torch.where(var_y > 0, var_y, 1.0), 0.0)
    cov = sum_yp - sum_y[None] * sum_p / n_test
    var_p = sum_pp - sum_p**2 / n_test
    var_p = torch.where(var_p > _CONSTANT_TOLERANCE[dtype] * sum_pp, var_p, 0.0)
    den = torch.sqrt(var_y * var_p)
    return torch.where(den > 0, cov / torch.where(den > 0, den, 1.0), 0.0)


@dataclass(frozen=True)
class Split:
    """One cross-validation fold: training samples, test samples, and the test design.

    Attributes
    ----------
    train, test : sequence of int or (int, ndarray)
        Whole blocks, or (block, row indices).
    test_design : ndarray of shape (n_test, n_features), optional
        Design that predicts the test samples, when not the test rows of the blocks' designs
        (stimulus-disjoint folds predict from the held-out stimuli alone).
    """

    train: Selection
    test: Selection
    test_design: np.ndarray | None = None


def _add_fold_scores(
    score_sum: np.ndarray,
    Xs: Sequence[np.ndarray],
    data: VoxelData,
    split: Split,
    alphas_t: torch.Tensor,
    score: str,
    dtype: torch.dtype,
    primal: bool | None,
    plan: ChunkPlan,
) -> None:
    """Add one fold's scores of every penalty to ``score_sum`` (n_alphas, n_voxels)."""
    device = alphas_t.device
    X_train = _to_device(
        stack_designs(Xs, split.train, training=True, nuisance=data.nuisance),
        device,
        torch.float64,
    )
    test_design = split.test_design
    if test_design is None:
        test_design = stack_designs(Xs, split.test)
    X_test = _to_device(test_design, device, torch.float64)
    dec = _decompose(X_train, dtype, primal)
    held64 = X_test @ dec.to_features  # A: (n_test, r)
    del X_train, X_test
    shrink = 1.0 / (dec.eigenvalues[None, :] + alphas_t[:, None])  # (n_alphas, r)
    shrink_sum = shrink * held64.sum(0)[None, :]
    # ||A S c|| = ||R S c||: products with R (m = min(n_test, r) rows) cost less than with A
    basis, triangle = _serial_cpu(torch.linalg.qr, held64)
    basis, triangle = basis.to(dtype), triangle.to(dtype)

    def work(part: slice) -> None:
        Y_train = read_selection(data, split.train, part, device, dtype, training=True)
        Y_test = read_selection(data, split.test, part, device, dtype)
        coefs = dec.left.T @ Y_train  # (r, n_voxels_chunk)
        del Y_train
        scores = _scores_from_moments(score, Y_test, basis, triangle, coefs, shrink, shrink_sum)
        score_sum[:, part] += scores.cpu().numpy()

    plan.run(data.n_voxels, work)


def ridge_cv_alphas(
    Xs: Sequence[np.ndarray],
    Ys: Sequence[np.ndarray] | VoxelData,
    alphas: Sequence[float] | np.ndarray,
    *,
    score: str = "correlation",
    device: str | torch.device = "cpu",
    n_voxels_chunk: int | None = None,
    dtype: torch.dtype = torch.float32,
    primal: bool | None = None,
    groups: Sequence[Hashable] | None = None,
    chunks: ChunkPlan | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose one ridge penalty per voxel by leave-one-block-out cross-validation.

    Each block (one run) is predicted in turn by ridge models fitted on the other blocks,
    for every penalty; the score is averaged over folds and each voxel takes the penalty
    with the best mean score.

    Parameters
    ----------
    Xs : list of ndarray of shape (n_samples_i, n_features)
        Design of each block (z-scored per run; no intercept is fitted).
    Ys : list of ndarray of shape (n_samples_i, n_voxels), or VoxelData
        Data of each block (a :class:`~bids_vem.encoding.voxel_data.VoxelStore` streams them
        from disk).
    alphas : sequence of float
        Candidate penalties, positive.
    score : {"correlation", "r2"}
        Pearson r or R^2 of the held-out block(s), per voxel.
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    n_voxels_chunk : int, optional
        Voxels processed at once (bounds memory; results do not depend on it). Default: a
        working memory of about 256 MB (:func:`~bids_vem.encoding.chunks.voxel_chunk_for_memory`).
    dtype : torch.dtype
        Precision of the products with the voxel data (the decomposition is float64).
    primal : bool, optional
        Force the primal (True) or dual (False) form; default: by the smaller dimension of
        each training design.
    groups : sequence of hashable, optional
        Label of each block (e.g. its session): each fold holds out all blocks of one label.
        Default: one block per fold.
    chunks : ChunkPlan, optional
        Shared chunk size of a whole fit (overrides ``n_voxels_chunk``); halves on CUDA
        out-of-memory errors.

    Returns
    -------
    best_alphas : ndarray of shape (n_voxels,), float64
        Penalty of each voxel. Ties (within ``TIE_SLOPE * log(alpha)``) go to the larger
        penalty, as in himalaya; a voxel whose scores are all equal (a constant voxel) gets
        the largest penalty.
    cv_scores : ndarray of shape (n_alphas, n_voxels), float64
        Score of every penalty averaged over folds, rows in the order of ``alphas``.
    """
    data = as_voxel_data(Ys)
    _check_blocks(Xs, data)
    folds = leave_one_group_out(len(Xs), groups)
    if len(folds) < 2:
        raise ValueError(f"leave-one-group-out needs at least 2 groups, got {len(folds)}")
    if primal is None:
        return _logo_cv_alphas(
            Xs, data, folds, alphas, score=score, device=device, n_voxels_chunk=n_voxels_chunk,
            dtype=dtype, chunks=chunks,
        )  # fmt: skip
    splits = [Split([i for i in range(len(Xs)) if i not in test], test) for test in folds]
    return ridge_cv_splits(
        Xs, data, splits, alphas, score=score, device=device, n_voxels_chunk=n_voxels_chunk,
        dtype=dtype, primal=primal, chunks=chunks,
    )  # fmt: skip


def _logo_cv_alphas(
    Xs, data: VoxelData, folds, alphas, *, score, device, n_voxels_chunk, dtype, chunks
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ridge_cv_alphas` for folds of whole blocks, from one decomposition of all blocks
    (:mod:`bids_vem.encoding.logo`) instead of one per fold."""
    from bids_vem.encoding.logo import LeaveOneGroupOut

    alphas = _check_alphas(alphas)
    if score not in _SCORES:
        raise ValueError(f"score must be one of {sorted(_SCORES)}, got {score!r}")
    device = resolve_device(device)
    bounds = np.cumsum([0, *data.run_lengths])
    groups = [np.concatenate([np.arange(bounds[b], bounds[b + 1]) for b in fold]) for fold in folds]
    X = _to_device(np.concatenate([np.asarray(X) for X in Xs]), device, torch.float64)
    logo = LeaveOneGroupOut(X, groups)
    plan = _chunk_plan(
        chunks,
        n_voxels_chunk,
        n_samples=int(bounds[-1]),
        n_features=X.shape[1],
        n_alphas=len(alphas),
        n_voxels=data.n_voxels,
        dtype=dtype,
    )
    scorer = ridge_scorer(score)
    score_sum = np.zeros((len(alphas), data.n_voxels))
    every = list(range(data.n_runs))

    def work(part: slice) -> None:
        Y = read_selection(data, every, part, device, torch.float64)
        scores = torch.zeros((len(alphas), Y.shape[1]), dtype=torch.float64, device=device)
        for k, predictions in enumerate(logo.held_out(Y, alphas)):
            for rows, predicted in zip(logo.groups, predictions, strict=True):
                scores[k] += scorer(Y[rows], predicted)
        score_sum[:, part] += scores.cpu().numpy()

    plan.run(data.n_voxels, work)
    cv_scores = score_sum / len(folds)
    best = np.argmax(cv_scores + TIE_SLOPE * np.log(alphas)[:, None], axis=0)
    return alphas[best], cv_scores


def ridge_cv_splits(
    Xs: Sequence[np.ndarray],
    Ys: Sequence[np.ndarray] | VoxelData,
    splits: Sequence[Split],
    alphas: Sequence[float] | np.ndarray,
    *,
    score: str = "correlation",
    device: str | torch.device = "cpu",
    n_voxels_chunk: int | None = None,
    dtype: torch.dtype = torch.float32,
    primal: bool | None = None,
    chunks: ChunkPlan | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose one ridge penalty per voxel by cross-validation over the given splits.

    As :func:`ridge_cv_alphas`, with folds given as :class:`Split` (any training and test
    samples, and a test design of their own): stimulus-disjoint folds are splits.

    Returns
    -------
    best_alphas : ndarray of shape (n_voxels,), float64
    cv_scores : ndarray of shape (n_alphas, n_voxels), float64
        Mean test score of every penalty over the splits.
    """
    alphas = _check_alphas(alphas)
    if score not in _SCORES:
        raise ValueError(f"score must be one of {sorted(_SCORES)}, got {score!r}")
    if len(splits) < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {len(splits)}")
    data = as_voxel_data(Ys)
    n_features = int(np.shape(Xs[0])[1])
    device = resolve_device(device)
    plan = _chunk_plan(
        chunks,
        n_voxels_chunk,
        n_samples=sum(data.run_lengths),
        n_features=n_features,
        n_alphas=len(alphas),
        n_voxels=data.n_voxels,
        dtype=dtype,
    )
    alphas_t = torch.as_tensor(alphas, dtype=torch.float64, device=device)
    score_sum = np.zeros((len(alphas), data.n_voxels))
    for split in splits:
        _add_fold_scores(score_sum, Xs, data, split, alphas_t, score, dtype, primal, plan)
    cv_scores = score_sum / len(splits)
    best = np.argmax(cv_scores + TIE_SLOPE * np.log(alphas)[:, None], axis=0)
    return alphas[best], cv_scores


def _per_voxel_alphas(alpha_per_voxel, n_voxels: int) -> np.ndarray:
    alpha = np.asarray(alpha_per_voxel, dtype=np.float64)
    if alpha.ndim == 0:
        alpha = np.full(n_voxels, float(alpha))
    if alpha.shape != (n_voxels,):
        raise ValueError(f"alpha_per_voxel has shape {alpha.shape}, expected ({n_voxels},)")
    if not np.all(np.isfinite(alpha)) or np.any(alpha <= 0):
        raise ValueError("alpha_per_voxel must be positive and finite")
    return alpha


def _eigen_coefficients(
    dec: _Decomposition, Y: torch.Tensor, alpha: np.ndarray, dtype: torch.dtype
) -> torch.Tensor:
    """``diag(1 / (lam + alpha_v)) L^T y_v`` for every voxel v: (r, n_voxels_chunk)."""
    alpha_t = torch.as_tensor(alpha, dtype=torch.float64, device=Y.device)
    # each voxel scaled by its own penalty: no need to group voxels by penalty
    shrink = (1.0 / (dec.eigenvalues[:, None] + alpha_t[None, :])).to(dtype)
    return (dec.left.T @ Y) * shrink


def solve_chunks(
    X_train: np.ndarray,
    data: VoxelData,
    train_runs: Selection,
    alpha_per_voxel: np.ndarray | float,
    outputs: Sequence[np.ndarray | None],
    on_chunk: Callable[[slice, list[torch.Tensor]], None],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    primal: bool | None = None,
    chunks: ChunkPlan | None = None,
) -> None:
    """Fit ridge on the training runs with a penalty per voxel and apply it, chunk by chunk.

    One decomposition of ``X_train``; for each voxel chunk the eigen-coefficients of the
    training data are multiplied by each matrix of ``outputs`` mapped to the eigenbasis:
    a design ``D`` (n_rows, n_features) gives its predictions ``D W`` (n_rows, n_voxels_chunk);
    None gives the weights ``W`` themselves (n_features, n_voxels_chunk).

    Parameters
    ----------
    X_train : ndarray of shape (n_train, n_features)
        The training runs' designs, stacked in the order of ``train_runs``.
    data : VoxelData
    train_runs : sequence of int or (int, ndarray)
        Runs of ``data`` (or rows of runs) that are the training data.
    alpha_per_voxel : ndarray of shape (n_voxels,) or float
    outputs : sequence of (ndarray of shape (n_rows_i, n_features) or None)
    on_chunk : callable
        ``on_chunk(voxels, [D_i W for each output])``, tensors (n_rows_i, n_voxels_chunk) in
        ``dtype`` on ``device``; called once per chunk after the chunk succeeded.
    device, dtype, primal, chunks
        As in :func:`ridge_cv_alphas`.
    """
    X_train = np.asarray(X_train)
    n_train = selection_length(data.run_lengths, train_runs)
    if X_train.ndim != 2 or len(X_train) != n_train:
        raise ValueError(f"X_train {X_train.shape} and the training data ({n_train} rows) differ")
    alpha = _per_voxel_alphas(alpha_per_voxel, data.n_voxels)
    device = resolve_device(device)
    plan = chunks or ChunkPlan(65536)
    dec = _decompose(_to_device(X_train, device, torch.float64), dtype, primal)
    matrices = []
    for D in outputs:
        if D is None:
            matrices.append(dec.to_features.to(dtype))
            continue
        D = np.asarray(D)
        if D.ndim != 2 or D.shape[1] != X_train.shape[1]:
            raise ValueError(f"output design {D.shape} does not match X_train {X_train.shape}")
        matrices.append((_to_device(D, device, torch.float64) @ dec.to_features).to(dtype))

    def work(part: slice) -> None:
        Y_train = read_selection(data, train_runs, part, device, dtype, training=True)
        coefs = _eigen_coefficients(dec, Y_train, alpha[part], dtype)
        results = [matrix @ coefs for matrix in matrices]
        on_chunk(part, results)

    plan.run(data.n_voxels, work)


def _solve_arrays(
    X: np.ndarray,
    Y: np.ndarray,
    alpha_per_voxel,
    output: np.ndarray | None,
    *,
    device,
    n_voxels_chunk: int | None,
    dtype: torch.dtype,
    primal: bool | None,
) -> np.ndarray:
    data = as_voxel_data([Y])
    n_rows = X.shape[1] if output is None else output.shape[0]
    out = np.empty((n_rows, Y.shape[1]), dtype=np.float32)

    def keep(part: slice, results: list[torch.Tensor]) -> None:
        out[:, part] = results[0].to("cpu", torch.float32).numpy()

    solve_chunks(
        X,
        data,
        [0],
        alpha_per_voxel,
        [output],
        keep,
        device=device,
        dtype=dtype,
        primal=primal,
        chunks=ChunkPlan(n_voxels_chunk or 65536),
    )
    return out


def fit_ridge(
    X: np.ndarray,
    Y: np.ndarray,
    alpha_per_voxel: np.ndarray | float,
    device: str | torch.device = "cpu",
    *,
    n_voxels_chunk: int | None = None,
    dtype: torch.dtype = torch.float32,
    primal: bool | None = None,
) -> np.ndarray:
    """Ridge weights with one penalty per voxel, from one decomposition of ``X``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    Y : ndarray of shape (n_samples, n_voxels)
    alpha_per_voxel : ndarray of shape (n_voxels,) or float
    device, n_voxels_chunk, dtype, primal
        As in :func:`ridge_cv_alphas` (default chunk: 65,536 voxels).

    Returns
    -------
    W : ndarray of shape (n_features, n_voxels), float32
        Minimises ``||X w_v - y_v||^2 + alpha_v ||w_v||^2`` for each voxel ``v``.
    """
    X = np.asarray(X)
    Y = np.asarray(Y)
    if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y):
        raise ValueError(f"X {X.shape} and Y {Y.shape} do not pair up")
    return _solve_arrays(
        X,
        Y,
        alpha_per_voxel,
        None,
        device=device,
        n_voxels_chunk=n_voxels_chunk,
        dtype=dtype,
        primal=primal,
    )


def ridge_predict(
    X_train: np.ndarray,
    Y_train: np.ndarray,
    X_test: np.ndarray,
    alpha_per_voxel: np.ndarray | float,
    device: str | torch.device = "cpu",
    *,
    n_voxels_chunk: int | None = None,
    dtype: torch.dtype = torch.float32,
    primal: bool | None = None,
) -> np.ndarray:
    """Fit ridge on (``X_train``, ``Y_train``) with a penalty per voxel and predict ``X_test``.

    Equal to ``X_test @ fit_ridge(X_train, Y_train, alpha_per_voxel)`` without forming the
    weights (cheaper when ``n_test < n_features``).

    Parameters
    ----------
    X_train : ndarray of shape (n_train, n_features)
    Y_train : ndarray of shape (n_train, n_voxels)
    X_test : ndarray of shape (n_test, n_features)
    alpha_per_voxel : ndarray of shape (n_voxels,) or float
    device, n_voxels_chunk, dtype, primal
        As in :func:`fit_ridge`.

    Returns
    -------
    ndarray of shape (n_test, n_voxels), float32
    """
    X_train, Y_train, X_test = np.asarray(X_train), np.asarray(Y_train), np.asarray(X_test)
    if X_train.ndim != 2 or Y_train.ndim != 2 or len(X_train) != len(Y_train):
        raise ValueError(f"X_train {X_train.shape} and Y_train {Y_train.shape} do not pair up")
    if X_test.ndim != 2 or X_test.shape[1] != X_train.shape[1]:
        raise ValueError(f"X_test {X_test.shape} does not match X_train {X_train.shape}")
    return _solve_arrays(
        X_train,
        Y_train,
        alpha_per_voxel,
        X_test,
        device=device,
        n_voxels_chunk=n_voxels_chunk,
        dtype=dtype,
        primal=primal,
    )


def _score_numpy(scorer, Y: np.ndarray, Y_pred: np.ndarray) -> np.ndarray:
    Y, Y_pred = np.asarray(Y), np.asarray(Y_pred)
    if Y.shape != Y_pred.shape or Y.ndim != 2:
        raise ValueError(f"Y {Y.shape} and Y_pred {Y_pred.shape} must be equal 2-D shapes")
    return scorer(
        torch.as_tensor(Y, dtype=torch.float64), torch.as_tensor(Y_pred, dtype=torch.float64)
    ).numpy()


def score_correlation(Y: np.ndarray, Y_pred: np.ndarray) -> np.ndarray:
    """Pearson r per voxel between ``Y`` and ``Y_pred`` (n_samples, n_voxels) -> (n_voxels,).

    Computed in float64; 0 (not NaN) where either column is constant.
    """
    return _score_numpy(_correlation, Y, Y_pred)


def score_r2(Y: np.ndarray, Y_pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination ``1 - SSE / SST`` per voxel -> (n_voxels,).

    ``SST`` is taken around the mean of ``Y``; 0 where ``Y`` is constant. Negative when the
    prediction is worse than the mean.
    """
    return _score_numpy(_r2, Y, Y_pred)
