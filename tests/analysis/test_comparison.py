"""Feature-space comparison: r in mask and regions, voxels where aligned beats unaligned."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bids_vem.analysis.comparison import compare_feature_spaces, roi_voxels
from bids_vem.errors import DataError


def test_rows_match_numpy():
    rng = np.random.default_rng(0)
    unaligned = rng.normal(0.05, 0.1, 500)
    aligned = unaligned + rng.normal(0.02, 0.05, 500)
    region = np.zeros(500, dtype=bool)
    region[:100] = True
    rows = compare_feature_spaces(
        {"aligned": aligned, "clip": unaligned},
        roles={"aligned": "aligned", "clip": "unaligned"},
        reference="clip",
        rois={"FFA": region},
        threshold=0.1,
    )
    first, second = rows
    assert first["role"] == "aligned" and second["role"] == "unaligned"
    assert first["mean_r"] == pytest.approx(aligned.mean())
    assert first["median_r"] == pytest.approx(np.median(aligned))
    assert first["mean_r_roi-FFA"] == pytest.approx(aligned[:100].mean())
    assert first["n_voxels_r_above_threshold"] == int((aligned > 0.1).sum())
    assert first["n_voxels_beat_reference"] == int((aligned > unaligned).sum())
    predicted = (aligned > 0.1) | (unaligned > 0.1)
    assert first["fraction_beat_reference_predicted"] == pytest.approx(
        (aligned > unaligned)[predicted].mean()
    )
    assert first["mean_r_gain"] == pytest.approx((aligned - unaligned).mean())
    assert "n_voxels_beat_reference" not in second


def test_roi_on_another_grid_is_resampled_by_nearest_neighbour(tmp_path):
    from nilearn.image import resample_to_img

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[2:8, 2:8, 2:8] = True
    roi = np.zeros((20, 20, 20), dtype=np.uint8)  # 1-mm grid
    roi[4:10, 4:12, 6:14] = 1
    path = tmp_path / "roi.nii.gz"
    nib.save(nib.Nifti1Image(roi, np.diag([1.0, 1.0, 1.0, 1.0])), path)
    inside = roi_voxels([("V1", path)], mask, affine)["V1"]
    reference = resample_to_img(
        nib.load(path),
        nib.Nifti1Image(mask.astype(np.uint8), affine),
        interpolation="nearest",
        force_resample=True,
        copy_header=True,
    )
    expected = (np.asarray(reference.dataobj) != 0)[mask]
    assert inside.shape == (int(mask.sum()),)
    np.testing.assert_array_equal(inside, expected)
    assert 0 < inside.sum() < inside.size


def test_roi_outside_the_brain_mask_is_a_data_error(tmp_path):
    mask = np.zeros((4, 4, 4), dtype=bool)
    mask[:2] = True
    roi = np.zeros((4, 4, 4), dtype=np.uint8)
    roi[3] = 1
    path = tmp_path / "roi.nii.gz"
    nib.save(nib.Nifti1Image(roi, np.eye(4)), path)
    with pytest.raises(DataError, match="no voxel of the brain mask"):
        roi_voxels([("out", path)], mask, np.eye(4))


def test_best_space_labels_the_best_predicting_space_where_it_is_significant():
    from bids_vem.analysis.comparison import best_space

    r = np.array([[0.3, 0.1, -0.2, np.nan], [0.2, 0.4, -0.1, 0.5]])
    assert best_space(r).tolist() == [1, 2, 0, 2]
    significant = np.array([[True, False, False, False], [False, False, False, True]])
    # the best space must itself be significant: voxel 1's best (space 2) is not
    assert best_space(r, significant).tolist() == [1, 0, 0, 2]
