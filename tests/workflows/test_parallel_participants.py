"""Participants started as separate processes at once, into one OUTPUT_DIR and one work
directory (an HPC array job): shared files stay consistent and nothing is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bids_vem.features.feature_set import load_feature_set

pytestmark = pytest.mark.slow


def test_participants_in_parallel_share_one_output_and_work_dir(demo_dataset, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    common = [
        sys.executable, "-m", "bids_vem", str(demo_dataset.bids_dir), str(out), "participant",
        "-w", str(work), "--nprocs", "1", "--skip-bids-validation", "--permutations", "0",
        "--captions", str(demo_dataset.captions_tsv),
        "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2",
    ]  # fmt: skip
    subjects = ["01", "02", "03"]
    processes = [
        subprocess.Popen(
            [*common, "--participant-label", s],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for s in subjects
    ]
    outputs = [p.communicate(timeout=900)[0] for p in processes]
    assert [p.returncode for p in processes] == [0] * len(subjects), outputs[0][-3000:]
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    for s in subjects:
        r = (
            out
            / f"sub-{s}"
            / "func"
            / f"sub-{s}_task-shapes_space-MNI152NLin2009cAsym_desc-minilm_stat-r_statmap.nii.gz"
        )
        assert r.is_file(), s
        assert (out / f"sub-{s}.html").is_file()
    # one config file per run, no temporary file left anywhere
    assert len(list((out / "logs").glob("config-*.toml"))) == len(subjects)
    leftovers = [p for p in out.rglob("*") if ".tmp" in p.name or p.name.startswith("tmp")]
    assert leftovers == []
    # every cached feature set reads back whole
    cached = [p for p in (work / "feature_cache").rglob("*.npz")]
    assert cached
    for path in cached:
        assert np.isfinite(load_feature_set(path).values).all()
