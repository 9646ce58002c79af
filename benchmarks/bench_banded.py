"""Benchmark: banded ridge with variance partitioning (``--joint``) against himalaya by hand.

The same simulated data (two feature spaces sharing a latent, voxels driven by each part) are
fitted twice:

- bids_vem's :func:`~bids_vem.encoding.banded.fit_joint_model`: nested leave-one-run-out, the
  joint banded model and one ridge model per space (3 models per fold), voxel chunks, split
  R^2 and the partition;
- the same computation written directly with himalaya (``BandedRidgeCV`` and ``RidgeCV`` per
  outer fold on the same inner folds, then ``r2_score_split``), the way a himalaya user would
  write it from its tutorials.

Both use himalaya's torch backend on the CPU (``torch_cuda`` with ``--device cuda``). Printed:
wall time of each, the largest difference of the joint R^2, split R^2 and unique R^2 maps, and
the recovery of the planted components. Each method runs in this process one after the other
(himalaya's backend is global).

Usage::

    python benchmarks/bench_banded.py                 # 6 runs x 300 TRs, p = 64 + 64, 4,000 voxels
    python benchmarks/bench_banded.py --small         # 4 runs x 100 TRs, p = 16 + 16, 400 voxels
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def simulate(n_runs: int, n_trs: int, p: int, n_voxels: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = n_runs * n_trs
    k = p // 2
    S, UA, UB = (rng.standard_normal((n, k)) for _ in range(3))
    A, B = np.hstack([S, UA]), np.hstack([S, UB])
    Y = rng.standard_normal((n, n_voxels))
    third = n_voxels // 4
    for j, source in enumerate((UA, S, UB)):
        w = rng.standard_normal((k, third))
        Y[:, j * third : (j + 1) * third] += source @ (w / np.linalg.norm(w, axis=0))
    split = np.array_split(np.arange(n), n_runs)

    def z(x):
        return ((x - x.mean(0)) / x.std(0)).astype(np.float32)

    # the atoms in partition order: unique a (U_A's voxels), unique b (U_B's), shared (S's)
    truth = np.zeros((3, n_voxels))
    for atom, block in enumerate((0, 2, 1)):
        truth[atom, block * third : (block + 1) * third] = 0.5
    return [z(A[i]) for i in split], [z(B[i]) for i in split], [z(Y[i]) for i in split], truth


def by_hand(As, Bs, Ys, alphas, n_iter, seed, device):
    from himalaya.backend import set_backend
    from himalaya.ridge import BandedRidgeCV, RidgeCV
    from himalaya.scoring import r2_score_split

    backend = set_backend("torch_cuda" if device == "cuda" else "torch")
    n_runs = len(Ys)
    ys, joint, single = [], [], {0: [], 1: []}
    p = As[0].shape[1]
    for test in range(n_runs):
        train = [i for i in range(n_runs) if i != test]
        X = np.vstack([np.hstack([As[i], Bs[i]]) for i in train])
        Y = np.vstack([Ys[i] for i in train])
        starts = np.cumsum([0, *(len(Ys[i]) for i in train)])
        inner = [
            (
                np.concatenate(
                    [np.arange(starts[j], starts[j + 1]) for j in range(len(train)) if j != k]
                ),
                np.arange(starts[k], starts[k + 1]),
            )
            for k in range(len(train))
        ]
        X_test = np.hstack([As[test], Bs[test]])
        for s, cols in ((0, slice(0, p)), (1, slice(p, 2 * p))):
            model = RidgeCV(alphas=alphas, cv=inner).fit(X[:, cols], Y)
            single[s].append(backend.to_numpy(model.predict(X_test[:, cols])))
        model = BandedRidgeCV(
            groups=np.repeat([0, 1], p),
            solver_params=dict(n_iter=n_iter, alphas=alphas, progress_bar=False),
            cv=inner,
            random_state=seed,
        ).fit(X, Y)
        joint.append(backend.to_numpy(model.predict(X_test, split=True)))
        ys.append(Ys[test])
    y = np.vstack(ys)
    y = y - y.mean(0)
    P = np.concatenate(joint, axis=1)
    sst = (y**2).sum(0)

    def r2(pred):
        return 1 - ((y - pred) ** 2).sum(0) / sst

    r2_joint = r2(P.sum(0))
    r2_a, r2_b = r2(np.vstack(single[0])), r2(np.vstack(single[1]))
    split = backend.to_numpy(r2_score_split(y, P))
    unique = np.stack([r2_joint - r2_b, r2_joint - r2_a, r2_a + r2_b - r2_joint])
    return r2_joint, split, unique


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iterations", type=int, default=16)
    args = parser.parse_args()
    runs, trs, p, voxels = (4, 100, 16, 400) if args.small else (6, 300, 64, 4000)
    As, Bs, Ys, truth = simulate(runs, trs, p, voxels)
    alphas = np.logspace(-2, 6, 9)
    print(
        f"{platform.processor() or platform.machine()}, {runs} runs x {trs} TRs, p = {p} + {p}, "
        f"{voxels} voxels, {args.iterations} band-weight samples, {len(alphas)} penalties"
    )
    from bids_vem.encoding.banded import fit_joint_model

    # warm up torch and himalaya (first calls load kernels) before timing either
    small = simulate(3, 30, 4, 10)
    fit_joint_model(small[:2], small[2], spaces=["a", "b"], alphas=alphas, n_iterations=2)
    by_hand(*small[:3], alphas, 2, 0, args.device)
    start = time.perf_counter()
    ours = fit_joint_model(
        [As, Bs], Ys, spaces=["a", "b"], alphas=alphas, n_iterations=args.iterations,
        seed=0, device=args.device,
    )  # fmt: skip
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    r2_joint, split, unique = by_hand(As, Bs, Ys, alphas, args.iterations, 0, args.device)
    t_hand = time.perf_counter() - start
    _, atoms = ours.atoms()
    print(f"bids_vem fit_joint_model: {t_ours:8.1f} s")
    print(f"himalaya by hand        : {t_hand:8.1f} s  (ratio {t_ours / t_hand:.2f})")
    print(f"max |diff| joint R^2 {np.abs(ours.r2 - r2_joint).max():.2e}, split R^2 "
          f"{np.abs(ours.split_r2 - split).max():.2e}, partition "
          f"{np.abs(atoms - unique).max():.2e}")  # fmt: skip
    for j, name in enumerate(("unique a", "unique b", "shared")):
        planted = truth[j] > 0
        print(
            f"{name:9s}: mean {atoms[j][planted].mean():.3f} where planted (truth 0.5), "
            f"{atoms[j][~planted].mean():+.3f} elsewhere"
        )


if __name__ == "__main__":
    main()
