"""--rsa end to end on the demo: brain RDMs from single trials, the caption model's RDM found
in the semantic region, the random image model's not; searchlight maps; group noise ceilings."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from bids_vem.cli.run import main
from bids_vem.outputs.validator import validate_derivatives

pytestmark = pytest.mark.slow

SPACE = "MNI152NLin2009cAsym"


def _semantic_roi(demo, path):
    """The demo's semantic voxels of sub-01 as a --roi mask."""
    dseg = nib.load(demo.ground_truth_dir / f"sub-01_space-{SPACE}_desc-voxelclass_dseg.nii.gz")
    classes = np.asarray(dseg.dataobj)
    nib.Nifti1Image((classes == 2).astype(np.uint8), dseg.affine).to_filename(path)
    return classes


def test_rsa_finds_the_caption_model_in_the_semantic_voxels(demo_dataset, tmp_path):
    roi = tmp_path / "semantic_mask.nii.gz"
    classes = _semantic_roi(demo_dataset, roi)
    out = tmp_path / "out"
    argv = [
        str(demo_dataset.bids_dir), str(out), "participant", "--participant-label", "01", "02",
        "03", "--skip-bids-validation", "-w", str(tmp_path / "work"), "--nprocs", "2",
        "--captions", str(demo_dataset.captions_tsv),
        "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2",
        "--image-encoder", demo_dataset.image_model_spec,
        "--rsa", "--rsa-radius", "8", "--roi", f"semantic={roi}", "--permutations", "200",
        "--alphas", "1", "100", "10000",  # RSA is under test, not the encoding model's grid
    ]  # fmt: skip
    assert main(argv) == 0
    func = out / "sub-01" / "func"
    prefix = f"sub-01_task-shapes_space-{SPACE}"
    with (func / f"{prefix}_rsa.tsv").open() as handle:
        rows = {
            (r["region"], r["feature_space"]): r for r in csv.DictReader(handle, delimiter="\t")
        }
    semantic = rows[("semantic", "minilm")]
    assert semantic["measure"] == "crossvalidated euclidean"  # every image shown twice
    assert float(semantic["spearman"]) > 0.2 and float(semantic["p_spearman"]) < 0.01
    assert float(semantic["tau_a"]) > 0.1 and float(semantic["p_tau_a"]) < 0.01
    # the random image network's RDM does not explain the semantic region's
    assert float(rows[("semantic", "randomclip")]["spearman"]) < float(semantic["spearman"]) - 0.1
    rdm = (func / f"{prefix}_label-semantic_rdm.tsv").read_text().splitlines()
    assert len(rdm) == 97 and len(rdm[1].split("\t")) == 97
    # the searchlight: higher in the semantic voxels than in the voxels without signal
    rho = np.asarray(nib.load(func / f"{prefix}_desc-minilm_stat-rsarho_statmap.nii.gz").dataobj)
    assert np.nanmedian(rho[classes == 2]) > np.nanmedian(rho[classes == 1]) + 0.1
    assert abs(np.nanmedian(rho[classes == 1])) < 0.05
    report = (out / "sub-01.html").read_text()
    assert "Representational similarity" in report
    assert validate_derivatives(out) == []
    citation = (out / "logs" / "CITATION.md").read_text()
    assert "@nili2014toolbox" in citation and "searchlight of 8 mm" in citation
    # group level: noise ceilings across the three participants bracket the caption model
    assert main([str(demo_dataset.bids_dir), str(out), "group", "--skip-bids-validation"]) == 0
    (table,) = (out / "group").glob("*_rsa.tsv")
    with table.open() as handle:
        group = {(r["region"], r["feature_space"], r["method"]): r
                 for r in csv.DictReader(handle, delimiter="\t")}  # fmt: skip
    row = group[("semantic", "minilm", "spearman")]
    assert int(row["n_subjects"]) == 3
    assert float(row["noise_ceiling_lower"]) < float(row["noise_ceiling_upper"])
    assert float(row["mean"]) < float(row["noise_ceiling_upper"])
    assert float(row["mean"]) > float(group[("semantic", "randomclip", "spearman")]["mean"])
    assert "Representational similarity" in (out / "group" / "group.html").read_text()
    # the searchlight maps, tested across participants
    group_rho = np.asarray(
        nib.load(
            out / "group" / f"task-shapes_space-{SPACE}_desc-minilm_stat-meanrsarho_statmap.nii.gz"
        ).dataobj
    )
    assert np.nanmedian(group_rho[classes == 2]) > np.nanmedian(group_rho[classes == 1]) + 0.05
