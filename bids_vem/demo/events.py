"""Event timing of the demo runs: which image is shown when."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RunEvents", "schedule_runs"]


@dataclass(frozen=True)
class RunEvents:
    """The trials of one run.

    Attributes
    ----------
    onsets, durations : ndarray of shape (n_trials,)
        Seconds from the first volume.
    stim_index : ndarray of shape (n_trials,), int
        Row of the stimulus shown, in the demo's stimulus order.
    n_volumes : int
    tr : float
        Repetition time in seconds.
    """

    onsets: np.ndarray
    durations: np.ndarray
    stim_index: np.ndarray
    n_volumes: int
    tr: float

    @property
    def frame_times(self) -> np.ndarray:
        """Acquisition time of each volume, shape (n_volumes,) (nilearn's convention: 0, TR, ...)."""
        return np.arange(self.n_volumes) * self.tr


def schedule_runs(
    n_stimuli: int,
    n_runs: int,
    n_trials: int,
    rng: np.random.Generator,
    *,
    tr: float = 2.0,
    duration: float = 3.0,
    isis: tuple[float, ...] = (2.0, 3.0, 4.0, 5.0, 6.0),
    lead_in: float = 6.0,
    tail: float = 14.0,
) -> list[RunEvents]:
    """Place the stimuli in runs: every image once before any image twice, jittered gaps.

    The stimulus order is a concatenation of random permutations of all stimuli cut into
    runs, so images repeat across runs. The inter-stimulus intervals are a shuffled,
    balanced set of ``isis`` values: every run has the same length.

    Parameters
    ----------
    n_stimuli, n_runs, n_trials : int
        Trials per run ``n_trials``.
    rng : numpy.random.Generator
    tr, duration : float
        Repetition time and image duration in seconds.
    isis : tuple of float
        Gaps between an image's offset and the next onset, in seconds, used in turn.
    lead_in, tail : float
        Seconds before the first onset and after the last offset.

    Returns
    -------
    list of RunEvents
        ``n_runs`` runs of ``n_trials`` trials and equal ``n_volumes``.
    """
    if min(n_stimuli, n_runs, n_trials) < 1:
        raise ValueError("n_stimuli, n_runs and n_trials must be at least 1")
    total = n_runs * n_trials
    n_permutations = -(-total // n_stimuli)
    order = np.concatenate([rng.permutation(n_stimuli) for _ in range(n_permutations)])[:total]
    gaps = np.resize(np.asarray(isis, dtype=float), n_trials - 1)
    run_length = lead_in + n_trials * duration + gaps.sum() + tail
    n_volumes = int(np.ceil(run_length / tr))
    runs = []
    for run in range(n_runs):
        jittered = rng.permutation(gaps)
        onsets = lead_in + np.concatenate([[0.0], np.cumsum(duration + jittered)])
        runs.append(
            RunEvents(
                onsets=onsets,
                durations=np.full(n_trials, duration),
                stim_index=order[run * n_trials : (run + 1) * n_trials].astype(np.int64),
                n_volumes=n_volumes,
                tr=tr,
            )
        )
    return runs
