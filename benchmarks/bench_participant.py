"""Benchmark: one participant of NOD's size end to end, wall time and peak memory per stage.

A synthetic fMRIPrep dataset of NOD's shape (Gong et al. 2023: 2 mm MNI, 40 runs of 256
volumes of TR 2 s, images repeated across runs) is written by the demo generator, then the
participant level runs as a user would start it (``python -m bids_vem``, one process,
``--nprocs 1`` so that steps run one after the other), with the three feature spaces of
LLM-VEM: caption text (MiniLM), the unaligned image tower (a random open_clip ViT) and that
tower aligned to the caption embeddings (``--align``), plus permutations.

Per stage (features, alignment, BOLD cleaning, encoding, outputs: nipype steps grouped by
name) it reports the wall time (steps start and end as logged, timed as the lines arrive) and
the peak resident memory of the run's processes while the stage ran (``/proc/<pid>/status``
VmRSS of the process and its children, sampled every 0.2 s), and names the stage that
dominates.

``--voxel-size 2`` is NOD's grid (about 230,000 brain voxels); a coarser grid keeps the
temporal scale (40 x 256 volumes, the design and every fold) and divides the voxels by the
cube of the ratio, since the encoding's cost grows linearly in voxels past a fixed part.

Usage::

    python benchmarks/bench_participant.py                          # NOD scale: hours on 2 cores
    python benchmarks/bench_participant.py --voxel-size 6 --work /tmp/bp
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

STAGES = [
    ("features", ("features_", "captions_", "select_")),
    ("alignment", ("align_",)),
    ("BOLD cleaning", ("bold_",)),
    ("encoding", ("encode_",)),
    ("outputs", ("outputs_", "dataset_outputs", "merge_")),
]
NODE = re.compile(r'\[Node\] (Executing|Finished) "(?P<node>[^"]+)"')


def _tree_rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` and all its descendants, MB."""
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            stack += [int(c) for c in children]
        except (OSError, ValueError):
            continue
    return total


def _stage(node: str) -> str:
    for stage, prefixes in STAGES:
        if node.startswith(prefixes):
            return stage
    return "other"


def _run_and_watch(argv: list[str], env: dict, log: Path) -> tuple[list, list, float]:
    """Run ``argv``; returns (log events (t, kind, node), RSS samples (t, MB), wall s)."""
    started = time.monotonic()
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    # `kill <benchmark>` stops the run and still prints the stages that finished
    signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.monotonic() - started, _tree_rss_mb(process.pid)))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    events = []
    with open(log, "w") as handle:
        for line in process.stdout:
            handle.write(line)
            match = NODE.search(line)
            if match:
                events.append((time.monotonic() - started, match[1], match["node"]))
    process.wait()
    done.set()
    sampler.join()
    wall = time.monotonic() - started
    if process.returncode != 0:
        # stopped (SIGTERM to the benchmark, out of memory): report what finished
        print(f"bids_vem ended with exit {process.returncode} after {wall:.0f} s; see {log}")
    return events, samples, wall


