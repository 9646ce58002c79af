"""--test-runs, --average-test-repeats, --cv-groups, --save-weights and --mem through the CLI."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from bids_vem.cli.run import main
from bids_vem.encoding.model import EncodingResult

pytestmark = pytest.mark.slow

SPACE = "MNI152NLin2009cAsym"


def _argv(demo, out, work, *extra):
    return [
        str(demo.bids_dir), str(out), "participant", "-w", str(work), "--nprocs", "1",
        "--participant-label", "01", "--image-encoder", demo.image_model_spec, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def test_run_fit(demo_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluation")
    out, work = root / "out", root / "work"
    argv = _argv(demo_dataset, out, work, "--test-runs", "4", "--save-weights", "--mem", "2GB")
    assert main(argv) == 0
    return demo_dataset, out, work


def test_test_runs_are_recorded_and_weights_written(test_run_fit):
    _, out, work = test_run_fit
    stem = f"sub-01/func/sub-01_task-shapes_space-{SPACE}_desc-randomclip"
    sidecar = json.loads((out / f"{stem}_stat-r_statmap.json").read_text())
    assert sidecar["Evaluation"] == "test-runs"
    assert sidecar["TestRuns"] == ["sub-01_task-shapes_run-4"]
    assert sidecar["CrossValidation"].startswith(
        "explicit test runs; penalties by leave-one-run-out CV on the others"
    )
    # the demo shows each image in two runs: the test run's images were also trained on
    assert sidecar["TestStimuliInTraining"] == [48]
    with open(out / "sub-01" / "func" / "sub-01_summary.tsv") as handle:
        row = next(csv.DictReader(handle, delimiter="\t"))
    assert row["evaluation"] == "test-runs" and row["n_test_runs"] == "1"

    name = f"sub-01_task-shapes_space-{SPACE}_desc-randomclip_weights"
    weights = np.load(out / "models" / f"{name}.npy")
    weights_sidecar = json.loads((out / "models" / f"{name}.json").read_text())
    r_map = nib.load(out / f"{stem}_stat-r_statmap.nii.gz")
    result_file = next(work.rglob("encode_sub01_taskshapes_randomclip/encoding_result.npz"))
    result = EncodingResult.load(result_file)
    assert weights.shape == (result.n_features, result.n_voxels)
    assert weights_sidecar["Shape"] == list(weights.shape)
    assert weights_sidecar["FittedOnRuns"] == [f"sub-01_task-shapes_run-{i}" for i in (1, 2, 3)]
    assert weights_sidecar["NumberOfFeatures"] * 4 == result.n_features
    # the weights' columns are the voxels of the maps, in the maps' order
    np.testing.assert_array_equal(np.asarray(r_map.dataobj)[result.mask], result.r)
    assert result.evaluation == "test-runs" and 0 < result.voxel_chunk <= result.n_voxels
    # the cleaned BOLD was written once, to the work directory, and is what the fit read
    stores = list(work.rglob("bold_sub01_taskshapes/bold.json"))
    assert len(stores) == 1 and (stores[0].parent / "bold.npy").is_file()


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--test-runs", "9"], 64, "--test-runs 9: no run of sub-01_task-shapes matches"),
        (["--average-test-repeats"], 64, "--average-test-repeats needs --test-runs"),
        (["--cv-groups", "session"], 64, "--cv-groups session: sub-01_task-shapes has run(s)"),
        (["--test-runs", "1", "2", "3"], 64, "leaves 1 run(s) of sub-01_task-shapes to train on"),
        (
            ["--test-runs", "3", "4", "--average-test-repeats"],
            65,
            "no two test runs show the same stimuli at the same onsets",
        ),
    ],
)
def test_bad_evaluation_options_fail_with_one_line(
    test_run_fit, tmp_path, capsys, extra, code, message
):
    demo, _, work = test_run_fit
    assert main(_argv(demo, tmp_path / "out", work, *extra)) == code
    err = capsys.readouterr().err
    assert message in err
