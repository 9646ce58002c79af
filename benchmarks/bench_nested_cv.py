"""Nested cross-validation of a voxelwise ridge model, with and without 1,000 permutations.

Compares ``bids_vem.encoding.model.fit_encoding_model`` with a plain numpy reference of the
same scheme on the same data, in the same run: nested leave-one-run-out (each run predicted by
a model whose per-voxel penalty was chosen by leave-one-run-out CV on the other runs, one
eigendecomposition per fit in float64, as textbooks and himalaya's solvers do), a penalty map
by leave-one-run-out CV over all runs, and, with ``--permutations``, a null of every voxel's
pooled r from circular shifts of each held-out prediction (the reference recomputes the
correlations of each shifted prediction).

Shapes of issue 11: ``--shape block`` (12 runs x 121 TRs, 1,536 design columns, 530 voxels;
a Haxby-style block design) and ``--shape large`` (40 runs x 256 TRs, 2,048 columns, 50,000
voxels); the reference at the large shape runs one outer fold and is extrapolated (``x 40``),
said so in the output. ``--voxels`` replaces the shape's number of voxels (the large shape's
50,000 take hours on a 2-core CPU, for both; the time of both grows linearly in voxels).

Usage::

    python benchmarks/bench_nested_cv.py --shape block
    python benchmarks/bench_nested_cv.py --shape block --permutations 1000
    python benchmarks/bench_nested_cv.py --shape large --voxels 1000
    python benchmarks/bench_nested_cv.py --shape large --device cuda
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from bids_vem.encoding.model import fit_encoding_model

SHAPES = {"block": (12, 121, 1536, 530), "large": (40, 256, 2048, 50_000)}
ALPHAS = np.logspace(-2, 12, 29)


def simulate(n_runs: int, n_trs: int, n_columns: int, n_voxels: int, seed: int = 0):
    """z-scored designs with correlated columns and voxels of graded signal-to-noise."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((n_columns, n_columns)) / np.sqrt(n_columns)
    weights = rng.standard_normal((n_columns, n_voxels)).astype(np.float32) / np.sqrt(n_columns)
    snr = np.linspace(0.0, 1.0, n_voxels, dtype=np.float32)
    Xs, Ys = [], []
    for _ in range(n_runs):
        X = (rng.standard_normal((n_trs, n_columns)) @ mixing).astype(np.float32)
        Y = (X @ weights) * snr + rng.standard_normal((n_trs, n_voxels)).astype(np.float32)
        Xs.append((X - X.mean(0)) / X.std(0))
        Ys.append((Y - Y.mean(0)) / Y.std(0))
    return Xs, Ys


def _correlation(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    y = y - y.mean(0)
    p = p - p.mean(0)
    den = np.sqrt((y * y).sum(0) * (p * p).sum(0))
    return np.divide((y * p).sum(0), den, out=np.zeros(y.shape[1]), where=den > 0)


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std(0)
    return np.divide(x - x.mean(0), sd, out=np.zeros_like(x), where=sd > 0)


def _decompose(X: np.ndarray):
    """(eigenvalues, left, to_features) of the smaller Gram matrix, float64."""
    if X.shape[0] >= X.shape[1]:
        lam, V = np.linalg.eigh(X.T @ X)
        return np.clip(lam, 0, None), X @ V, V
    lam, U = np.linalg.eigh(X @ X.T)
    return np.clip(lam, 0, None), U, X.T @ U


def _cv_alphas(Xs, Ys, runs):
    """Per-voxel penalty by leave-one-run-out CV over ``runs`` (mean correlation)."""
    scores = np.zeros((len(ALPHAS), Ys[0].shape[1]))
    for held in runs:
        train = [i for i in runs if i != held]
        lam, left, to_features = _decompose(
            np.concatenate([Xs[i] for i in train]).astype(np.float64)
        )
        C = left.T @ np.concatenate([Ys[i] for i in train])
        A = Xs[held] @ to_features
        for k, alpha in enumerate(ALPHAS):
            scores[k] += _correlation(Ys[held], A @ (C / (lam + alpha)[:, None]))
    return ALPHAS[np.argmax(scores, axis=0)]


def _predict(Xs, Ys, train, test, alpha):
    lam, left, to_features = _decompose(np.concatenate([Xs[i] for i in train]).astype(np.float64))
    C = left.T @ np.concatenate([Ys[i] for i in train])
    return (Xs[test] @ to_features) @ (C / (lam[:, None] + alpha[None, :]))


def reference(Xs, Ys, n_permutations: int = 0, outer: list[int] | None = None, seed: int = 0):
    """The numpy reference: nested leave-one-run-out, the penalty map, shifted-prediction nulls."""
    n_runs = len(Xs)
    rng = np.random.default_rng(seed)
    zz = np.zeros(Ys[0].shape[1])
    null = np.zeros((n_permutations, Ys[0].shape[1]))
    for test in outer if outer is not None else range(n_runs):
        train = [i for i in range(n_runs) if i != test]
        alpha = _cv_alphas(Xs, Ys, train)
        zp, zy = _zscore(_predict(Xs, Ys, train, test, alpha)), _zscore(Ys[test])
        zz += (zy * zp).sum(0)
        for n in range(n_permutations):
            null[n] += (zy * np.roll(zp, int(rng.integers(12, len(zp) - 12)), axis=0)).sum(0)
    if outer is None:
        _cv_alphas(Xs, Ys, list(range(n_runs)))  # the penalty map
    return zz, null


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="block")
    parser.add_argument("--permutations", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--voxels", type=int, help="replaces the shape's number of voxels")
    args = parser.parse_args()
    n_runs, n_trs, n_columns, n_voxels = SHAPES[args.shape]
    n_voxels = args.voxels or n_voxels
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {args.device}"
    )
    print(f"shape: {n_runs} runs x {n_trs} TRs, {n_columns} columns, {n_voxels} voxels, "
          f"{len(ALPHAS)} penalties, {args.permutations} permutations")  # fmt: skip
    Xs, Ys = simulate(n_runs, n_trs, n_columns, n_voxels)
    start = time.perf_counter()
    result = fit_encoding_model(
        Xs, Ys, ALPHAS, device=args.device, n_permutations=args.permutations
    )
    ours = time.perf_counter() - start
    print(f"bids_vem fit_encoding_model: {ours:.1f} s (mean r {result.r.mean():.3f})")
    if args.skip_reference:
        return
    start = time.perf_counter()
    if args.shape == "large":
        reference(Xs, Ys, args.permutations, outer=[0])
        numpy_time = (time.perf_counter() - start) * n_runs
        print(f"numpy reference: {numpy_time:.1f} s (one outer fold timed, x {n_runs})")
    else:
        zz, _ = reference(Xs, Ys, args.permutations)
        numpy_time = time.perf_counter() - start
        r_ref = zz / sum(len(Y) for Y in Ys)
        print(
            f"numpy reference: {numpy_time:.1f} s (mean r {r_ref.mean():.3f}; max |r - ours| "
            f"{np.abs(r_ref - result.r).max():.2e})"
        )
    print(f"speed-up: {numpy_time / ours:.1f}x")


if __name__ == "__main__":
    main()
