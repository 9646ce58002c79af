"""Per-voxel maps as NIfTI stat maps with JSON sidecars, and their TSV summaries.

A map is a vector over the voxels of a mask, in the order of boolean indexing of the
mask array (``data[mask]``, C order), which is the order of
``nilearn.maskers.NiftiMasker`` / ``nilearn.masking.apply_mask``. Voxels outside the
mask are written as 0, as stat maps usually are (nilearn plots threshold them away);
non-finite values inside the mask (e.g. r of a constant voxel) are kept as NaN.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import nibabel as nib
import numpy as np

from bids_vem._utils import tsv_cell
from bids_vem.errors import DataError, InputMissingError
from bids_vem.outputs.atomic import atomic_path, write_text_atomic
from bids_vem.outputs.jsonfile import write_json_atomic
from bids_vem.outputs.names import derivative_path
from bids_vem.outputs.surfaces import SurfaceMask, write_surface_statmap

__all__ = [
    "STAT_DESCRIPTIONS",
    "SUMMARY_COLUMNS",
    "EncodingResultLike",
    "bids_uri",
    "load_mask",
    "unmask",
    "write_statmap",
    "map_summary",
    "encoding_summary_row",
    "write_encoding_maps",
    "write_summary_tsv",
    "summary_tsv_path",
]

#: Description of each stat written by bids_vem (``{feature_space}`` is filled in)
STAT_DESCRIPTIONS: dict[str, str] = {
    "r": "Pearson correlation between the measured BOLD signal and the prediction of the "
    "encoding model from feature space '{feature_space}', on held-out runs.",
    "r2": "Coefficient of determination (R^2, 1 - SSE/SST) of the held-out prediction of the "
    "encoding model from feature space '{feature_space}'. With penalties chosen by correlation "
    "(the default), voxels without signal get heavily shrunken or anti-correlated "
    "predictions and R^2 well below 0 there; read it where the r map is significant, or "
    "choose penalties by R^2.",
    "alpha": "Ridge penalty chosen per voxel by cross-validation over whole runs, for feature "
    "space '{feature_space}'.",
    "meanr": "Mean over participants of the per-participant correlation maps (feature space "
    "'{feature_space}').",
    "t": "One-sample t statistic over participants of Fisher-z transformed correlations "
    "(feature space '{feature_space}').",
    "p": "One-sided p-value of the group t statistic (feature space '{feature_space}').",
    "q": "Benjamini-Hochberg FDR-adjusted p-value of the group test (feature space "
    "'{feature_space}').",
}

#: Descriptions of a participant's permutation statistics and noise ceiling
PARTICIPANT_STAT_DESCRIPTIONS: dict[str, str] = {
    "p": "Permutation p-value of the held-out r of feature space '{feature_space}' "
    "(one-sided, r > 0): (1 + number of null r >= r) / (1 + permutations).",
    "q": "Benjamini-Hochberg FDR-adjusted permutation p-value over the voxels of the mask "
    "(feature space '{feature_space}').",
    "pfwe": "Family-wise permutation p-value (maximum statistic over the voxels of the mask) "
    "of the held-out r of feature space '{feature_space}'.",
    "nc": "Noise ceiling: the fraction (0-1) of the test data's variance that any model "
    "could explain, from repeated stimuli (NSD's ncsnr, trial-wise) or repeated test runs "
    "(Schoppe et al. 2016 CCmax^2); comparable with r^2.",
    "rnorm": "Noise-normalised held-out r of feature space '{feature_space}': r / sqrt(nc) "
    "(CCnorm); undefined (NaN) where the noise ceiling is 0.",
}

#: result attribute of each participant map beyond r, r2 and alpha
_OPTIONAL_STATS = {"p": "p", "q": "q", "pfwe": "p_fwe", "nc": "nc", "rnorm": "rnorm"}

#: TSV summary columns and their descriptions (the JSON sidecar of the TSV)
SUMMARY_COLUMNS: dict[str, str] = {
    "subject": "Participant label (without sub-).",
    "session": "Session label (without ses-), n/a when the dataset has none.",
    "task": "Task label.",
    "space": "Space of the maps (template or native).",
    "feature_space": "Feature space (the desc- label of the maps).",
    "n_subjects": "Number of participants in the group statistic.",
    "n_voxels": "Voxels in the mask.",
    "mean_r": "Mean correlation over voxels (held-out runs).",
    "median_r": "Median correlation over voxels.",
    "max_r": "Largest correlation over voxels.",
    "r_threshold": "Threshold used by percent_r_above_threshold.",
    "percent_r_above_threshold": "Percent of voxels whose correlation exceeds r_threshold.",
    "mean_r2": "Mean coefficient of determination over voxels.",
    "percent_alpha_at_min": "Percent of voxels whose chosen penalty is the smallest of the grid "
    "(the grid may be too narrow).",
    "percent_alpha_at_max": "Percent of voxels whose chosen penalty is the largest of the grid.",
    "cross_validation": "How held-out scores were computed: the folds, and why they were chosen.",
    "n_folds": "Number of cross-validation folds.",
    "max_test_stimuli_in_training": "Most test stimuli of one fold that training also showed "
    "(0 for stimulus-disjoint evaluation).",
    "n_permutations": "Permutations of the null behind the p, q and pfwe maps (0: none).",
    "n_voxels_q_below_0.05": "Predicted voxels: permutation FDR q < 0.05.",
    "n_voxels_fwe_p_below_0.05": "Voxels with family-wise permutation p < 0.05.",
    "median_nc": "Median noise ceiling (fraction of explainable variance) over voxels.",
}

_BIDS_URI = re.compile(r"^bids:[0-9a-zA-Z/#:?_\-.]+$")


class EncodingResultLike(Protocol):
    """What :func:`write_encoding_maps` needs of an encoding result: arrays of shape (n_voxels,)."""

    r: np.ndarray
    r2: np.ndarray
    alpha: np.ndarray
    cv_score: np.ndarray

    def summary(self) -> dict: ...


def bids_uri(dataset_name: str, relpath: str | Path) -> str:
    """BIDS URI ``bids:<dataset_name>:<relpath>`` (``dataset_name`` "" is this dataset).

    Parameters
    ----------
    dataset_name : str
        A key of ``DatasetLinks`` in dataset_description.json (``raw``...), or "".
    relpath : str or path
        Path inside that dataset, relative to its root (POSIX separators).

    Raises
    ------
    ValueError
        The path is absolute or has characters a BIDS URI cannot hold.
    """
    rel = Path(relpath).as_posix() if isinstance(relpath, Path) else str(relpath)
    if rel.startswith("/") or re.match(r"^[a-zA-Z]:", rel) or ".." in rel.split("/"):
        raise ValueError(f"BIDS URI path must be relative to the dataset root, got {rel!r}")
    uri = f"bids:{dataset_name}:{rel}"
    if not _BIDS_URI.match(uri):
        raise ValueError(f"{uri!r} has characters a BIDS URI cannot hold")
    return uri


def load_mask(mask_img: Path | str | nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    """The mask as a 3D image (path or image accepted).

    Raises
    ------
    InputMissingError
        The file does not exist. DataError: the image is not 3D.
    """
    if isinstance(mask_img, (str, Path)):
        if not Path(mask_img).exists():
            raise InputMissingError(f"{mask_img}: brain mask not found")
        mask_img = nib.load(str(mask_img))
    if len(mask_img.shape) != 3:
        raise DataError(f"brain mask must be a 3D image, got shape {mask_img.shape}")
    return mask_img


def unmask(
    data: np.ndarray, mask_img: Path | str | nib.spatialimages.SpatialImage
) -> nib.Nifti1Image:
    """A float32 3D image with ``data`` inside the mask and 0 outside.

    Parameters
    ----------
    data : ndarray, shape (n_voxels,)
        One value per voxel of the mask (C-order boolean indexing, as nilearn).
    mask_img : path or image
        Mask whose non-zero voxels are the ``n_voxels``.

    Raises
    ------
    DataError
        ``data`` does not have one value per mask voxel.
    """
    mask_img = load_mask(mask_img)
    mask = np.asarray(mask_img.dataobj) != 0
    data = np.asarray(data)
    if data.ndim != 1 or data.shape[0] != int(mask.sum()):
        raise DataError(
            f"map has shape {data.shape} but the mask has {int(mask.sum())} voxels; expected (n_voxels,)"
        )
    volume = np.zeros(mask.shape, dtype=np.float32)
    volume[mask] = data.astype(np.float32)
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_xyzt_units("mm", "sec")
    image = nib.Nifti1Image(volume, mask_img.affine, header)
    # keep the mask's coordinate codes (e.g. MNI = 4) so viewers place the map right
    if isinstance(mask_img, nib.Nifti1Image):
        sform, scode = mask_img.get_sform(coded=True)
        qform, qcode = mask_img.get_qform(coded=True)
        if sform is not None:
            image.set_sform(sform, int(scode))
        if qform is not None:
            image.set_qform(qform, int(qcode))
    return image


def write_statmap(
    output_dir: Path | str,
    data: np.ndarray,
    mask_img: Path | str | nib.spatialimages.SpatialImage | SurfaceMask,
    *,
    entities: Mapping[str, Any],
    stat: str,
    description: str,
    sources: Sequence[str],
    parameters: Mapping[str, Any] | None = None,
    datatype: str | None = "func",
) -> Path:
    """Write one ``..._stat-<stat>_statmap.nii.gz`` and its JSON sidecar, atomically.

    Parameters
    ----------
    output_dir : path
        Derivative dataset root (or ``OUTPUT_DIR/group`` for group maps).
    data : ndarray, shape (n_voxels,)
        Values inside the mask.
    mask_img : path, image or SurfaceMask
        Mask defining the voxels; a :class:`~bids_vem.outputs.surfaces.SurfaceMask` writes a
        surface map (GIFTI per hemisphere, or CIFTI dscalar;
        :func:`~bids_vem.outputs.surfaces.write_surface_statmap`).
    entities : mapping
        BIDS entities (``sub``, ``ses``, ``task``, ``space``, ``desc``...).
    stat : str
        Statistic name (``r``, ``r2``, ``alpha``...).
    description : str
        Sidecar ``Description``.
    sources : sequence of str
        BIDS URIs of the inputs (see :func:`bids_uri`).
    parameters : mapping, optional
        Model and CV parameters, written as top-level sidecar keys.

    Returns
    -------
    Path
        The NIfTI file (surfaces: the left hemisphere's GIFTI, or the CIFTI); the sidecar is
        beside it with ``.json``.

    Raises
    ------
    ValueError
        A source is not a BIDS URI or a parameter would overwrite Description/Sources.
    """
    bad = [s for s in sources if not _BIDS_URI.match(str(s))]
    if bad:
        raise ValueError(f"Sources must be BIDS URIs (bids:<dataset>:<path>), got {bad}")
    parameters = dict(parameters or {})
    clash = sorted({"Description", "Sources"} & set(parameters))
    if clash:
        raise ValueError(f"parameters must not set {clash}: they are written from the arguments")
    sidecar = {"Description": " ".join(description.split()), "Sources": list(sources), **parameters}
    if isinstance(mask_img, SurfaceMask):
        return write_surface_statmap(
            output_dir, data, mask_img, entities=entities, stat=stat, sidecar=sidecar,
            datatype=datatype,
        )[0]  # fmt: skip
    path = derivative_path(
        output_dir, {**entities, "stat": stat}, "statmap", ".nii.gz", datatype=datatype
    )
    image = unmask(data, mask_img)
    write_json_atomic(path.with_name(path.name[: -len(".nii.gz")] + ".json"), sidecar)
    with atomic_path(path) as tmp:
        image.to_filename(str(tmp))
    return path


def map_summary(
    r: np.ndarray,
    r2: np.ndarray | None = None,
    alpha: np.ndarray | None = None,
    *,
    alphas: Sequence[float] | None = None,
    r_threshold: float = 0.1,
) -> dict[str, float]:
    """Summary numbers of per-voxel maps (NaN voxels ignored).

    Parameters
    ----------
    r, r2, alpha : ndarray, shape (n_voxels,)
        Correlation, R² and chosen penalty per voxel.
    alphas : sequence of float, optional
        The penalty grid; gives the percent of voxels at its edges.
    r_threshold : float
        Threshold of ``percent_r_above_threshold``.

    Returns
    -------
    dict
        Keys of :data:`SUMMARY_COLUMNS` (``n_voxels``, ``mean_r``, ``median_r``...).
    """
    r = np.asarray(r, dtype=np.float64)
    finite = r[np.isfinite(r)]
    out: dict[str, float] = {"n_voxels": int(r.size)}
    if finite.size:
        out.update(
            mean_r=float(finite.mean()),
            median_r=float(np.median(finite)),
            max_r=float(finite.max()),
        )
    else:
        out.update(mean_r=float("nan"), median_r=float("nan"), max_r=float("nan"))
    out["r_threshold"] = float(r_threshold)
    out["percent_r_above_threshold"] = 100.0 * float(np.sum(finite > r_threshold)) / max(r.size, 1)
    if r2 is not None:
        r2 = np.asarray(r2, dtype=np.float64)
        r2 = r2[np.isfinite(r2)]
        out["mean_r2"] = float(r2.mean()) if r2.size else float("nan")
    if alpha is not None and alphas is not None and len(alphas):
        alpha = np.asarray(alpha, dtype=np.float64)
        n = max(alpha.size, 1)
        out["percent_alpha_at_min"] = 100.0 * float(np.sum(np.isclose(alpha, min(alphas)))) / n
        out["percent_alpha_at_max"] = 100.0 * float(np.sum(np.isclose(alpha, max(alphas)))) / n
    return out


def encoding_summary_row(
    result: EncodingResultLike,
    *,
    subject: str,
    session: str | None,
    task: str,
    space: str,
    feature_space: str,
    alphas: Sequence[float] | None = None,
) -> dict[str, Any]:
    """One TSV row: identifiers, :func:`map_summary` of the maps, then ``result.summary()``.

    Keys that ``result.summary()`` also computes keep the result's value.
    """
    row: dict[str, Any] = {
        "subject": subject,
        "session": session,
        "task": task,
        "space": space,
        "feature_space": feature_space,
    }
    row.update(map_summary(result.r, result.r2, result.alpha, alphas=alphas))
    summary = getattr(result, "summary", None)
    if callable(summary):
        ids = set(row)
        row.update({k: v for k, v in summary().items() if k not in ids})
    return row


def write_encoding_maps(
    output_dir: Path | str,
    result: EncodingResultLike,
    mask_img: Path | str | nib.spatialimages.SpatialImage,
    *,
    subject: str,
    session: str | None,
    task: str,
    space: str,
    feature_space: str,
    sources: Sequence[str],
    parameters: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the r, r2 and alpha maps of one (participant, task, feature space) fit.

    Parameters
    ----------
    result : EncodingResultLike
        ``r``, ``r2``, ``alpha`` arrays of shape (n_voxels,).
    sources : sequence of str
        BIDS URIs of the BOLD runs, masks and feature files used.
    parameters : mapping, optional
        Written in every sidecar (delays, alphas, CV scheme, model spec...).

    Returns
    -------
    dict
        ``{"r": path, "r2": path, "alpha": path}``, plus ``p``, ``q``, ``pfwe`` (with
        permutations) and ``nc``, ``rnorm`` (with a noise ceiling) when the result has them.
    """
    entities = {"sub": subject, "ses": session, "task": task, "space": space, "desc": feature_space}
    paths: dict[str, Path] = {}
    for stat, attribute in _OPTIONAL_STATS.items():
        values = getattr(result, attribute, None)
        if values is None:
            continue
        paths[stat] = write_statmap(
            output_dir,
            np.asarray(values),
            mask_img,
            entities=entities,
            stat=stat,
            description=PARTICIPANT_STAT_DESCRIPTIONS[stat].format(feature_space=feature_space),
            sources=sources,
            parameters=parameters,
        )
    for stat in ("r", "r2", "alpha"):
        paths[stat] = write_statmap(
            output_dir,
            np.asarray(getattr(result, stat)),
            mask_img,
            entities=entities,
            stat=stat,
            description=STAT_DESCRIPTIONS[stat].format(feature_space=feature_space),
            sources=sources,
            parameters=parameters,
        )
    return paths


def summary_tsv_path(output_dir: Path | str, subject: str, session: str | None = None) -> Path:
    """``OUTPUT_DIR/sub-XX[/ses-YY]/func/sub-XX[_ses-YY]_summary.tsv`` (one row per fit)."""
    return derivative_path(output_dir, {"sub": subject, "ses": session}, "summary", ".tsv")


def write_summary_tsv(
    path: Path | str,
    rows: Sequence[Mapping[str, Any]],
    column_descriptions: Mapping[str, str] | None = None,
) -> Path:
    """Write ``rows`` as a TSV (``n/a`` for missing values) and a JSON sidecar of its columns.

    Columns are the union of the rows' keys in first-seen order. The sidecar describes
    the columns known from :data:`SUMMARY_COLUMNS` and ``column_descriptions``.
    """
    path = Path(path)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.writer(
        buffer, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE, escapechar="\\"
    )
    writer.writerow(columns)
    for row in rows:
        writer.writerow([tsv_cell(row.get(c)) for c in columns])
    known = {**SUMMARY_COLUMNS, **(column_descriptions or {})}
    sidecar = {c: {"Description": known[c]} for c in columns if c in known}
    suffixes = "".join(path.suffixes)
    write_json_atomic(path.with_name(path.name[: -len(suffixes)] + ".json"), sidecar)
    return write_text_atomic(path, buffer.getvalue())
