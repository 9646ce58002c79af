"""--align end to end on the demo dataset: the aligned feature space, its folds, outputs, report."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_vem.cli.run import main
from bids_vem.encoding.stimulus_folds import deal_stimuli
from bids_vem.errors import DataError
from bids_vem.inputs.events import read_events
from bids_vem.outputs.validator import validate_derivatives
from tests.helpers import broken_links, participant_argv

pytestmark = pytest.mark.slow

SPACE = "MNI152NLin2009cAsym"
STEM = f"sub-01_task-shapes_space-{SPACE}"


def _argv(demo, out, work, *extra):
    return participant_argv(demo, out, work, *extra, image=True)


@pytest.fixture(scope="module")
def aligned_run(demo_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("align")
    out, work = root / "out", root / "work"
    # a region of interest from the simulation's ground truth: the semantic voxels
    truth = demo_dataset.ground_truth_dir / f"sub-01_space-{SPACE}_desc-voxelclass_dseg.nii.gz"
    classes = nib.load(str(truth))
    roi = root / "sub-01_label-semantic_mask.nii.gz"
    nib.save(
        nib.Nifti1Image((np.asarray(classes.dataobj) == 2).astype(np.uint8), classes.affine), roi
    )
    argv = _argv(
        demo_dataset, out, work,
        "--align", "--align-epochs", "3", "--align-lr", "1e-3", "--align-batch-size", "32",
        "--align-unfreeze-blocks", "-1", "--roi", str(roi),
    )  # fmt: skip
    assert main(argv) == 0
    return demo_dataset, out, work, argv


def test_aligned_feature_space_has_maps_model_and_report(aligned_run):
    demo, out, _, _ = aligned_run
    func = out / "sub-01" / "func"
    for stat in ("r", "r2", "alpha", "rgain"):
        assert (func / f"{STEM}_desc-aligned_stat-{stat}_statmap.nii.gz").is_file()
    gain = np.asarray(
        nib.load(str(func / f"{STEM}_desc-aligned_stat-rgain_statmap.nii.gz")).dataobj
    )
    r_aligned = np.asarray(
        nib.load(str(func / f"{STEM}_desc-aligned_stat-r_statmap.nii.gz")).dataobj
    )
    r_base = np.asarray(
        nib.load(str(func / f"{STEM}_desc-randomclip_stat-r_statmap.nii.gz")).dataobj
    )
    np.testing.assert_allclose(gain, r_aligned - r_base, atol=1e-6)

    model = out / "models" / "sub-01_task-shapes_desc-aligned_model"
    for name in ("open_clip_config.json", "open_clip_model.safetensors", "alignment.json",
                 "metrics.tsv", "folds.json"):  # fmt: skip
        assert (model / name).is_file(), name
    sidecar = json.loads((model / "alignment.json").read_text())
    assert sidecar["BaseModel"]["name"] == "randomclip"
    assert sidecar["CaptionModel"]["name"] == "minilm"
    assert sidecar["Fold"]["name"] == "final" and sidecar["Fold"]["n_held_out_stimuli"] == 0
    folds = json.loads((model / "folds.json").read_text())
    assert [f["fold"] for f in folds] == ["fold-1", "fold-2", "fold-3", "fold-4", "final"]
    metrics = pd.read_csv(model / "metrics.tsv", sep="\t")
    assert list(metrics["epoch"]) == [0, 1, 2, 3]

    table = pd.read_csv(func / f"{STEM}_comparison.tsv", sep="\t").set_index("feature_space")
    assert dict(table["role"]) == {
        "minilm": "caption text", "randomclip": "unaligned", "aligned": "aligned",
    }  # fmt: skip
    r_in_mask = r_aligned[r_aligned != 0]
    assert table.loc["aligned", "mean_r"] == pytest.approx(r_in_mask.mean(), abs=1e-5)
    assert table.loc["aligned", "n_voxels_beat_reference"] == int(np.sum(r_aligned > r_base))
    # the caption-text model predicts the simulated semantic region far better than the mask
    assert table.loc["minilm", "mean_r_roi-semantic"] > table.loc["minilm", "mean_r"] + 0.1

    html = (out / "sub-01.html").read_text()
    assert "Aligned vs unaligned" in html and "mean r in semantic" in html
    assert "image→caption R@1 before" in html
    (curves,) = sorted((out / "sub-01" / "figures").glob("*desc-aligned_training.png"))
    assert f'src="sub-01/figures/{curves.name}"' in html
    assert "desc-featurespaces_regions.png" in html  # r by region, per feature space
    # the methods text of this run names the aligned space and how it was trained
    methods = (out / "logs" / "CITATION.md").read_text()
    assert "- `aligned`: the image encoder of `randomclip` aligned to the `minilm`" in methods
    assert "learning rate" in methods and "random seed" in methods and "[@ma2024llmvem]" in methods
    assert broken_links(out / "sub-01.html") == []
    assert validate_derivatives(out) == []


def test_no_alignment_trains_on_the_stimuli_of_the_run_it_predicts(aligned_run):
    demo, _, work, _ = aligned_run
    shown = {}
    for events in sorted((demo.bids_dir / "sub-01" / "func").glob("*_events.tsv")):
        run = events.name.removesuffix("_events.tsv")
        shown[run] = set(read_events(events, "stim_file")["stim_id"])
    every = set().union(*shown.values())
    sidecars = list((work / "alignment").glob("*/model/alignment.json"))
    # each image is shown in two runs: the encoding holds out stimuli, in 4 folds (one per
    # run's worth), and so does the alignment; + the final alignment
    assert len(sidecars) == 5
    held_out_of_folds = []
    for sidecar in sidecars:
        fold = json.loads(sidecar.read_text())["Fold"]
        # every stimulus the training loop actually read, as recorded beside the model
        trained = set(json.loads((sidecar.parent / "train_ids.json").read_text()))
        if fold["name"] == "final":
            continue
        held_out = every - trained
        assert fold["held_out_runs"] == [] and fold["n_held_out_stimuli"] == 24
        assert len(held_out) >= 24, fold["name"]
        held_out_of_folds.append(set(fold["held_out_stimuli"]))
        assert not trained & held_out_of_folds[-1], fold["name"]
    # the folds' held-out stimuli are the encoding's folds: each image held out once
    assert sorted(s for held in held_out_of_folds for s in held) == sorted(every)


def test_rerun_trains_nothing(aligned_run, capsys):
    _, out, work, argv = aligned_run
    before = sorted(
        p.stat().st_mtime_ns for p in (work / "alignment").glob("*/model/*.safetensors")
    )
    capsys.readouterr()
    assert main(argv) == 0
    after = sorted(p.stat().st_mtime_ns for p in (work / "alignment").glob("*/model/*.safetensors"))
    assert after == before
    # 2 feature spaces + the alignment + the cleaned-BOLD store + 3 fits
    assert "reused 7 of 7 steps" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--align", "--align-base", "nope"], 64, "--align-base nope: no such feature space"),
        (["--align", "--align-name", "minilm"], 64, "a feature space of that name exists"),
        (["--align", "--align-folds", "1"], 64, "--align-folds"),
        (["--align", "--align-corpus", "/no/such/corpus"], 66, "no such folder"),
        (["--roi", "/no/such/roi.nii.gz"], 66, "no such file"),
    ],
)
def test_alignment_input_errors(demo_dataset, tmp_path, capsys, extra, code, message):
    assert main(_argv(demo_dataset, tmp_path / "out", tmp_path / "work", *extra)) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)


def _plan(demo, tmp_path, *extra):
    from bids_vem.cli.parser import cli, expand_list_options
    from bids_vem.workflows.plan import plan_participant_level

    argv = _argv(demo, tmp_path / "out", tmp_path / "work", "--align", *extra)
    config = cli.main(args=expand_list_options(argv), prog_name="bids_vem", standalone_mode=False)
    return plan_participant_level(config, tmp_path / "work")


@pytest.mark.parametrize(
    ("extra", "held_out"),
    [
        (["--test-runs", "2"], [["sub-01_task-shapes_run-2"]]),
        (["--cv-groups", "run"], [[f"sub-01_task-shapes_run-{k}"] for k in (1, 2, 3, 4)]),
    ],
)
def test_alignment_folds_follow_the_evaluation(demo_dataset, tmp_path, extra, held_out):
    folds = _plan(demo_dataset, tmp_path, *extra).alignment.folds["sub-01_task-shapes"]
    assert [list(f.held_out_runs) for f in folds[:-1]] == held_out
    assert folds[-1].name == "final" and not folds[-1].held_out_ids


def test_alignment_folds_are_the_stimulus_folds_when_images_repeat(demo_dataset, tmp_path):
    # every image is shown in two runs: by default the encoding holds out images, and each
    # alignment fold holds out exactly the images of one encoding fold
    folds = _plan(demo_dataset, tmp_path).alignment.folds["sub-01_task-shapes"]
    every = folds[-1].train_ids
    assert deal_stimuli(every, 4) == [list(f.held_out_ids) for f in folds[:-1]]
    for fold in folds[:-1]:
        assert not fold.held_out_runs and not set(fold.train_ids) & set(fold.held_out_ids)


def test_folds_whose_runs_show_every_image_ask_for_a_corpus(demo_dataset, tmp_path):
    # the demo shows each image in two runs: runs 1 and 2 together show all 96
    with pytest.raises(DataError, match="--align-corpus"):
        _plan(demo_dataset, tmp_path, "--cv-groups", "run", "--align-folds", "2")
