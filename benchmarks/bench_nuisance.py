"""Benchmark: confounds and drifts projected out of the designs, against nilearn ``signal.clean``.

``--confound-regression bold-and-design`` projects each run's nuisance (constant, trend,
confounds, cosine drifts) out of every design the fit builds: the full design, and the held-out
stimuli's partial design of every stimulus-disjoint fold (1,600 of them for NOD's nested CV).
bids_vem computes one orthonormal basis per run (:mod:`bids_vem.encoding.nuisance`) and
projects with two products; the reference is nilearn's ``signal.clean`` (``detrend=True``,
``standardize=None``, the confounds and drifts) called on each design, which orthogonalises the
confounds again every time. Both give the same numbers (checked here, and in
``tests/encoding/test_nuisance.py``).

Usage::

    python benchmarks/bench_nuisance.py            # NOD's shape: 40 runs x 252 TRs, 512 x 4
    python benchmarks/bench_nuisance.py --small    # 8 runs x 120 TRs, 64 x 4
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from nilearn import signal

from bids_vem.encoding.nuisance import (
    cleaning_regressors,
    cosine_drifts,
    orthonormal_basis,
    project_out,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--designs", type=int, default=5, help="designs per run to project")
    args = parser.parse_args()
    n_runs, n_volumes, width = (8, 120, 64 * 4) if args.small else (40, 252, 512 * 4)
    tr, high_pass, n_confounds = 2.0, 0.01, 8
    rng = np.random.default_rng(0)
    confounds = [rng.standard_normal((n_volumes, n_confounds)).cumsum(0) for _ in range(n_runs)]
    designs = [rng.standard_normal((n_volumes, width)).astype(np.float32) for _ in range(n_runs)]
    print(
        f"{n_runs} runs x {n_volumes} TRs, designs of {width} columns, {n_confounds} confounds, "
        f"high-pass {high_pass} Hz; {args.designs} designs per run; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    )

    start = time.perf_counter()
    bases = [orthonormal_basis(cleaning_regressors(n_volumes, tr, c, high_pass)) for c in confounds]
    basis_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.designs):
        ours = [project_out(X, Q) for X, Q in zip(designs, bases, strict=True)]
    ours_seconds = time.perf_counter() - start

    drifts = [cosine_drifts(n_volumes, tr, high_pass)] * n_runs
    start = time.perf_counter()
    for _ in range(args.designs):
        reference = [
            signal.clean(
                X, detrend=True, standardize=None, confounds=np.hstack([c, d]), t_r=tr, filter=False
            )  # fmt: skip
            for X, c, d in zip(designs, confounds, drifts, strict=True)
        ]
    nilearn_seconds = time.perf_counter() - start
    error = max(float(np.abs(a - b).max()) for a, b in zip(ours, reference, strict=True))
    n = args.designs * n_runs
    print(
        f"bids_vem: bases {basis_seconds:.3f} s once, then {ours_seconds / n * 1e3:.2f} ms per design"
    )
    print(f"nilearn signal.clean: {nilearn_seconds / n * 1e3:.2f} ms per design")
    print(
        f"speed-up per design: {nilearn_seconds / ours_seconds:.1f}x; max |difference| {error:.1e}"
    )


if __name__ == "__main__":
    main()
