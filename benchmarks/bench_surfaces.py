"""Benchmark: fsLR 91k grayordinates (CIFTI) against a volume of the same size, end to end.

The same data, 91,282 points x 2,000 TRs in 4 runs (X w + noise, SNR spanning three
decades), are written twice: as fMRIPrep's CIFTI dense time series
(``space-fsLR_den-91k_bold.dtseries.nii``: 29,696 + 29,716 cortical vertices and 31,870
subcortical voxels) and as a 4-D NIfTI volume with a brain mask of exactly 91,282 voxels, in
the same order. Each geometry then goes through what bids_vem does with a run group, each
step in its own process (peak RSS is the process's VmHWM, reset before the step):

- ``store``: :func:`bids_vem.encoding.bold.write_bold_store` (the mask, then each run read,
  cleaned by nilearn's ``signal.clean`` and written to the float32 voxel store, one run in
  memory at a time);
- ``fit``: :func:`bids_vem.encoding.model.fit_encoding_model` streamed from that store within
  ``--mem`` (penalties by leave-one-run-out CV on 3 runs, held-out r on the last).

The two geometries must give the same r map (the check printed at the end): only reading
knows the geometry.

Usage::

    python benchmarks/bench_surfaces.py               # 4 runs x 500 TRs, p=256, --mem 2000
    python benchmarks/bench_surfaces.py --trs 100     # quick
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

import nibabel as nib
import numpy as np
from memory import reset_peak_rss, status_mb

ALPHAS = np.logspace(-2, 10, 13)
#: fMRIPrep's fsLR 91k grayordinates: left and right cortex vertices (of 32,492), voxels
CORTEX_LEFT, CORTEX_RIGHT, SUBCORTICAL = 29696, 29716, 31870
N_POINTS = CORTEX_LEFT + CORTEX_RIGHT + SUBCORTICAL
#: the volume's grid: MNI 2 mm-like, holding the 91,282 voxels of its mask
GRID = (91, 109, 91)


def designs(n_runs: int, n_trs: int, p: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    mixing = (rng.standard_normal((p, p)) / np.sqrt(p) + np.eye(p)).astype(np.float32)
    return [rng.standard_normal((n_trs, p), dtype=np.float32) @ mixing for _ in range(n_runs)]


def run_points(Xs: list[np.ndarray], run: int, seed: int = 1) -> np.ndarray:
    """(n_trs, N_POINTS) BOLD of one run: X w + noise around a mean of 1000."""
    rng = np.random.default_rng(seed)
    p = Xs[0].shape[1]
    weights = rng.standard_normal((p, N_POINTS), dtype=np.float32)
    weights *= np.logspace(-3, 0, N_POINTS, dtype=np.float32) / np.sqrt(p)
    noise = np.random.default_rng([seed, run]).standard_normal(
        (len(Xs[run]), N_POINTS), dtype=np.float32
    )
    return 1000.0 + 10.0 * (Xs[run] @ weights + noise)


def brain_models() -> nib.cifti2.BrainModelAxis:
    rng = np.random.default_rng(3)
    left = np.sort(rng.choice(32492, CORTEX_LEFT, replace=False))
    right = np.sort(rng.choice(32492, CORTEX_RIGHT, replace=False))
    models = nib.cifti2.BrainModelAxis.from_surface(left, 32492, "CortexLeft")
    models = models + nib.cifti2.BrainModelAxis.from_surface(right, 32492, "CortexRight")
    shape = (40, 40, 30)
    voxels = np.stack(np.unravel_index(np.arange(SUBCORTICAL), shape), axis=1)
    return models + nib.cifti2.BrainModelAxis(
        "thalamus_left", voxel=voxels, affine=np.diag([2.0, 2.0, 2.0, 1.0]), volume_shape=shape
    )


def volume_mask() -> np.ndarray:
    """A mask of exactly N_POINTS voxels: the ones nearest the grid's centre."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in GRID], indexing="ij"))
    distance = (grid**2).sum(axis=0).ravel()
    mask = np.zeros(distance.size, dtype=bool)
    mask[np.argsort(distance, kind="stable")[:N_POINTS]] = True
    return mask.reshape(GRID)


def write_data(folder: Path, args) -> dict:
    """Both geometries' files of every run; returns their paths."""
    Xs = designs(args.runs, args.trs, args.p)
    models, mask = brain_models(), volume_mask()
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    mask_path = folder / "mask.nii"
    nib.Nifti1Image(mask.astype(np.uint8), affine).to_filename(mask_path)
    files = {"cifti": [], "volume": [], "mask": str(mask_path)}
    for run in range(args.runs):
        points = run_points(Xs, run)
        series = nib.cifti2.SeriesAxis(0.0, args.tr, points.shape[0], "SECOND")
        cifti = folder / f"sub-01_task-x_run-{run + 1}_space-fsLR_den-91k_bold.dtseries.nii"
        nib.Cifti2Image(points, header=(series, models)).to_filename(cifti)
        volume = np.zeros((*GRID, points.shape[0]), dtype=np.float32)
        volume[mask] = points.T  # the mask's C order is the points' order
        path = folder / f"sub-01_task-x_run-{run + 1}_space-MNI_desc-preproc_bold.nii"
        image = nib.Nifti1Image(volume, affine)
        image.header.set_zooms((2.0, 2.0, 2.0, args.tr))
        image.to_filename(path)
        del volume, points
        files["cifti"].append(str(cifti))
        files["volume"].append(str(path))
    return files


