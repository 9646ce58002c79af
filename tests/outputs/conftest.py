"""Fixtures of the outputs tests: a tiny mask in MNI space and an encoding-result stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.helpers import FakeEncodingResult


@pytest.fixture
def mask_img() -> nib.Nifti1Image:
    """A 10x12x9 volume, 2 mm voxels, with a 6x6x5 box of 180 voxels; MNI codes."""
    mask = np.zeros((10, 12, 9), dtype=np.uint8)
    mask[2:8, 3:9, 2:7] = 1
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10.0, -12.0, -8.0]
    image = nib.Nifti1Image(mask, affine)
    image.set_sform(affine, 4)
    image.set_qform(affine, 4)
    return image


@pytest.fixture
def result(mask_img) -> FakeEncodingResult:
    rng = np.random.default_rng(0)
    n_voxels = int(np.asarray(mask_img.dataobj).sum())
    return FakeEncodingResult(
        r=rng.uniform(-0.2, 0.6, n_voxels),
        r2=rng.uniform(-0.1, 0.3, n_voxels),
        alpha=rng.choice([1.0, 10.0, 100.0], n_voxels),
        cv_score=rng.uniform(0.0, 0.5, n_voxels),
    )


@pytest.fixture
def raw_dataset(tmp_path) -> Path:
    """A raw dataset root with only its dataset_description.json (OpenNeuro-style DOI)."""
    root = tmp_path / "raw"
    root.mkdir()
    (root / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "toy",
                "BIDSVersion": "1.10.1",
                "DatasetDOI": "10.18112/openneuro.ds000001.v2.0.1",
            }
        )
    )
    return root
