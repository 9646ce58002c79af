"""Benchmark: a whole-brain encoding model streamed from disk vs the same model in memory.

``fit_encoding_model`` with explicit test runs (penalties by leave-one-run-out CV on 4
training runs, one refit, held-out r and R^2 of the test run accumulated chunk by chunk) on
random data of n samples in 5 runs, p design columns and v voxels:

- ``streamed``: the BOLD is written once, run by run, to a float32
  :class:`~bids_vem.encoding.voxel_data.VoxelStore` in a work folder, and the fit reads voxel
  chunks from it, with the chunk derived from ``--mem``;
- ``in-memory``: the same fit on per-run arrays held in memory (``--v-memory`` voxels, fewer
  by default: the point is the time per voxel, which does not depend on v).

Each step runs in its own process; peak RSS is the process's VmHWM (reset just before the
fit: data generation and imports are not counted; file pages read are not resident memory
because the store is read with positional reads, not through a mapping).

Usage::

    python benchmarks/bench_wholebrain.py                       # n=10000, v=200000 streamed
    python benchmarks/bench_wholebrain.py --v 20000 --v-memory 20000
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

ALPHAS = np.logspace(-2, 10, 13)
#: voxels generated at once while the runs are written (bounds the generator's memory)
_BLOCK = 20_000


def designs(n: int, p: int, n_runs: int, seed: int = 0) -> list[np.ndarray]:
    """Per-run designs with correlated columns, z-scored per run."""
    rng = np.random.default_rng(seed)
    mixing = (rng.standard_normal((p, p)) / np.sqrt(p) + np.eye(p)).astype(np.float32)
    bounds = np.linspace(0, n, n_runs + 1).astype(int)
    out = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        X = rng.standard_normal((b - a, p), dtype=np.float32) @ mixing
        out.append((X - X.mean(0)) / X.std(0))
    return out


def run_data(Xs: list[np.ndarray], run: int, voxels: slice, seed: int = 1) -> np.ndarray:
    """Voxels ``voxels`` of one run: X w + noise, SNR spanning three decades, z-scored."""
    n_voxels = voxels.stop - voxels.start
    rng = np.random.default_rng([seed, voxels.start])
    p = Xs[0].shape[1]
    weights = rng.standard_normal((p, n_voxels), dtype=np.float32)
    weights *= np.logspace(-3, 0, n_voxels, dtype=np.float32) / np.sqrt(p)
    noise = np.random.default_rng([seed, voxels.start, run]).standard_normal(
        (len(Xs[run]), n_voxels), dtype=np.float32
    )
    Y = Xs[run] @ weights + noise
    return (Y - Y.mean(0)) / Y.std(0)


def whole_run(Xs, run: int, n_voxels: int) -> np.ndarray:
    return np.concatenate(
        [
            run_data(Xs, run, slice(a, min(a + _BLOCK, n_voxels)))
            for a in range(0, n_voxels, _BLOCK)
        ],
        axis=1,
    )


def write_store(args) -> dict:
    from bids_vem.encoding.voxel_data import write_voxel_store

    Xs = designs(args.n, args.p, args.runs)
    start = time.perf_counter()
    write_voxel_store(
        Path(args.store),
        ((f"run-{i}", whole_run(Xs, i, args.v)) for i in range(args.runs)),
        args.v,
        [len(X) for X in Xs],
    )
    return {
        "step": "write",
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": status_mb("VmHWM"),
    }


def fit(args, streamed: bool) -> dict:
    import torch

    from bids_vem.encoding.model import fit_encoding_model
    from bids_vem.encoding.voxel_data import VoxelStore

    torch.set_num_threads(args.threads)
    Xs = designs(args.n, args.p, args.runs)
    if streamed:
        data = VoxelStore(Path(args.store))
        n_voxels = data.n_voxels
    else:
        n_voxels = args.v_memory
        data = [whole_run(Xs, i, n_voxels) for i in range(args.runs)]
    reset_peak_rss()
    before = status_mb("VmRSS")
    start = time.perf_counter()
    result = fit_encoding_model(
        Xs, data, ALPHAS, test_runs=[args.runs - 1], mem_mb=args.mem, device="cpu"
    )
    seconds = time.perf_counter() - start
    if args.check:
        np.save(args.check, np.stack([result.r, result.alpha]))
    return {
        "step": "streamed" if streamed else "in-memory",
        "n_voxels": n_voxels,
        "seconds": seconds,
        "us_per_voxel": 1e6 * seconds / n_voxels,
        "voxel_chunk": result.voxel_chunk,
        "peak_rss_mb": status_mb("VmHWM"),
        "rss_before_mb": before,
        "mean_r": float(np.mean(result.r)),
    }


def _worker(step: str, args, **extra) -> dict:
    command = [sys.executable, __file__, "--worker", step]
    for key in ("n", "p", "v", "v_memory", "runs", "threads", "mem", "store", "check"):
        value = extra.get(key, getattr(args, key))
        if value is not None:
            command += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, **{k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{step} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="samples, all runs")
    parser.add_argument("--p", type=int, default=512, help="design columns")
    parser.add_argument("--v", type=int, default=200_000, help="voxels streamed from disk")
    parser.add_argument("--v-memory", type=int, default=20_000, help="voxels of the in-memory fit")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--mem", type=float, default=3000, help="--mem of the fits, MB")
    parser.add_argument("--work", help="folder of the voxel store (default: a temporary one)")
    parser.add_argument(
        "--worker", choices=("write", "streamed", "in-memory"), help=argparse.SUPPRESS
    )
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--check", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "write":
        print(json.dumps(write_store(args)))
        return
    if args.worker:
        print(json.dumps(fit(args, streamed=args.worker == "streamed")))
        return

    import torch

    print(
        f"# bench_wholebrain: n={args.n} p={args.p} runs={args.runs} (test run: the last; "
        f"CV on the others) alphas={len(ALPHAS)} threads={args.threads} --mem {args.mem:g} MB"
    )
    print(
        f"# {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, python {platform.python_version()}, torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        store = str(Path(tmp) / "bold.json")
        rows = [_worker("write", args, store=store)]
        size_gb = 4 * args.n * args.v / 1e9
        print(f"# voxel store: {size_gb:.1f} GB written in {rows[0]['seconds']:.0f} s")
        checks = {name: str(Path(tmp) / f"{name}.npy") for name in ("streamed", "in-memory")}
        rows.append(_worker("streamed", args, store=store, check=checks["streamed"]))
        rows.append(_worker("in-memory", args, store=store, check=checks["in-memory"]))
        same = ""
        if args.v_memory <= args.v:
            streamed, in_memory = (np.load(checks[k]) for k in ("streamed", "in-memory"))
            k = args.v_memory
            same = (
                f"; on the first {k} voxels the maps agree: max |r difference| "
                f"{np.abs(streamed[0, :k] - in_memory[0, :k]).max():.1e}, same alpha "
                f"{np.mean(streamed[1, :k] == in_memory[1, :k]):.2%}"
            )
    print(
        f"{'step':<10} {'voxels':>8} {'time (s)':>9} {'us/voxel':>9} {'chunk':>7} {'peak RSS (MB)':>14}"
    )
    for row in rows[1:]:
        print(
            f"{row['step']:<10} {row['n_voxels']:>8} {row['seconds']:>9.1f} "
            f"{row['us_per_voxel']:>9.1f} {row['voxel_chunk']:>7} {row['peak_rss_mb']:>14.0f}"
        )
    ratio = rows[1]["us_per_voxel"] / rows[2]["us_per_voxel"]
    print(f"# streamed / in-memory time per voxel: {ratio:.2f}x{same}")
    print(
        f"# writing the store (one run in memory at a time): peak RSS {rows[0]['peak_rss_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
