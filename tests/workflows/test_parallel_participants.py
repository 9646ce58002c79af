"""Eight participants started as separate processes at once, into one OUTPUT_DIR and one work
directory (an HPC array job): shared files stay consistent and nothing is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_vem.features.feature_set import load_feature_set

pytestmark = pytest.mark.slow


N_SUBJECTS = 8


def test_participants_in_parallel_share_one_output_and_work_dir(tmp_path):
    from bids_vem.demo import make_demo_dataset

    demo = make_demo_dataset(tmp_path / "demo", n_subjects=N_SUBJECTS, n_runs=3, n_stimuli=24)
    out, work = tmp_path / "out", tmp_path / "work"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    common = [
        sys.executable, "-m", "bids_vem", str(demo.bids_dir), str(out), "participant",
        "-w", str(work), "--nprocs", "1", "--skip-bids-validation", "--permutations", "0",
        "--alphas", "1", "100", "10000",
        "--captions", str(demo.captions_tsv),
        "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2",
    ]  # fmt: skip
    subjects = [f"{i:02d}" for i in range(1, N_SUBJECTS + 1)]
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
        assert (work / f"bids_vem_sub{s}_wf").is_dir()
    # one config file per run, no temporary file left anywhere
    assert len(list((out / "logs").glob("config-*.toml"))) == len(subjects)
    leftovers = [p for p in out.rglob("*") if ".tmp" in p.name or p.name.startswith("tmp")]
    assert leftovers == []
    # the methods text names all eight, whichever run wrote it last
    citation = (out / "logs" / "CITATION.md").read_text()
    assert f"{N_SUBJECTS} participants, {3 * N_SUBJECTS} BOLD runs" in citation
    # every participant's outputs are whole: the maps load, the tables list its one fit
    for s in subjects:
        for path in (out / f"sub-{s}" / "func").glob("*_statmap.nii.gz"):
            assert np.isfinite(np.asarray(nib.load(str(path)).dataobj)).any(), path
        summary = pd.read_csv(out / f"sub-{s}" / "func" / f"sub-{s}_summary.tsv", sep="\t")
        assert list(summary["feature_space"]) == ["minilm"]
    # the feature space was computed once: the other runs waited for it and read the cache
    computed = [o for o in outputs if "feature space minilm: 24 stimuli, 384 dims, computed" in o]
    assert len(computed) == 1, [o[-2000:] for o in outputs]
    assert sum("384 dims, from cache" in o for o in outputs) == N_SUBJECTS - 1
    # every cached feature set reads back whole
    cached = [p for p in (work / "feature_cache").rglob("*.npz")]
    assert cached
    for path in cached:
        assert np.isfinite(load_feature_set(path).values).all()
