"""Fixtures of the container-contract tests: a tiny demo dataset others may read."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = Path(sys.executable)
NOBODY = 65534


def _nobody_can_run_python() -> bool:
    import subprocess

    try:
        done = subprocess.run(
            [str(PYTHON), "-c", "import bids_vem"],
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
            capture_output=True,
            timeout=60,
        )
    except OSError:  # e.g. the interpreter lies under /root
        return False
    return done.returncode == 0


@pytest.fixture(scope="session")
def run_user() -> tuple[int, int] | None:
    """(uid, gid) of a non-root user the contract runs use; None if there is none to use.

    Tests that run as a normal user use themselves; as root, ``nobody`` when it can run this
    Python (no sudo, no account created); else None (the run then happens as root).
    """
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    return (NOBODY, NOBODY) if _nobody_can_run_python() else None


def open_to_others(path: Path) -> None:
    """Let another uid traverse ``path``'s parents and read everything under it."""
    for parent in [path, *path.parents]:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if parent.stat().st_uid == os.geteuid() and not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH | stat.S_IXGRP)
    for folder, dirs, files in os.walk(path):
        for name in dirs:
            p = Path(folder) / name
            p.chmod(p.stat().st_mode | 0o055)
        for name in files:
            p = Path(folder) / name
            p.chmod(p.stat().st_mode | 0o044)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """The demo dataset cut to 1 participant x 3 runs x 24 images (about 10 s), world-readable."""
    from bids_vem.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("containers_demo")
    demo = make_demo_dataset(root / "demo", n_subjects=1, n_runs=3, n_stimuli=24)
    open_to_others(root)
    return demo


def demo_options(demo, *, text: bool = True) -> list[str]:
    """The analysis options of scripts/demo.sh for ``demo`` (offline models)."""
    options = ["--captions", str(demo.captions_tsv)]
    if text:
        options += ["--text-encoder", "minilm=sentence:all-MiniLM-L6-v2"]
    options += ["--image-encoder", f"randomclip=openclip:{demo.image_model_dir}"]
    return options + [
        "--confounds",
        "trans_x",
        "trans_y",
        "trans_z",
        "--alphas",
        "1",
        "1e2",
        "1e4",
        "1e6",
    ]
