"""Parcel summaries with brainspace's fsLR atlases."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest

from bids_vem.analysis.parcels import ATLASES, atlas_labels, parcel_rows, point_parcels
from bids_vem.config import OutputSettings
from bids_vem.errors import DataError
from bids_vem.inputs.surfaces import SurfaceGeometry


def test_the_option_offers_exactly_the_atlases_there_are():
    field = next(f for f in dataclasses.fields(OutputSettings) if f.name == "atlases")
    assert set(field.metadata["setting"].choices) == set(ATLASES)


@pytest.mark.parametrize("name", sorted(ATLASES))
def test_every_atlas_labels_both_hemispheres(name):
    labels = atlas_labels(name)
    assert labels.shape == (64984,) and (labels[:32492] > 0).any() and (labels[32492:] > 0).any()


def test_grayordinates_take_their_vertex_label_and_voxels_none(tmp_path):
    vertices = np.array([0, 5, 100, 32491])
    models = nib.cifti2.BrainModelAxis.from_surface(vertices, 32492, "CortexLeft")
    models += nib.cifti2.BrainModelAxis.from_surface(vertices, 32492, "CortexRight")
    models += nib.cifti2.BrainModelAxis(
        "thalamus_left",
        voxel=np.zeros((2, 3), int) + [[0], [1]],
        affine=np.eye(4),
        volume_shape=(2, 2, 2),
    )
    series = nib.cifti2.SeriesAxis(0, 1, 3)
    path = tmp_path / "x_bold.dtseries.nii"
    nib.Cifti2Image(np.zeros((3, len(models)), np.float32), header=(series, models)).to_filename(
        path
    )
    geometry = SurfaceGeometry("cifti", "fsLR", reference=path)
    labels = atlas_labels("schaefer100")
    parcels = point_parcels("schaefer100", geometry)
    np.testing.assert_array_equal(parcels[:4], labels[vertices])
    np.testing.assert_array_equal(parcels[4:8], labels[32492 + vertices])
    assert (parcels[8:] == 0).all()
    with pytest.raises(DataError, match="use --space fsLR"):
        point_parcels("schaefer100", SurfaceGeometry("gifti", "fsaverage5", (10, 10)))


def test_parcel_rows_summarise_each_parcel():
    parcels = np.array([1, 1, 2, 0, 2, 2])
    r = np.array([0.1, 0.3, 0.5, 0.9, 0.2, np.nan])
    rows = parcel_rows("schaefer100", parcels, r, feature_space="x")
    assert [(row["parcel"], row["n_points"]) for row in rows] == [(1, 2), (2, 2)]
    assert rows[0]["mean_r"] == pytest.approx(0.2) and rows[1]["max_r"] == pytest.approx(0.5)
