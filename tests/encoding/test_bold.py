"""BOLD loading and cleaning, confounds, masks: numbers against nilearn, errors against files."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn import masking, signal

from bids_vem.encoding.bold import (
    epi_mask,
    intersect_masks,
    legacy_confound_name,
    load_bold,
    mask_description,
    read_confounds,
    runs_mask,
)
from bids_vem.encoding.nuisance import cosine_drifts
from bids_vem.errors import DataError, InputMissingError

AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])


def _write_run(tmp_path: Path, n_volumes: int = 40, seed: int = 0) -> tuple[Path, Path, np.ndarray]:
    """A 5x4x3 BOLD with a drift, a 3-D mask with a constant voxel inside it."""
    rng = np.random.default_rng(seed)
    shape = (5, 4, 3)
    data = 100 + rng.standard_normal((*shape, n_volumes)) * 5
    data += np.linspace(0, 8, n_volumes)  # linear drift everywhere
    data[0, 0, 0] = 250.0  # constant over time, inside the mask
    mask = np.zeros(shape, dtype=np.uint8)
    mask[:4, :, 1:] = 1
    bold_path, mask_path = tmp_path / "bold.nii.gz", tmp_path / "mask.nii.gz"
    nib.Nifti1Image(data.astype(np.float32), AFFINE).to_filename(bold_path)
    mask[0, 0, 0] = 1
    nib.Nifti1Image(mask, AFFINE).to_filename(mask_path)
    return bold_path, mask_path, data


def test_load_bold_matches_nilearn_apply_mask_and_clean(tmp_path):
    bold_path, mask_path, _ = _write_run(tmp_path)
    confounds = np.random.default_rng(1).standard_normal((40, 3))
    out = load_bold(bold_path, mask_path, confounds, tr=2.0)

    reference = signal.clean(
        masking.apply_mask(bold_path, mask_path),
        detrend=True,
        standardize="zscore_sample",
        confounds=confounds,
        t_r=2.0,
    )
    constant = np.ptp(masking.apply_mask(bold_path, mask_path), axis=0) == 0
    assert constant.sum() == 1
    assert out.dtype == np.float32 and out.shape == reference.shape == (40, 33)
    np.testing.assert_allclose(out[:, ~constant], reference[:, ~constant], atol=1e-5)
    assert np.all(out[:, constant] == 0)
    # z-scored, trend and confounds gone
    varying = out[:, ~constant].astype(np.float64)
    np.testing.assert_allclose(varying.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(varying.std(0, ddof=1), 1, atol=1e-4)
    assert np.abs(np.corrcoef(np.arange(40), varying.T)[0, 1:]).max() < 1e-4
    assert np.abs(confounds.T @ varying).max() < 1e-3


def test_high_pass_holds_when_a_confound_looks_like_a_drift(tmp_path):
    """Given ``filter="cosine"``, nilearn drops its whole cosine basis when one confound
    correlates above 0.9 with one cosine (slow motion does). The drifts asked for are removed
    all the same, and the result is nilearn's with the drifts given as confounds."""
    n_volumes, tr, high_pass = 120, 2.0, 0.01
    bold_path, mask_path, _ = _write_run(tmp_path, n_volumes=n_volumes)
    drifts = cosine_drifts(n_volumes, tr, high_pass)
    assert drifts.shape[1] == 4
    rng = np.random.default_rng(3)
    slow = drifts[:, 0] + 0.02 * rng.standard_normal(n_volumes)  # a confound like a drift
    assert np.corrcoef(slow, drifts[:, 0])[0, 1] > 0.9
    confounds = np.column_stack([slow, rng.standard_normal(n_volumes)])
    out = load_bold(bold_path, mask_path, confounds, tr=tr, high_pass=high_pass)
    signals = masking.apply_mask(bold_path, mask_path)
    varying = np.ptp(signals, axis=0) > 0
    # every drift is gone, not only the one the confound resembles
    assert np.abs(drifts.T @ out[:, varying].astype(np.float64)).max() < 1e-3
    with pytest.warns(UserWarning, match="Cosine filter"):
        dropped = signal.clean(
            signals,
            detrend=True,
            standardize="zscore_sample",
            confounds=confounds,
            t_r=tr,
            filter="cosine",
            high_pass=high_pass,
        )
    assert np.abs(drifts[:, 1:].T @ dropped[:, varying]).max() > 0.1  # nilearn's shortcut
    reference = signal.clean(
        signals,
        detrend=True,
        standardize="zscore_sample",
        confounds=np.hstack([confounds, drifts]),
        t_r=tr,
        filter=False,
    )
    np.testing.assert_allclose(out[:, varying], reference[:, varying], atol=1e-5)


