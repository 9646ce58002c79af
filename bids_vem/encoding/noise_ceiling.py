"""Noise ceilings: how much of the test data's variance any model could explain.

- **Trial-wise** (NSD, Allen et al. 2022): from the single-trial responses of the stimuli shown
  more than once, z-scored per session, the noise variance is the mean over those stimuli of
  the variance across their trials; the signal variance is what is left of the total (1 after
  z-scoring), floored at 0; ``ncsnr = sqrt(signal / noise)``. A test response averaged over
  ``n`` trials keeps noise variance ``1 / n`` of a trial's, so the explainable fraction of the
  test data's variance is ``ncsnr^2 / (ncsnr^2 + k)`` with ``k`` the mean of ``1 / n`` over
  the test stimuli (Algonauts 2023: ``(A/3 + B/2 + C) / (A + B + C)`` for stimuli seen 3, 2
  and 1 times).
- **Repeated continuous test runs** (Hsu et al. 2004; Schoppe et al. 2016): with ``N``
  repeats ``y_i`` of a test run, the signal power is
  ``SP = (Var(sum_i y_i) - sum_i Var(y_i)) / (N (N - 1))`` and the explainable fraction of the
  averaged response's variance is ``CCmax^2 = SP / Var(mean_i y_i)``; accumulated in
  :class:`~bids_vem.encoding.evaluation.HeldOutScores`.

Both are written as ``stat-nc`` (a fraction of variance, 0-1, comparable with r^2); the
noise-normalised score is ``r / sqrt(nc)`` (``stat-rnorm``, Schoppe's CCnorm).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ncsnr", "trial_noise_ceiling"]


def ncsnr(responses: np.ndarray, stim_ids: Sequence[str]) -> np.ndarray | None:
    """Noise-ceiling signal-to-noise ratio per voxel from repeated single trials.

    Parameters
    ----------
    responses : ndarray of shape (n_trials, n_voxels)
        Single-trial responses, z-scored per session.
    stim_ids : sequence of str
        The stimulus of each trial.

    Returns
    -------
    ndarray of shape (n_voxels,), or None when no stimulus is shown twice.
    """
    stim_ids = np.asarray([str(s) for s in stim_ids])
    unique, which, counts = np.unique(stim_ids, return_inverse=True, return_counts=True)
    repeated = counts[which] > 1
    if not repeated.any():
        return None
    Y = np.asarray(responses, dtype=np.float64)[repeated]
    groups = which[repeated]
    n = np.bincount(groups, minlength=len(unique)).astype(np.float64)
    sums = np.zeros((len(unique), Y.shape[1]))
    np.add.at(sums, groups, Y)
    means = sums / np.maximum(n, 1)[:, None]
    squares = np.zeros_like(sums)
    np.add.at(squares, groups, (Y - means[groups]) ** 2)
    kept = n > 1
    noise_var = (squares[kept] / (n[kept, None] - 1)).mean(axis=0)
    total_var = np.asarray(responses, dtype=np.float64).var(axis=0, ddof=1)
    signal_var = np.maximum(total_var - noise_var, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(
            noise_var > 0, np.sqrt(signal_var / np.where(noise_var > 0, noise_var, 1)), 0.0
        )
    return out


def trial_noise_ceiling(snr: np.ndarray, trials_per_test_response: Sequence[float]) -> np.ndarray:
    """Explainable fraction of the test responses' variance: ``ncsnr^2 / (ncsnr^2 + k)``.

    Parameters
    ----------
    snr : ndarray of shape (n_voxels,)
        From :func:`ncsnr`.
    trials_per_test_response : sequence of float
        Trials averaged into each test response (``k`` is the mean of their inverses).
    """
    counts = np.asarray(trials_per_test_response, dtype=np.float64)
    k = float(np.mean(1.0 / counts[counts > 0])) if (counts > 0).any() else 1.0
    s2 = np.asarray(snr, dtype=np.float64) ** 2
    return s2 / (s2 + k)
