# Longer than 500 lines: trial-wise designs: betas in, repeats, folds and the encoding model over trials.
"""Trial-wise encoding models (NSD-style event-related data): from single-trial responses to ridge.

The responses are either estimated here by least-squares-separate
(:func:`~bids_vem.encoding.lss.estimate_trial_betas`) or given by the user as a derivative
(e.g. GLMsingle betas): a 4-D image with one volume per trial and a TSV with one row per
volume naming its stimulus (:func:`read_trial_betas`). Either way, as in NSD practice
(Allen et al. 2022; Doerig et al. 2025):

1. each voxel's responses are z-scored over the trials of a session (of a run when the trials
   have no session);
2. the trials are split into cross-validation groups (runs or sessions) and repeats of a
   stimulus are averaged within a group, never across groups, so that folds stay independent;
3. the design has one row per averaged response: the stimulus's features, z-scored over all
   rows (one scale per feature, taken from stimuli only), then, like the responses, centred
   within each group (the model has no intercept: one per group);
4. :func:`~bids_vem.encoding.model.fit_encoding_model` fits ridge with one block per group
   (nested leave-one-group-out).

When a stimulus is shown in several groups, folds of groups would test on stimuli the model
was trained on; by default (``cv_groups="auto"``) the folds are then folds of unique stimuli
(:mod:`bids_vem.encoding.stimulus_folds`): a held-out stimulus's rows leave training, and its
responses in every group are averaged into one test response, as NSD and THINGS test on
images never used in training. The noise ceiling comes from the repeated single trials
(:mod:`bids_vem.encoding.noise_ceiling`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from bids_vem.config import check_setting, option_name
from bids_vem.encoding.bold import load_mask
from bids_vem.encoding.design import zscore
from bids_vem.encoding.lss import MAX_TRIAL_CORRELATION, TrialBetas, estimate_trial_betas
from bids_vem.encoding.model import FOLDS_OF_CV_GROUPS, EncodingResult, fit_encoding_model
from bids_vem.encoding.noise_ceiling import ncsnr, trial_noise_ceiling
from bids_vem.encoding.stimulus_folds import samples_from_rows
from bids_vem.errors import DataError, InputMissingError, UsageError
from bids_vem.features.feature_set import FeatureSet
from bids_vem.inputs.events import MISSING_VALUES, normalise_stim_id, read_tsv
from bids_vem.inputs.glmsingle import read_betas_array
from bids_vem.inputs.runs import Run
from bids_vem.outputs.atomic import atomic_path

__all__ = [
    "TrialBlocks",
    "betas_table_path",
    "read_trial_betas",
    "write_trial_betas",
    "zscore_per_session",
    "average_repeats",
    "trial_blocks",
    "encode_trials",
]


logger = logging.getLogger(__name__)

#: volumes of a betas image read at a time (bounds memory for large images)
_VOLUME_BLOCK = 256


def betas_table_path(betas: Path | str) -> Path:
    """The TSV that names the volumes of a betas image: same name, ``.tsv`` for ``.nii[.gz]``;
    else THINGS-fMRI's ``<prefix>_conditions.tsv`` for ``<prefix>_betas.nii.gz``."""
    betas = Path(betas)
    stem = betas.name
    for suffix in (".nii.gz", ".nii", ".npy", ".mat"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    table = betas.with_name(stem + ".tsv")
    things = betas.with_name(stem.removesuffix("_betas") + "_conditions.tsv")
    if not table.is_file() and stem.endswith("_betas") and things.is_file():
        return things
    return table


#: columns of a betas table that name the stimulus, after the preferred one (THINGS-fMRI's
#: conditions tables: ``image_filename``)
_BETAS_STIM_COLUMNS = ("stim_file", "stim_id", "image_filename", "file_path")


def _file_entity(path: Path, entity: str) -> str | None:
    match = re.search(rf"(?:^|_){entity}-([A-Za-z0-9]+)", Path(path).name)
    return match.group(1) if match else None


def match_stimuli(trials: pd.DataFrame, known: Sequence[str]) -> tuple[np.ndarray, int]:
    """Map the stimuli of betas tables to the stimuli the events name.

    A name is kept when the events use it, else mapped to the one event stimulus with that
    file name (THINGS' tables say ``dog_12s.jpg`` where the events say ``dog/dog_12s.jpg``).
    Volumes whose stimulus no event names (catch trials, whose images are not stimuli of the
    model) are dropped.

    Returns
    -------
    keep : ndarray of bool
        The volumes kept; ``trials["stim_id"]`` is rewritten in place for them.
    n_dropped : int
    """
    known_set = set(known)
    by_name: dict[str, list[str]] = {}
    for stim_id in known:
        by_name.setdefault(stim_id.rsplit("/", 1)[-1], []).append(stim_id)
    mapped = []
    for stim_id in trials["stim_id"]:
        if stim_id in known_set:
            mapped.append(stim_id)
            continue
        candidates = by_name.get(str(stim_id).rsplit("/", 1)[-1], [])
        mapped.append(candidates[0] if len(candidates) == 1 else None)
    keep = np.array([m is not None for m in mapped], dtype=bool)
    trials["stim_id"] = mapped
    return keep, int((~keep).sum())


def _label(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return None if text in MISSING_VALUES else text


def _open_betas(path: Path):
    """Shape, affine (None for GLMsingle's arrays) and a reader of volumes [start, stop)
    of a betas file: a 4-D NIfTI image, or a GLMsingle result (``.npy``/``.mat``)."""
    if path.suffix in (".npy", ".mat"):
        array = read_betas_array(path)
        return array.shape, None, lambda start, stop: array[..., start:stop]
    try:
        img = nib.load(path)
    except Exception as err:  # nibabel raises several types for non-images
        raise InputMissingError(f"{path}: cannot read betas image ({err})") from err
    if len(img.shape) != 4:
        raise DataError(f"{path}: betas image must be 4-D (one volume per trial), got {img.shape}")
    return img.shape, img.affine, lambda start, stop: img.dataobj[..., start:stop]


def read_trial_betas(
    path: Path | str,
    table: Path | str | None = None,
    *,
    mask: Path | nib.Nifti1Image | None = None,
    stim_column: str | None = None,
) -> TrialBetas:
    """Read user-supplied single-trial betas (e.g. GLMsingle) as a derivative.

    Parameters
    ----------
    path : Path
        4-D NIfTI image, one volume per trial, or a GLMsingle result file (``.npy`` or
        ``.mat``, :func:`~bids_vem.inputs.glmsingle.read_betas_array`; its grid is the mask's).
    table : Path, optional
        TSV with one row per volume, in volume order: the stimulus (column ``stim_column``,
        else ``stim_file``, else ``stim_id``; paths relative to ``stimuli/`` as in events) and
        optional ``session`` and ``run`` labels. Default: :func:`betas_table_path`.
    mask : Path or Nifti1Image, optional
        Voxels to read. Default: voxels finite in every volume and not 0 in all of them.
    stim_column : str, optional
        Preferred stimulus column (used when the TSV has it).

    Returns
    -------
    TrialBetas
        ``betas`` (n_volumes, n_voxels) float32 (voxels with a non-finite value inside a given
        mask are 0), ``trials`` with ``stim_id``, ``session``, ``run`` (None where absent)
        and NaN ``onset``/``duration``; ``mask`` and ``affine`` set.

    Raises
    ------
    InputMissingError
        The image or the TSV is missing or unreadable.
    DataError
        The image is not 4-D, the TSV has no stimulus column, a row names no stimulus, the
        TSV's row count differs from the number of volumes, or the mask is on another grid
        or empty.
    """
    path = Path(path)
    table_path = Path(table) if table is not None else betas_table_path(path)
    if not path.exists():
        raise InputMissingError(f"{path}: betas image not found")
    if not table_path.exists():
        raise InputMissingError(
            f"{table_path}: table naming the stimulus of each betas volume not found"
        )
    shape, image_affine, read_volumes = _open_betas(path)
    n_volumes = int(shape[3])

    frame = read_tsv(table_path)
    candidates = [c for c in (stim_column, *_BETAS_STIM_COLUMNS) if c]
    column = next((c for c in candidates if c in frame.columns), None)
    if column is None:
        raise DataError(
            f"{table_path}: no stimulus column ({', '.join(dict.fromkeys(candidates))}); "
            f"its columns are {', '.join(frame.columns)}"
        )
    if len(frame) != n_volumes:
        raise DataError(
            f"{table_path}: {len(frame)} rows but the betas image {path.name} has {n_volumes} "
            "volumes; the table needs one row per volume"
        )
    stim_ids = [normalise_stim_id(value) for value in frame[column]]
    empty = [i for i, s in enumerate(stim_ids) if s is None]
    if empty:
        raise DataError(
            f"{table_path}: row {empty[0] + 1} names no stimulus in column '{column}'; "
            "every betas volume must show one"
        )
    # per-run betas files (THINGS) say their session and run in their name, not their table
    session, run = _file_entity(path, "ses"), _file_entity(path, "run")
    trials = pd.DataFrame(
        {
            "stim_id": stim_ids,
            "session": [_label(v) for v in frame["session"]]
            if "session" in frame
            else [session] * n_volumes,
            "run": [_label(v) for v in frame["run"]] if "run" in frame else [run] * n_volumes,
            "onset": np.nan,
            "duration": np.nan,
        }
    )

    def blocks():
        for start in range(0, n_volumes, _VOLUME_BLOCK):
            stop = min(start + _VOLUME_BLOCK, n_volumes)
            try:
                yield start, np.asarray(read_volumes(start, stop), dtype=np.float32)
            except (OSError, EOFError, ValueError, MemoryError) as err:
                raise InputMissingError(
                    f"{path}: cannot read betas voxel data, the file looks truncated ({err})"
                ) from err

    if mask is None:
        if image_affine is None:
            raise DataError(
                f"{path}: betas without a grid (GLMsingle arrays) need the BOLD's brain mask"
            )
        finite = np.ones(shape[:3], dtype=bool)
        nonzero = np.zeros(shape[:3], dtype=bool)
        for _, block in blocks():
            finite &= np.isfinite(block).all(axis=3)
            nonzero |= (block != 0).any(axis=3)
        inside = finite & nonzero
        if not inside.any():
            raise DataError(f"{path}: no voxel has finite, nonzero betas")
        affine = np.asarray(image_affine)
    else:
        mask_img = load_mask(mask)
        # GLMsingle's arrays have no affine: they are on the grid of the BOLD they came from
        if tuple(shape[:3]) != mask_img.shape[:3] or (
            image_affine is not None and not np.allclose(image_affine, mask_img.affine, atol=1e-3)
        ):
            raise DataError(
                f"{path}: betas grid {tuple(shape[:3])} does not match the mask "
                f"{mask_img.shape[:3]} (shape or affine)"
            )
        inside = np.asarray(mask_img.dataobj) > 0
        affine = np.asarray(mask_img.affine)
    betas = np.empty((n_volumes, int(inside.sum())), dtype=np.float32)
    for start, block in blocks():
        betas[start : start + block.shape[3]] = block[inside].T
    # a voxel with any non-finite value is dropped whole (0), as for BOLD
    betas[:, ~np.isfinite(betas).all(axis=0)] = 0.0
    return TrialBetas(betas, trials, mask=inside, affine=affine, source=str(table_path))


def _read_betas_files(paths, tables, mask, stim_column, known) -> TrialBetas:
    """The betas of one image, or of one image per run (THINGS-fMRI) or session (GLMsingle,
    NSD) concatenated, their stimuli mapped to the events' names; volumes of no event
    stimulus (catch trials) dropped."""
    parts = []
    for path, table in zip(paths, tables or [None] * len(paths), strict=True):
        part = read_trial_betas(path, table, mask=mask, stim_column=stim_column)
        if mask is None:  # the voxels of the first image for all
            mask = nib.Nifti1Image(part.mask.astype(np.int8), part.affine)
        parts.append(part)
    trials = pd.concat([part.trials for part in parts], ignore_index=True)
    betas = np.concatenate([part.betas for part in parts])
    keep, dropped = match_stimuli(trials, known)
    source = (
        parts[0].source
        if len(parts) == 1
        else f"{len(parts)} betas tables ({parts[0].source}, ...)"
    )
    if dropped:
        logger.warning(
            "%s: %d of %d betas volumes show a stimulus no event names (catch trials?); left out",
            source,
            dropped,
            len(trials),
        )
    if not keep.any():
        raise DataError(f"{source}: no betas volume shows a stimulus of the events")
    return TrialBetas(
        betas[keep],
        trials[keep].reset_index(drop=True),
        mask=parts[0].mask,
        affine=parts[0].affine,
        source=source,
    )


def write_trial_betas(trial_betas: TrialBetas, path: Path | str) -> tuple[Path, Path]:
    """Write trial betas as a 4-D NIfTI and its TSV (:func:`read_trial_betas` reads them back).

    Parameters
    ----------
    trial_betas : TrialBetas
        With ``mask`` and ``affine``.
    path : Path
        The image (``.nii.gz``); the TSV goes beside it (:func:`betas_table_path`).

    Returns
    -------
    (Path, Path)
        The image (one float32 volume per trial, 0 outside the mask) and the TSV (``stim_id``,
        ``session``, ``run``, ``onset``, ``duration``; ``n/a`` where unknown), written
        atomically.
    """
    if trial_betas.mask is None or trial_betas.affine is None:
        raise ValueError("these trial betas have no mask: they were not computed from images")
    path = Path(path)
    volumes = np.zeros((*trial_betas.mask.shape, trial_betas.n_trials), dtype=np.float32)
    volumes[trial_betas.mask] = trial_betas.betas.T
    with atomic_path(path) as tmp:
        nib.Nifti1Image(volumes, trial_betas.affine).to_filename(tmp)
    table_path = betas_table_path(path)
    columns = ["stim_id", "session", "run", "onset", "duration"]
    table = trial_betas.trials.reindex(columns=columns)
    with atomic_path(table_path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    return path, table_path


def _session_keys(trials: pd.DataFrame) -> list[tuple[str, str | None]]:
    """Per trial, what it is z-scored with: its session, else its run."""
    keys = []
    for session, run in zip(trials["session"], trials["run"], strict=True):
        session, run = _label(session), _label(run)
        keys.append(("session", session) if session is not None else ("run", run))
    return keys


def zscore_per_session(trial_betas: TrialBetas) -> np.ndarray:
    """Each voxel's betas z-scored over the trials of a session (of a run without session).

    Returns
    -------
    ndarray of shape (n_trials, n_voxels), float32
        Voxels constant within a session are 0 there.
    """
    keys = _session_keys(trial_betas.trials)
    out = np.empty(trial_betas.betas.shape, dtype=np.float32)
    for key in dict.fromkeys(keys):
        rows = np.array([k == key for k in keys])
        out[rows] = zscore(trial_betas.betas[rows].astype(np.float64), axis=0)
    return out


def average_repeats(
    betas: np.ndarray, stim_ids: Sequence[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Average the responses to each stimulus.

    Parameters
    ----------
    betas : ndarray of shape (n_trials, n_voxels)
    stim_ids : sequence of str, length n_trials

    Returns
    -------
    stim_ids : list of str
        Unique stimuli in order of first appearance.
    means : ndarray of shape (n_stimuli, n_voxels), float32
    counts : ndarray of shape (n_stimuli,), int
        Trials averaged per stimulus.
    """
    unique = list(dict.fromkeys(stim_ids))
    index = {s: i for i, s in enumerate(unique)}
    which = np.array([index[s] for s in stim_ids], dtype=np.int64)
    counts = np.bincount(which, minlength=len(unique))
    sums = np.zeros((len(unique), betas.shape[1]), dtype=np.float64)
    np.add.at(sums, which, np.asarray(betas, dtype=np.float64))
    return unique, (sums / counts[:, None]).astype(np.float32), counts


@dataclass
class TrialBlocks:
    """Designs and responses of a trial-wise model, one block per cross-validation group.

    Attributes
    ----------
    names : list of str
        Group names (runs or ``ses-<label>``), in order of first appearance.
    Xs : list of ndarray of shape (n_rows_g, n_features), float32
        Stimulus features, z-scored over all rows, centred within the group.
    Ys : list of ndarray of shape (n_rows_g, n_voxels), float32
        Responses (z-scored per session, repeats averaged within the group), centred.
    stim_ids : list of list of str
        The stimulus of each row.
    n_trials : list of ndarray of shape (n_rows_g,), int
        Trials averaged into each row.
    ncsnr : ndarray of shape (n_voxels,), optional
        Noise-ceiling SNR from the repeated single trials (None without repeats).
    """

    names: list[str]
    Xs: list[np.ndarray]
    Ys: list[np.ndarray]
    stim_ids: list[list[str]]
    n_trials: list[np.ndarray]
    ncsnr: np.ndarray | None = None


def _group_name(kind: str, session: str | None, run: str | None) -> str:
    if kind == "session":
        return f"ses-{session}"
    if run.startswith("sub-"):  # a run's BIDS name (LSS): unique as it is
        return run
    return f"ses-{session}_run-{run}" if session is not None else f"run-{run}"


def trial_blocks(
    trial_betas: TrialBetas,
    feature_set: FeatureSet,
    *,
    cv_groups: str = "run",
    average: bool = True,
) -> TrialBlocks:
    """Split trials into cross-validation groups with their designs (module docstring, 1-3).

    Parameters
    ----------
    trial_betas : TrialBetas
    feature_set : FeatureSet
        One row per stimulus (not timed), naming every stimulus of the trials.
    cv_groups : {"run", "session"}
        What a group is (``auto`` and ``stimulus``: runs, the stimulus folds come later).
    average : bool
        Average repeats of a stimulus within a group (else one row per trial).

    Returns
    -------
    TrialBlocks

    Raises
    ------
    UsageError
        ``cv_groups`` unknown, or trials without the run/session label it needs.
    DataError
        Stimuli without features, or a timed (video) feature space.
    """
    check_setting("cv_groups", cv_groups)
    if cv_groups in ("auto", "stimulus"):  # folds of stimuli are made from the run groups
        cv_groups = "run"
    where = trial_betas.source or "trial betas"
    if feature_set.timed:
        raise DataError(
            f"feature space {feature_set.name!r} has timed rows (video frames); trial-wise "
            "designs need one feature row per stimulus"
        )
    trials = trial_betas.trials
    stim_ids = [str(s) for s in trials["stim_id"]]
    absent = sorted(set(stim_ids) - set(feature_set.stim_ids))
    if absent:
        shown = ", ".join(absent[:5]) + (", ..." if len(absent) > 5 else "")
        raise DataError(
            f"{where}: {len(absent)} stimulus id(s) not in feature space "
            f"{feature_set.name!r}: {shown}"
        )
    sessions = [_label(s) for s in trials["session"]]
    runs = [_label(r) for r in trials["run"]]
    needed = sessions if cv_groups == "session" else runs
    if any(label is None for label in needed):
        row = next(i for i, label in enumerate(needed) if label is None)
        raise UsageError(
            f"{where}: {option_name('cv_groups')} {cv_groups} needs a {cv_groups} label for every trial; "
            f"trial {row + 1} has none"
        )

    responses = zscore_per_session(trial_betas)
    keys = (
        [(s,) for s in sessions]
        if cv_groups == "session"
        else list(zip(sessions, runs, strict=True))
    )
    names, Ys, ids, counts = [], [], [], []
    for key in dict.fromkeys(keys):
        rows = np.flatnonzero([k == key for k in keys])
        group_ids = [stim_ids[i] for i in rows]
        if average:
            group_ids, Y, n = average_repeats(responses[rows], group_ids)
        else:
            Y, n = responses[rows], np.ones(len(rows), dtype=np.int64)
        names.append(_group_name(cv_groups, *(key if len(key) == 2 else (key[0], None))))
        Ys.append((Y - Y.mean(axis=0, dtype=np.float64)).astype(np.float32))
        ids.append(list(group_ids))
        counts.append(n)

    # one scale per feature over all rows, then each group centred like its responses
    X = zscore(feature_set.rows([s for group in ids for s in group]).astype(np.float64))
    bounds = np.cumsum([0, *(len(group) for group in ids)])
    Xs = [
        (X[a:b] - X[a:b].mean(axis=0)).astype(np.float32)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return TrialBlocks(names, Xs, Ys, ids, counts, ncsnr(responses, stim_ids))


def load_trial_betas(
    runs_or_betas: Sequence[Run] | TrialBetas | Path | str,
    known: Sequence[str],
    *,
    stim_column: str = "stim_file",
    hrf_model: str = "glover",
    confounds: Sequence[str] = (),
    high_pass: float = 0.01,
    slice_time_ref: float | None = None,
    max_correlation: float = MAX_TRIAL_CORRELATION,
    betas_tables: Sequence[Path | str] | None = None,
    mask: Path | nib.Nifti1Image | None = None,
) -> TrialBetas:
    """Single-trial responses as :func:`encode_trials` takes them: estimated by LSS from runs,
    read from the user's betas images (their stimuli matched to ``known``), or as given."""
    if isinstance(runs_or_betas, TrialBetas):
        return runs_or_betas
    if isinstance(runs_or_betas, (str, Path)) or (
        len(runs_or_betas) and isinstance(runs_or_betas[0], (str, Path))
    ):
        return _read_betas_files(
            [runs_or_betas] if isinstance(runs_or_betas, (str, Path)) else list(runs_or_betas),
            betas_tables,
            mask,
            stim_column,
            known,
        )
    return estimate_trial_betas(
        list(runs_or_betas),
        stim_column=stim_column,
        hrf_model=hrf_model,
        confounds=confounds,
        high_pass=high_pass,
        slice_time_ref=slice_time_ref,
        mask=mask,
        max_correlation=max_correlation,
    )


def encode_trials(
    runs_or_betas: Sequence[Run] | TrialBetas | Path | str,
    feature_set: FeatureSet,
    *,
    alphas: Sequence[float] | np.ndarray,
    hrf_model: str = "glover",
    confounds: Sequence[str] = (),
    device: str | torch.device = "cpu",
    stim_column: str = "stim_file",
    cv_groups: str = "auto",
    average: bool = True,
    high_pass: float = 0.01,
    slice_time_ref: float | None = None,
    max_correlation: float = MAX_TRIAL_CORRELATION,
    betas_tables: Sequence[Path | str] | None = None,
    mask: Path | nib.Nifti1Image | None = None,
    score: str = "correlation",
    n_voxels_chunk: int | None = None,
    mem_mb: float | None = None,
    weights_path: Path | str | None = None,
    test_stimuli: str | None = None,
    n_permutations: int = 0,
    seed: int = 0,
) -> EncodingResult:
    """Trial-wise encoding model of one participant from one feature space.

    Parameters
    ----------
    runs_or_betas : sequence of Run, TrialBetas, Path or sequence of Path
        Runs whose trials are estimated by LSS (:func:`~bids_vem.encoding.lss.
        estimate_trial_betas`), trial betas already at hand, or betas images given by the
        user (``--betas``: one image, one per run as THINGS-fMRI's or one per session as
        GLMsingle's; :func:`read_trial_betas` with ``betas_tables`` and ``mask``); their stimuli are mapped to the feature set's by
        name or unique file name, and volumes of other stimuli (catch trials) dropped.
    feature_set : FeatureSet
        Features of every stimulus the trials show.
    alphas : sequence of float
        Penalty grid.
    hrf_model : {"glover", "spm"}
        HRF of the LSS model (runs only).
    confounds : sequence of str
        Confound columns in each run's LSS model (runs only).
    device, score, n_voxels_chunk, mem_mb, weights_path
        As in :func:`~bids_vem.encoding.model.fit_encoding_model`.
    stim_column : str
        Events column (runs), or preferred TSV column (betas image), naming the stimulus.
    cv_groups : {"auto", "run", "session", "stimulus"}
        What a fold holds out; repeats are averaged within a run (session). ``auto``: unique
        stimuli when one is shown in several runs, else runs.
    test_stimuli : str, optional
        Explicit test stimuli (``--test-stimuli``: a file of names; ``COLUMN=VALUE`` of the
        events when the trials come from runs).
    n_permutations, seed
        As in :func:`~bids_vem.encoding.model.fit_encoding_model` (stimuli permuted).
    average : bool
        Average repeats of a stimulus within a group.
    high_pass, slice_time_ref, max_correlation
        LSS options (:func:`~bids_vem.encoding.lss.lss_betas`; runs only).
    betas_tables, mask
        For betas images: the TSV of each (default: beside it) and the voxels to read
        (:func:`read_trial_betas`).

    Returns
    -------
    EncodingResult
        ``runs`` are the groups, ``n_samples`` the averaged trials, ``delays`` empty; ``mask``
        and ``affine`` set when the betas come from images.

    Raises
    ------
    UsageError
        Unknown ``cv_groups`` or ``hrf_model``; trials without the labels ``cv_groups`` needs.
    DataError, InputMissingError
        Bad events, BOLD, betas or tables; fewer than 2 groups.
    """
    check_setting("cv_groups", cv_groups)
    trial_betas = load_trial_betas(
        runs_or_betas, feature_set.stim_ids, stim_column=stim_column, hrf_model=hrf_model,
        confounds=confounds, high_pass=high_pass, slice_time_ref=slice_time_ref,
        max_correlation=max_correlation, betas_tables=betas_tables, mask=mask,
    )  # fmt: skip
    groups_of = "session" if cv_groups == "session" else "run"
    blocks = trial_blocks(trial_betas, feature_set, cv_groups=groups_of, average=average)
    if len(blocks.names) < 2:
        found = f": {blocks.names[0]}" if blocks.names else ""
        raise DataError(
            f"{trial_betas.source or 'trial betas'}: the trials form {len(blocks.names)} "
            f"{groups_of}(s){found}; leave-one-{groups_of}-out needs at least 2"
        )
    samples = samples_from_rows(blocks.stim_ids, blocks.n_trials)
    held = None
    if test_stimuli:
        from bids_vem.encoding.model import test_stimulus_mask

        runs = [] if isinstance(runs_or_betas, (str, Path, TrialBetas)) else list(runs_or_betas)
        held = test_stimulus_mask(test_stimuli, samples.stim_ids, runs, stim_column)
    result = fit_encoding_model(
        blocks.Xs,
        blocks.Ys,
        alphas,
        device=device,
        n_voxels_chunk=n_voxels_chunk,
        run_names=blocks.names,
        feature_space=feature_set.name,
        score=score,
        cv_groups_name=groups_of,
        mem_mb=mem_mb,
        weights_path=weights_path,
        stimulus_samples=samples,
        folds=FOLDS_OF_CV_GROUPS[cv_groups],
        test_stimuli=held,
        n_permutations=n_permutations,
        permutation="permute",
        seed=seed,
    )
    if blocks.ncsnr is not None:
        result.nc = trial_noise_ceiling(blocks.ncsnr, _test_trials(result, samples, held, blocks))
        result.nc = result.nc.astype(np.float32)
    result.mask = trial_betas.mask
    result.affine = trial_betas.affine
    return result


def _test_trials(result, samples, held, blocks: TrialBlocks) -> np.ndarray:
    """Trials behind each test response: all of a stimulus's trials under stimulus folds,
    else each held-out row's."""
    if result.cv_groups == "stimulus":
        trials = np.asarray(samples.trials)
        return trials[held] if held is not None else trials
    return np.concatenate(blocks.n_trials)
