"""Benchmark: per-voxel ridge penalty selection by leave-one-run-out CV.

Compares, on the same random data, bids_vem's ``ridge_cv_alphas`` (+ ``fit_ridge`` refit) with
himalaya's ``RidgeCV`` (every backend available here: numpy, torch, torch_cuda, cupy; same
folds, same penalties, correlation score; it always refits) and scikit-learn's
``RidgeCV(alpha_per_target=True)`` (which can only use generalised cross-validation, i.e.
efficient leave-one-*sample*-out, not run folds: its penalties answer a different question and
are shown for scale only).

Each method runs in its own process so that its peak resident memory (RSS) is its own.
bids_vem's rate is reported in GFLOP/s against a float32 GEMM measured on the same device:

- model FLOPs (the textbook SVD-reuse algorithm, as himalaya and Huth's ``ridge_corr`` run it):
  per fold ``2 r v (n_train + k n_test)`` (``C = L^T Y`` and one prediction per penalty),
  refit ``2 r v (n + p)``, with ``r = min(n_train, p)``;
- executed FLOPs (what bids_vem runs): per fold ``2 r v n_train + 2 m v n_test + 2 k m r v``
  with ``m = min(n_test, r)`` (``C``, ``Q^T y`` and the predictions in the QR basis of the
  held-out design), refit as above.

Scoring, data movement and the (float64) decompositions are not counted.

Usage::

    python benchmarks/bench_ridge.py            # n=4000, p=512, v=20000, 13 alphas, 5 runs
    python benchmarks/bench_ridge.py --small    # n=1000, p=128, v=4000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from memory import reset_peak_rss, status_mb

METHODS = (
    "bids_vem",
    "bids_vem-cuda",
    "himalaya-numpy",
    "himalaya-torch",
    "himalaya-torch_cuda",
    "himalaya-cupy",
    "sklearn-gcv",
)


def available_methods() -> list[str]:
    """The methods this machine can run (CUDA ones only with a GPU, cupy only if installed)."""
    import importlib.util

    import torch

    cuda = torch.cuda.is_available()
    out = ["bids_vem", "himalaya-numpy", "himalaya-torch", "sklearn-gcv"]
    if cuda:
        out.insert(1, "bids_vem-cuda")
        out.insert(-1, "himalaya-torch_cuda")
        if importlib.util.find_spec("cupy") is not None:
            out.insert(-1, "himalaya-cupy")
    return out


def flops(n: int, p: int, v: int, n_alphas: int, n_folds: int) -> dict[str, float]:
    """Model and executed FLOPs of select + refit (module docstring)."""
    n_test = n // n_folds
    n_train = n - n_test
    r = min(n_train, p)
    m = min(n_test, r)
    refit = 2 * min(n, p) * v * (n + p)
    model = n_folds * 2 * r * v * (n_train + n_alphas * n_test) + refit
    executed = n_folds * (2 * r * v * n_train + 2 * m * v * n_test + 2 * n_alphas * m * r * v)
    return {"model": model, "executed": executed + refit}


def gemm_rate(device: str, threads: int, size: int = 4096, repeat: int = 5) -> float:
    """Best float32 GEMM rate (GFLOP/s) of ``size`` x ``size`` products on ``device``."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = np.inf
    for _ in range(repeat + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def make_data(n: int, p: int, v: int, n_runs: int, seed: int = 0):
    """Runs of a design with correlated columns and voxels whose SNR spans three decades."""
    rng = np.random.default_rng(seed)
    mixing = (rng.standard_normal((p, p)) / np.sqrt(p) + np.eye(p)).astype(np.float32)
    X = rng.standard_normal((n, p), dtype=np.float32) @ mixing
    weights = rng.standard_normal((p, v), dtype=np.float32)
    weights *= np.logspace(-3, 0, v, dtype=np.float32) / np.sqrt(p)
    Y = X @ weights
    Y += rng.standard_normal((n, v), dtype=np.float32)
    bounds = np.linspace(0, n, n_runs + 1).astype(int)
    runs = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    # z-score each run, as the pipeline does
    for part in runs:
        X[part] = (X[part] - X[part].mean(0)) / X[part].std(0)
        Y[part] = (Y[part] - Y[part].mean(0)) / Y[part].std(0)
    return X, Y, runs


def worker(method: str, args) -> dict:
    """Fit one method in this process; peak RSS counts from just before the fit."""
    X, Y, runs = make_data(args.n, args.p, args.v, args.folds)
    alphas = np.logspace(-2, 10, args.n_alphas)
    splits = [
        (
            np.concatenate([np.arange(r.start, r.stop) for r in runs if r != test]),
            np.arange(test.start, test.stop),
        )
        for test in runs
    ]
    timings, extra = {}, {}
    # imports first, so that the libraries' own memory is not counted as the method's
    if method.startswith("bids_vem"):
        import torch

        from bids_vem.encoding.ridge import fit_ridge, ridge_cv_alphas

        torch.set_num_threads(args.threads)
        device = "cuda" if method.endswith("cuda") else "cpu"

        def fit():
            start = time.perf_counter()
            best, extra["scores"] = ridge_cv_alphas(
                [X[r] for r in runs], [Y[r] for r in runs], alphas, device=device
            )
            timings["select_s"] = time.perf_counter() - start
            fit_ridge(X, Y, best, device)
            return best

    elif method.startswith("himalaya"):
        from himalaya.backend import set_backend
        from himalaya.ridge import RidgeCV
        from himalaya.scoring import correlation_score

        backend = set_backend(method.removeprefix("himalaya-"))
        if "torch" in method:
            import torch

            torch.set_num_threads(args.threads)

        def fit():
            model = RidgeCV(
                alphas=alphas,
                cv=splits,
                solver_params=dict(score_func=correlation_score, local_alpha=True),
            )
            model.fit(backend.asarray(X), backend.asarray(Y))
            # mean CV score of the chosen penalty (+ 1e-10 log alpha, as its argmax)
            extra["scores"] = np.asarray(backend.to_numpy(model.cv_scores_)).ravel()
            return np.asarray(backend.to_numpy(model.best_alphas_))

    elif method == "sklearn-gcv":
        from sklearn.linear_model import RidgeCV

        def fit():
            model = RidgeCV(alphas=alphas, fit_intercept=False, alpha_per_target=True).fit(X, Y)
            return np.asarray(model.alpha_, dtype=np.float64)

    else:
        raise SystemExit(f"unknown method {method}")

    reset_peak_rss()
    rss_before = status_mb("VmRSS")
    # the best of --repeat runs: other processes on a shared machine only ever slow a run down
    best_times: dict[str, float] = {}
    for _ in range(args.repeat):
        start = time.perf_counter()
        best = fit()
        timings["select_refit_s"] = time.perf_counter() - start
        for key, value in timings.items():
            best_times[key] = min(value, best_times.get(key, np.inf))
    timings = best_times
    peak = status_mb("VmHWM")
    np.save(args.alphas_out, best)
    if "scores" in extra:
        np.save(args.alphas_out.replace(".npy", "_scores.npy"), extra["scores"])
    return {
        "method": method,
        **timings,
        "peak_rss_mb": peak,
        "rss_data_mb": rss_before,
        "extra_mb": peak - rss_before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="n=1000, p=128, v=4000")
    parser.add_argument("--n", type=int, default=4000, help="time points (all runs)")
    parser.add_argument("--p", type=int, default=512, help="design columns")
    parser.add_argument("--v", type=int, default=20000, help="voxels")
    parser.add_argument("--n-alphas", type=int, default=13)
    parser.add_argument("--folds", type=int, default=5, help="runs (leave-one-run-out folds)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=1, help="time the best of N fits")
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS, help="default: every one available here"
    )
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--alphas-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.small:
        args.n, args.p, args.v = 1000, 128, 4000

    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return

    import torch

    args.methods = args.methods or available_methods()

    print(
        f"# bench_ridge: n={args.n} p={args.p} v={args.v} alphas={args.n_alphas} "
        f"folds={args.folds} threads={args.threads} repeat={args.repeat}"
    )
    print(
        f"# {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, python {platform.python_version()}, torch {torch.__version__}"
    )
    results, selected, method_scores = [], {}, {}
    alphas = np.logspace(-2, 10, args.n_alphas)
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            out = Path(tmp) / f"{method}.npy"
            command = [
                sys.executable,
                __file__,
                "--worker",
                method,
                "--alphas-out",
                str(out),
                "--n",
                str(args.n),
                "--p",
                str(args.p),
                "--v",
                str(args.v),
                "--n-alphas",
                str(args.n_alphas),
                "--folds",
                str(args.folds),
                "--threads",
                str(args.threads),
                "--repeat",
                str(args.repeat),
            ]
            env = {
                **os.environ,
                "OMP_NUM_THREADS": str(args.threads),
                "MKL_NUM_THREADS": str(args.threads),
                "OPENBLAS_NUM_THREADS": str(args.threads),
            }
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                print(f"{method}: failed\n{done.stderr[-2000:]}")
                continue
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            selected[method] = np.load(out)
            if Path(str(out).replace(".npy", "_scores.npy")).exists():
                method_scores[method] = np.load(str(out).replace(".npy", "_scores.npy"))

    reference = selected.get("bids_vem")
    scores = method_scores.get("bids_vem")
    print(
        f"{'method':<20} {'select (s)':>10} {'select+refit (s)':>17} {'peak RSS (MB)':>14} "
        f"{'before (MB)':>12} {'fit adds (MB)':>14} {'same alpha':>11} {'same or tied':>13} "
        f"{'max |CV diff|':>14}"
    )
    for row in results:
        agree = tied = cv_diff = ""
        if reference is not None and row["method"] != "bids_vem":
            theirs = selected[row["method"]]
            same = np.isclose(theirs, reference, rtol=1e-5)
            agree = f"{same.mean():.2%}"
            # tied: the two penalties' mean CV scores (ours, float64) differ by less than 1e-6
            mine = np.argmin(np.abs(np.log(alphas)[:, None] - np.log(reference)[None]), axis=0)
            other = np.argmin(np.abs(np.log(alphas)[:, None] - np.log(theirs)[None]), axis=0)
            voxels = np.arange(len(reference))
            gap = np.abs(scores[other, voxels] - scores[mine, voxels])
            tied = f"{np.mean(same | (gap < 1e-6)):.2%}"
            if row["method"].startswith("himalaya") and row["method"] in method_scores:
                # their CV score of their penalty vs ours of the same penalty
                theirs_cv = method_scores[row["method"]] - 1e-10 * np.log(theirs)
                cv_diff = f"{np.abs(theirs_cv - scores[other, voxels]).max():.1e}"
        select = f"{row['select_s']:.2f}" if "select_s" in row else "-"
        print(
            f"{row['method']:<20} {select:>10} {row['select_refit_s']:>17.2f} "
            f"{row['peak_rss_mb']:>14.0f} {row['rss_data_mb']:>12.0f} {row['extra_mb']:>14.0f} "
            f"{agree:>11} {tied:>13} {cv_diff:>14}"
        )
    times = {row["method"]: row["select_refit_s"] for row in results}
    for ours, theirs in (
        ("bids_vem", ("himalaya-numpy", "himalaya-torch")),
        ("bids_vem-cuda", ("himalaya-torch_cuda", "himalaya-cupy")),
    ):
        others = {m: times[m] for m in theirs if m in times}
        if ours in times and others:
            fastest = min(others, key=others.get)
            print(
                f"# {ours}: {others[fastest] / times[ours]:.2f}x faster than the fastest "
                f"himalaya backend here ({fastest}, {others[fastest]:.2f} s)"
            )
    counts = flops(args.n, args.p, args.v, args.n_alphas, args.folds)
    for method in ("bids_vem", "bids_vem-cuda"):
        if method not in times:
            continue
        device = "cuda" if method.endswith("cuda") else "cpu"
        peak = gemm_rate(device, args.threads)
        model = counts["model"] / times[method] / 1e9
        executed = counts["executed"] / times[method] / 1e9
        print(
            f"# {method}: {model:.1f} GFLOP/s by the model FLOP count ({counts['model'] / 1e12:.2f}"
            f" TFLOP), {executed:.1f} GFLOP/s executed ({counts['executed'] / 1e12:.2f} TFLOP); "
            f"float32 GEMM 4096^2 on {device} with {args.threads} threads: {peak:.1f} GFLOP/s "
            f"-> {model / peak:.0%} (model) / {executed / peak:.0%} (executed) of it"
        )
    print("# same alpha / same or tied: agreement with bids_vem's penalties; tied = a different")
    print("#   penalty whose mean CV score is within 1e-6 of bids_vem's (equal up to float32)")
    print(
        "# max |CV diff|: himalaya's mean CV score of its penalty minus bids_vem's of that penalty"
    )
    print("# before: resident memory with data and libraries loaded; fit adds: peak minus before")
    print("# himalaya always refits weights: compare its time with bids_vem's select+refit")
    print(
        "# sklearn-gcv: leave-one-sample-out (GCV), not run folds: its penalties differ by design"
    )


if __name__ == "__main__":
    main()
