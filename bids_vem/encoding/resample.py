"""Irregularly timed samples (video frames, words) to one value per TR.

Two ways, as in the papers bids_vem follows:

- :func:`average_in_bins`: the mean of the samples that fall in each TR ``[k * tr, (k + 1) * tr)``
  (movie frames at 15 fps averaged per TR, Tang et al. 2023).
- :func:`lanczos_resample`: Lanczos interpolation at the TR rate, the Huth lab's
  ``interpdata.lanczosinterp2D`` written from its formula (word features of stories).

Times are seconds from the start of the run; volume ``k`` is acquired over
``[onset + k * tr, onset + (k + 1) * tr)``, its centre at ``onset + (k + 0.5) * tr``.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

__all__ = ["average_in_bins", "lanczos_kernel", "lanczos_resample"]

# times closer than this (in TRs) to a TR boundary count as on it: a frame at
# 10.1 + 1.9 s must fall in the TR that starts at 12 s, not one before it through rounding
_BIN_TOLERANCE = 1e-6


def _check_samples(
    times: np.ndarray, values: np.ndarray, n_volumes: int, tr: float
) -> tuple[np.ndarray, np.ndarray]:
    times = np.asarray(times, dtype=np.float64)
    values = np.asarray(values)
    if times.ndim != 1:
        raise ValueError(f"times must be 1-D (n_samples,), got shape {times.shape}")
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] != times.shape[0]:
        raise ValueError(
            f"values must have shape (n_samples, n_features) with n_samples = {times.shape[0]}, "
            f"got shape {values.shape}"
        )
    if not np.all(np.isfinite(times)):
        raise ValueError("times must be finite")
    if int(n_volumes) < 1 or not tr > 0:
        raise ValueError(f"need n_volumes >= 1 and tr > 0, got {n_volumes} and {tr}")
    return times, values.astype(np.float64, copy=False)


def average_in_bins(
    times: np.ndarray,
    values: np.ndarray,
    n_volumes: int,
    tr: float,
    onset: float = 0.0,
) -> np.ndarray:
    """Mean of the samples within each TR.

    Parameters
    ----------
    times : ndarray of shape (n_samples,)
        Time of each sample in seconds (any order).
    values : ndarray of shape (n_samples, n_features) or (n_samples,)
    n_volumes : int
        Number of TRs of the run.
    tr : float
        Repetition time in seconds.
    onset : float
        Start time of volume 0 in seconds.

    Returns
    -------
    ndarray of shape (n_volumes, n_features), float64
        Row ``k`` is the mean of the samples with ``onset + k * tr <= time < onset + (k + 1) * tr``;
        TRs without samples are 0. Samples before volume 0 or after the last volume are dropped.
    """
    times, values = _check_samples(times, values, n_volumes, tr)
    n_volumes = int(n_volumes)
    out = np.zeros((n_volumes, values.shape[1]))
    volume = np.floor((times - onset) / tr + _BIN_TOLERANCE).astype(np.int64)
    inside = (volume >= 0) & (volume < n_volumes)
    if not inside.any():
        return out
    volume = volume[inside]
    counts = np.bincount(volume, minlength=n_volumes)
    # sparse (n_volumes, n_samples) sums: one pass over the samples whatever n_features is
    summing = sparse.csr_matrix(
        (np.ones(len(volume)), (volume, np.arange(len(volume)))),
        shape=(n_volumes, len(volume)),
    )
    sums = summing @ values[inside]
    filled = counts > 0
    out[filled] = sums[filled] / counts[filled, None]
    return out


def lanczos_kernel(x: np.ndarray, window: int = 3) -> np.ndarray:
    """Lanczos kernel ``sinc(x) * sinc(x / window)`` for ``|x| <= window``, else 0.

    Equal to ``window * sin(pi x) * sin(pi x / window) / (pi x)**2`` with value 1 at ``x = 0``
    (the Huth lab's ``lanczosfun``); ``x`` is time multiplied by the cutoff frequency.
    """
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.abs(x) <= window, np.sinc(x) * np.sinc(x / window), 0.0)


def lanczos_resample(
    times: np.ndarray,
    values: np.ndarray,
    n_volumes: int,
    tr: float,
    window: int = 3,
    cutoff_mult: float = 1.0,
    onset: float = 0.0,
) -> np.ndarray:
    """Lanczos interpolation of irregular samples at the centre of each TR.

    Output row ``k`` is ``sum_i L((t_k - times[i]) * cutoff) * values[i]`` with
    ``t_k = onset + (k + 0.5) * tr``, ``cutoff = cutoff_mult / tr`` and ``L`` the Lanczos kernel of
    ``window`` lobes (:func:`lanczos_kernel`), as the Huth lab's ``lanczosinterp2D``. The kernel
    ``sinc(t / tr)`` passes frequencies below the Nyquist of the TR grid (``1 / (2 tr)``) and
    removes those above it. The kernel is not normalised (as in the Huth lab code): the output is
    a weighted sum, so it scales with the number of samples per second (e.g. words per TR); the
    per-run z-scoring of the design removes that scale.

    Parameters
    ----------
    times : ndarray of shape (n_samples,)
        Time of each sample in seconds (e.g. word onsets or midpoints), any order.
    values : ndarray of shape (n_samples, n_features) or (n_samples,)
    n_volumes : int
        Number of TRs of the run.
    tr : float
        Repetition time in seconds.
    window : int
        Number of lobes of the sinc kernel on each side (3: the Huth lab default).
    cutoff_mult : float
        Multiplies the cutoff frequency ``1 / tr``.
    onset : float
        Start time of volume 0 in seconds.

    Returns
    -------
    ndarray of shape (n_volumes, n_features), float64
    """
    times, values = _check_samples(times, values, n_volumes, tr)
    if int(window) < 1 or not cutoff_mult > 0:
        raise ValueError(f"need window >= 1 and cutoff_mult > 0, got {window} and {cutoff_mult}")
    n_volumes, window = int(n_volumes), int(window)
    cutoff = cutoff_mult / tr
    centres = onset + (np.arange(n_volumes) + 0.5) * tr
    order = np.argsort(times, kind="stable")
    sorted_times = times[order]
    # the kernel is zero beyond window / cutoff seconds: each TR sees a slice of the samples
    reach = window / cutoff
    first = np.searchsorted(sorted_times, centres - reach, side="left")
    last = np.searchsorted(sorted_times, centres + reach, side="right")
    counts = last - first
    rows = np.repeat(np.arange(n_volumes), counts)
    cols = np.concatenate([np.arange(a, b) for a, b in zip(first, last, strict=True)] or [[]])
    cols = cols.astype(np.int64)
    weights = lanczos_kernel((centres[rows] - sorted_times[cols]) * cutoff, window)
    interpolation = sparse.csr_matrix((weights, (rows, order[cols])), shape=(n_volumes, len(times)))
    return np.asarray(interpolation @ values)