def _per_stage(events: list, samples: list, wall: float) -> dict[str, dict[str, float]]:
    intervals: dict[str, list[tuple[float, float]]] = {}
    open_at: dict[str, float] = {}
    for t, kind, node in events:
        if kind == "Executing":
            open_at[node] = t
        elif node in open_at:
            intervals.setdefault(_stage(node), []).append((open_at.pop(node), t))
    for node, start in open_at.items():  # a step still running when the run ended
        intervals.setdefault(f"{_stage(node)} (unfinished: {node})", []).append((start, wall))
    first = min((t for t, _, _ in events), default=wall)
    intervals["start-up and planning"] = [(0.0, first)]
    stages = {}
    for stage, spans in intervals.items():
        seconds = sum(end - start for start, end in spans)
        peak = max(
            (mb for t, mb in samples if any(start <= t <= end for start, end in spans)),
            default=float("nan"),
        )
        stages[stage] = {"seconds": seconds, "peak_rss_mb": peak}
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--volumes", type=int, default=256, help="volumes per run (TR 2 s)")
    parser.add_argument("--voxel-size", type=float, default=2.0, help="mm; 2 is NOD's grid")
    parser.add_argument("--stimuli", type=int, default=1000, help="distinct images")
    parser.add_argument("--permutations", type=int, default=100)
    parser.add_argument("--align-folds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=None, help="folder (default: a temporary one)")
    args = parser.parse_args()

    from bids_vem.demo.simulate import CONFOUND_COLUMNS, DemoParameters, make_demo_dataset

    root = args.work or Path(tempfile.mkdtemp(prefix="bench_participant_"))
    root.mkdir(parents=True, exist_ok=True)
    # trials of 3 s plus 2-6 s gaps (4 s on average), 6 s lead-in and 14 s tail
    n_trials = max(1, int((args.volumes * 2.0 - 20.0) // 7.0))
    params = DemoParameters(voxel_size=args.voxel_size, n_trials_per_run=n_trials)
    started = time.monotonic()
    demo = make_demo_dataset(
        root / "demo", n_subjects=1, n_runs=args.runs, n_stimuli=args.stimuli,
        parameters=params, overwrite=True,
    )  # fmt: skip
    generated = time.monotonic() - started
    import nibabel as nib

    mask = next(demo.bids_dir.parent.rglob("*_desc-brain_mask.nii.gz"), None)
    if mask is None:
        mask = next(demo.bids_dir.rglob("*_desc-brain_mask.nii.gz"))
    n_voxels = int((nib.load(str(mask)).get_fdata() > 0).sum())
    bold = next(demo.bids_dir.rglob("*_desc-preproc_bold.nii.gz"))
    n_volumes = nib.load(str(bold)).shape[-1]

    out, work = root / "out", root / "work"
    argv = [
        sys.executable, "-m", "bids_vem", str(demo.bids_dir), str(out), "participant",
        "-w", str(work), "--nprocs", "1", "-v", "--skip-bids-validation",
        "--captions", str(demo.captions_tsv),
        "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2",
        "--image-encoder", demo.image_model_spec,
        "--confounds", *CONFOUND_COLUMNS,
        "--permutations", str(args.permutations),
        "--align", "--align-folds", str(args.align_folds), "--align-epochs", "2",
        "--align-batch-size", "64",
    ]  # fmt: skip
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    events, samples, wall = _run_and_watch(argv, env, root / "participant.log")
    stages = _per_stage(events, samples, wall)
    peak = max((mb for _, mb in samples), default=float("nan"))

    print(
        f"\n{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}\n"
        f"dataset: 1 participant, {args.runs} runs x {n_volumes} volumes, {n_voxels:,} voxels "
        f"({args.voxel_size:g} mm), {args.stimuli} images, {n_trials} trials per run; "
        f"generated in {generated:.0f} s\n"
        f"participant level: {wall:.0f} s wall, peak RSS {peak:,.0f} MB\n"
    )
    print("| stage | wall (s) | share | peak RSS (MB) |\n| --- | ---: | ---: | ---: |")
    order = ["start-up and planning", *(s for s, _ in STAGES), "other"]
    order += sorted(s for s in stages if s not in order)
    for stage in order:
        if stage in stages:
            figures = stages[stage]
            print(
                f"| {stage} | {figures['seconds']:.1f} | {figures['seconds'] / wall:.0%} "
                f"| {figures['peak_rss_mb']:,.0f} |"
            )
    dominant = max(
        (s for s in stages if s != "start-up and planning"), key=lambda s: stages[s]["seconds"]
    )
    print(
        f"\ndominant stage: {dominant} ({stages[dominant]['seconds'] / wall:.0%} of the wall time)"
    )
    (root / "bench_participant.json").write_text(
        json.dumps(
            {
                "wall": wall,
                "peak_rss_mb": peak,
                "n_voxels": n_voxels,
                "stages": stages,
                "runs": args.runs,
                "volumes": n_volumes,
                "generated_s": generated,
            },
            indent=1,
        )  # fmt: skip
    )


if __name__ == "__main__":
    main()
