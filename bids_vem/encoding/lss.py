# Longer than 500 lines: the closed-form LSS estimator with its design, confounds and output tables.
"""Single-trial responses by least-squares-separate (LSS; Mumford et al. 2012), in matrix form.

For each trial ``i`` of a run the LSS model is the small design ``[t_i, s_i, N]``: the trial's
HRF regressor ``t_i``, the sum ``s_i`` of all the other trials' regressors, and the nuisance
regressors ``N`` (cosine drift with its constant, confounds, events that show no stimulus).
The trial's beta for every voxel is ``w_i @ Y`` with ``w_i`` the first row of the
pseudo-inverse of that design. By Frisch-Waugh-Lovell, with ``a = M t_i`` and ``b = M s_i``
(``M`` removes the nuisance space),

    w_i = (b'b a - a'b b) / (a'a b'b - (a'b)^2),

so all rows ``W`` (n_trials, n_scans) come from one projection of the trial regressors and a
few dot products, and all betas are one matrix product ``W @ Y`` over voxels (chunked), instead
of one GLM fit per trial. The result equals nilearn's ``FirstLevelModel`` (``noise_model="ols"``)
fitted once per trial on the same model.

HRF regressors are nilearn's (``compute_regressor``, oversampled 50x), the drift nilearn's
default cosine high-pass at 0.01 Hz, and BOLD images are scaled to percent signal change of
their mean as ``FirstLevelModel`` does (``signal_scaling=0``; NSD betas are in the same unit).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import masking
from nilearn.glm.first_level import compute_regressor, make_first_level_design_matrix, mean_scaling

from bids_vem.config import option_name
from bids_vem.encoding.bold import load_mask, read_confounds, runs_mask, surface_signals
from bids_vem.errors import DataError, InputMissingError, UsageError
from bids_vem.inputs.events import read_events
from bids_vem.inputs.runs import Run, slice_time_reference
from bids_vem.inputs.surfaces import bold_kind

__all__ = [
    "HRF_MODELS",
    "TrialBetas",
    "frame_times",
    "trial_regressors",
    "nuisance_regressors",
    "lss_weights",
    "lss_betas",
    "estimate_trial_betas",
]

#: HRF models whose response is one regressor per trial (nilearn names)
HRF_MODELS = ("glover", "spm")

#: trials whose residual regressors correlate above this cannot be told apart (glover HRF:
#: onsets ~0.1 s apart)
MAX_TRIAL_CORRELATION = 0.999

# sin^2 of the angle between a trial and the sum of the others below which the per-trial
# system is singular; and the fraction of a trial's regressor energy that must survive the
# nuisance regressors
_SINGULAR = 1e-10
_VANISHED = 1e-8

_DEFAULT_CHUNK = 50_000


@dataclass
class TrialBetas:
    """Single-trial responses of one participant.

    Attributes
    ----------
    betas : ndarray of shape (n_trials, n_voxels), float32
        One response per trial and voxel.
    trials : DataFrame
        One row per trial, in the order of ``betas``: ``stim_id`` (the stimulus shown),
        ``session`` and ``run`` (labels, None where unknown; ``run`` is unique within its
        session), and ``onset``/``duration`` in seconds (NaN when the betas came from
        elsewhere).
    mask : ndarray of shape (X, Y, Z), bool, or None
        Voxels of ``betas`` (in that order) when they come from images.
    affine : ndarray of shape (4, 4) or None
        Affine of ``mask``.
    source : str
        What the betas were read from or estimated from, for messages.
    """

    betas: np.ndarray
    trials: pd.DataFrame
    mask: np.ndarray | None = None
    affine: np.ndarray | None = None
    source: str = field(default="")

    def __post_init__(self) -> None:
        if self.betas.ndim != 2 or self.betas.shape[0] != len(self.trials):
            raise ValueError(
                f"betas of shape {self.betas.shape} do not match {len(self.trials)} trials"
            )
        if self.mask is not None and int(np.count_nonzero(self.mask)) != self.betas.shape[1]:
            raise ValueError(
                f"mask has {int(np.count_nonzero(self.mask))} voxels, betas {self.betas.shape[1]}"
            )

    @property
    def n_trials(self) -> int:
        return int(self.betas.shape[0])

    @property
    def n_voxels(self) -> int:
        return int(self.betas.shape[1])


def _check_hrf(hrf_model: str) -> str:
    if hrf_model not in HRF_MODELS:
        raise UsageError(
            f"{option_name('hrf_model')} must be one of {', '.join(HRF_MODELS)} for trial-wise designs, "
            f"got {hrf_model!r}"
        )
    return hrf_model


def frame_times(n_scans: int, tr: float, slice_time_ref: float = 0.0) -> np.ndarray:
    """Acquisition times of the scans of a run, as nilearn's ``FirstLevelModel`` sets them.

    Returns
    -------
    ndarray of shape (n_scans,)
        ``(k + slice_time_ref) * tr`` seconds for scan ``k``.
    """
    return (np.arange(n_scans) + slice_time_ref) * float(tr)


def trial_regressors(
    onsets: Sequence[float] | np.ndarray,
    durations: Sequence[float] | np.ndarray,
    times: np.ndarray,
    hrf_model: str = "glover",
    *,
    oversampling: int = 50,
) -> np.ndarray:
    """One HRF-convolved regressor per trial (``nilearn.glm.first_level.compute_regressor``).

    Parameters
    ----------
    onsets, durations : array-like of shape (n_trials,)
        Seconds from the start of the run; a duration of 0 is a brief event.
    times : ndarray of shape (n_scans,)
        Scan times (:func:`frame_times`).
    hrf_model : {"glover", "spm"}
    oversampling : int
        Time-grid steps per TR for the convolution (nilearn's default 50).

    Returns
    -------
    ndarray of shape (n_scans, n_trials), float64
    """
    _check_hrf(hrf_model)
    onsets = np.asarray(onsets, dtype=np.float64)
    durations = np.asarray(durations, dtype=np.float64)
    out = np.zeros((len(times), len(onsets)))
    for i, (onset, duration) in enumerate(zip(onsets, durations, strict=True)):
        regressor, _ = compute_regressor(
            np.array([[onset], [duration], [1.0]]), hrf_model, times, oversampling=oversampling
        )
        out[:, i] = regressor[:, 0]
    return out


def nuisance_regressors(
    times: np.ndarray,
    confounds: pd.DataFrame | np.ndarray | None = None,
    *,
    other_events: pd.DataFrame | None = None,
    hrf_model: str = "glover",
    high_pass: float = 0.01,
) -> pd.DataFrame:
    """The regressors every trial's LSS model shares.

    Parameters
    ----------
    times : ndarray of shape (n_scans,)
        Scan times (:func:`frame_times`).
    confounds : DataFrame or ndarray of shape (n_scans, n_confounds), optional
    other_events : DataFrame, optional
        Events that show no stimulus (``onset``, ``duration``, ``trial_type``): one regressor
        per trial type.
    hrf_model : {"glover", "spm"}
    high_pass : float
        Cutoff in Hz of the cosine drift (nilearn's default 0.01 Hz = 100 s).

    Returns
    -------
    DataFrame of shape (n_scans, n_nuisance)
        Built by ``nilearn.glm.first_level.make_first_level_design_matrix``: event regressors,
        confounds, cosine drifts and the constant.
    """
    _check_hrf(hrf_model)
    names = None
    if confounds is not None:
        if isinstance(confounds, pd.DataFrame):
            names = [f"confound_{c}" for c in confounds.columns]
            confounds = confounds.to_numpy(dtype=np.float64)
        confounds = np.asarray(confounds, dtype=np.float64)
        if confounds.ndim == 1:
            confounds = confounds[:, None]
        if confounds.shape[1] == 0:
            confounds = None
        elif names is None:
            names = [f"confound_{i}" for i in range(confounds.shape[1])]
    events = None
    if other_events is not None and len(other_events):
        events = pd.DataFrame(
            {
                "onset": other_events["onset"].to_numpy(dtype=np.float64),
                "duration": other_events["duration"].to_numpy(dtype=np.float64),
                "trial_type": [
                    "events_" + re.sub(r"\W", "_", str(t)) for t in other_events["trial_type"]
                ],
            }
        )
    with warnings.catch_warnings():
        # brief events (duration 0) are expected: button presses, flashes
        warnings.filterwarnings("ignore", message=".*null duration", category=UserWarning)
        return make_first_level_design_matrix(
            times,
            events,
            hrf_model=hrf_model,
            drift_model="cosine",
            high_pass=high_pass,
            add_regs=confounds,
            add_reg_names=names,
        )


def lss_weights(
    trial_regressors: np.ndarray,
    nuisance: np.ndarray | pd.DataFrame | None,
    *,
    labels: Sequence[str] | None = None,
    source: str | None = None,
    max_correlation: float = MAX_TRIAL_CORRELATION,
) -> np.ndarray:
    """The LSS estimator of every trial: rows ``w_i`` with ``beta_i = w_i @ y`` (module doc).

    Parameters
    ----------
    trial_regressors : ndarray of shape (n_scans, n_trials)
    nuisance : ndarray or DataFrame of shape (n_scans, n_nuisance), or None
        Regressors shared by every trial's model (drift, constant, confounds); collinear
        columns are fine.
    labels : sequence of str, optional
        How to name each trial in errors (e.g. ``"row 4 (onset 12 s)"``).
    source : str, optional
        What the trials come from (the events file), for errors.
    max_correlation : float
        Two trials whose regressors (after the nuisance is removed) correlate above this
        cannot be estimated separately.

    Returns
    -------
    ndarray of shape (n_trials, n_scans), float64

    Raises
    ------
    DataError
        A trial's model is singular: its regressor vanishes once the nuisance is removed
        (e.g. it starts after the last scan), it is indistinguishable from another trial, or
        it is collinear with the sum of the others.
    """
    T = np.asarray(trial_regressors, dtype=np.float64)
    if T.ndim != 2:
        raise ValueError(f"trial regressors must be 2-D (n_scans, n_trials), got {T.shape}")
    n_scans, n_trials = T.shape
    where = f"{source}: " if source else ""
    names = list(labels) if labels is not None else [f"trial {i}" for i in range(n_trials)]
    if n_trials == 0:
        raise DataError(f"{where}no trial to estimate")

    residual = T
    if nuisance is not None:
        N = np.asarray(nuisance, dtype=np.float64)
        if N.shape[0] != n_scans:
            raise ValueError(f"nuisance has {N.shape[0]} rows, trial regressors {n_scans}")
        if N.size:
            # orthonormal basis of the nuisance space, rank-revealing (confounds may be
            # collinear with the drift)
            U, s, _ = np.linalg.svd(N, full_matrices=False)
            keep = s > s[0] * max(N.shape) * np.finfo(np.float64).eps
            Q = U[:, keep]
            residual = T - Q @ (Q.T @ T)

    energy = np.einsum("ij,ij->j", T, T)
    left = np.einsum("ij,ij->j", residual, residual)
    vanished = left <= _VANISHED * max(float(energy.max()), np.finfo(np.float64).tiny)
    if vanished.any():
        i = int(np.flatnonzero(vanished)[0])
        raise DataError(
            f"{where}{names[i]} has no response within the run's scans once drift and "
            "confounds are removed; it cannot be estimated (drop it from the events)"
        )

    if n_trials > 1:
        norms = np.sqrt(left)
        correlation = (residual.T @ residual) / np.outer(norms, norms)
        np.fill_diagonal(correlation, 0.0)
        close = np.argwhere(np.triu(np.abs(correlation) > max_correlation))
        if len(close):
            i, j = (int(k) for k in close[0])
            raise DataError(
                f"{where}{names[i]} and {names[j]} are too close in time to be estimated "
                f"separately (regressors correlate at {correlation[i, j]:.4f} > "
                f"{max_correlation}); the design is rank deficient"
            )

    if n_trials == 1:
        return residual.T / left[:, None]
    total = residual.sum(axis=1)
    others = total[:, None] - residual  # b for every trial, (n_scans, n_trials)
    aa = left
    ab = np.einsum("ij,ij->j", residual, others)
    bb = np.einsum("ij,ij->j", others, others)
    det = aa * bb - ab**2
    singular = det <= _SINGULAR * aa * bb
    if singular.any():
        i = int(np.flatnonzero(singular)[0])
        raise DataError(
            f"{where}{names[i]} cannot be separated from the other trials (its regressor is "
            "collinear with their sum); the design is rank deficient"
        )
    # w_i = (b'b a - a'b b) / det, with b = total - a
    return ((bb + ab) / det)[:, None] * residual.T - (ab / det)[:, None] * total[None, :]


def _trial_labels(events: pd.DataFrame, rows: np.ndarray) -> list[str]:
    return [
        f"trial on data row {int(r) + 1} (onset {events['onset'].iloc[int(r)]:g} s)" for r in rows
    ]


def _split_events(events: pd.DataFrame, source: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Rows of events that show a stimulus (the trials) and the others (nuisance events)."""
    missing = {"onset", "duration", "stim_id"} - set(events.columns)
    if missing:
        raise DataError(f"{source}: events lack column(s) {', '.join(sorted(missing))}")
    has_stimulus = np.array(
        [not (s is None or (isinstance(s, float) and math.isnan(s))) for s in events["stim_id"]],
        dtype=bool,
    )
    if not has_stimulus.any():
        raise DataError(
            f"{source}: no event names a stimulus; a trial-wise design needs one event per "
            "stimulus presentation"
        )
    onset = events["onset"].to_numpy(dtype=np.float64)
    duration = events["duration"].to_numpy(dtype=np.float64)
    bad = has_stimulus & ~(np.isfinite(onset) & np.isfinite(duration) & (duration >= 0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source}: event on data row {row + 1} has onset {onset[row]!r} and duration "
            f"{duration[row]!r}; trials need finite times, duration >= 0"
        )
    other = events.loc[~has_stimulus & np.isfinite(onset)]
    trial_type = (
        other["trial_type"].astype(str)
        if "trial_type" in other
        else pd.Series("other", other.index)
    )
    others = pd.DataFrame(
        {
            "onset": other["onset"].to_numpy(dtype=np.float64),
            # an event without stimulus may have an n/a duration: a brief event
            "duration": np.nan_to_num(other["duration"].to_numpy(dtype=np.float64), nan=0.0),
            "trial_type": trial_type.to_numpy(),
        }
    )
    return np.flatnonzero(has_stimulus), others


def lss_betas(
    Y: np.ndarray,
    events: pd.DataFrame,
    tr: float,
    *,
    hrf_model: str = "glover",
    confounds: pd.DataFrame | np.ndarray | None = None,
    high_pass: float = 0.01,
    slice_time_ref: float = 0.0,
    max_correlation: float = MAX_TRIAL_CORRELATION,
    n_voxels_chunk: int = _DEFAULT_CHUNK,
    source: str = "events",
) -> TrialBetas:
    """Single-trial betas of one run by least-squares-separate.

    Parameters
    ----------
    Y : ndarray of shape (n_scans, n_voxels)
        The run's data, as it should be modelled (e.g. percent signal change).
    events : DataFrame
        ``onset``, ``duration`` and ``stim_id`` (None/NaN: no stimulus) per event, as from
        :func:`~bids_vem.inputs.events.read_events`. Each event with a stimulus is a trial;
        the others are nuisance regressors, one per ``trial_type`` (or one in all).
    tr : float
        Repetition time in seconds.
    hrf_model : {"glover", "spm"}
    confounds : DataFrame or ndarray of shape (n_scans, n_confounds), optional
    high_pass : float
        Cosine drift cutoff in Hz.
    slice_time_ref : float
        Time of the reference slice as a fraction of the TR (nilearn's ``slice_time_ref``).
    max_correlation : float
        As in :func:`lss_weights`.
    n_voxels_chunk : int
        Voxels per matrix product (bounds the float64 copy of ``Y``).
    source : str
        The events file, for errors.

    Returns
    -------
    TrialBetas
        ``betas`` of shape (n_trials, n_voxels), float32, and ``trials`` with the trials'
        ``stim_id``, ``onset``, ``duration`` and ``events_row`` (row in ``events``).

    Raises
    ------
    DataError
        No event with a stimulus, bad trial times, confounds of the wrong length, or trials
        that cannot be estimated separately (:func:`lss_weights`).
    """
    Y = np.asarray(Y)
    if Y.ndim != 2:
        raise ValueError(f"Y must be 2-D (n_scans, n_voxels), got shape {Y.shape}")
    n_scans = Y.shape[0]
    if confounds is not None and len(confounds) != n_scans:
        raise DataError(f"{source}: confounds have {len(confounds)} rows but the run {n_scans}")
    rows, others = _split_events(events, source)
    times = frame_times(n_scans, tr, slice_time_ref)
    T = trial_regressors(
        events["onset"].to_numpy(dtype=np.float64)[rows],
        events["duration"].to_numpy(dtype=np.float64)[rows],
        times,
        hrf_model,
    )
    nuisance = nuisance_regressors(
        times, confounds, other_events=others, hrf_model=hrf_model, high_pass=high_pass
    )
    W = lss_weights(
        T,
        nuisance,
        labels=_trial_labels(events, rows),
        source=source,
        max_correlation=max_correlation,
    )
    betas = np.empty((len(rows), Y.shape[1]), dtype=np.float32)
    step = max(1, int(n_voxels_chunk))
    for start in range(0, Y.shape[1], step):
        part = slice(start, start + step)
        betas[:, part] = W @ np.asarray(Y[:, part], dtype=np.float64)
    trials = pd.DataFrame(
        {
            "stim_id": events["stim_id"].iloc[rows].astype(object).to_numpy(),
            "onset": events["onset"].to_numpy(dtype=np.float64)[rows],
            "duration": events["duration"].to_numpy(dtype=np.float64)[rows],
            "events_row": rows,
        }
    )
    return TrialBetas(betas, trials, source=source)


def _masked_bold(run: Run, mask: nib.Nifti1Image) -> np.ndarray:
    """The run's BOLD inside ``mask``, (n_scans, n_voxels) float32; non-finite voxels 0.
    Surface BOLD (GIFTI pairs, CIFTI) is read as points inside a points mask."""
    path = Path(run.bold)
    if not path.exists():
        raise InputMissingError(f"{path}: BOLD not found")
    if bold_kind(path) != "volume":
        return np.asarray(surface_signals(path, run.bold_right, mask), dtype=np.float32)
    try:
        img = nib.load(path)
    except Exception as err:  # nibabel raises several types for non-images
        raise InputMissingError(f"{path}: cannot read BOLD ({err})") from err
    if len(img.shape) != 4:
        raise DataError(f"{path}: BOLD must be 4-D, got shape {img.shape}")
    if img.shape[:3] != mask.shape[:3] or not np.allclose(img.affine, mask.affine, atol=1e-3):
        raise DataError(
            f"{path}: BOLD grid {img.shape[:3]} does not match the brain mask {mask.shape[:3]} "
            "(shape or affine)"
        )
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except (OSError, EOFError, ValueError, MemoryError) as err:
        raise InputMissingError(f"{path}: cannot read BOLD voxel data ({err})") from err
    signals = masking.apply_mask(nib.Nifti1Image(data, img.affine), mask)
    signals[:, ~np.isfinite(signals).all(axis=0)] = 0.0
    return np.asarray(signals, dtype=np.float32)


def estimate_trial_betas(
    runs: Sequence[Run],
    *,
    stim_column: str = "stim_file",
    hrf_model: str = "glover",
    confounds: Sequence[str] = (),
    high_pass: float = 0.01,
    slice_time_ref: float | None = None,
    signal_scaling: bool = True,
    mask: Path | nib.Nifti1Image | None = None,
    max_correlation: float = MAX_TRIAL_CORRELATION,
    n_voxels_chunk: int = _DEFAULT_CHUNK,
) -> TrialBetas:
    """Single-trial betas of a participant's runs by LSS, inside the runs' common mask.

    Each run's events are read (:func:`~bids_vem.inputs.events.read_events`), its BOLD masked,
    scaled to percent signal change of its mean (``signal_scaling``, as nilearn's
    ``FirstLevelModel``) and its trials estimated by :func:`lss_betas` with the requested
    confound columns (:func:`~bids_vem.encoding.bold.read_confounds`) in the model.

    Parameters
    ----------
    runs : sequence of Run
    stim_column : str
        Events column naming each trial's stimulus.
    hrf_model : {"glover", "spm"}
    confounds : sequence of str
        Confound columns of each run's confounds file.
    high_pass, max_correlation, n_voxels_chunk
        As in :func:`lss_betas`.
    slice_time_ref : float, optional
        As in :func:`lss_betas`; default: each run's own, from its BOLD sidecar
        (:func:`~bids_vem.inputs.runs.slice_time_reference`: fMRIPrep's ``StartTime`` when
        slice timing was corrected, else 0). Recorded per trial in ``trials``.
    signal_scaling : bool
        Scale each voxel to percent signal change of its mean before the fit.
    mask : Path or Nifti1Image, optional
        Voxels to estimate. Default: the voxels inside every run's brain mask.

    Returns
    -------
    TrialBetas
        All runs' trials in run order; ``trials`` gains ``session`` and ``run`` (the run's
        name, e.g. ``sub-01_ses-1_task-x_run-2``); ``mask`` and ``affine`` are set.

    Raises
    ------
    DataError, InputMissingError
        Bad events, BOLD, masks or confounds; trials that cannot be estimated separately.
    """
    runs = list(runs)
    if not runs:
        raise DataError("no runs to estimate trial responses from")
    _check_hrf(hrf_model)
    mask_img = load_mask(mask) if mask is not None else runs_mask(runs)
    betas, tables = [], []
    for run in runs:
        if confounds and run.confounds is None:
            raise InputMissingError(
                f"{run.name}: confounds {', '.join(confounds)} requested but the run has no "
                "confounds file"
            )
        events = read_events(run.events, stim_column)
        table = read_confounds(run.confounds, confounds) if confounds else None
        Y = _masked_bold(run, mask_img)
        if signal_scaling:
            with warnings.catch_warnings():
                # voxels that are 0 throughout (or were not finite) stay constant: their
                # betas are 0, which is what the warning about a zero mean would say
                warnings.filterwarnings("ignore", message="Mean values of 0", category=UserWarning)
                Y, _ = mean_scaling(Y)
        reference = slice_time_reference(run) if slice_time_ref is None else slice_time_ref
        estimated = lss_betas(
            Y,
            events,
            run.tr,
            hrf_model=hrf_model,
            confounds=None if table is None else pd.DataFrame(table, columns=list(confounds)),
            high_pass=high_pass,
            slice_time_ref=reference,
            max_correlation=max_correlation,
            n_voxels_chunk=n_voxels_chunk,
            source=str(run.events),
        )
        trials = estimated.trials
        trials.insert(1, "session", run.session)
        trials.insert(2, "run", run.name)
        trials["slice_time_ref"] = reference
        betas.append(estimated.betas)
        tables.append(trials)
    return TrialBetas(
        np.concatenate(betas),
        pd.concat(tables, ignore_index=True),
        mask=np.asarray(mask_img.dataobj) > 0,
        affine=np.asarray(mask_img.affine),
        source=", ".join(str(run.events) for run in runs),
    )
