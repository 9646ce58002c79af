"""Benchmark: wall time of the README's demo (target: under 10 minutes on 2 CPU cores, no GPU).

Times each stage of ``scripts/demo.sh`` as separate commands, with the same options, in a
fresh folder: demo generation, participant level (cold work directory), the same participant
level again (served from the work directory), and the group level.

Usage::

    python benchmarks/bench_demo.py [--subjects 4] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bids_vem.demo.simulate import CONFOUND_COLUMNS, IMAGE_MODEL_DIRNAME


def _timed(label: str, command: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(
        command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    seconds = time.perf_counter() - started
    print(f"{label:<40s} {seconds:8.1f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bids_vem_bench_demo_"))
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out, work = root / "ds" / "derivatives" / "bids_vem", root / "work"
    participant = [
        str(bin_dir / "bids_vem"), str(root / "ds"), str(out), "participant", "-w", str(work), "--nprocs", "2",
        "--captions", str(root / "ds" / "stimuli" / "captions.tsv"),
        "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2",
        "--image-encoder", f"randomclip=openclip:{root / 'models' / IMAGE_MODEL_DIRNAME}",
        "--confounds", *CONFOUND_COLUMNS,
        # as scripts/demo.sh
        "--align", "--align-epochs", "5", "--align-lr", "1e-3", "--align-batch-size", "32",
        "--align-unfreeze-blocks", "-1",
    ]  # fmt: skip
    print(
        f"bids_vem demo benchmark, {args.subjects} participants x 4 runs, {os.cpu_count()} CPU(s), "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    total = _timed(
        "generate the demo dataset",
        [
            sys.executable,
            "-m",
            "bids_vem.demo",
            str(root),
            "--subjects",
            str(args.subjects),
            "--overwrite",
            "-q",
        ],
        env,
    )
    total += _timed("participant level (cold work directory)", participant, env)
    rerun = _timed("participant level again (cached)", participant, env)
    total += _timed(
        "group level", [str(bin_dir / "bids_vem"), str(root / "ds"), str(out), "group"], env
    )
    print(f"{'demo total (generate + participant + group)':<40s} {total:8.1f} s  (target < 600 s)")
    print(f"{'rerun / cold participant level':<40s} {rerun:8.1f} s")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
