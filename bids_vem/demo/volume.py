"""The demo's brain: a coarse MNI152NLin2009cAsym grid, a brain mask and regions of interest.

The brain mask is nilearn's bundled MNI152 brain mask (no download) resampled to a coarse
grid whose origin and extent follow fMRIPrep's ``MNI152NLin2009cAsym`` grids, so that a
run is a few MB and a ridge model over every voxel runs in seconds.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import nibabel as nib
import numpy as np

__all__ = [
    "Region",
    "SEMANTIC_REGIONS",
    "LOWLEVEL_REGIONS",
    "mni_grid",
    "brain_mask",
    "voxel_coordinates",
    "region_profile",
]

#: world coordinates (mm) of the first voxel of fMRIPrep's MNI152NLin2009cAsym grids
_MNI_ORIGIN = (-96.0, -132.0, -78.0)
#: extent (mm) of those grids
_MNI_EXTENT = (194.0, 230.0, 194.0)


@dataclass(frozen=True)
class Region:
    """A spherical region of interest in MNI space.

    Attributes
    ----------
    name : str
    centre : tuple of float
        MNI coordinates (x, y, z) in mm.
    radius : float
        Radius in mm.
    """

    name: str
    centre: tuple[float, float, float]
    radius: float


#: ventral and lateral occipito-temporal cortex (fusiform / lateral occipital), both hemispheres
SEMANTIC_REGIONS: tuple[Region, ...] = (
    Region("left-vOTC", (-42.0, -58.0, -14.0), 18.0),
    Region("right-vOTC", (42.0, -58.0, -14.0), 18.0),
    Region("left-LOC", (-46.0, -74.0, 2.0), 12.0),
    Region("right-LOC", (46.0, -74.0, 2.0), 12.0),
)
#: around the occipital pole (early visual cortex)
LOWLEVEL_REGIONS: tuple[Region, ...] = (Region("occipital-pole", (0.0, -92.0, 2.0), 20.0),)


def mni_grid(voxel_size: float = 8.0) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape of an isotropic grid over the MNI152NLin2009cAsym bounding box.

    Parameters
    ----------
    voxel_size : float
        Voxel edge in mm.

    Returns
    -------
    affine : ndarray of shape (4, 4)
    shape : tuple of int
        (n_x, n_y, n_z).
    """
    affine = np.diag([voxel_size, voxel_size, voxel_size, 1.0])
    affine[:3, 3] = _MNI_ORIGIN
    shape = tuple(int(np.ceil(extent / voxel_size)) for extent in _MNI_EXTENT)
    return affine, shape


def brain_mask(voxel_size: float = 8.0) -> nib.Nifti1Image:
    """nilearn's bundled MNI152 brain mask resampled to :func:`mni_grid`.

    Parameters
    ----------
    voxel_size : float
        Voxel edge in mm.

    Returns
    -------
    nibabel.Nifti1Image
        uint8 mask (1 inside the brain) of shape :func:`mni_grid` ``[1]``.
    """
    from nilearn import datasets, image

    affine, shape = mni_grid(voxel_size)
    template_mask = datasets.load_mni152_brain_mask(resolution=2)
    with warnings.catch_warnings():
        # linear interpolation of a binary mask is wanted here: it gives the fraction of brain
        warnings.simplefilter("ignore", UserWarning)
        fraction = image.resample_img(
            image.math_img("img.astype('float32')", img=template_mask),
            target_affine=affine,
            target_shape=shape,
            interpolation="continuous",
            force_resample=True,
            copy_header=True,
        )
    data = (np.asarray(fraction.get_fdata()) > 0.5).astype(np.uint8)
    mask = nib.Nifti1Image(data, affine)
    mask.header.set_xyzt_units("mm")
    return mask


def voxel_coordinates(mask: nib.Nifti1Image) -> np.ndarray:
    """MNI coordinates of the in-mask voxels, shape (n_voxels, 3), in C order of the mask."""
    ijk = np.argwhere(np.asarray(mask.dataobj) > 0)
    return nib.affines.apply_affine(mask.affine, ijk)


def region_profile(
    coordinates: np.ndarray, regions: tuple[Region, ...], shift: np.ndarray | None = None
) -> np.ndarray:
    """Membership and strength of voxels in a set of spherical regions.

    Parameters
    ----------
    coordinates : ndarray of shape (n_voxels, 3)
        MNI coordinates in mm.
    regions : tuple of Region
    shift : ndarray of shape (3,), optional
        Offset added to every region centre (a subject's anatomical variability).

    Returns
    -------
    ndarray of shape (n_voxels,)
        0 outside every region; inside, 1 at the centre falling to 0.5 at the border
        (the largest value over overlapping regions).
    """
    shift = np.zeros(3) if shift is None else np.asarray(shift, dtype=float)
    profile = np.zeros(len(coordinates))
    for region in regions:
        distance = np.linalg.norm(coordinates - (np.asarray(region.centre) + shift), axis=1)
        inside = distance <= region.radius
        strength = 1.0 - 0.5 * (distance / region.radius) ** 2
        profile = np.where(inside, np.maximum(profile, strength), profile)
    return profile
