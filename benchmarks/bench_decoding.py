"""Benchmark: caption decoding with its refitted permutation null, bids_vem vs himalaya.

The null of ``--decode`` repeats the whole cross-validation (inner penalty choice included) for
every shuffled pairing of responses and captions. bids_vem eigendecomposes each fold's kernels
once and refits any pairing with matrix products
(:class:`bids_vem.analysis.decoding._FoldKernel`); with himalaya's ``KernelRidgeCV`` every
pairing is a new fit. Both run here on the same simulated data (responses = embedding x
mixing + noise), same folds, same penalty grid:

- bids_vem ``decode_embeddings`` with ``n_permutations`` permutations;
- himalaya by hand: per permutation and fold, ``KernelRidgeCV(kernel="linear",
  solver_params=dict(local_alpha=False))`` on the same inner folds (torch backend, CPU).

Printed: wall time of each, and the largest difference between their predicted embeddings for
the observed pairing (the same model).

Usage::

    python benchmarks/bench_decoding.py              # 500 stimuli, 4,000 voxels, 384 dims, 20 perms
    python benchmarks/bench_decoding.py --small      # 120 stimuli, 500 voxels, 64 dims, 10 perms
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    n, v, d, perms = (120, 500, 64, 10) if args.small else (500, 4000, 384, 20)
    rng = np.random.default_rng(0)
    T = rng.standard_normal((n, d))
    R = T @ rng.standard_normal((d, v)) / np.sqrt(d) + 2.0 * rng.standard_normal((n, v))
    ids = [f"s{i:04d}" for i in range(n)]
    alphas = np.logspace(-2, 6, 17)
    print(
        f"{platform.processor() or platform.machine()}, {n} stimuli, {v} voxels, {d} dims, "
        f"{len(alphas)} penalties, 5 folds x 5 inner folds, {perms} permutations"
    )
    from himalaya.backend import set_backend
    from himalaya.kernel_ridge import KernelRidgeCV

    from bids_vem.analysis import decoding

    start = time.perf_counter()
    result = decoding.decode_embeddings(R, T, ids, alphas=alphas, n_permutations=perms)
    ours = time.perf_counter() - start
    print(f"bids_vem decode_embeddings : {ours:8.1f} s (top-1 {result.top1:.3f}, "
          f"chance {result.chance_top1:.3f}, p {result.p_top1:.3g})")  # fmt: skip

    backend = set_backend("torch")
    folds = [np.array([ids.index(s) for s in fold]) for fold in decoding.deal_stimuli(ids, 5)]
    largest = 0.0
    start = time.perf_counter()
    for k in range(perms + 1):
        paired = T if k == 0 else T[rng.permutation(n)]
        for test in folds:
            train = decoding._inner_order(np.setdiff1d(np.arange(n), test), ids)
            mean, std = R[train].mean(0), R[train].std(0)
            X_train, X_test = (R[train] - mean) / std, (R[test] - mean) / std
            offset = paired[train].mean(0)
            inner = []
            for val in np.array_split(np.arange(len(train)), 5):
                inner.append((np.setdiff1d(np.arange(len(train)), val), val))
            model = KernelRidgeCV(
                alphas=alphas, kernel="linear", cv=inner, solver_params=dict(local_alpha=False)
            ).fit(X_train, paired[train] - offset)
            predicted = backend.to_numpy(model.predict(X_test))
            if k == 0:
                kernel = decoding._FoldKernel(R, train, test, 5)
                reference, alpha, _ = kernel.fit_predict(T, alphas)
                if np.isclose(alpha, float(backend.to_numpy(model.best_alphas_)[0])):
                    largest = max(largest, float(np.abs(predicted - reference).max()))
    hand = time.perf_counter() - start
    print(f"himalaya KernelRidgeCV     : {hand:8.1f} s (ratio {hand / ours:.1f}x slower)")
    print(f"max |difference| of the observed predictions: {largest:.2e}")


if __name__ == "__main__":
    main()