def _runs(files: dict, geometry: str, args):
    from bids_vem.inputs.runs import Run

    mask = None if geometry == "cifti" else Path(files["mask"])
    space = "fsLR" if geometry == "cifti" else "MNI"
    return [
        Run("01", None, "x", str(i + 1), None, space, Path(path), mask, Path(path), None, args.tr, args.trs)
        for i, path in enumerate(files[geometry])
    ]  # fmt: skip


def step(args) -> dict:
    files = json.loads(Path(args.files).read_text())
    header = Path(args.work) / f"{args.geometry}.json"
    reset_peak_rss()
    start = time.perf_counter()
    if args.worker == "store":
        from bids_vem.encoding.bold import write_bold_store

        store = write_bold_store(_runs(files, args.geometry, args), [], header)
        return {
            "step": "store",
            "geometry": args.geometry,
            "seconds": time.perf_counter() - start,
            "peak_rss_mb": status_mb("VmHWM"),
            "n_points": store.n_voxels,
        }
    import torch

    from bids_vem.encoding.model import fit_encoding_model
    from bids_vem.encoding.voxel_data import VoxelStore

    torch.set_num_threads(args.threads)
    Xs = designs(args.runs, args.trs, args.p)
    Xs = [(X - X.mean(0)) / X.std(0) for X in Xs]
    reset_peak_rss()
    start = time.perf_counter()
    result = fit_encoding_model(
        Xs, VoxelStore(header), ALPHAS, test_runs=[args.runs - 1], mem_mb=args.mem, device="cpu"
    )
    seconds = time.perf_counter() - start
    np.save(Path(args.work) / f"{args.geometry}_r.npy", result.r)
    return {
        "step": "fit",
        "geometry": args.geometry,
        "seconds": seconds,
        "peak_rss_mb": status_mb("VmHWM"),
        "n_points": int(result.r.size),
        "voxel_chunk": result.voxel_chunk,
        "mean_r": float(np.mean(result.r)),
    }


def _worker(name: str, geometry: str, args, files: Path, work: Path) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--geometry", geometry,
               "--files", str(files), "--work", str(work)]  # fmt: skip
    for key in ("runs", "trs", "p", "tr", "threads", "mem"):
        command += [f"--{key}", str(getattr(args, key))]
    env = {**os.environ, **{k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{name} {geometry} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--trs", type=int, default=500, help="TRs per run")
    parser.add_argument("--p", type=int, default=256, help="design columns")
    parser.add_argument("--tr", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--mem", type=float, default=2000, help="--mem of the fits, MB")
    parser.add_argument("--worker", choices=("store", "fit"), help=argparse.SUPPRESS)
    parser.add_argument("--geometry", choices=("cifti", "volume"), help=argparse.SUPPRESS)
    parser.add_argument("--files", help=argparse.SUPPRESS)
    parser.add_argument("--work", help="folder of the data and stores (default: temporary)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(step(args)))
        return
    print(
        f"# bench_surfaces: {N_POINTS} points x {args.runs * args.trs} TRs ({args.runs} runs), "
        f"p={args.p}, alphas={len(ALPHAS)}, threads={args.threads}, --mem {args.mem:g} MB"
    )
    print(
        f"# {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        files = work / "files.json"
        files.write_text(json.dumps(write_data(work, args)))
        print(f"# data written in {time.perf_counter() - start:.0f} s (both uncompressed)")
        rows = [
            _worker(name, geometry, args, files, work)
            for geometry in ("cifti", "volume")
            for name in ("store", "fit")
        ]
        r = {g: np.load(work / f"{g}_r.npy") for g in ("cifti", "volume")}
    print(f"{'geometry':<8} {'step':<6} {'points':>7} {'time (s)':>9} {'peak RSS (MB)':>14}")
    for row in rows:
        print(
            f"{row['geometry']:<8} {row['step']:<6} {row['n_points']:>7} {row['seconds']:>9.1f} "
            f"{row['peak_rss_mb']:>14.0f}"
        )
    by = {(row["geometry"], row["step"]): row for row in rows}
    for name in ("store", "fit"):
        ratio = by[("cifti", name)]["seconds"] / by[("volume", name)]["seconds"]
        memory = by[("cifti", name)]["peak_rss_mb"] / by[("volume", name)]["peak_rss_mb"]
        print(f"# {name}: CIFTI / volume time {ratio:.2f}x, peak RSS {memory:.2f}x")
    print(
        f"# same r map from both geometries: max |difference| "
        f"{np.abs(r['cifti'] - r['volume']).max():.1e} over {r['cifti'].size} points"
    )


if __name__ == "__main__":
    main()
