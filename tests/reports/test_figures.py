"""Figures of a real small stat map are non-empty images showing the supra-threshold voxels."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import nibabel as nib
import numpy as np
import pytest
from matplotlib.image import imread

from bids_vem.reports.figures import cut_coords_of_peak, plot_r_histogram, plot_r_map


def _warm_pixels(image: np.ndarray) -> int:
    """Pixels in the red-yellow half of nilearn's cold_hot colormap (positive r)."""
    rgb = image[..., :3]
    return int(np.sum((rgb[..., 0] > 0.7) & (rgb[..., 2] < 0.3)))


def test_r_map_png_shows_the_blob(tmp_path, r_map):
    out = plot_r_map(r_map, tmp_path / "fig" / "r.png", title="r, clip", threshold=0.1)
    assert out == tmp_path / "fig" / "r.png"
    image = imread(out)
    assert image.shape[0] > 100 and image.shape[1] > 300
    assert image[..., :3].std() > 0.05  # not blank
    assert _warm_pixels(image) > 50
    assert [p.name for p in out.parent.iterdir()] == ["r.png"]  # no temporary left


def test_threshold_above_the_peak_leaves_no_colour(tmp_path, r_map):
    shown = imread(plot_r_map(r_map, tmp_path / "a.png", title="", threshold=0.1))
    hidden = imread(plot_r_map(r_map, tmp_path / "b.png", title="", threshold=0.95, vmax=1.0))
    assert _warm_pixels(hidden) < _warm_pixels(shown) / 10


def test_r_map_svg_is_xml(tmp_path, r_map):
    out = plot_r_map(r_map, tmp_path / "r.svg", title="r", threshold=0.1)
    root = ET.parse(out).getroot()
    assert root.tag.endswith("svg")


def test_cut_coords_at_the_peak_inside_small_volumes():
    data = np.zeros((5, 6, 4), dtype=np.float32)
    data[1, 4, 2] = -0.9  # |r| peak
    data[3, 3, 3] = 0.5
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [10.0, 20.0, 30.0]
    assert cut_coords_of_peak(nib.Nifti1Image(data, affine)) == (13.0, 32.0, 36.0)
    empty = nib.Nifti1Image(np.zeros((5, 6, 4), dtype=np.float32), affine)
    assert cut_coords_of_peak(empty) == pytest.approx((16.0, 27.5, 34.5))


def test_histogram(tmp_path, encoding_result):
    out = plot_r_histogram(encoding_result.r, tmp_path / "h.png", title="clip", threshold=0.1)
    image = imread(out)
    assert image[..., :3].std() > 0.05
