"""Benchmark: cross-modal transfer (--transfer), bids_vem vs himalaya, same data, same run.

A source task (stories, say) of ``n_source`` runs and a target task of ``n_target`` runs share
a planted mapping from one feature space to the voxels. Both implementations:

1. choose each voxel's penalty by leave-one-run-out CV over the source runs (Pearson r);
2. fit ridge on all source runs and predict the target runs;
3. score r over the run-wise z-scored target series, and a block-permutation null
   (each target run's prediction shuffled in blocks of 10 TRs, the same orders for both).

- bids_vem: :func:`bids_vem.analysis.transfer.fit_transfer` (one eigendecomposition of the
  source design for all leave-one-run-out folds, :mod:`bids_vem.encoding.logo`);
- himalaya by hand: ``RidgeCV(alphas, cv=<leave-one-run-out>,
  solver_params=dict(score_func=correlation_score))`` (torch backend, CPU), then the same
  scoring and null in torch.

Printed: wall time of each, their ratio, the largest difference of the transfer r maps, the
share of voxels with the same penalty, and the recovery (median r planted vs not).

Usage::

    python benchmarks/bench_transfer.py            # 6 + 4 runs x 300 TRs, 256 columns, 20,000 voxels, 200 perms
    python benchmarks/bench_transfer.py --small    # 3 + 2 runs x 100 TRs, 64 columns, 1,000 voxels, 50 perms
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch


def _simulate(rng, n_runs, n_trs, weights, n_features, delays):
    from bids_vem.encoding.design import add_delays, zscore

    Xs, Ys = [], []
    for _ in range(n_runs):
        X = add_delays(zscore(rng.standard_normal((n_trs, n_features))), delays).astype(np.float32)
        Xs.append(X)
        Ys.append((X @ weights + rng.standard_normal((n_trs, weights.shape[1]))).astype(np.float32))
    return Xs, Ys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    n_source, n_target, n_trs, n_features, n_voxels, perms = (
        (3, 2, 100, 16, 1000, 50) if args.small else (6, 4, 300, 64, 20000, 200)
    )
    delays = (1, 2, 3, 4)
    alphas = np.logspace(0, 6, 13)
    rng = np.random.default_rng(0)
    planted = np.zeros(n_voxels, bool)
    planted[: n_voxels // 5] = True
    weights = rng.standard_normal((n_features * len(delays), n_voxels)) * planted * 0.1
    source_Xs, source_Ys = _simulate(rng, n_source, n_trs, weights, n_features, delays)
    target_Xs, target_Ys = _simulate(rng, n_target, n_trs, weights, n_features, delays)
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.get_num_threads()} threads; "
        f"source {n_source} runs, target {n_target} runs, x {n_trs} TRs, "
        f"{n_features * len(delays)} columns, {n_voxels} voxels, {len(alphas)} penalties, "
        f"{perms} permutations"
    )
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV
    from himalaya.scoring import correlation_score

    from bids_vem.analysis.transfer import BLOCK_TRS, _zscored_runs, block_permutation, fit_transfer
    from bids_vem.encoding.voxel_data import InMemoryVoxelData

    start = time.perf_counter()
    ours = fit_transfer(
        source_Xs, InMemoryVoxelData(source_Ys), target_Xs, InMemoryVoxelData(target_Ys),
        alphas=alphas, n_permutations=perms, seed=1,
    )  # fmt: skip
    t_ours = time.perf_counter() - start
    print(f"bids_vem fit_transfer      : {t_ours:8.1f} s")

    backend = set_backend("torch")
    bounds = np.cumsum([0, *[len(X) for X in source_Xs]])
    cv = [
        (np.setdiff1d(np.arange(bounds[-1]), np.arange(bounds[i], bounds[i + 1])),
         np.arange(bounds[i], bounds[i + 1]))
        for i in range(n_source)
    ]  # fmt: skip
    start = time.perf_counter()
    model = RidgeCV(
        alphas=alphas, cv=cv, fit_intercept=False,
        solver_params=dict(score_func=correlation_score, n_targets_batch=4096),
    ).fit(np.concatenate(source_Xs), np.concatenate(source_Ys))  # fmt: skip
    predicted = torch.as_tensor(
        backend.to_numpy(model.predict(np.concatenate(target_Xs))), dtype=torch.float64
    )
    lengths = [len(X) for X in target_Xs]
    zy = _zscored_runs(torch.as_tensor(np.concatenate(target_Ys), dtype=torch.float64), lengths)
    zp = _zscored_runs(predicted, lengths)
    n_rows = sum(lengths)
    r = (zy * zp).sum(0) / n_rows
    order_rng = np.random.default_rng(1)
    count = torch.zeros_like(r)
    for _ in range(perms):
        order = torch.as_tensor(block_permutation(lengths, BLOCK_TRS, order_rng))
        count += ((zy * zp[order]).sum(0) / n_rows >= r).double()
    t_hand = time.perf_counter() - start
    print(f"himalaya RidgeCV by hand   : {t_hand:8.1f} s   ({t_hand / t_ours:.2f}x ours)")
    their_alpha = backend.to_numpy(model.best_alphas_)
    same = np.isclose(their_alpha, ours["alpha"], rtol=1e-6)
    print(
        f"same penalty: {100 * same.mean():.1f}% of voxels; max |r difference| where the same "
        f"penalty: {np.abs(r.numpy() - ours['r'])[same].max():.2e}; p equal where the same "
        f"penalty: {np.allclose(((1 + count.numpy()) / (1 + perms))[same], ours['p'][same])}"
    )
    print(
        f"recovery: median transfer r planted {np.median(ours['r'][planted]):.3f}, "
        f"not planted {np.median(ours['r'][~planted]):.3f}; share of p < 0.05 not planted "
        f"{np.mean(ours['p'][~planted] < 0.05):.3f}"
    )


if __name__ == "__main__":
    main()
