"""Surface BOLD in every fMRIPrep naming: GIFTI pairs and CIFTI found, read as points."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from bids_vem.encoding.bold import load_bold, runs_mask
from bids_vem.errors import DataError, InputMissingError
from bids_vem.inputs.layout import find_preproc_bold
from bids_vem.inputs.runs import Run
from bids_vem.inputs.surfaces import read_points, surface_header
from tests.skeletons import _write_dtseries, _write_func_gii

N_VERTICES, N_VOLUMES, TR = 642, 12, 2.0


def _derivatives(root):
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "fMRIPrep", "BIDSVersion": "1.8.0", "DatasetType": "derivative"})
    )
    return root / "sub-01" / "func"


# (fMRIPrep generation, left file name, right file name)
GENERATIONS = [
    (">= 21", "sub-01_task-a_run-1_hemi-L_space-fsaverage5_bold.func.gii",
     "sub-01_task-a_run-1_hemi-R_space-fsaverage5_bold.func.gii"),
    ("20.2", "sub-01_task-a_run-1_space-fsaverage5_hemi-L_bold.func.gii",
     "sub-01_task-a_run-1_space-fsaverage5_hemi-R_bold.func.gii"),
    ("1.2-20.0", "sub-01_task-a_run-1_space-fsaverage5_hemi-L.func.gii",
     "sub-01_task-a_run-1_space-fsaverage5_hemi-R.func.gii"),
    ("1.0-1.1", "sub-01_task-a_run-1_bold_space-fsaverage5.L.func.gii",
     "sub-01_task-a_run-1_bold_space-fsaverage5.R.func.gii"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("generation", "left", "right"), GENERATIONS, ids=[g[0] for g in GENERATIONS]
)
def test_gifti_pairs_in_every_naming(tmp_path, generation, left, right):
    func = _derivatives(tmp_path / "fmriprep")
    func.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = {h: rng.normal(size=(N_VERTICES, N_VOLUMES)) for h in "LR"}
    _write_func_gii(func / left, data["L"], TR)
    _write_func_gii(func / right, data["R"], TR)
    found = find_preproc_bold([tmp_path / "fmriprep"], space="fsaverage5")
    assert len(found) == 1
    pre = found[0]
    assert (pre.bold.name, pre.bold_right.name, pre.mask) == (left, right, None)
    assert surface_header(pre.bold, pre.bold_right) == (N_VOLUMES, TR)
    points = read_points(pre.bold, pre.bold_right)
    np.testing.assert_allclose(points, np.concatenate([data["L"], data["R"]]).T, rtol=1e-6)


def test_a_left_hemisphere_without_its_right_is_refused(tmp_path):
    func = _derivatives(tmp_path / "fmriprep")
    func.mkdir(parents=True)
    _write_func_gii(func / GENERATIONS[0][1], np.ones((N_VERTICES, N_VOLUMES)), TR)
    with pytest.raises(InputMissingError, match="no right hemisphere"):
        find_preproc_bold([tmp_path / "fmriprep"], space="fsaverage5")


def test_cifti_with_and_without_space_and_the_spaces_listed(tmp_path):
    func = _derivatives(tmp_path / "fmriprep")
    func.mkdir(parents=True)
    rng = np.random.default_rng(1)
    left, right = rng.normal(size=(40, N_VOLUMES)), rng.normal(size=(40, N_VOLUMES))
    _write_dtseries(
        func / "sub-01_task-a_run-1_space-fsLR_den-91k_bold.dtseries.nii", left, right, TR, rng
    )
    _write_dtseries(func / "sub-01_task-a_run-2_bold.dtseries.nii", left, right, TR, rng)  # 20.0
    found = find_preproc_bold([tmp_path / "fmriprep"], space="fsLR")
    assert [p.run for p in found] == ["1", "2"] and all(p.bold_right is None for p in found)
    n_volumes, tr = surface_header(found[0].bold)
    assert (n_volumes, tr) == (N_VOLUMES, TR)
    assert read_points(found[0].bold).shape == (N_VOLUMES, 80 + 60)
    with pytest.raises(InputMissingError, match="spaces found: fsLR"):
        find_preproc_bold([tmp_path / "fmriprep"], space="fsaverage5")


def _run(bold, right=None, run="1"):
    return Run("01", None, "a", run, None, "fsaverage5", bold, None, bold, None, TR, N_VOLUMES,
               bold_right=right)  # fmt: skip


def test_vertices_are_cleaned_as_voxels_and_the_medial_wall_is_out(tmp_path):
    """The cleaned vertices equal nilearn's signal.clean of the same columns; constant
    vertices (medial wall) leave the mask; the mask needs signal in every run."""
    from nilearn import signal

    rng = np.random.default_rng(2)
    runs = []
    for number in (1, 2):
        data = {h: rng.normal(100, 5, size=(N_VERTICES, N_VOLUMES)) for h in "LR"}
        data["L"][:10] = 0.0  # medial wall
        data["R"][5] = 3.0 if number == 1 else data["R"][5]  # constant in one run only
        paths = []
        for hemi in "LR":
            paths.append(
                _write_func_gii(tmp_path / f"run{number}_hemi-{hemi}.func.gii", data[hemi], TR)
            )
        runs.append((_run(*paths, run=str(number)), data))
    mask = runs_mask([run for run, _ in runs])
    inside = np.asarray(mask.dataobj).ravel() > 0
    assert inside.size == 2 * N_VERTICES and not inside[:10].any() and not inside[N_VERTICES + 5]
    assert inside.sum() == 2 * N_VERTICES - 11
    run, data = runs[0]
    cleaned = load_bold(run.bold, mask, None, TR, bold_right=run.bold_right)
    points = np.concatenate([data["L"], data["R"]]).T[:, inside]
    expected = signal.clean(points, detrend=True, standardize="zscore_sample", t_r=TR, filter=False)
    np.testing.assert_allclose(cleaned, expected, atol=1e-4)


def test_runs_on_different_surfaces_are_refused(tmp_path):
    a = _write_func_gii(tmp_path / "a_hemi-L.func.gii", np.ones((N_VERTICES, N_VOLUMES)), TR)
    b = _write_func_gii(tmp_path / "b_hemi-L.func.gii", np.ones((N_VERTICES + 1, N_VOLUMES)), TR)
    with pytest.raises(DataError, match="all runs must share one surface"):
        runs_mask([_run(a), _run(b, run="2")])


@pytest.mark.parametrize(("time_step", "tr"), [("2000", 2.0), ("1500.000000", 1.5), ("0.8", 0.8)])
def test_the_gifti_time_step_in_milliseconds_or_seconds(tmp_path, time_step, tr):
    path = _write_func_gii(tmp_path / "x_hemi-L.func.gii", np.ones((10, 4)), 1.0)
    image = nib.load(path)
    for array in image.darrays:
        array.meta["TimeStep"] = time_step
    nib.save(image, path)
    assert surface_header(path) == (4, pytest.approx(tr))
