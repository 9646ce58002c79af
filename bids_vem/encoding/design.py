"""Continuous design matrices: stimulus features placed in time, sampled to TRs, FIR delays.

Each event's feature vector is held over ``[onset, onset + duration)`` on a fine time grid
(``tr / oversampling``), averaged within each TR ``[k * tr, (k + 1) * tr)``, z-scored per run,
then stacked at several delays (finite impulse response, Huth/Gallant practice: 1-4 TRs).

Stimuli that carry their own time course (movie frames, story words) come as per-TR features:
:func:`video_timecourse` places each video's frame features at event onset + frame time and
averages them within each TR; :func:`build_run_design_from_timecourse` z-scores and delays any
per-TR time course.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from bids_vem.encoding.resample import average_in_bins, lanczos_resample
from bids_vem.errors import DataError
from bids_vem.features.feature_set import FeatureSet

__all__ = [
    "feature_timecourse",
    "stimulus_occupancy",
    "column_scale",
    "zscore",
    "add_delays",
    "build_run_design",
    "build_run_design_from_timecourse",
    "check_timecourse",
    "video_timecourse",
]

# grid positions closer than this (in grid steps) to a boundary count as on it:
# onsets such as 0.1 s on a 0.2 s grid must not fall one step late through rounding
_GRID_TOLERANCE = 1e-6


def _stimulus_ids(events: pd.DataFrame) -> list[str | None]:
    return [
        None if (s is None or (isinstance(s, float) and math.isnan(s))) else str(s)
        for s in events["stim_id"]
    ]


def feature_timecourse(
    events: pd.DataFrame,
    features: FeatureSet,
    n_volumes: int,
    tr: float,
    oversampling: int = 10,
    *,
    source: str | None = None,
) -> np.ndarray:
    """Place each event's features on a fine time grid and average them within each TR.

    Parameters
    ----------
    events : DataFrame
        Columns ``onset`` and ``duration`` (seconds) and ``stim_id`` (None or NaN: no stimulus).
    features : FeatureSet
        Feature rows indexed by stimulus id.
    n_volumes : int
        Number of TRs of the run.
    tr : float
        Repetition time in seconds.
    oversampling : int
        Grid steps per TR. Events with zero duration last one grid step (``tr / oversampling``).
    source : str, optional
        Name of the events file, used in error messages.

    Returns
    -------
    ndarray of shape (n_volumes, n_features), float64
        Row ``k`` is the mean over the grid points of ``[k * tr, (k + 1) * tr)`` of the features
        presented at that time; overlapping events add up, parts of events after the end of
        the run (or before 0 s) are dropped.

    Raises
    ------
    DataError
        A stimulus id is not in ``features``, or onsets/durations are not finite and
        non-negative.
    """
    where = f"{source}: " if source else ""
    missing = {"onset", "duration", "stim_id"} - set(events.columns)
    if missing:
        raise DataError(f"{where}events lack column(s) {', '.join(sorted(missing))}")
    if n_volumes < 1 or tr <= 0 or oversampling < 1:
        raise DataError(f"{where}need n_volumes >= 1, tr > 0, oversampling >= 1")
    stim_ids = _stimulus_ids(events)
    keep = [i for i, s in enumerate(stim_ids) if s is not None]
    out = np.zeros((n_volumes, features.n_features))
    if not keep:
        return out

    known = set(features.stim_ids)
    absent = sorted({stim_ids[i] for i in keep} - known)
    if absent:
        shown = ", ".join(absent[:5]) + (", ..." if len(absent) > 5 else "")
        raise DataError(
            f"{where}{len(absent)} stimulus id(s) not in feature space {features.name!r}: {shown}"
        )

    onset = events["onset"].to_numpy(dtype=float)[keep]
    duration = events["duration"].to_numpy(dtype=float)[keep]
    bad = ~np.isfinite(onset) | ~np.isfinite(duration) | (duration < 0)
    if bad.any():
        row = keep[int(np.flatnonzero(bad)[0])]
        raise DataError(
            f"{where}event {row} has onset {events['onset'].iloc[row]!r} and duration "
            f"{events['duration'].iloc[row]!r}; expected finite numbers, duration >= 0"
        )

    occupancy = _occupancy(onset, duration, n_volumes, tr, oversampling)
    if occupancy.nnz == 0:
        return out
    event_features = features.rows([stim_ids[i] for i in keep]).astype(np.float64)
    out[:] = occupancy @ event_features
    return out


def _occupancy(
    onset: np.ndarray, duration: np.ndarray, n_volumes: int, tr: float, oversampling: int
) -> sparse.csr_matrix:
    """(n_volumes, n_events) weights: the fraction of each TR's grid points an event covers."""
    # grid point j covers [j * step, (j + 1) * step); an event covers points start..stop-1
    step = tr / oversampling
    n_grid = n_volumes * oversampling
    start = np.ceil(onset / step - _GRID_TOLERANCE).astype(np.int64)
    stop = np.ceil((onset + duration) / step - _GRID_TOLERANCE).astype(np.int64)
    stop = np.maximum(stop, start + 1)  # zero (or sub-step) duration: one grid step
    start = np.clip(start, 0, n_grid)
    stop = np.clip(stop, 0, n_grid)
    rows, cols, weights = [], [], []
    for event, (first, last) in enumerate(zip(start, stop, strict=True)):
        if last <= first:
            continue
        for volume in range(first // oversampling, (last - 1) // oversampling + 1):
            lo = max(first, volume * oversampling)
            hi = min(last, (volume + 1) * oversampling)
            rows.append(volume)
            cols.append(event)
            weights.append((hi - lo) / oversampling)
    return sparse.coo_matrix((weights, (rows, cols)), shape=(n_volumes, len(onset))).tocsr()


def stimulus_occupancy(
    events: pd.DataFrame,
    stim_ids: Sequence[str],
    n_volumes: int,
    tr: float,
    oversampling: int = 10,
) -> sparse.csr_matrix:
    """(n_volumes, len(stim_ids)) weights: how much of each TR each stimulus fills, as
    :func:`feature_timecourse` places it (its time course is ``occupancy @ features``).

    Events whose stimulus is not in ``stim_ids`` (or is missing) are left out.
    """
    column = {s: i for i, s in enumerate(stim_ids)}
    ids = _stimulus_ids(events)
    keep = [i for i, s in enumerate(ids) if s is not None and s in column]
    onset = events["onset"].to_numpy(dtype=float)[keep]
    duration = events["duration"].to_numpy(dtype=float)[keep]
    per_event = _occupancy(onset, duration, n_volumes, tr, oversampling)
    which = sparse.csr_matrix(
        (np.ones(len(keep)), (np.arange(len(keep)), [column[ids[i]] for i in keep])),
        shape=(len(keep), len(stim_ids)),
    )
    return (per_event @ which).tocsr()


def column_scale(x: np.ndarray, axis: int = 0, *, keepdims: bool = False) -> np.ndarray:
    """The standard deviation (ddof 0) that :func:`zscore` divides by along ``axis``;
    ``inf`` for constant columns (which :func:`zscore` makes 0).

    A part of a design divided by it (the held-out stimuli alone) is on the full design's scale.
    """
    x64 = np.asarray(x, dtype=np.float64)
    centred = x64 - x64.mean(axis=axis, keepdims=True)
    std = np.sqrt((centred**2).mean(axis=axis, keepdims=True))
    # relative threshold: a column constant up to rounding is constant
    scale = np.abs(x64).max(axis=axis, keepdims=True) if x64.size else 0.0
    std = np.where(std <= 1e-12 * np.maximum(scale, 1e-300), np.inf, std)
    return std if keepdims else std.squeeze(axis)


def zscore(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Centre and scale to unit standard deviation (ddof 0) along ``axis``.

    Constant columns become 0, not NaN. Floating inputs keep their dtype; others become float64.
    """
    x = np.asarray(x)
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    x64 = x.astype(np.float64, copy=False)
    centred = x64 - x64.mean(axis=axis, keepdims=True)
    out = centred / column_scale(x64, axis, keepdims=True) + 0.0  # + 0.0: no -0.0
    return out.astype(dtype, copy=False)


def add_delays(X: np.ndarray, delays: Sequence[int]) -> np.ndarray:
    """Stack copies of ``X`` shifted in time (FIR model).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    delays : sequence of int
        Shifts in samples (TRs). A delay ``d > 0`` moves the signal ``d`` rows down (the
        response at time ``t`` sees the stimulus at ``t - d``); ``d < 0`` moves it up.
        Rows shifted in are zeros.

    Returns
    -------
    ndarray of shape (n_samples, n_features * len(delays))
        Column block ``i`` is ``X`` shifted by ``delays[i]``.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    delays = [int(d) for d in delays]
    if not delays:
        raise ValueError("at least one delay is needed")
    n_samples, n_features = X.shape
    out = np.zeros((n_samples, n_features * len(delays)), dtype=X.dtype)
    for i, d in enumerate(delays):
        block = out[:, i * n_features : (i + 1) * n_features]
        if abs(d) >= n_samples:
            continue
        if d >= 0:
            block[d:] = X[: n_samples - d]
        else:
            block[:d] = X[-d:]
    return out


def build_run_design(
    events: pd.DataFrame,
    features: FeatureSet,
    n_volumes: int,
    tr: float,
    delays: Sequence[int],
    *,
    oversampling: int = 10,
    source: str | None = None,
) -> np.ndarray:
    """Design matrix of one run: feature time course, z-scored within the run, FIR delays.

    Parameters
    ----------
    events, features, n_volumes, tr, oversampling, source
        As in :func:`feature_timecourse`.
    delays : sequence of int
        FIR delays in TRs, as in :func:`add_delays`.

    Returns
    -------
    ndarray of shape (n_volumes, n_features * len(delays)), float32
    """
    timecourse = feature_timecourse(
        events, features, n_volumes, tr, oversampling=oversampling, source=source
    )
    return add_delays(zscore(timecourse, axis=0), delays).astype(np.float32)


def build_run_design_from_timecourse(
    timecourse: np.ndarray, delays: Sequence[int], *, source: str | None = None
) -> np.ndarray:
    """Design matrix of one run from per-TR features: z-scored within the run, FIR delays.

    Parameters
    ----------
    timecourse : ndarray of shape (n_volumes, n_features)
        Features of each TR (e.g. from :func:`video_timecourse` or a story's Lanczos resampling).
    delays : sequence of int
        FIR delays in TRs, as in :func:`add_delays`.
    source : str, optional
        Name of what the time course comes from, used in error messages.

    Returns
    -------
    ndarray of shape (n_volumes, n_features * len(delays)), float32

    Raises
    ------
    DataError
        The time course is not 2-D or holds NaN or infinite values.
    """
    timecourse = check_timecourse(timecourse, source=source)
    return add_delays(zscore(timecourse, axis=0), delays).astype(np.float32)


def check_timecourse(timecourse: np.ndarray, *, source: str | None = None) -> np.ndarray:
    """``timecourse`` as an array, once known to be 2-D and finite.

    Raises
    ------
    DataError
        The time course is not 2-D or holds NaN or infinite values (``source`` names it).
    """
    where = f"{source}: " if source else ""
    timecourse = np.asarray(timecourse)
    if timecourse.ndim != 2:
        raise DataError(
            f"{where}per-TR features must be 2-D (n_volumes, n_features), "
            f"got shape {timecourse.shape}"
        )
    if not np.all(np.isfinite(timecourse)):
        row = int(np.flatnonzero(~np.isfinite(timecourse).all(axis=1))[0])
        raise DataError(f"{where}per-TR features hold NaN or infinite values (first at TR {row})")
    return timecourse


def video_timecourse(
    events: pd.DataFrame,
    frame_features: Mapping[str, tuple[np.ndarray, np.ndarray]],
    n_volumes: int,
    tr: float,
    *,
    source: str | None = None,
    resample: str = "average",
) -> np.ndarray:
    """Per-TR features of the videos a run shows: frame features averaged within each TR.

    The same placement serves any timed samples of a stimulus: with ``resample="lanczos"``
    the samples (words of a story, at their onsets) are Lanczos-interpolated at the TR
    centres instead of averaged (Huth lab practice for word features).

    Each frame of an event's video is placed at ``onset + frame timestamp``; frames at or after
    ``onset + duration`` were not shown and are dropped (a duration of 0 keeps the whole
    video). All frames that fall in a TR ``[k * tr, (k + 1) * tr)`` are averaged, across
    events too (Tang et al. 2023: 15-fps frame features averaged per 2-s TR).

    Parameters
    ----------
    events : DataFrame
        Columns ``onset`` and ``duration`` (seconds) and ``stim_id`` (None or NaN: no stimulus).
    frame_features : mapping of str to (ndarray, ndarray)
        For each video's stimulus id, its frame features of shape (n_frames, n_features) and the
        frame timestamps of shape (n_frames,) in seconds from the start of the video (as
        returned by ``bids_vem.features.video.video_features``).
    n_volumes : int
        Number of TRs of the run.
    tr : float
        Repetition time in seconds.
    source : str, optional
        Name of the events file, used in error messages.
    resample : {"average", "lanczos"}
        How samples become TRs: :func:`~bids_vem.encoding.resample.average_in_bins` or
        :func:`~bids_vem.encoding.resample.lanczos_resample`.

    Returns
    -------
    ndarray of shape (n_volumes, n_features), float64
        TRs in which no frame is shown are 0 (and all rows when no event shows a video; the
        width is then that of any entry of ``frame_features``).

    Raises
    ------
    DataError
        A stimulus id has no frame features, the videos disagree on the number of features,
        or onsets/durations are not finite and non-negative.
    """
    where = f"{source}: " if source else ""
    missing = {"onset", "duration", "stim_id"} - set(events.columns)
    if missing:
        raise DataError(f"{where}events lack column(s) {', '.join(sorted(missing))}")
    if n_volumes < 1 or tr <= 0:
        raise DataError(f"{where}need n_volumes >= 1 and tr > 0")
    stim_ids = _stimulus_ids(events)
    keep = [i for i, s in enumerate(stim_ids) if s is not None]
    absent = sorted({stim_ids[i] for i in keep} - set(frame_features))
    if absent:
        shown = ", ".join(absent[:5]) + (", ..." if len(absent) > 5 else "")
        raise DataError(f"{where}{len(absent)} video(s) without frame features: {shown}")
    widths = {np.asarray(frame_features[stim_ids[i]][0]).shape[1] for i in keep}
    if len(widths) > 1:
        raise DataError(
            f"{where}frame features of the videos differ in width: {sorted(widths)} features"
        )

    times, values = [], []
    for i in keep:
        onset, duration = events["onset"].iloc[i], events["duration"].iloc[i]
        if not (np.isfinite(onset) and np.isfinite(duration) and duration >= 0):
            raise DataError(
                f"{where}event {i} has onset {onset!r} and duration {duration!r}; "
                "expected finite numbers, duration >= 0"
            )
        features, stamps = frame_features[stim_ids[i]]
        features, stamps = np.asarray(features), np.asarray(stamps, dtype=np.float64)
        if features.ndim != 2 or stamps.shape != (features.shape[0],):
            raise DataError(
                f"{where}frame features of {stim_ids[i]!r} have shape {features.shape} "
                f"but {stamps.shape} timestamps"
            )
        shown = stamps < duration if duration > 0 else np.ones(len(stamps), dtype=bool)
        times.append(float(onset) + stamps[shown])
        values.append(features[shown])
    if not keep:
        # no video in this run: zeros as wide as the features of any video
        width = next((np.asarray(f).shape[1] for f, _ in frame_features.values()), 0)
        return np.zeros((n_volumes, width))
    if resample == "lanczos":
        return lanczos_resample(np.concatenate(times), np.concatenate(values), n_volumes, tr)
    if resample != "average":
        raise ValueError(f"resample must be 'average' or 'lanczos', got {resample!r}")
    return average_in_bins(np.concatenate(times), np.concatenate(values), n_volumes, tr)
