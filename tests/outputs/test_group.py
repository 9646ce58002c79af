"""Group maps under group/, their sidecars, the group summary and finding participant maps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from nilearn.masking import apply_mask

from bids_vem.outputs.group import find_statmaps, write_group_maps, write_group_summary
from bids_vem.outputs.statmaps import write_encoding_maps


def test_group_maps(tmp_path, mask_img, result):
    sources = [
        "bids::sub-01/func/sub-01_task-x_space-MNI152NLin2009cAsym_desc-clip_stat-r_statmap.nii.gz"
    ]
    maps = {"meanr": result.r, "t": result.r * 3, "p": result.cv_score, "q": result.cv_score}
    paths = write_group_maps(
        tmp_path,
        maps,
        mask_img,
        task="x",
        space="MNI152NLin2009cAsym",
        feature_space="clip",
        n_subjects=5,
        sources=sources,
        parameters={"Test": "one-sample t"},
    )
    for stat, path in paths.items():
        assert (
            path
            == tmp_path
            / "group"
            / f"task-x_space-MNI152NLin2009cAsym_desc-clip_stat-{stat}_statmap.nii.gz"
        )
        np.testing.assert_allclose(apply_mask(path, mask_img), maps[stat].astype(np.float32))
        sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
        assert sidecar["NumberOfSubjects"] == 5
        assert sidecar["Test"] == "one-sample t"
        assert sidecar["Sources"] == sources
    assert (
        "FDR"
        in json.loads(
            paths["q"].with_name(paths["q"].name.replace(".nii.gz", ".json")).read_text()
        )["Description"]
    )


def test_group_summary(tmp_path):
    path = write_group_summary(
        tmp_path, [{"subject": "01", "mean_r": 0.1}, {"subject": "02", "mean_r": 0.3}]
    )
    assert path == tmp_path / "group" / "summary.tsv"
    table = pd.read_csv(path, sep="\t", dtype={"subject": str})
    assert table.to_dict("list") == {"subject": ["01", "02"], "mean_r": [0.1, 0.3]}
    assert (tmp_path / "group" / "summary.json").exists()


def test_find_statmaps(tmp_path, mask_img, result):
    for subject, session, fs in (("01", None, "clip"), ("02", "A", "clip"), ("02", "A", "sbert")):
        write_encoding_maps(
            tmp_path,
            result,
            mask_img,
            subject=subject,
            session=session,
            task="x",
            space="T1w",
            feature_space=fs,
            sources=[],
        )
    found = find_statmaps(tmp_path, stat="r", feature_space="clip")
    assert [e["sub"] for e, _ in found] == ["01", "02"]
    assert all(p.name.endswith("_desc-clip_stat-r_statmap.nii.gz") for _, p in found)
    assert len(find_statmaps(tmp_path, stat="alpha")) == 3
    assert find_statmaps(tmp_path, stat="r", task="other") == []
