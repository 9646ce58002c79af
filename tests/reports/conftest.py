"""Fixtures of the report tests: a small real-looking r map on nilearn's bundled MNI brain mask."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.helpers import FakeEncodingResult


@pytest.fixture(scope="session")
def brain_mask() -> nib.Nifti1Image:
    """MNI152 brain mask at 6 mm (bundled with nilearn: no download)."""
    from nilearn.datasets import load_mni152_brain_mask

    return load_mni152_brain_mask(resolution=6)


@pytest.fixture(scope="session")
def encoding_result(brain_mask) -> FakeEncodingResult:
    """r peaks at 0.6 in occipital cortex (0, -80, 5) and falls off with distance; noise elsewhere."""
    mask = np.asarray(brain_mask.dataobj) != 0
    ijk = np.argwhere(mask)
    xyz = nib.affines.apply_affine(brain_mask.affine, ijk)
    distance = np.linalg.norm(xyz - np.array([0.0, -80.0, 5.0]), axis=1)
    rng = np.random.default_rng(0)
    r = 0.6 * np.exp(-((distance / 25.0) ** 2)) + rng.normal(0, 0.03, len(ijk))
    return FakeEncodingResult(
        r=r, r2=r**2 * np.sign(r), alpha=rng.choice([1.0, 1e3], len(ijk)), cv_score=r
    )


@pytest.fixture
def r_map(tmp_path, brain_mask, encoding_result) -> Path:
    from bids_vem.outputs.statmaps import write_encoding_maps

    paths = write_encoding_maps(
        tmp_path,
        encoding_result,
        brain_mask,
        subject="01",
        session=None,
        task="scenes",
        space="MNI152NLin2009cAsym",
        feature_space="clip",
        sources=[],
    )
    return paths["r"]
