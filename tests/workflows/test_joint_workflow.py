"""--joint end to end on the demo: banded ridge maps, variance partitioning against the
simulated truth, the report section, the group level."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from bids_vem.cli.run import main
from bids_vem.outputs.validator import validate_derivatives

pytestmark = pytest.mark.slow

SPACE = "MNI152NLin2009cAsym"


def test_joint_model_partitions_the_simulated_semantic_signal(demo_dataset, tmp_path, capfd):
    """The demo's semantic voxels respond to the caption embedding; its image model is a
    random network. The variance there is unique to the caption space; the random image
    space adds none, and nothing is found in the voxels without signal."""
    out = tmp_path / "out"
    argv = [
        str(demo_dataset.bids_dir), str(out), "participant", "--participant-label", "01", "02",
        "--skip-bids-validation", "-w", str(tmp_path / "work"), "--nprocs", "2",
        "--captions", str(demo_dataset.captions_tsv),
        "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2",
        "--image-encoder", demo_dataset.image_model_spec,
        "--joint", "minilm,randomclip", "--joint-iterations", "6", "--permutations", "0",
        # whole decades (15 penalties, not 29): a shorter suite, the same conclusions
        "--alphas", *[f"1e{k}" for k in range(-2, 13)],
    ]  # fmt: skip
    assert main(argv) == 0
    func = out / "sub-01" / "func"
    prefix = f"sub-01_task-shapes_space-{SPACE}"

    def load(name: str) -> np.ndarray:
        return np.asarray(nib.load(func / f"{prefix}_{name}_statmap.nii.gz").dataobj)

    classes = np.asarray(
        nib.load(
            demo_dataset.ground_truth_dir / f"sub-01_space-{SPACE}_desc-voxelclass_dseg.nii.gz"
        ).dataobj
    )
    joint = "desc-minilmAndrandomclip"
    unique_text = load(f"label-minilm_{joint}_stat-uniquer2")
    unique_image = load(f"label-randomclip_{joint}_stat-uniquer2")
    shared = load(f"label-minilmAndrandomclip_{joint}_stat-sharedr2")
    r2 = load(f"{joint}_stat-r2")
    split = load(f"label-minilm_{joint}_stat-splitr2") + load(
        f"label-randomclip_{joint}_stat-splitr2"
    )
    semantic, noise = classes == 2, classes == 1
    assert np.median(unique_text[semantic]) > 0.05
    assert np.median(unique_text[semantic]) > 5 * abs(np.median(unique_image[semantic]))
    assert np.median(unique_text[semantic]) > 5 * abs(np.median(shared[semantic]))
    for part in (unique_text, unique_image, shared, r2):
        assert abs(np.median(part[noise])) < 0.01
    inside = classes > 0
    np.testing.assert_allclose(unique_text + unique_image + shared, r2, atol=1e-4)
    np.testing.assert_allclose(split[inside], r2[inside], atol=1e-3)
    # the joint model's r beats the random image space's alone at the semantic voxels
    r_image = load("desc-randomclip_stat-r")
    assert np.median(load(f"{joint}_stat-r")[semantic]) > np.median(r_image[semantic]) + 0.1
    sidecar = json.loads(
        (func / f"{prefix}_label-minilm_{joint}_stat-uniquer2_statmap.json").read_text()
    )
    assert sidecar["JointModel"] == ["minilm", "randomclip"]
    assert "not clipped" in sidecar["NegativeEstimates"]
    # the demo shows every image in two runs: the folds are stimulus-disjoint
    assert "nested stimulus-disjoint" in sidecar["CrossValidation"]
    rows = (func / f"{prefix}_{joint}_partition.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:3] == ["component", "label", "region"]
    assert len(rows) == 1 + 6  # joint, 2 splits, 3 atoms over the mask
    report = (out / "sub-01.html").read_text()
    assert "Variance partitioning" in report and "partition.png" in report
    assert validate_derivatives(out) == []
    citation = (out / "logs" / "CITATION.md").read_text()
    assert "banded ridge" in citation and "@deheer2017hierarchical" in citation
    # the group level pools the joint model's r maps with the single spaces'
    assert main([str(demo_dataset.bids_dir), str(out), "group", "--skip-bids-validation"]) == 0
    assert list((out / "group").rglob(f"*{joint}_stat-t_statmap.nii.gz"))
    # and the unique variance of the caption space, tested across participants
    group_map = (
        out / "group"
        / f"task-shapes_space-{SPACE}_label-minilm_{joint}_stat-meanuniquer2_statmap.nii.gz"
    )  # fmt: skip
    assert group_map.is_file()
    mean_unique = np.asarray(nib.load(group_map).dataobj)
    assert np.median(mean_unique[semantic]) > 0.03
