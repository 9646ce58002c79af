"""Benchmark: region RSA (RDMs, rank correlations, permutation tests), bids_vem vs rsatoolbox.

Same simulated patterns (two halves of each stimulus's presentations), same computations:

- the cross-validated Euclidean RDM (rsatoolbox: ``calc_rdm(method="crossnobis")`` without a
  noise model, odd vs even presentations);
- Spearman's rho and Kendall's tau-a with a model RDM (rsatoolbox: ``compare``);
- a permutation test of each with ``n_permutations`` relabellings of the model's stimuli
  (rsatoolbox: ``compare`` on each permuted model RDM, as its users write it).

Printed: wall time of each step for both, and the largest difference of the results.

Usage::

    python benchmarks/bench_rsa.py            # 200 stimuli, 2,000 voxels, 1,000 permutations
    python benchmarks/bench_rsa.py --small    # 40 stimuli, 300 voxels, 100 permutations
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    n, v, perms = (40, 300, 100) if args.small else (200, 2000, 1000)
    rng = np.random.default_rng(0)
    features = rng.standard_normal((n, 8))
    signal = features @ rng.standard_normal((8, v))
    half_a, half_b = signal + 3 * rng.standard_normal((2, n, v))
    from scipy.spatial.distance import pdist

    model = pdist(features, "sqeuclidean")
    print(f"{platform.processor() or platform.machine()}, {n} stimuli, {v} voxels, "
          f"{perms} permutations")  # fmt: skip

    import rsatoolbox

    from bids_vem.analysis.rsa import compare_rdms, crossvalidated_rdm, permutation_p, square

    timings = {}
    start = time.perf_counter()
    ours_rdm = crossvalidated_rdm(half_a, half_b)
    timings["rdm"] = [time.perf_counter() - start]
    start = time.perf_counter()
    stacked = rsatoolbox.data.Dataset(
        np.vstack([half_a, half_b]),
        obs_descriptors={"stim": list(range(n)) * 2, "half": [0] * n + [1] * n},
    )
    theirs_rdm = rsatoolbox.rdm.calc_rdm(
        stacked, method="crossnobis", descriptor="stim", cv_descriptor="half"
    ).get_vectors()[0]
    timings["rdm"].append(time.perf_counter() - start)
    differences = {"rdm": float(np.abs(ours_rdm - theirs_rdm).max())}
    brain = rsatoolbox.rdm.RDMs(theirs_rdm[None])
    i, j = np.triu_indices(n, 1)
    M = square(model, n)
    for method in ("spearman", "tau-a"):
        start = time.perf_counter()
        ours = compare_rdms(ours_rdm, model, method)
        p_ours = permutation_p(ours_rdm, model, n, method, perms, seed=1)
        timings[method] = [time.perf_counter() - start]
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = rsatoolbox.rdm.compare(brain, rsatoolbox.rdm.RDMs(model[None]), method)[0, 0]
            order_rng = np.random.default_rng(1)
            null = [
                rsatoolbox.rdm.compare(
                    brain, rsatoolbox.rdm.RDMs(M[np.ix_(o, o)][i, j][None]), method
                )[0, 0]
                for o in (order_rng.permutation(n) for _ in range(perms))
            ]
        p_theirs = (1 + np.sum(np.asarray(null) >= theirs)) / (1 + perms)
        timings[method].append(time.perf_counter() - start)
        differences[method] = abs(ours - theirs)
        differences[f"p {method}"] = abs(p_ours - p_theirs)
    for step, (ours_t, theirs_t) in timings.items():
        label = "RDM (crossnobis)" if step == "rdm" else f"{step} + {perms} permutations"
        print(f"{label:32s} bids_vem {ours_t:7.2f} s   rsatoolbox {theirs_t:7.2f} s   "
              f"({theirs_t / max(ours_t, 1e-9):.1f}x)")  # fmt: skip
    print("max |difference|: " + ", ".join(f"{k} {v:.2e}" for k, v in differences.items()))


if __name__ == "__main__":
    main()
