"""--design trialwise end to end: LSS single-trial responses, and user-supplied betas (--betas)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.stats import pearsonr

from bids_vem.cli.run import main
from bids_vem.demo.simulate import CONFOUND_COLUMNS
from tests.helpers import participant_argv

pytestmark = pytest.mark.slow

SPACE = "MNI152NLin2009cAsym"
STEM = f"sub-01_task-shapes_space-{SPACE}"


def _argv(demo, out, work, *extra):
    return participant_argv(demo, out, work, *extra, image=False)


def _r(out):
    path = out / "sub-01" / "func" / f"{STEM}_desc-minilm_stat-r_statmap.nii.gz"
    return np.asarray(nib.load(str(path)).dataobj)


@pytest.fixture(scope="module")
def trialwise_run(demo_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("trialwise")
    assert main(_argv(demo_dataset, root / "out", root / "work", "--design", "trialwise")) == 0
    return demo_dataset, root


def test_trialwise_model_finds_the_semantic_voxels(trialwise_run):
    demo, root = trialwise_run
    truth = demo.ground_truth_dir
    classes = np.asarray(
        nib.load(str(truth / f"sub-01_space-{SPACE}_desc-voxelclass_dseg.nii.gz")).dataobj
    )
    amplitude = np.asarray(
        nib.load(str(truth / f"sub-01_space-{SPACE}_desc-semantic_amplitude.nii.gz")).dataobj
    )
    r = _r(root / "out")
    brain = classes > 0
    assert pearsonr(amplitude[brain], r[brain])[0] > 0.4
    semantic, noise = r[classes == 2], r[classes == 1]
    assert (semantic[:, None] > noise[None, :]).mean() > 0.9
    sidecar = json.loads(
        (root / "out" / "sub-01" / "func" / f"{STEM}_desc-minilm_stat-r_statmap.json").read_text()
    )
    assert (
        sidecar["Design"] == "trialwise" and "least-squares-separate" in sidecar["TrialResponses"]
    )
    assert "One response per trial" in (root / "out" / "logs" / "CITATION.md").read_text()


def test_trialwise_noise_ceiling_is_higher_where_the_simulation_put_signal(trialwise_run):
    """Each image is shown twice: the repeats give NSD's ncsnr-based noise ceiling (stat-nc)
    and the noise-normalised r (stat-rnorm); the ceiling follows the simulated signal."""
    demo, root = trialwise_run
    func = root / "out" / "sub-01" / "func"
    classes = np.asarray(
        nib.load(
            str(demo.ground_truth_dir / f"sub-01_space-{SPACE}_desc-voxelclass_dseg.nii.gz")
        ).dataobj
    )
    nc = np.asarray(nib.load(str(func / f"{STEM}_desc-minilm_stat-nc_statmap.nii.gz")).dataobj)
    assert (func / f"{STEM}_desc-minilm_stat-rnorm_statmap.nii.gz").is_file()
    assert np.all((nc >= 0) & (nc <= 1))
    assert np.median(nc[classes == 2]) > 2 * np.median(nc[classes == 1]) + 0.01
    sidecar = json.loads((func / f"{STEM}_desc-minilm_stat-nc_statmap.json").read_text())
    assert "ncsnr" in sidecar["Description"]
    # the report draws the noise-normalised r beside r
    assert "desc-minilm_rnorm.png" in (root / "out" / "sub-01.html").read_text()


def _estimated_betas(demo):
    """sub-01's single-trial betas as the trial-wise run estimates them (LSS)."""
    from bids_vem.encoding.lss import estimate_trial_betas
    from tests.helpers import collect_runs

    runs = [
        run
        for run in collect_runs(
            demo.bids_dir, derivatives=[demo.fmriprep_dir], participant_label=("01",), space=SPACE
        )
        if run.subject == "01"
    ]
    return estimate_trial_betas(runs, confounds=CONFOUND_COLUMNS)


def test_user_betas_give_the_same_maps_as_the_estimated_ones(trialwise_run, tmp_path):
    from bids_vem.encoding.trialwise import write_trial_betas

    demo, root = trialwise_run
    betas = _estimated_betas(demo)
    folder = tmp_path / "glmsingle" / "sub-01" / "func"
    write_trial_betas(betas, folder / f"sub-01_task-shapes_space-{SPACE}_desc-lss_betas.nii.gz")
    out = tmp_path / "out"
    argv = _argv(demo, out, tmp_path / "work", "--betas", str(tmp_path / "glmsingle"))
    assert main(argv) == 0
    np.testing.assert_allclose(_r(out), _r(root / "out"), atol=1e-5)


class _Trap:
    """An object whose unpickling would create a file: GLMsingle folders are read without
    running code from them."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_glmsingle_session_folders_give_the_same_maps_as_the_estimated_ones(
    trialwise_run, tmp_path, capfd
):
    """GLMsingle's own outputs (a pickled dict per session folder, no table of stimuli): the
    volumes are the trials of the runs in order, checked against DESIGNINFO; the maps equal
    those of the same betas estimated here, and nothing in the pickles is executed."""
    demo, root = trialwise_run
    betas = _estimated_betas(demo)
    # GLMsingle numbers the trials in time: runs in order, events by onset
    number = betas.trials["run"].str.extract(r"run-(\d+)")[0].astype(int)
    order = betas.trials.assign(number=number).sort_values(["number", "onset"], kind="stable")
    volumes = np.zeros((*betas.mask.shape, len(order)), dtype=np.float32)
    volumes[betas.mask] = betas.betas[order.index.to_numpy()].T
    conditions = {stim: k for k, stim in enumerate(dict.fromkeys(order["stim_id"]))}
    folder = tmp_path / "GLM" / "sub-01"
    folder.mkdir(parents=True)
    marker = tmp_path / "executed"
    np.save(
        folder / "TYPED_FITHRF_GLMDENOISE_RR.npy",
        {"betasmd": volumes, "R2": volumes[..., 0], "FRACvalue": 0.5, "trap": _Trap(marker)},
        allow_pickle=True,
    )
    np.save(
        folder / "DESIGNINFO.npy",
        {
            "stimorder": np.array([conditions[s] for s in order["stim_id"]]),
            "numtrialrun": order.groupby("number").size().to_numpy(),
            "params": {"trap": _Trap(marker)},
        },
        allow_pickle=True,
    )
    out = tmp_path / "out"
    argv = _argv(demo, out, tmp_path / "work", "--betas", str(tmp_path / "GLM"))
    assert main(argv) == 0
    log = capfd.readouterr().err
    assert "stimulus trials of 4 run(s) in order (checked against DESIGNINFO.npy)" in log
    np.testing.assert_allclose(_r(out), _r(root / "out"), atol=1e-5)
    assert not marker.exists()


def test_betas_folder_without_the_participant_is_66(demo_dataset, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = _argv(
        demo_dataset, tmp_path / "out", tmp_path / "work", "--betas", str(tmp_path / "empty")
    )
    assert main(argv) == 66
    assert "no file match" in capsys.readouterr().err