def test_voxels_with_nan_are_zero_not_nan(tmp_path, caplog):
    bold_path, mask_path, data = _write_run(tmp_path)
    data = data.copy()
    data[1, 1, 1, 5] = np.nan
    nib.Nifti1Image(data.astype(np.float32), AFFINE).to_filename(bold_path)
    with caplog.at_level("WARNING", logger="bids_vem.encoding.bold"):
        out = load_bold(bold_path, mask_path, None, tr=2.0)
    assert "1 voxel(s) of the brain mask have NaN or infinite values" in caplog.text
    assert np.all(np.isfinite(out))
    mask = nib.load(mask_path).get_fdata() > 0
    marked = np.zeros(mask.shape, bool)
    marked[1, 1, 1] = True
    column = np.flatnonzero(marked[mask])
    assert column.size == 1 and np.all(out[:, column] == 0)
    assert np.count_nonzero(np.all(out == 0, axis=0)) == 2  # and the constant voxel


def test_header_only_nifti_is_an_unreadable_input(shared_fixtures):
    folder = shared_fixtures / "bids-examples" / "synthetic" / "derivatives" / "fmriprep"
    bold = next(folder.rglob("*space-MNI152NLin2009cAsym_desc-preproc_bold.nii*"))
    assert bold.stat().st_size < 1000  # header only
    mask = nib.Nifti1Image(np.ones(nib.load(bold).shape[:3], np.int8), nib.load(bold).affine)
    with pytest.raises(InputMissingError) as info:
        load_bold(bold, mask, None, tr=2.0)
    assert info.value.exit_code == 66
    assert str(bold) in str(info.value) and "truncated" in str(info.value)


def test_truncated_gzip_is_an_unreadable_input(tmp_path):
    bold_path, mask_path, _ = _write_run(tmp_path)
    raw = gzip.decompress(bold_path.read_bytes())
    cut = tmp_path / "cut_bold.nii.gz"
    cut.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(InputMissingError, match="cut_bold.nii.gz"):
        load_bold(cut, mask_path, None, tr=2.0)
    with pytest.raises(InputMissingError, match="not found"):
        load_bold(tmp_path / "absent_bold.nii.gz", mask_path, None, tr=2.0)
    not_nifti = tmp_path / "text_bold.nii"
    not_nifti.write_text("hello")
    with pytest.raises(InputMissingError, match="text_bold.nii"):
        load_bold(not_nifti, mask_path, None, tr=2.0)


def test_grid_mismatch_and_bad_data_are_data_errors(tmp_path):
    bold_path, mask_path, data = _write_run(tmp_path)
    shifted = tmp_path / "shifted_mask.nii.gz"
    affine = AFFINE.copy()
    affine[0, 3] = 10.0
    nib.Nifti1Image(np.ones((5, 4, 3), np.uint8), affine).to_filename(shifted)
    with pytest.raises(DataError, match="does not match brain mask") as info:
        load_bold(bold_path, shifted, None, tr=2.0)
    assert info.value.exit_code == 65 and "bold.nii.gz" in str(info.value)

    small = tmp_path / "small_mask.nii.gz"
    nib.Nifti1Image(np.ones((5, 4, 2), np.uint8), AFFINE).to_filename(small)
    with pytest.raises(DataError, match="small_mask"):
        load_bold(bold_path, small, None, tr=2.0)

    with pytest.raises(DataError, match="confounds have 39 rows"):
        load_bold(bold_path, mask_path, np.zeros((39, 2)), tr=2.0)

    flat = tmp_path / "flat_bold.nii.gz"
    nib.Nifti1Image(np.full((5, 4, 3, 40), 7.0, np.float32), AFFINE).to_filename(flat)
    with pytest.raises(DataError, match="constant"):
        load_bold(flat, mask_path, None, tr=2.0)

    nan = tmp_path / "nan_bold.nii.gz"
    nib.Nifti1Image(np.full((5, 4, 3, 40), np.nan, np.float32), AFFINE).to_filename(nan)
    with pytest.raises(DataError, match="no finite value"):
        load_bold(nan, mask_path, None, tr=2.0)

    empty = tmp_path / "empty_mask.nii.gz"
    nib.Nifti1Image(np.zeros((5, 4, 3), np.uint8), AFFINE).to_filename(empty)
    with pytest.raises(DataError, match="empty"):
        load_bold(bold_path, empty, None, tr=2.0)


