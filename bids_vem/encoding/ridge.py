"""Ridge regression with one penalty per voxel, cross-validated over runs (torch, CPU or CUDA).

The solver is a set of pure functions over arrays: numpy in, numpy out, torch inside.

One eigendecomposition of the training design per fold serves every penalty and every voxel.
With ``X`` of shape (n_samples, n_features) and ``r = min(n_samples, n_features)``:

- primal (``n_samples >= n_features``): ``X^T X = V diag(lam) V^T``, ``L = X V``, ``F = V``;
- dual (``n_samples < n_features``): ``X X^T = U diag(lam) U^T``, ``L = U``, ``F = X^T U``;

and in both cases the ridge weights for penalty ``alpha`` are ``W = F diag(1 / (lam + alpha)) L^T Y``
(shape (n_features, n_voxels)), so a held-out prediction is ``(X_test F) diag(1 / (lam + alpha)) (L^T Y)``:
one product ``L^T Y`` per fold (``2 n r v`` flops) and one ``(n_test, r) x (r, v)`` product per
penalty. The decomposition (size ``r``, independent of the number of voxels) is done in float64;
the products with voxel data in ``dtype`` (float32 by default).

Objective (no intercept: designs and BOLD are z-scored per run)::

    W = argmin ||X W - Y||^2 + alpha ||W||^2        (alpha per column of Y)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bids_vem.encoding.device import resolve_device

__all__ = [
    "ridge_cv_alphas",
    "fit_ridge",
    "ridge_predict",
    "score_correlation",
    "score_r2",
    "default_voxel_chunk",
]

#: scores are nudged by this times log(alpha) before the argmax, as in himalaya: among penalties
#: whose mean CV scores tie (to ~1e-10), the largest (simplest model) is chosen
TIE_SLOPE = 1e-10

#: default budget, in elements, of the (n_alphas, n_test, n_voxels_chunk) block of predictions
#: (256 MB in float32; scoring adds float64 temporaries of one penalty's slice)
_PREDICTION_BLOCK = 1 << 26


@dataclass(frozen=True)
class _Decomposition:
    """Eigen-decomposition of one training design (see the module docstring)."""

    eigenvalues: torch.Tensor  # (r,) float64, >= 0
    left: torch.Tensor  # L: (n_samples, r), dtype (multiplies voxel data)
    to_features: torch.Tensor  # F: (n_features, r), float64
    primal: bool


def _decompose(X: torch.Tensor, dtype: torch.dtype, primal: bool | None = None) -> _Decomposition:
    """Decompose ``X`` (n_samples, n_features), choosing primal or dual by the smaller dimension."""
    X64 = X.to(torch.float64)
    n_samples, n_features = X64.shape
    if primal is None:
        primal = n_samples >= n_features
    gram = X64.T @ X64 if primal else X64 @ X64.T
    eigenvalues, vectors = torch.linalg.eigh(gram)
    # rounding can leave tiny negative eigenvalues of a positive semi-definite matrix
    eigenvalues = eigenvalues.clamp_min(0.0)
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


def _check_blocks(Xs: Sequence[np.ndarray], Ys: Sequence[np.ndarray]) -> tuple[int, int]:
    if len(Xs) != len(Ys):
        raise ValueError(f"{len(Xs)} design blocks but {len(Ys)} data blocks")
    if len(Xs) < 2:
        raise ValueError(f"leave-one-block-out needs at least 2 blocks, got {len(Xs)}")
    n_features = {np.shape(X)[1] for X in Xs}
    n_voxels = {np.shape(Y)[1] for Y in Ys}
    if len(n_features) != 1 or len(n_voxels) != 1:
        raise ValueError(
            f"blocks disagree: n_features {sorted(n_features)}, n_voxels {sorted(n_voxels)}"
        )
    for i, (X, Y) in enumerate(zip(Xs, Ys, strict=True)):
        if np.ndim(X) != 2 or np.ndim(Y) != 2 or len(X) != len(Y):
            raise ValueError(f"block {i}: X {np.shape(X)} and Y {np.shape(Y)} do not pair up")
    return n_features.pop(), n_voxels.pop()


def default_voxel_chunk(n_alphas: int, n_test: int, n_voxels: int) -> int:
    """Voxels per chunk so that the block of CV predictions stays ~256 MB in float32."""
    return int(max(1, min(n_voxels, _PREDICTION_BLOCK // max(1, n_alphas * n_test))))


def _chunks(n_voxels: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n_voxels)) for start in range(0, n_voxels, size)]


def _to_device(a: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a)).to(device=device, dtype=dtype)


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


_SCORERS = {"correlation": _correlation, "r2": _r2}


def ridge_cv_alphas(
    Xs: Sequence[np.ndarray],
    Ys: Sequence[np.ndarray],
    alphas: Sequence[float] | np.ndarray,
    *,
    score: str = "correlation",
    device: str | torch.device = "cpu",
    n_voxels_chunk: int | None = None,
    dtype: torch.dtype = torch.float32,
    primal: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose one ridge penalty per voxel by leave-one-block-out cross-validation.

    Each block (one run) is predicted in turn by ridge models fitted on the other blocks,
    for every penalty; the score is averaged over folds and each voxel takes the penalty
    with the best mean score.

    Parameters
    ----------
    Xs : list of ndarray of shape (n_samples_i, n_features)
        Design of each block (z-scored per run; no intercept is fitted).
    Ys : list of ndarray of shape (n_samples_i, n_voxels)
        Data of each block.
    alphas : sequence of float
        Candidate penalties, positive.
    score : {"correlation", "r2"}
        Pearson r or R^2 of the held-out block, per voxel.
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    n_voxels_chunk : int, optional
        Voxels processed at once (bounds memory; results do not depend on it). Default: as many
        as keep the (n_alphas, n_test, n_voxels_chunk) block of predictions under ~256 MB
        in float32.
    dtype : torch.dtype
        Precision of the products with the voxel data (the decomposition is float64).
    primal : bool, optional
        Force the primal (True) or dual (False) form; default: by the smaller dimension of
        each training design.

    Returns
    -------
    best_alphas : ndarray of shape (n_voxels,), float64
        Penalty of each voxel. Ties (within ``TIE_SLOPE * log(alpha)``) go to the larger
        penalty, as in himalaya; a voxel whose scores are all equal (a constant voxel) gets
        the largest penalty.
    cv_scores : ndarray of shape (n_alphas, n_voxels), float64
        Score of every penalty averaged over folds, rows in the order of ``alphas``.
    """
    alphas = _check_alphas(alphas)
    if score not in _SCORERS:
        raise ValueError(f"score must be one of {sorted(_SCORERS)}, got {score!r}")
    scorer = _SCORERS[score]
    _, n_voxels = _check_blocks(Xs, Ys)
    device = resolve_device(device)
    n_blocks = len(Xs)
    max_test = max(len(X) for X in Xs)
    chunk = n_voxels_chunk or default_voxel_chunk(len(alphas), max_test, n_voxels)
    alphas_t = torch.as_tensor(alphas, dtype=torch.float64, device=device)

    score_sum = np.zeros((len(alphas), n_voxels))
    for test in range(n_blocks):
        train = [i for i in range(n_blocks) if i != test]
        X_train = torch.cat([_to_device(Xs[i], device, torch.float64) for i in train])
        X_test = _to_device(Xs[test], device, torch.float64)
        dec = _decompose(X_train, dtype, primal)
        # (n_alphas, n_test, r): X_test F diag(1 / (lam + alpha)), one slice per penalty
        projected = (X_test @ dec.to_features)[None] / (
            dec.eigenvalues[None, None, :] + alphas_t[:, None, None]
        )
        projected = projected.to(dtype)
        del X_train, X_test
        for part in _chunks(n_voxels, chunk):
            Y_train = torch.cat([_to_device(Ys[i][:, part], device, dtype) for i in train])
            Y_test = _to_device(Ys[test][:, part], device, dtype)
            coefs = dec.left.T @ Y_train  # (r, n_voxels_chunk)
            predictions = projected @ coefs  # (n_alphas, n_test, n_voxels_chunk)
            # scores in float64: float32 reductions round differently with the chunk's layout,
            # which would flip near-tied penalties between chunkings
            scores = scorer(Y_test, predictions)
            score_sum[:, part] += scores.cpu().numpy()
            del Y_train, Y_test, coefs, predictions, scores
        del dec, projected

    cv_scores = score_sum / n_blocks
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
    return _solve_by_chunks(
        X,
        Y,
        alpha_per_voxel,
        lambda dec, device: dec.to_features.to(dtype),
        device=device,
        n_voxels_chunk=n_voxels_chunk,
        dtype=dtype,
        primal=primal,
    )


