"""Group level: participants' encoding-accuracy maps in a common space, tested across participants.

Reads only OUTPUT_DIR (the participant-level stat maps), as the BIDS-Apps model asks.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_vem.config import option_name
from bids_vem.errors import DataError, NoMatchError
from bids_vem.outputs.group import find_statmaps
from bids_vem.outputs.surfaces import SurfaceMask, is_surface_map, read_surface_map

__all__ = ["ParticipantMaps", "find_participant_r_maps", "stack_maps"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParticipantMaps:
    """The r maps of one (task, space, feature space) across participants."""

    task: str
    space: str
    feature_space: str
    paths: dict[str, Path]  # subject -> r map

    @property
    def subjects(self) -> list[str]:
        return sorted(self.paths)


def find_participant_r_maps(
    output_dir: Path, participant_label: tuple[str, ...] = (), task: tuple[str, ...] = ()
) -> list[ParticipantMaps]:
    """Group the participants' ``stat-r`` maps by task, space and feature space.

    Raises
    ------
    NoMatchError
        No participant-level r map under ``output_dir`` (run the participant level first).
    """
    groups: dict[tuple[str, str, str], dict[str, Path]] = defaultdict(dict)
    for entities, path in find_statmaps(output_dir, stat="r"):
        subject = entities.get("sub")
        if (participant_label and subject not in participant_label) or (
            task and entities.get("task") not in task
        ):
            continue
        key = (entities.get("task", ""), entities.get("space", ""), entities.get("desc", ""))
        if subject in groups[key]:
            logger.warning("sub-%s has several r maps for %s; using %s", subject, key, path.name)
        groups[key][subject] = path
    for key, paths in groups.items():
        _check_one_model(key, paths)
    if not groups:
        filters = (
            f" (participants {list(participant_label)}, tasks {list(task)})"
            if participant_label or task
            else ""
        )
        raise NoMatchError(
            f"no participant-level r maps (*_stat-r_statmap.nii.gz) under {output_dir}{filters}: "
            "run the participant level first"
        )
    return [
        ParticipantMaps(task=t, space=s, feature_space=fs, paths=paths)
        for (t, s, fs), paths in sorted(groups.items())
    ]


def _check_one_model(key: tuple[str, str, str], paths: dict[str, Path]) -> None:
    """Refuse to pool maps of different models that share a feature-space name.

    Raises
    ------
    DataError
        Two participants' sidecars give the same feature space different model specs.
    """
    specs: dict[str, str] = {}
    for subject, path in sorted(paths.items()):
        sidecar = path.with_name(path.name.split(".")[0] + ".json")
        try:
            spec = json.loads(sidecar.read_text(encoding="utf-8")).get("ModelSpec")
        except (OSError, ValueError):
            continue
        if spec is not None:
            specs[subject] = str(spec)
    if len(set(specs.values())) > 1:
        (first, a), (other, b) = (
            next(iter(specs.items())),
            next((s, v) for s, v in specs.items() if v != next(iter(specs.values()))),
        )
        task, space, feature_space = key
        raise DataError(
            f"feature space '{feature_space}' (task-{task}, space-{space}) names different "
            f"models: sub-{first} {a!r}, sub-{other} {b!r}; rerun those participants with one "
            "definition, or give the models different names"
        )


def stack_maps(paths: list[Path]) -> tuple[np.ndarray, nib.Nifti1Image | SurfaceMask]:
    """Stack maps that share one grid into (n_subjects, n_voxels) over their common mask.

    A voxel enters the group mask when it is finite and non-zero in every participant
    (participant maps are zero outside that participant's brain mask). Surface maps (GIFTI
    pairs, CIFTI) are stacked point by point the same way.

    Returns
    -------
    values : ndarray of shape (n_subjects, n_voxels_in_group_mask)
    mask_img : Nifti1Image or SurfaceMask
        The group mask on the participants' grid (or surface).
    """
    if is_surface_map(paths[0]):
        return _stack_surface_maps(paths)
    images = [nib.load(str(p)) for p in paths]
    reference = images[0]
    for path, img in zip(paths, images, strict=True):
        if img.shape[:3] != reference.shape[:3] or not np.allclose(
            img.affine, reference.affine, atol=1e-3
        ):
            raise DataError(
                f"{path}: its grid {img.shape[:3]} differs from {paths[0]} {reference.shape[:3]}; "
                f"group analysis needs maps in one common space (use {option_name('space')} MNI152NLin2009cAsym)"
            )
    data = np.stack([np.asarray(img.dataobj, dtype=np.float32) for img in images])
    mask = np.all(np.isfinite(data) & (data != 0), axis=0)
    if not mask.any():
        raise DataError(
            f"the participants' r maps share no voxel ({', '.join(p.name for p in paths)})"
        )
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), reference.affine)
    return data[:, mask], mask_img


def _stack_surface_maps(paths: list[Path]) -> tuple[np.ndarray, SurfaceMask]:
    read = [read_surface_map(p) for p in paths]
    _, reference = read[0]
    for path, (values, geometry) in zip(paths, read, strict=True):
        if (geometry.kind, values.size) != (reference.kind, read[0][0].size):
            raise DataError(
                f"{path}: {values.size} surface points ({geometry.kind}) but {paths[0].name} has "
                f"{read[0][0].size} ({reference.kind}); group analysis needs maps on one surface"
            )
    data = np.stack([values for values, _ in read])
    mask = np.all(np.isfinite(data) & (data != 0), axis=0)
    if not mask.any():
        raise DataError(
            f"the participants' r maps share no surface point ({', '.join(p.name for p in paths)})"
        )
    return data[:, mask], SurfaceMask(reference, mask)
