"""BOLD time courses of the demo: stimulus features through an HRF, plus confounds, drift and noise.

Everything here is in percent signal change; :func:`assemble_bold` turns it into scanner-like
intensities around a baseline of about 1000.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bids_vem.demo.events import RunEvents
from bids_vem.demo.truth import StimulusFeatures, SubjectTruth

__all__ = [
    "ConfoundSignals",
    "hrf_regressors",
    "simulate_confounds",
    "framewise_displacement",
    "ar1_noise",
    "cosine_drift",
    "assemble_bold",
    "SimulatedRun",
    "simulate_run",
]


def _single_event_peak(duration: float, hrf_model: str) -> float:
    """Peak of the response to one event of unit amplitude (to express weights as peak % change)."""
    from nilearn.glm.first_level import compute_regressor

    frame_times = np.arange(0.0, 40.0, 0.1)
    response, _ = compute_regressor(
        np.array([[0.0], [duration], [1.0]]), hrf_model, frame_times, oversampling=10
    )
    return float(response.max())


def hrf_regressors(
    events: RunEvents, features: np.ndarray, *, hrf_model: str = "spm"
) -> np.ndarray:
    """HRF-convolved stimulus features of one run.

    Each feature becomes a regressor whose events (boxcars over each image's presentation)
    have the amplitude of that feature for the image shown, convolved with the HRF
    (``nilearn.glm.first_level.compute_regressor``) and scaled so that one event of unit
    amplitude peaks at 1.

    Parameters
    ----------
    events : RunEvents
    features : ndarray of shape (n_stimuli, n_features)
    hrf_model : str
        A nilearn HRF model (``"spm"``, ``"glover"``).

    Returns
    -------
    ndarray of shape (n_volumes, n_features)
    """
    from nilearn.glm.first_level import compute_regressor

    features = np.asarray(features, dtype=np.float64)
    peak = _single_event_peak(float(np.median(events.durations)), hrf_model)
    out = np.empty((events.n_volumes, features.shape[1]))
    for j in range(features.shape[1]):
        condition = np.vstack([events.onsets, events.durations, features[events.stim_index, j]])
        regressor, _ = compute_regressor(condition, hrf_model, events.frame_times)
        out[:, j] = regressor[:, 0] / peak
    return out


@dataclass(frozen=True)
class ConfoundSignals:
    """Nuisance time courses of one run.

    Attributes
    ----------
    motion : ndarray of shape (n_volumes, 6)
        trans_x, trans_y, trans_z (mm), rot_x, rot_y, rot_z (radians), relative to volume 0.
    csf, white_matter : ndarray of shape (n_volumes,)
        Physiological fluctuations, unit variance.
    """

    motion: np.ndarray
    csf: np.ndarray
    white_matter: np.ndarray


def ar1_noise(n_volumes: int, n_series: int, rho: float, rng: np.random.Generator) -> np.ndarray:
    """Stationary AR(1) noise with unit variance, shape (n_volumes, n_series)."""
    innovations = rng.standard_normal((n_volumes, n_series))
    out = np.empty_like(innovations)
    out[0] = innovations[0]
    scale = np.sqrt(1.0 - rho**2)
    for t in range(1, n_volumes):
        out[t] = rho * out[t - 1] + scale * innovations[t]
    return out


def simulate_confounds(n_volumes: int, rng: np.random.Generator) -> ConfoundSignals:
    """Head motion (random walk with a few jumps) and physiological noise of one run.

    Parameters
    ----------
    n_volumes : int
    rng : numpy.random.Generator

    Returns
    -------
    ConfoundSignals
    """
    steps = rng.standard_normal((n_volumes, 6)) * np.array([0.02] * 3 + [0.0004] * 3)
    # a few sudden movements, as subjects do
    for t in rng.choice(np.arange(5, n_volumes), size=min(2, max(n_volumes - 5, 0)), replace=False):
        steps[t] += rng.standard_normal(6) * np.array([0.25] * 3 + [0.004] * 3)
    motion = np.cumsum(steps, axis=0)
    motion -= motion[0]
    physiology = ar1_noise(n_volumes, 2, 0.7, rng)
    return ConfoundSignals(motion=motion, csf=physiology[:, 0], white_matter=physiology[:, 1])


def framewise_displacement(motion: np.ndarray, radius: float = 50.0) -> np.ndarray:
    """Power et al. (2012) framewise displacement, as fMRIPrep reports it.

    Parameters
    ----------
    motion : ndarray of shape (n_volumes, 6)
        Translations (mm) then rotations (radians).
    radius : float
        Head radius (mm) that turns rotations into displacements.

    Returns
    -------
    ndarray of shape (n_volumes,)
        NaN for the first volume.
    """
    diff = np.abs(np.diff(motion, axis=0))
    fd = diff[:, :3].sum(axis=1) + radius * diff[:, 3:].sum(axis=1)
    return np.concatenate([[np.nan], fd])


def cosine_drift(n_volumes: int, tr: float, high_pass: float = 1.0 / 128) -> np.ndarray:
    """Discrete-cosine drift basis below ``high_pass`` Hz (SPM / nilearn), without the constant.

    Returns
    -------
    ndarray of shape (n_volumes, n_regressors)
    """
    n_regressors = max(int(np.floor(2 * n_volumes * tr * high_pass)), 1)
    t = np.arange(n_volumes)
    return np.column_stack(
        [np.cos(np.pi * k * (2 * t + 1) / (2 * n_volumes)) for k in range(1, n_regressors + 1)]
    )


def assemble_bold(
    signal: np.ndarray,
    nuisance: np.ndarray,
    noise: np.ndarray,
    baseline: np.ndarray,
) -> np.ndarray:
    """Scanner-like intensities from percent-signal-change parts.

    Parameters
    ----------
    signal, nuisance, noise : ndarray of shape (n_volumes, n_voxels)
        Stimulus-driven signal, confound and drift signal, noise (percent signal change).
    baseline : ndarray of shape (n_voxels,)
        Mean intensity of each voxel.

    Returns
    -------
    ndarray of shape (n_volumes, n_voxels), float32
    """
    return (baseline * (1.0 + 0.01 * (signal + nuisance + noise))).astype(np.float32)


@dataclass(frozen=True)
class SimulatedRun:
    """One simulated run of one subject.

    Attributes
    ----------
    events : RunEvents
    semantic_regressors : ndarray of shape (n_volumes, n_semantic)
    lowlevel_regressors : ndarray of shape (n_volumes, n_lowlevel)
        The true features convolved with the HRF (:func:`hrf_regressors`).
    noise_free : ndarray of shape (n_volumes, n_voxels)
        Stimulus-driven signal, percent signal change.
    bold : ndarray of shape (n_volumes, n_voxels), float32
        Intensities: signal + confounds + drift + noise around each voxel's baseline.
    confounds : dict of str to ndarray of shape (n_volumes,)
        fMRIPrep-named confound columns.
    """

    events: RunEvents
    semantic_regressors: np.ndarray
    lowlevel_regressors: np.ndarray
    noise_free: np.ndarray
    bold: np.ndarray
    confounds: dict[str, np.ndarray]


def simulate_run(
    events: RunEvents,
    features: StimulusFeatures,
    truth: SubjectTruth,
    rng: np.random.Generator,
    *,
    hrf_model: str = "spm",
    noise_ar: float = 0.35,
    drift_scale: float = 0.6,
) -> SimulatedRun:
    """Simulate the BOLD of every in-mask voxel for one run.

    Parameters
    ----------
    events : RunEvents
    features : StimulusFeatures
    truth : SubjectTruth
    rng : numpy.random.Generator
    hrf_model : str
        nilearn HRF model.
    noise_ar : float
        AR(1) coefficient of the noise.
    drift_scale : float
        Size (percent) of the slowest drift component; faster ones get smaller.

    Returns
    -------
    SimulatedRun
    """
    n_volumes, n_voxels = events.n_volumes, len(truth.voxel_class)
    x_sem = hrf_regressors(events, features.semantic, hrf_model=hrf_model)
    x_low = hrf_regressors(events, features.lowlevel, hrf_model=hrf_model)
    noise_free = x_sem @ truth.semantic_weights.T + x_low @ truth.lowlevel_weights.T
    nuisance_signals = simulate_confounds(n_volumes, rng)
    drift_basis = cosine_drift(n_volumes, events.tr)
    n_drift = drift_basis.shape[1]
    drift_weights = rng.standard_normal((n_drift, n_voxels)) * (
        drift_scale / np.arange(1, n_drift + 1)[:, None]
    )
    nuisance = (
        nuisance_signals.motion @ truth.motion_loadings.T
        + np.outer(nuisance_signals.csf, truth.csf_loadings)
        + np.outer(nuisance_signals.white_matter, truth.white_matter_loadings)
        + drift_basis @ drift_weights
    )
    noise = ar1_noise(n_volumes, n_voxels, noise_ar, rng) * truth.noise_std
    data = assemble_bold(noise_free, nuisance, noise, truth.baseline)
    # fMRIPrep's csf / white_matter columns are mean intensities in tissue masks: the
    # physiological signal seen through some measurement noise
    measured = rng.standard_normal((n_volumes, 2)) * 0.1
    motion = nuisance_signals.motion
    confounds = {
        "global_signal": data.astype(np.float64).mean(axis=1),
        "csf": 1400.0 * (1 + 0.01 * (nuisance_signals.csf + measured[:, 0])),
        "white_matter": 900.0 * (1 + 0.01 * (nuisance_signals.white_matter + measured[:, 1])),
        "trans_x": motion[:, 0],
        "trans_y": motion[:, 1],
        "trans_z": motion[:, 2],
        "rot_x": motion[:, 3],
        "rot_y": motion[:, 4],
        "rot_z": motion[:, 5],
        "framewise_displacement": framewise_displacement(motion),
    }
    return SimulatedRun(events, x_sem, x_low, noise_free, data, confounds)
