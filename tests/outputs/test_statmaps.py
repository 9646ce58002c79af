"""Stat maps: voxel order and values against nilearn, sidecars, summaries, atomic writes."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.masking import apply_mask
from nilearn.masking import unmask as nilearn_unmask

from bids_vem.errors import DataError, InputMissingError
from bids_vem.outputs.atomic import atomic_path
from bids_vem.outputs.statmaps import (
    bids_uri,
    encoding_summary_row,
    map_summary,
    summary_tsv_path,
    unmask,
    write_encoding_maps,
    write_statmap,
    write_summary_tsv,
)

SOURCES = [
    "bids:raw:sub-01/func/sub-01_task-x_run-1_bold.nii.gz",
    "bids::features/desc-clip_features.npy",
]


def test_unmask_matches_nilearn(mask_img):
    data = np.random.default_rng(1).normal(size=int(np.asarray(mask_img.dataobj).sum()))
    ours = unmask(data, mask_img)
    reference = nilearn_unmask(data, mask_img)
    np.testing.assert_allclose(ours.get_fdata(), reference.get_fdata(), rtol=1e-6)
    assert ours.get_data_dtype() == np.float32
    np.testing.assert_array_equal(ours.affine, mask_img.affine)
    assert int(ours.header["sform_code"]) == 4  # MNI kept
    assert ours.header.get_xyzt_units() == ("mm", "sec")


def test_statmap_file_round_trips_through_nilearn(tmp_path, mask_img):
    n_voxels = int(np.asarray(mask_img.dataobj).sum())
    data = np.linspace(-0.5, 0.9, n_voxels)
    data[3] = np.nan  # a constant voxel has no correlation
    path = write_statmap(
        tmp_path,
        data,
        mask_img,
        entities={"sub": "01", "task": "x", "space": "MNI152NLin2009cAsym", "desc": "clip"},
        stat="r",
        description="correlation",
        sources=SOURCES,
        parameters={"Delays": (1, 2), "Alphas": np.array([1.0, 10.0]), "Score": np.float32(0.5)},
    )
    assert (
        path
        == tmp_path
        / "sub-01"
        / "func"
        / "sub-01_task-x_space-MNI152NLin2009cAsym_desc-clip_stat-r_statmap.nii.gz"
    )
    image = nib.load(path)
    # NaN stays NaN in the file (nilearn's default ensure_finite would read it as 0)
    back = apply_mask(image, mask_img, ensure_finite=False)
    np.testing.assert_allclose(back, data.astype(np.float32), equal_nan=True)
    outside = np.asarray(image.dataobj)[np.asarray(mask_img.dataobj) == 0]
    assert np.all(outside == 0)
    sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar == {
        "Description": "correlation",
        "Sources": SOURCES,
        "Delays": [1, 2],
        "Alphas": [1.0, 10.0],
        "Score": 0.5,
    }


def test_statmap_errors(tmp_path, mask_img):
    good = dict(entities={"sub": "01"}, stat="r", description="d", sources=SOURCES)
    with pytest.raises(DataError, match="mask has 180 voxels") as info:
        write_statmap(tmp_path, np.zeros(7), mask_img, **good)
    assert info.value.exit_code == 65
    with pytest.raises(ValueError, match="BIDS URIs"):
        write_statmap(
            tmp_path, np.zeros(180), mask_img, **{**good, "sources": ["/abs/bold.nii.gz"]}
        )
    with pytest.raises(ValueError, match="Description"):
        write_statmap(tmp_path, np.zeros(180), mask_img, **good, parameters={"Description": "x"})
    with pytest.raises(InputMissingError, match="brain mask not found"):
        write_statmap(tmp_path, np.zeros(180), tmp_path / "nomask.nii.gz", **good)
    assert not list(tmp_path.rglob("*.nii.gz"))


def test_failed_write_leaves_no_file_and_no_temporary(tmp_path, mask_img, monkeypatch):
    def broken(self, filename):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib.Nifti1Image, "to_filename", broken)
    with pytest.raises(OSError, match="disk full"):
        write_statmap(
            tmp_path,
            np.zeros(180),
            mask_img,
            entities={"sub": "01"},
            stat="r",
            description="d",
            sources=[],
        )
    func = tmp_path / "sub-01" / "func"
    assert [p.name for p in func.iterdir()] == [
        "sub-01_stat-r_statmap.json"
    ]  # sidecar first, no NIfTI, no temp


def test_atomic_path_keeps_an_older_file_on_failure(tmp_path):
    target = tmp_path / "a.tsv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new, half written")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.tsv"]


def test_encoding_maps(tmp_path, mask_img, result):
    paths = write_encoding_maps(
        tmp_path,
        result,
        mask_img,
        subject="01",
        session="A",
        task="x",
        space="MNI152NLin2009cAsym",
        feature_space="clip",
        sources=SOURCES,
        parameters={"Delays": [1, 2, 3, 4]},
    )
    assert sorted(paths) == ["alpha", "r", "r2"]
    for stat, path in paths.items():
        assert (
            path.name
            == f"sub-01_ses-A_task-x_space-MNI152NLin2009cAsym_desc-clip_stat-{stat}_statmap.nii.gz"
        )
        np.testing.assert_allclose(
            apply_mask(path, mask_img), getattr(result, stat).astype(np.float32)
        )
        sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
        assert "'clip'" in sidecar["Description"]
        assert sidecar["Delays"] == [1, 2, 3, 4]


def test_map_summary_by_hand():
    r = np.array([0.5, 0.05, np.nan, 0.2, -0.1])
    alpha = np.array([1.0, 100.0, 10.0, 1.0, 1.0])
    summary = map_summary(
        r, r2=np.array([0.1, 0.3, np.nan, 0.2, 0.0]), alpha=alpha, alphas=[1.0, 10.0, 100.0]
    )
    assert summary["n_voxels"] == 5
    assert summary["mean_r"] == pytest.approx(0.65 / 4)
    assert summary["median_r"] == pytest.approx(0.125)
    assert summary["max_r"] == pytest.approx(0.5)
    assert summary["percent_r_above_threshold"] == pytest.approx(40.0)
    assert summary["mean_r2"] == pytest.approx(0.15)
    assert summary["percent_alpha_at_min"] == pytest.approx(60.0)
    assert summary["percent_alpha_at_max"] == pytest.approx(20.0)


def test_summary_row_and_tsv(tmp_path, result):
    row = encoding_summary_row(
        result,
        subject="01",
        session=None,
        task="x",
        space="T1w",
        feature_space="clip",
        alphas=[1.0, 10.0, 100.0],
    )
    assert row["mean_cv_score"] == pytest.approx(result.cv_score.mean())  # from result.summary()
    assert row["mean_r"] == pytest.approx(result.r.mean())
    path = write_summary_tsv(
        summary_tsv_path(tmp_path, "01"), [row, {**row, "feature_space": "sbert", "extra": "a\tb"}]
    )
    assert path == tmp_path / "sub-01" / "func" / "sub-01_summary.tsv"
    table = pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)
    assert list(table["feature_space"]) == ["clip", "sbert"]
    assert table["session"].isna().all()
    assert table["extra"].tolist()[1] == "a b"
    assert table["mean_r"][0] == pytest.approx(result.r.mean(), rel=1e-5)
    sidecar = json.loads(path.with_suffix("").with_suffix(".json").read_text())
    assert "Description" in sidecar["mean_r"]
    assert "extra" not in sidecar


def test_bids_uri():
    assert (
        bids_uri("raw", "sub-01/func/sub-01_task-x_bold.nii.gz")
        == "bids:raw:sub-01/func/sub-01_task-x_bold.nii.gz"
    )
    assert bids_uri("", "sub-01/func/a.nii.gz") == "bids::sub-01/func/a.nii.gz"
    for bad in ("/abs/path.nii.gz", "../up.nii.gz", "has space.nii.gz"):
        with pytest.raises(ValueError):
            bids_uri("raw", bad)


@pytest.mark.parametrize("umask", [0o022, 0o007, 0o077])
def test_outputs_get_the_users_umask_not_0600(tmp_path, umask):
    """mkstemp creates 0600 temporary files; what is renamed into place follows the umask."""
    import os
    import stat

    from bids_vem.outputs.atomic import atomic_path, current_umask, write_text_atomic

    previous = os.umask(umask)
    try:
        assert current_umask() == umask
        text = write_text_atomic(tmp_path / "a.json", "{}")
        with atomic_path(tmp_path / "b.nii.gz") as tmp:
            nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)).to_filename(tmp)
    finally:
        os.umask(previous)
    for path in (text, tmp_path / "b.nii.gz"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