def _solve_by_chunks(
    X: np.ndarray,
    Y: np.ndarray,
    alpha_per_voxel: np.ndarray | float,
    left: Callable[[_Decomposition, torch.device], torch.Tensor],
    *,
    device: str | torch.device,
    n_voxels_chunk: int | None,
    dtype: torch.dtype,
    primal: bool | None,
) -> np.ndarray:
    """``left(dec) @ coefficients`` for each voxel chunk, from one decomposition of ``X``.

    ``left`` maps the eigen-coefficients to what is wanted: weights (``to_features``) or
    predictions (``X_test @ to_features``).
    """
    alpha = _per_voxel_alphas(alpha_per_voxel, Y.shape[1])
    device = resolve_device(device)
    dec = _decompose(_to_device(X, device, torch.float64), dtype, primal)
    matrix = left(dec, device)
    out = np.empty((matrix.shape[0], Y.shape[1]), dtype=np.float32)
    for part in _chunks(Y.shape[1], n_voxels_chunk or 65536):
        coefs = _eigen_coefficients(dec, _to_device(Y[:, part], device, dtype), alpha[part], dtype)
        out[:, part] = (matrix @ coefs).to("cpu", torch.float32).numpy()
    return out


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
    return _solve_by_chunks(
        X_train,
        Y_train,
        alpha_per_voxel,
        lambda dec, device: (_to_device(X_test, device, torch.float64) @ dec.to_features).to(dtype),
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
