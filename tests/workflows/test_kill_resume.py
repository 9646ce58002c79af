"""Kill at any moment: a participant run is SIGKILLed at random moments of each stage
(features, alignment, encoding, outputs) and resumed each time with the same command.

After every kill, every file visible under OUTPUT_DIR is whole (maps load, tables and JSON
parse, pages end); the steps that had finished are not run again on resume (their results in
the work directory are untouched, finished alignment folds are reused); and the final
OUTPUT_DIR equals that of a run never interrupted, byte for byte, with no temporary left.

The moments are drawn from a seed printed on failure; ``BIDS_VEM_KILL_SEED=N`` replays one.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.helpers import derivative_differences

pytestmark = pytest.mark.slow

# (stage, a log line that starts it, the longest wait after that line before the kill, s)
KILLS = [
    ("features", 'Executing "features_randomclip"', 0.6),
    ("alignment", "alignment fold-2: fine-tuning", 1.0),
    ("encoding", 'Executing "encode_sub01_taskshapes_minilm"', 2.0),
    ("outputs", 'Executing "outputs_sub01"', 4.0),
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from bids_vem.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("kill_demo")
    return make_demo_dataset(root / "demo", n_subjects=1, n_runs=3, n_stimuli=24)


def _argv(demo, out: Path, work: Path) -> list[str]:
    return [
        sys.executable, "-m", "bids_vem", str(demo.bids_dir), str(out), "participant",
        "-w", str(work), "--nprocs", "1", "-v", "--skip-bids-validation",
        "--captions", str(demo.captions_tsv),
        "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2",
        "--image-encoder", f"randomclip={demo.image_model_spec.split('=', 1)[-1]}",
        "--alphas", "1", "100", "10000", "--permutations", "20",
        "--align", "--align-epochs", "6", "--align-batch-size", "32",
        "--align-unfreeze-blocks", "-1", "--align-lr", "1e-3",
    ]  # fmt: skip


ENV = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _run_to_the_end(argv: list[str], log: Path) -> str:
    with open(log, "w") as handle:
        done = subprocess.run(argv, env=ENV, stdout=handle, stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text()
    assert done.returncode == 0, text[-3000:]
    return text


def _kill_during(argv: list[str], log: Path, marker: str, wait: float) -> bool:
    """Start the run; SIGKILL it (and its children) ``wait`` s after ``marker`` is logged.
    Returns False when the run ended before it could be killed."""
    with open(log, "w") as handle:
        process = subprocess.Popen(
            argv, env=ENV, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 600
    while marker not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            return False
        time.sleep(0.02)
    time.sleep(wait)
    if process.poll() is not None:
        return False
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
    return True


def _visible(root: Path) -> list[Path]:
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]


def _whole(path: Path) -> None:
    """Read ``path`` the way its users will; raises when it is cut short."""
    name = path.name
    if name.endswith((".nii.gz", ".nii")):
        np.asarray(nib.load(str(path)).get_fdata())  # a cut gzip stream raises here
    elif name.endswith(".json"):
        json.loads(path.read_text())
    elif name.endswith(".tsv"):
        pd.read_csv(path, sep="\t")
    elif name.endswith(".html"):
        assert path.read_text().rstrip().endswith("</html>"), name
    elif name.endswith(".png"):
        with Image.open(path) as image:
            image.load()
    elif name.endswith(".svg"):
        assert path.read_text().rstrip().endswith("</svg>"), name
    elif name.endswith(".safetensors"):
        from safetensors.numpy import load_file

        load_file(str(path))
    elif name.endswith((".npy", ".npz")):
        np.load(path)
    else:
        path.read_bytes()


def _finished_steps(work: Path) -> dict[str, int]:
    """Result files of the computing steps that finished, with their modification times.

    The two writers of OUTPUT_DIR (``dataset_outputs``, ``outputs_sub*``) are left out: they
    run every time by design, so that an OUTPUT_DIR emptied since is written again.
    """
    return {
        str(p.relative_to(work)): p.stat().st_mtime_ns
        for p in work.rglob("result_*.pklz")
        if not p.parent.name.startswith(("dataset_outputs", "outputs_sub"))
    }


def test_killed_at_random_moments_and_resumed_gives_the_uninterrupted_outputs(dataset, tmp_path):
    seed = int(os.environ.get("BIDS_VEM_KILL_SEED", random.SystemRandom().randrange(10**6)))
    rng = random.Random(seed)
    reference = tmp_path / "reference"
    _run_to_the_end(_argv(dataset, reference / "out", reference / "work"), tmp_path / "ref.log")

    out, work = tmp_path / "killed" / "out", tmp_path / "killed" / "work"
    argv = _argv(dataset, out, work)
    history = []
    for stage, marker, longest in KILLS:
        wait = round(rng.uniform(0, longest), 2)
        finished = _finished_steps(work) if work.exists() else {}
        killed = _kill_during(argv, tmp_path / f"{stage}.log", marker, wait)
        history.append(f"{stage}: {'killed' if killed else 'ended'} {wait} s after {marker!r}")
        context = f"seed {seed}: " + "; ".join(history)
        assert killed, context  # every stage lasts longer than the waits drawn for it
        # what was visible at the moment of the kill is whole
        for path in _visible(out):
            try:
                _whole(path)
            except Exception as err:  # noqa: BLE001 - any reading error is the failure
                raise AssertionError(f"{context}: {path} is cut short ({err})") from err
        # the steps finished before this run were not run again by it
        now = _finished_steps(work)
        rerun = sorted(k for k, mtime in finished.items() if now.get(k) != mtime)
        assert rerun == [], f"{context}: {rerun}"

    finished = _finished_steps(work)
    log = _run_to_the_end(argv, tmp_path / "resume.log")
    rerun = sorted(k for k, mtime in finished.items() if _finished_steps(work).get(k) != mtime)
    assert rerun == [], f"seed {seed}: {rerun}"
    assert "reused" in log and "steps from the work directory" in log
    # fold-1 of the alignment had finished before the kill during fold-2: not trained again
    assert "alignment fold-1: reusing" in log or "alignment fold-1: fine-tuning" not in log
    assert derivative_differences(reference / "out", out) == [], f"seed {seed}"
    hidden = [p for p in out.rglob(".*") if p.name != ".citation.lock" and p.name != ".bidsignore"]
    assert hidden == [], f"seed {seed}"