def test_intersect_masks(tmp_path):
    a, b = np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3, 3), np.uint8)
    a[:2] = 1
    b[1:] = 1
    paths = []
    for name, m in (("a", a), ("b", b)):
        paths.append(tmp_path / f"{name}_mask.nii.gz")
        nib.Nifti1Image(m, AFFINE).to_filename(paths[-1])
    common = intersect_masks(paths)
    np.testing.assert_array_equal(np.asarray(common.dataobj) > 0, (a > 0) & (b > 0))
    other = tmp_path / "c_mask.nii.gz"
    nib.Nifti1Image(a, np.eye(4)).to_filename(other)
    with pytest.raises(DataError, match="c_mask"):
        intersect_masks([paths[0], other])


def test_read_confounds_from_real_fmriprep_table(shared_fixtures):
    path = next((shared_fixtures / "bold5000-ds001499-skeleton").rglob("*_bold_confounds.tsv"))
    values = read_confounds(path, ["FramewiseDisplacement", "X", "CSF"])
    table = pd.read_csv(path, sep="\t", na_values="n/a")
    assert values.shape == (len(table), 3)
    assert np.isnan(table["FramewiseDisplacement"].iloc[0])
    np.testing.assert_allclose(values[0, 0], table["FramewiseDisplacement"].mean())
    np.testing.assert_allclose(values[1:, 0], table["FramewiseDisplacement"].iloc[1:])
    np.testing.assert_allclose(values[:, 1], table["X"])

    # today's names are read from an fMRIPrep < 1.2 table under their old names
    modern = read_confounds(path, ["framewise_displacement", "trans_x", "csf"])
    np.testing.assert_array_equal(modern, values)
    assert legacy_confound_name("a_comp_cor_03") == "aCompCor03"
    assert legacy_confound_name("non_steady_state_outlier_00") == "NonSteadyStateOutlier00"
    assert legacy_confound_name("rot_z") == "RotZ" and legacy_confound_name("xyz") is None
    with pytest.raises(DataError) as info:
        read_confounds(path, ["a_comp_cor_99", "CSF"])
    message = str(info.value)
    assert info.value.exit_code == 65
    assert str(path) in message and "a_comp_cor_99" in message and "CSF" in message
    assert read_confounds(path, []) is None


def test_read_confounds_missing_inputs(tmp_path):
    with pytest.raises(InputMissingError, match="no confounds file"):
        read_confounds(None, ["csf"])
    with pytest.raises(InputMissingError, match="not found"):
        read_confounds(tmp_path / "none.tsv", ["csf"])
    empty_column = tmp_path / "confounds.tsv"
    empty_column.write_text("csf\tfd\n1\tn/a\n2\tn/a\n")
    with pytest.raises(DataError, match="fd"):
        read_confounds(empty_column, ["fd"])


def test_runs_without_a_mask_get_one_derived_from_their_bold(tmp_path):
    """NOD ships no brain masks: the voxels are the EPI masks of the runs, intersected."""
    from bids_vem.inputs.runs import Run
    from tests.skeletons import write_bold

    def run(name, mask=None, seed=0):
        bold = write_bold(tmp_path / f"{name}_bold.nii.gz", 20, 2.0, seed)
        return Run(
            "01", None, "x", name, None, "T1w", bold, mask, tmp_path / "e.tsv", None, 2.0, 20
        )

    reference = write_bold(tmp_path / "reference_bold.nii.gz", 2, 2.0, 9)
    brain = np.asarray(nib.load(reference).dataobj)[..., 0] > 500
    derived = runs_mask([run("a"), run("b", seed=1)])
    inside = np.asarray(derived.dataobj) > 0
    # the bright ellipsoid, less the edge that nilearn's morphological opening removes
    assert not (inside & ~brain).any() and inside.sum() > 0.5 * brain.sum()
    assert "derived from the BOLD" in mask_description([run("a")])
    # a given mask and a derived one: intersected; the description says both
    half = brain.copy()
    half[: brain.shape[0] // 2] = False
    given = tmp_path / "given_mask.nii.gz"
    nib.Nifti1Image(half.astype(np.uint8), np.diag([3.0, 3.0, 3.0, 1.0])).to_filename(given)
    both = [run("a"), run("c", mask=given)]
    assert (np.asarray(runs_mask(both).dataobj) > 0).sum() <= half.sum()
    assert "fMRIPrep brain masks of 1 run(s)" in mask_description(both)
    # a blank series gives an empty mask: exit 65, naming the file
    blank = tmp_path / "blank_bold.nii.gz"
    nib.Nifti1Image(np.zeros((9, 10, 8, 5), np.float32), np.eye(4)).to_filename(blank)
    with pytest.raises(DataError) as info:
        epi_mask(blank)
    assert info.value.exit_code == 65 and str(blank) in str(info.value)
