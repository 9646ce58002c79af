"""BOLD data for the encoding model: masked, confounds and trends removed, z-scored per run."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import image, masking, signal

from bids_vem._utils import first_line
from bids_vem.encoding.nuisance import cosine_drifts
from bids_vem.encoding.voxel_data import VoxelStore, write_voxel_store
from bids_vem.errors import DataError, InputMissingError
from bids_vem.inputs.runs import Run
from bids_vem.inputs.surfaces import bold_kind, points_image, read_points

__all__ = [
    "read_confounds",
    "legacy_confound_name",
    "load_bold",
    "load_mask",
    "intersect_masks",
    "epi_mask",
    "runs_mask",
    "surface_mask",
    "surface_signals",
    "mask_description",
    "write_bold_store",
]

logger = logging.getLogger(__name__)

# what reading a truncated/damaged (gzipped) NIfTI raises
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, MemoryError)


#: fMRIPrep < 1.2 confound names (``*_bold_confounds.tsv``, e.g. OpenNeuro's BOLD5000) of
#: today's names; numbered families (``a_comp_cor_00`` -> ``aCompCor00``) by prefix
_LEGACY_CONFOUNDS = {
    "trans_x": "X",
    "trans_y": "Y",
    "trans_z": "Z",
    "rot_x": "RotX",
    "rot_y": "RotY",
    "rot_z": "RotZ",
    "framewise_displacement": "FramewiseDisplacement",
    "csf": "CSF",
    "white_matter": "WhiteMatter",
    "global_signal": "GlobalSignal",
    "std_dvars": "stdDVARS",
    "dvars": "non-stdDVARS",
}
_LEGACY_FAMILIES = {
    "a_comp_cor_": "aCompCor",
    "t_comp_cor_": "tCompCor",
    "cosine": "Cosine",
    "non_steady_state_outlier": "NonSteadyStateOutlier",
}


def legacy_confound_name(name: str) -> str | None:
    """The fMRIPrep < 1.2 name of a confound column (``trans_x`` -> ``X``), None if none."""
    if name in _LEGACY_CONFOUNDS:
        return _LEGACY_CONFOUNDS[name]
    for modern, legacy in _LEGACY_FAMILIES.items():
        number = name[len(modern) :].lstrip("_")
        if name.startswith(modern) and number.isdigit():
            return f"{legacy}{int(number):02d}"
    return None


def read_confounds(path: Path | None, columns: Sequence[str]) -> np.ndarray | None:
    """Read confound regressors from an fMRIPrep ``desc-confounds_timeseries.tsv``.

    Parameters
    ----------
    path : Path or None
        The TSV (``n/a`` marks missing values).
    columns : sequence of str
        Columns to read, in this order. Empty: no confounds (returns None).

    Returns
    -------
    ndarray of shape (n_volumes, len(columns)), float64, or None
        Missing values (the first row of derivative and framewise-displacement columns)
        are filled with the column mean.

    Raises
    ------
    InputMissingError
        Columns are requested but ``path`` is None or cannot be read.
    DataError
        A requested column is absent or has no value at all.
    """
    columns = list(columns)
    if not columns:
        return None
    if path is None:
        raise InputMissingError(
            f"confounds {', '.join(columns)} requested but the run has no confounds file"
        )
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a", "N/A", "NaN", "nan", ""])
    except FileNotFoundError as err:
        raise InputMissingError(f"{path}: confounds file not found") from err
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputMissingError(f"{path}: cannot read confounds ({first_line(err)})") from err
    # today's names read from an fMRIPrep < 1.2 file under their old names
    columns = [
        legacy_confound_name(c)
        if c not in table.columns and legacy_confound_name(c) in table.columns
        else c
        for c in columns
    ]
    absent = [c for c in columns if c not in table.columns]
    if absent:
        available = list(table.columns)
        shown = ", ".join(available[:8]) + (", ..." if len(available) > 8 else "")
        raise DataError(
            f"{path}: no confound column(s) {', '.join(absent)} "
            f"({len(available)} available: {shown})"
        )
    try:
        values = table[columns].to_numpy(dtype=np.float64)
    except ValueError as err:
        raise DataError(f"{path}: confound columns are not numeric ({first_line(err)})") from err
    empty = [c for c, ok in zip(columns, np.isfinite(values).any(axis=0), strict=True) if not ok]
    if empty:
        raise DataError(f"{path}: confound column(s) {', '.join(empty)} have no values")
    bad = ~np.isfinite(values)
    if bad.any():
        means = np.nanmean(np.where(bad, np.nan, values), axis=0)
        values = np.where(bad, means[None, :], values)
    return values


def _load_image(path: Path | nib.spatialimages.SpatialImage, what: str):
    if isinstance(path, nib.spatialimages.SpatialImage):
        return path, what
    path = Path(path)
    if not path.exists():
        raise InputMissingError(f"{path}: {what} not found")
    try:
        return nib.load(path), str(path)
    except Exception as err:  # nibabel raises several types for non-images
        raise InputMissingError(f"{path}: cannot read {what} ({first_line(err)})") from err


def _read_data(img, name: str, what: str, dtype=np.float32) -> np.ndarray:
    try:
        return np.asarray(img.get_fdata(dtype=dtype))
    except _READ_ERRORS as err:
        raise InputMissingError(
            f"{name}: cannot read {what} voxel data, the file looks truncated ({first_line(err)})"
        ) from err


def load_mask(mask: Path | nib.Nifti1Image) -> nib.Nifti1Image:
    """Read a brain mask as a binary (int8) image; nonzero voxels are in.

    Raises
    ------
    InputMissingError
        Missing or unreadable file.
    DataError
        Not 3-D, or empty.
    """
    img, name = _load_image(mask, "brain mask")
    data = _read_data(img, name, "brain mask")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{name}: brain mask must be 3-D, got shape {data.shape}")
    inside = np.nan_to_num(data) > 0
    if not inside.any():
        raise DataError(f"{name}: brain mask is empty")
    return _binary_image(inside, img.affine)


def _binary_image(inside: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    # NIfTI-1 holds at most 32,767 along an axis: surface points (n_points, 1, 1) need NIfTI-2
    kind = nib.Nifti2Image if max(inside.shape) > 32767 else nib.Nifti1Image
    return kind(inside.astype(np.int8), affine)


def _same_grid(a, b) -> bool:
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=1e-3)


def intersect_masks(
    masks: Sequence[Path | nib.Nifti1Image], names: Sequence[str] | None = None
) -> nib.Nifti1Image:
    """Voxels inside every mask (one voxel set for all runs of a participant).

    Parameters
    ----------
    masks : sequence of Path or image
    names : sequence of str, optional
        What to call each mask in messages (default: its path, or "mask").

    Raises
    ------
    DataError
        The masks are on different grids, or have no voxel in common.
    """
    images = [load_mask(m) for m in masks]
    if names is None:
        names = [
            str(m) if not isinstance(m, nib.spatialimages.SpatialImage) else "mask" for m in masks
        ]
    first = images[0]
    inside = np.asarray(first.dataobj) > 0
    for img, name in zip(images[1:], names[1:], strict=True):
        if not _same_grid(first, img):
            raise DataError(
                f"{name}: brain mask grid {img.shape[:3]} differs from {names[0]} "
                f"{first.shape[:3]} (shape or affine); all runs must share one space"
            )
        inside &= np.asarray(img.dataobj) > 0
    if not inside.any():
        raise DataError(f"brain masks {', '.join(names)} have no voxel in common")
    return _binary_image(inside, first.affine)


def epi_mask(bold: Path | nib.Nifti1Image) -> nib.Nifti1Image:
    """A brain mask derived from a preprocessed BOLD series (nilearn's ``compute_epi_mask``:
    the mean image thresholded between its histogram's modes, the largest connected part).

    Raises
    ------
    InputMissingError
        The BOLD cannot be read.
    DataError
        The derived mask is empty (a constant or blank series).
    """
    img, name = _load_image(bold, "preprocessed BOLD")
    # the mean image once: compute_epi_mask of a 3-D image thresholds it as it is
    mean_img = image.mean_img(img, copy_header=True)
    mean = np.asarray(mean_img.dataobj)
    if not np.isfinite(mean).all() or np.ptp(mean) == 0:
        # nilearn would still threshold a flat image into an arbitrary block of voxels
        raise DataError(
            f"{name}: no brain mask can be derived from the BOLD: its mean image is constant "
            "or not finite (a blank series?)"
        )
    try:
        mask = masking.compute_epi_mask(mean_img)
    except _READ_ERRORS as err:
        raise DataError(
            f"{name}: no brain mask can be derived from the BOLD ({first_line(err)})"
        ) from err
    if not np.asarray(mask.dataobj).any():
        raise DataError(f"{name}: the brain mask derived from the BOLD is empty")
    return nib.Nifti1Image((np.asarray(mask.dataobj) > 0).astype(np.int8), mask.affine)


def surface_mask(runs: Sequence[Run]) -> nib.Nifti2Image:
    """The data points of surface runs with a finite, varying signal in every run (the medial
    wall, which fMRIPrep fills with zeros, and vertices outside the BOLD's field of view are
    out), as a points image (:func:`bids_vem.inputs.surfaces.points_image`).

    Raises
    ------
    DataError
        Runs with different numbers of points, or no point with signal in all of them.
    """
    inside = None
    for run in runs:
        data = read_points(run.bold, run.bold_right)
        good = np.isfinite(data).all(axis=0) & (np.ptp(np.nan_to_num(data), axis=0) > 0)
        if inside is not None and good.size != inside.size:
            raise DataError(
                f"{run.bold}: {good.size} surface points but {runs[0].bold.name} has "
                f"{inside.size}; all runs must share one surface"
            )
        inside = good if inside is None else inside & good
    if inside is None or not inside.any():
        raise DataError(
            f"{runs[0].bold}: no surface point has a finite, varying signal in every run"
        )
    return points_image(inside)


def runs_mask(runs: Sequence[Run]) -> nib.Nifti1Image:
    """The voxels of a run group: inside every run's brain mask; a run whose derivatives have
    no mask (NOD's fMRIPrep outputs) contributes the mask derived from its BOLD (:func:`epi_mask`).
    Surface runs: the points with signal in every run (:func:`surface_mask`).
    """
    if runs and bold_kind(runs[0].bold) != "volume":
        return surface_mask(runs)
    masks, names = [], []
    for run in runs:
        if run.mask is not None:
            masks.append(run.mask)
            names.append(str(run.mask))
        else:
            masks.append(epi_mask(run.bold))
            names.append(f"the mask derived from {run.bold}")
    return intersect_masks(masks, names)


def mask_description(runs: Sequence[Run]) -> str:
    """One sentence for sidecars and logs: where the voxels of a run group come from."""
    derived = sum(run.mask is None for run in runs)
    n = len(runs)
    if runs and bold_kind(runs[0].bold) != "volume":
        what = "grayordinates" if bold_kind(runs[0].bold) == "cifti" else "surface vertices"
        return (
            f"{what} with a finite, varying signal in each of {n} run(s) (the medial wall and "
            "vertices without signal left out)"
        )
    if not derived:
        return f"fMRIPrep brain masks (desc-brain_mask), intersected across {n} run(s)"
    if derived == n:
        return (
            f"no brain mask in the derivatives: derived from the BOLD of each run (nilearn "
            f"compute_epi_mask), intersected across {n} run(s)"
        )
    return (
        f"fMRIPrep brain masks of {n - derived} run(s) and masks derived from the BOLD of "
        f"{derived} run(s) without one (nilearn compute_epi_mask), intersected across {n} runs"
    )


def run_confounds(path: Path | None, columns: Sequence[str]) -> np.ndarray | None:
    """The requested confounds of a run plus fMRIPrep's ``non_steady_state_outlier*`` columns.

    fMRIPrep flags the first volumes, before the magnetisation reaches steady state, with one
    spike regressor each; they are regressed out whenever the confounds file has them (as
    nilearn's ``load_confounds`` does with its sample mask), requested or not.
    """
    columns = list(columns)
    if path is not None and Path(path).exists():
        try:
            header = Path(path).open(encoding="utf-8").readline().rstrip("\n").split("\t")
        except (OSError, UnicodeDecodeError):
            header = []
        columns += [
            c
            for c in header
            if c.startswith(("non_steady_state_outlier", "NonSteadyStateOutlier"))
            and c not in columns
        ]
    return read_confounds(path, columns)


def load_bold(
    bold: Path | nib.Nifti1Image,
    mask: Path | nib.Nifti1Image,
    confounds: np.ndarray | None,
    tr: float,
    high_pass: float = 0.0,
    bold_right: Path | None = None,
) -> np.ndarray:
    """Masked, cleaned BOLD of one run.

    The voxels of ``mask`` are extracted (``nilearn.masking.apply_mask``), then
    ``nilearn.signal.clean`` removes linear trends and the confounds and z-scores each voxel
    (``standardize="zscore_sample"``). Voxels constant over time (outside the brain but inside
    the mask) and voxels with any non-finite value are 0, not NaN.

    Parameters
    ----------
    bold : Path or Nifti1Image
        4-D preprocessed BOLD.
    mask : Path or Nifti1Image
        3-D brain mask on the grid of ``bold``.
    confounds : ndarray of shape (n_volumes, n_confounds) or None
    tr : float
        Repetition time in seconds.
    high_pass : float
        Cutoff in Hz of a discrete cosine high-pass (``filter="cosine"``), regressed out with
        the confounds; 0: none (linear detrending only).
    bold_right : Path, optional
        The right hemisphere when ``bold`` is a left-hemisphere GIFTI; surface BOLD
        (GIFTI, CIFTI) is read as points and ``mask`` is a points image
        (:mod:`bids_vem.inputs.surfaces`).

    Returns
    -------
    ndarray of shape (n_volumes, n_voxels), float32

    Raises
    ------
    InputMissingError
        A file is missing or unreadable (e.g. a header-only NIfTI).
    DataError
        BOLD not 4-D, mask and BOLD on different grids, confounds of the wrong length,
        or no voxel with a varying, finite signal.
    """
    mask_img = load_mask(mask)
    if isinstance(bold, (str, Path)) and bold_kind(bold) != "volume":
        return _clean(
            surface_signals(Path(bold), bold_right, mask_img), str(bold), confounds, tr, high_pass
        )
    img, name = _load_image(bold, "BOLD")
    if len(img.shape) != 4:
        raise DataError(f"{name}: BOLD must be 4-D, got shape {img.shape}")
    if not _same_grid(img, mask_img):
        mask_name = mask if not isinstance(mask, nib.spatialimages.SpatialImage) else "mask"
        raise DataError(
            f"{name}: BOLD grid {img.shape[:3]} does not match brain mask {mask_name} "
            f"{mask_img.shape} (shape or affine)"
        )
    n_volumes = img.shape[3]
    if n_volumes < 3:
        raise DataError(f"{name}: BOLD has {n_volumes} volume(s); need at least 3")
    if confounds is not None and len(confounds) != n_volumes:  # before reading the data
        raise DataError(
            f"{name}: confounds have {len(confounds)} rows but the BOLD has {n_volumes} volumes"
        )
    data = _read_data(img, name, "BOLD")
    finite = np.isfinite(data)
    if not finite.any():
        raise DataError(f"{name}: BOLD contains no finite value")
    # a voxel with any NaN/inf is dropped whole (set to 0) rather than patched
    broken = ~finite.all(axis=3)
    del finite
    n_broken = int(np.count_nonzero(broken & (np.asarray(mask_img.dataobj) > 0)))
    if n_broken:
        logger.warning(
            "%s: %d voxel(s) of the brain mask have NaN or infinite values; they are left out "
            "of the fit (0 in the maps)",
            name,
            n_broken,
        )
    data[broken] = 0.0
    del broken
    signals = masking.apply_mask(nib.Nifti1Image(data, img.affine, img.header), mask_img)
    del data
    return _clean(signals, name, confounds, tr, high_pass)


def surface_signals(
    bold: Path, bold_right: Path | None, mask_img: nib.spatialimages.SpatialImage
) -> np.ndarray:  # also the single-trial model's reader (encoding.lss)
    """The points of surface BOLD inside a points mask (non-finite points set to 0)."""
    inside = np.asarray(mask_img.dataobj).reshape(-1) > 0
    data = read_points(bold, bold_right)
    if data.shape[1] != inside.size:
        raise DataError(
            f"{bold}: {data.shape[1]} surface points but the mask has {inside.size}; all runs "
            "must share one surface"
        )
    if data.shape[0] < 3:
        raise DataError(f"{bold}: BOLD has {data.shape[0]} volume(s); need at least 3")
    signals = data[:, inside]
    broken = ~np.isfinite(signals).all(axis=0)
    if broken.any():
        logger.warning(
            "%s: %d surface point(s) have NaN or infinite values; they are left out of the fit "
            "(0 in the maps)",
            bold,
            int(broken.sum()),
        )
        signals[:, broken] = 0.0
    return signals


def _clean(
    signals: np.ndarray, name: str, confounds: np.ndarray | None, tr: float, high_pass: float
) -> np.ndarray:
    """Detrend, regress the confounds (and a cosine high-pass) and z-score each column."""
    n_volumes = signals.shape[0]
    if confounds is not None:
        confounds = np.asarray(confounds, dtype=np.float64)
        if confounds.ndim == 1:
            confounds = confounds[:, None]
        if confounds.shape[0] != n_volumes:
            raise DataError(
                f"{name}: confounds have {confounds.shape[0]} rows but the BOLD has "
                f"{n_volumes} volumes"
            )
    # exactly constant voxels stay 0: detrending leaves rounding noise that z-scoring would inflate
    constant = np.ptp(signals, axis=0) == 0
    if constant.all():
        raise DataError(f"{name}: BOLD is constant (or not finite) in every voxel of the mask")
    # the drifts go in as confounds: given filter="cosine", nilearn drops all of them when one
    # confound correlates above 0.9 with one (a slow random walk of motion does), and the
    # high-pass asked for would silently not be applied
    drifts = cosine_drifts(n_volumes, tr, high_pass)
    if drifts.shape[1]:
        confounds = drifts if confounds is None else np.hstack([confounds, drifts])
    cleaned = signal.clean(
        signals, detrend=True, standardize="zscore_sample", confounds=confounds, t_r=tr,
        filter=False,
    )  # fmt: skip
    cleaned[:, constant] = 0.0
    if not np.all(np.isfinite(cleaned)):
        raise DataError(f"{name}: cleaning produced non-finite values (check the confounds)")
    return cleaned.astype(np.float32, copy=False)


def write_bold_store(
    runs: Sequence[Run], confounds: Sequence[str], header_path: Path | str, high_pass: float = 0.0
) -> VoxelStore:
    """Clean every run's BOLD and write it once to a float32 voxel store (one run in memory).

    The voxels are those inside every run's mask (:func:`runs_mask`), saved beside the
    store as ``<name>_mask.nii.gz``; each run is cleaned by :func:`load_bold` and written
    before the next is read.

    Parameters
    ----------
    runs : sequence of Run
        The runs of one encoding model, in fold order.
    confounds : sequence of str
        Confound columns regressed out of each run (with its non-steady-state outliers).
    header_path : Path
        The store's JSON header (its data go beside it, ``.npy``).
    high_pass : float
        Cosine high-pass cutoff in Hz (:func:`load_bold`).

    Returns
    -------
    VoxelStore

    Raises
    ------
    InputMissingError, DataError
        As :func:`load_bold` and :func:`read_confounds`.
    """
    from bids_vem.outputs.atomic import atomic_path

    runs = list(runs)
    header_path = Path(header_path)
    mask = runs_mask(runs)
    mask_path = header_path.with_name(header_path.name.split(".")[0] + "_mask.nii.gz")
    with atomic_path(mask_path) as tmp:
        mask.to_filename(tmp)
    for run in runs:
        if confounds and run.confounds is None:
            raise InputMissingError(
                f"{run.name}: confounds {', '.join(confounds)} requested but the run has no "
                "confounds file"
            )

    def cleaned():
        for run in runs:
            table = run_confounds(run.confounds, confounds)
            yield run.name, load_bold(run.bold, mask, table, run.tr, high_pass, run.bold_right)

    n_voxels = int(np.count_nonzero(np.asarray(mask.dataobj)))
    return write_voxel_store(
        header_path,
        cleaned(),
        n_voxels,
        [run.n_volumes for run in runs],
        metadata={
            "mask": mask_path.name,
            "mask_description": mask_description(runs),
            "confounds": list(confounds),
            "high_pass": high_pass,
        },
    )
