"""End to end on the generated demo dataset: exit codes, valid outputs, recovery of the ground truth."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from scipy.stats import pearsonr

from bids_vem.cli.run import main
from bids_vem.demo.simulate import CONFOUND_COLUMNS
from bids_vem.outputs.atomic import current_umask
from bids_vem.outputs.validator import validate_derivatives
from tests.helpers import broken_links, render_in_chromium

pytestmark = pytest.mark.slow

SPACE = "MNI152NLin2009cAsym"


@pytest.fixture(scope="module")
def participant_run(demo_dataset, tmp_path_factory):
    """Run the participant level once; returns (demo, output_dir, work_dir, stderr)."""
    root = tmp_path_factory.mktemp("e2e")
    out, work = root / "out", root / "work"
    argv = [
        str(demo_dataset.bids_dir), str(out), "participant", "-w", str(work), "--nprocs", "2",
        "--captions", str(demo_dataset.captions_tsv),
        "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2",
        "--image-encoder", demo_dataset.image_model_spec,
        "--confounds", *CONFOUND_COLUMNS,
    ]  # fmt: skip
    before = snapshot(demo_dataset.bids_dir)
    assert main(argv) == 0
    # BIDS_DIR is read-only for a BIDS App: not one file added, removed or touched
    assert snapshot(demo_dataset.bids_dir) == before
    return demo_dataset, out, work, argv


def snapshot(folder):
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def r_map(out, subject, feature_space):
    path = (
        out
        / f"sub-{subject}"
        / "func"
        / (
            f"sub-{subject}_task-{'shapes'}_space-{SPACE}_desc-{feature_space}_stat-r_statmap.nii.gz"
        )
    )
    return np.asarray(nib.load(str(path)).dataobj)


def test_outputs_are_a_valid_bids_derivative(participant_run):
    _, out, _, _ = participant_run
    assert validate_derivatives(out) == []
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "bids_vem"
    for subject in ("01", "02", "03"):
        for fs in ("minilm", "randomclip"):
            for stat in ("r", "r2", "alpha"):
                stem = f"sub-{subject}/func/sub-{subject}_task-shapes_space-{SPACE}_desc-{fs}_stat-{stat}_statmap"
                assert (out / f"{stem}.nii.gz").is_file()
                sidecar = json.loads((out / f"{stem}.json").read_text())
                assert sidecar["Description"] and sidecar["Sources"]
                assert sidecar["Delays"] == [1, 2, 3, 4]
        assert (out / f"sub-{subject}.html").is_file()
    for fs in ("minilm", "randomclip"):
        features = np.load(out / "features" / f"desc-{fs}_features.npy")
        assert features.shape[0] == 96
    assert (out / "logs" / "CITATION.md").is_file()
    assert list((out / "logs").glob("config-*.toml"))
    # nothing half-written is left behind
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    # every file readable as the user's umask allows (not mkstemp's 0600)
    mode = 0o666 & ~current_umask()
    unreadable = [p for p in out.rglob("*") if p.is_file() and (p.stat().st_mode & 0o777) != mode]
    assert not unreadable, unreadable[:5]


def test_r_maps_recover_the_simulated_semantic_voxels(participant_run):
    """The caption-embedding model's r map follows the simulated semantic amplitude.

    Under the null (no recovery) the correlation across ~3,600 voxels is ~0 +- 0.017; the
    pipeline gives about 0.6-0.7 on this simulation. 0.4 is > 20 standard errors above
    chance and leaves room for seed-to-seed variation. The semantic voxels must also rank
    above the noise-only voxels (AUC, chance 0.5).
    """
    demo, out, _, _ = participant_run
    truth = demo.ground_truth_dir
    for subject in ("01", "02", "03"):
        classes = np.asarray(
            nib.load(
                str(truth / f"sub-{subject}_space-{SPACE}_desc-voxelclass_dseg.nii.gz")
            ).dataobj
        )
        amplitude = np.asarray(
            nib.load(
                str(truth / f"sub-{subject}_space-{SPACE}_desc-semantic_amplitude.nii.gz")
            ).dataobj
        )
        r = r_map(out, subject, "minilm")
        brain = classes > 0
        assert pearsonr(amplitude[brain], r[brain])[0] > 0.4
        semantic, noise = r[classes == 2], r[classes == 1]
        auc = (semantic[:, None] > noise[None, :]).mean()
        assert auc > 0.9
        assert np.median(semantic) > 0.2
        assert abs(np.median(noise)) < 0.05


def test_rerun_reuses_the_work_directory(participant_run, capsys):
    _, out, _, argv = participant_run
    r_before = (
        out
        / "sub-01"
        / "func"
        / f"sub-01_task-shapes_space-{SPACE}_desc-minilm_stat-r_statmap.nii.gz"
    )
    before = np.asarray(nib.load(str(r_before)).dataobj)
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    # 2 feature spaces + 3 cleaned-BOLD stores + 3 x 2 fits
    assert "reused 11 of 11 steps from the work directory" in err
    np.testing.assert_array_equal(np.asarray(nib.load(str(r_before)).dataobj), before)


def test_group_level(participant_run, tmp_path):
    demo, out, work, _ = participant_run
    assert main([str(demo.bids_dir), str(out), "group", "-w", str(work)]) == 0
    group = out / "group"
    for fs in ("minilm", "randomclip"):
        for stat in ("meanr", "t", "p", "q"):
            assert (
                group / f"task-shapes_space-{SPACE}_desc-{fs}_stat-{stat}_statmap.nii.gz"
            ).is_file()
    assert (group / "group.html").is_file()
    assert validate_derivatives(out) == []
    # the reports link to each other and render in a browser without errors or dead links
    html = (group / "group.html").read_text()
    assert 'href="../sub-01.html"' in html and "_t.png" in html
    participant = (out / "sub-01.html").read_text()
    assert 'href="group/group.html"' in participant
    # the strip of stimuli with their captions, and the QC section with the mask outline
    assert participant.count('<img src="sub-01/figures/stimuli/stimulus') == 12
    assert "Mask outline, sub-01_task-shapes" in participant
    assert "confounds regressed out" in participant
    sidecar = json.loads(
        (out / "sub-01" / "func" / f"sub-01_task-shapes_space-{SPACE}_desc-featurespaces_stat-bestspace_statmap.json").read_text()
    )  # fmt: skip
    assert sidecar["Levels"] == {"1": "minilm", "2": "randomclip", "0": "none"}
    for page in (group / "group.html", out / "sub-01.html"):
        assert broken_links(page) == [], page
        pixels, console = render_in_chromium(page, tmp_path)
        assert console == [] and pixels.std() > 0.05
    # the semantic voxels (shared across participants up to a small jitter) have the largest t.
    # FDR significance needs more than 3 participants (df = 2); group_ttest's p and q are
    # checked against scipy in tests/encoding.
    t = np.asarray(
        nib.load(
            str(group / f"task-shapes_space-{SPACE}_desc-minilm_stat-t_statmap.nii.gz")
        ).dataobj
    )
    classes = np.asarray(
        nib.load(
            str(demo.ground_truth_dir / f"sub-01_space-{SPACE}_desc-voxelclass_dseg.nii.gz")
        ).dataobj
    )
    top = np.argsort(np.nan_to_num(t, nan=-np.inf).ravel())[::-1][:50]
    # 3 % of the brain is semantic: a random choice of 50 voxels holds about 2 of them
    assert (classes.ravel()[top] == 2).mean() > 0.5


def test_sidecars_record_the_evaluation_and_significance_follows_the_truth(participant_run):
    """The demo shows each image in two runs: folds hold out images, the sidecars say so; the
    permutation maps (p, q, family-wise p) are written, and small p-values are the simulated
    semantic voxels', not the noise voxels'; the report and the summary count significant
    voxels. (With 24 held-out images per fold the relabelling null gives about 0.01 at best
    per semantic voxel: below FDR's bar when 3% of the voxels carry signal.)"""
    demo, out, _, _ = participant_run
    func = out / "sub-01" / "func"
    stem = f"sub-01_task-shapes_space-{SPACE}_desc-minilm_stat-"
    sidecar = json.loads((func / f"{stem}r_statmap.json").read_text())
    assert sidecar["CrossValidation"].startswith("stimulus-disjoint: 4 folds of unique stimuli")
    assert "96 of 96 unique stimuli shown in more than one run" in sidecar["CrossValidation"]
    assert sidecar["Permutations"] == 1000 and sidecar["TestStimuliInTraining"] == [0] * 4
    for stat in ("p", "q", "pfwe"):
        assert (func / f"{stem}{stat}_statmap.nii.gz").is_file()
    p = np.asarray(nib.load(str(func / f"{stem}p_statmap.nii.gz")).dataobj)
    q = np.asarray(nib.load(str(func / f"{stem}q_statmap.nii.gz")).dataobj)
    classes = np.asarray(
        nib.load(
            str(demo.ground_truth_dir / f"sub-01_space-{SPACE}_desc-voxelclass_dseg.nii.gz")
        ).dataobj
    )
    assert np.mean(p[classes == 2] < 0.05) > 0.5
    assert np.mean(p[classes == 1] < 0.05) < 0.05
    assert not np.any(q[classes == 1] < 0.05)
    with open(func / "sub-01_summary.tsv") as handle:
        rows = {row["feature_space"]: row for row in csv.DictReader(handle, delimiter="\t")}
    assert int(rows["minilm"]["n_voxels_q_below_0.05"]) == int(np.sum(q[classes > 0] < 0.05))
    report = (out / "sub-01.html").read_text()
    assert "voxels FDR q &lt; 0.05" in report or "voxels FDR q < 0.05" in report
    # caption text vs image: tested voxel by voxel on the same test samples
    paired = func / f"sub-01_task-shapes_space-{SPACE}_desc-paired_comparison.tsv"
    with open(paired) as handle:
        (row,) = list(csv.DictReader(handle, delimiter="\t"))
    assert (row["feature_space_a"], row["feature_space_b"]) == ("minilm", "randomclip")
    assert "Paired tests" in report


def test_group_level_compares_the_feature_spaces(participant_run):
    demo, out, work, _ = participant_run
    assert main([str(demo.bids_dir), str(out), "group", "-w", str(work)]) == 0
    group = out / "group"
    for stat in ("meandiff", "t", "p", "q"):
        path = (
            group / f"task-shapes_space-{SPACE}_desc-minilmvsrandomclip_stat-{stat}_statmap.nii.gz"
        )
        assert path.is_file()
    sidecar = json.loads(
        (
            group / f"task-shapes_space-{SPACE}_desc-minilmvsrandomclip_stat-t_statmap.json"
        ).read_text()
    )
    assert sidecar["Test"].startswith("paired t-test across participants of Fisher-z(r)")
    assert validate_derivatives(out) == []
