"""Group-level outputs under ``OUTPUT_DIR/group/``, and finding the participant maps they use."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bids_vem.outputs.names import parse_derivative_name
from bids_vem.outputs.statmaps import STAT_DESCRIPTIONS, write_statmap, write_summary_tsv

__all__ = ["GROUP_DIR", "write_group_maps", "write_group_summary", "find_statmaps"]

GROUP_DIR = "group"


def write_group_maps(
    output_dir: Path | str,
    maps: Mapping[str, np.ndarray],
    mask_img: Path | str | nib.spatialimages.SpatialImage,
    *,
    task: str,
    space: str,
    feature_space: str,
    n_subjects: int,
    sources: Sequence[str],
    parameters: Mapping[str, Any] | None = None,
    label: str | None = None,
) -> dict[str, Path]:
    """Write ``group/task-<t>_space-<s>_desc-<fs>_stat-<name>_statmap.nii.gz`` (+ .json) per map.

    Parameters
    ----------
    output_dir : path
        The derivative dataset root (``group/`` is made inside it).
    maps : mapping
        Statistic name (``meanr``, ``t``, ``p``, ``q``...) to values of shape (n_voxels,).
    mask_img : path or image
        The group mask defining the voxels.
    n_subjects : int
        Participants entering the statistic (written in each sidecar as ``NumberOfSubjects``).
    sources : sequence of str
        BIDS URIs of the participant maps (``bids::sub-01/func/...``).
    parameters : mapping, optional
        Test parameters (e.g. ``{"Test": "one-sample t", "Correction": "fdr_bh"}``).
    label : str, optional
        A ``label-`` entity (the feature space(s) of a variance-partitioning component).

    Returns
    -------
    dict
        Statistic name to the NIfTI path.
    """
    params = {"NumberOfSubjects": int(n_subjects), **(parameters or {})}
    entities = {"task": task, "space": space, "label": label, "desc": feature_space}
    paths: dict[str, Path] = {}
    for stat, values in maps.items():
        template = STAT_DESCRIPTIONS.get(
            stat, "Group map '" + stat + "' (feature space '{feature_space}')."
        )
        paths[stat] = write_statmap(
            Path(output_dir) / GROUP_DIR,
            np.asarray(values),
            mask_img,
            entities=entities,
            stat=stat,
            description=template.format(feature_space=feature_space),
            sources=sources,
            parameters=params,
            datatype=None,
        )
    return paths


def write_group_summary(output_dir: Path | str, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``group/summary.tsv`` (+ ``summary.json``): one row per participant fit or group map."""
    return write_summary_tsv(Path(output_dir) / GROUP_DIR / "summary.tsv", rows)


def find_statmaps(
    output_dir: Path | str,
    *,
    stat: str,
    task: str | None = None,
    space: str | None = None,
    feature_space: str | None = None,
) -> list[tuple[dict[str, str], Path]]:
    """Participant stat maps in ``output_dir``: ``[(entities, path)]`` sorted by path.

    Only ``sub-*/[ses-*/]func/*_stat-<stat>_statmap.nii.gz`` files (surfaces: the
    ``hemi-L`` GIFTI of a pair, or the CIFTI ``.dscalar.nii``) whose entities match the given
    filters are returned (None: any).
    """
    wanted = {"stat": stat, "task": task, "space": space, "desc": feature_space}
    found = []
    root = Path(output_dir)
    candidates = [
        path
        for pattern in ("*_statmap.nii.gz", "*_statmap.dscalar.nii", "*_hemi-L_*_statmap.func.gii")
        for folder in ("sub-*/func", "sub-*/ses-*/func")
        for path in root.glob(f"{folder}/{pattern}")
    ]
    for path in sorted(candidates):
        try:
            entities, _, _ = parse_derivative_name(path)
        except ValueError:
            continue
        if all(value is None or entities.get(key) == value for key, value in wanted.items()):
            found.append((entities, path))
    return sorted(found, key=lambda item: str(item[1]))
