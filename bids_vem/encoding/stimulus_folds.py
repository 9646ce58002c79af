"""Stimulus-disjoint cross-validation: test stimuli are never training stimuli.

When the same images are shown in several runs (block designs that repeat every image in
every run; NSD, THINGS and BOLD5000 test images repeated across sessions; repeated trials),
folds of whole runs test on stimuli the model was trained on: features that merely tell the
images apart then predict the held-out runs from stimulus identity alone. The field scores on
stimuli never seen in training (SCIENCE.md section 4), and so do these folds:

- the unique stimuli are dealt into folds of nearly equal size (:func:`deal_stimuli`);
- a fold's training samples are the samples that *no* held-out stimulus shaped (continuous
  designs: every TR whose FIR window touches a held-out event is dropped; trial-wise designs:
  the held-out stimuli's rows);
- its test samples are the samples the held-out stimuli shaped, predicted from the held-out
  stimuli's features alone (in a continuous design a TR may also carry the response to a
  training stimulus; the model would predict that part from memory, so it is left out of the
  prediction and counts as noise); trial-wise, the repeats of a held-out stimulus are averaged
  into one test response.

:class:`StimulusSamples` records which stimuli shaped each sample of each block; the encoding
model (:mod:`bids_vem.encoding.model`) turns its folds into :class:`~bids_vem.encoding.ridge.Split`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse

__all__ = [
    "deal_stimuli",
    "n_stimulus_folds",
    "StimulusSamples",
    "FoldSamples",
    "stimulus_folds",
    "samples_from_rows",
    "samples_from_events",
]

#: seed of the deal of stimuli into folds (the folds are the same for every feature space)
FOLD_SEED = 0


@dataclass
class FoldSamples:
    """Training and test samples of one stimulus fold.

    Attributes
    ----------
    train : list of (int, ndarray)
        Per block with training samples, the rows no held-out stimulus shaped.
    test : list of (int, ndarray)
        Per block with test samples, the rows a held-out stimulus shaped.
    """

    train: list[tuple[int, np.ndarray]]
    test: list[tuple[int, np.ndarray]]


@dataclass
class StimulusSamples:
    """Which stimuli shaped each sample of each block (run, session or trial group).

    Attributes
    ----------
    stim_ids : list of str
        The unique stimuli, in the column order of ``influence``.
    influence : list of scipy.sparse.csr_matrix of shape (n_samples_b, n_stimuli), bool
        Per block, which stimuli each sample depends on (after the FIR delays).
    partial_designs : callable, optional
        ``partial_designs(held)`` (``held``: bool over the stimuli) gives each block's design
        from the held-out stimuli alone. None: each sample shows one stimulus (trial-wise), so
        the test rows of the full designs are already that.
    trialwise : bool
        Samples are trials (or averages of trials): a held-out stimulus's rows are averaged
        into one test response.
    trials : ndarray of shape (n_stimuli,), optional
        Single trials behind each stimulus (trial-wise; for the noise ceiling).
    occupancy : list of scipy.sparse.csr_matrix of shape (n_samples_b, n_stimuli), optional
        Per block, how much of each sample each stimulus fills before the delays (the
        weights of :func:`~bids_vem.encoding.design.feature_timecourse`): with ``delays`` and
        ``held_features`` it lets the permutation null relabel held-out stimuli
        (:meth:`slots`). None for samples that each show one stimulus (rows), and for timed
        stimuli (frames), whose null shifts the prediction in time instead.
    delays : tuple of int
        FIR delays in samples.
    held_features : callable, optional
        ``held_features(held, block)``: the held-out stimuli's feature rows on the scale of
        that block's design (n_held, n_features).
    nuisance : list of ndarray of shape (n_samples_b, k_b), optional
        Per block, the orthonormal nuisance basis projected out of its designs
        (:mod:`bids_vem.encoding.nuisance`); :meth:`slots` projects it out alike.
    """

    stim_ids: list[str]
    influence: list[sparse.csr_matrix]
    partial_designs: Callable[[np.ndarray], list[np.ndarray]] | None = None
    trialwise: bool = False
    trials: np.ndarray | None = field(default=None)
    occupancy: list[sparse.csr_matrix] | None = None
    delays: tuple[int, ...] = (0,)
    held_features: Callable[[np.ndarray, int], np.ndarray] | None = None
    one_per_row: bool = False
    nuisance: list[np.ndarray] | None = None
    _shown: np.ndarray | None = field(default=None, init=False, repr=False)

    @property
    def n_stimuli(self) -> int:
        return len(self.stim_ids)

    def shown_in(self, groups: Sequence[Hashable] | None = None) -> np.ndarray:
        """(n_groups, n_stimuli) bool: which CV groups (blocks by default) a stimulus shaped
        samples of; groups in order of first appearance."""
        if self._shown is None:
            self._shown = np.vstack(
                [np.asarray(block.sum(axis=0)).ravel() > 0 for block in self.influence]
            ).reshape(len(self.influence), self.n_stimuli)
        if groups is None:
            return self._shown
        labels = list(dict.fromkeys(groups))
        return np.vstack(
            [self._shown[[g == label for g in groups]].any(axis=0) for label in labels]
        )

    def repeated(self, groups: Sequence[Hashable] | None = None) -> np.ndarray:
        """(n_stimuli,) bool: stimuli shown in more than one CV group (blocks by default)."""
        return self.shown_in(groups).sum(axis=0) > 1

    def overlap(self, test_blocks: Sequence[int], train_blocks: Sequence[int]) -> int:
        """Number of stimuli of the test blocks that the training blocks also show."""
        shown = self.shown_in()
        test = shown[list(test_blocks)].any(axis=0)
        train = shown[list(train_blocks)].any(axis=0) if len(train_blocks) else np.zeros_like(test)
        return int(np.sum(test & train))

    def split(
        self, held: np.ndarray, within: Sequence[tuple[int, np.ndarray]] | None = None
    ) -> FoldSamples:
        """Samples of the fold that holds out the stimuli ``held`` (bool over the stimuli).

        ``within`` restricts both sides to those rows (inner folds of an outer training set).
        """
        held = np.asarray(held, dtype=np.float64)
        allowed = (
            [(b, np.arange(block.shape[0])) for b, block in enumerate(self.influence)]
            if within is None
            else [(int(b), np.asarray(rows)) for b, rows in within]
        )
        train, test = [], []
        for block, rows in allowed:
            touched = np.asarray(self.influence[block][rows] @ held).ravel() > 0
            if (~touched).any():
                train.append((block, rows[~touched]))
            if touched.any():
                test.append((block, rows[touched]))
        return FoldSamples(train, test)

    def test_design(
        self, held: np.ndarray, test: Sequence[tuple[int, np.ndarray]], Xs: Sequence[np.ndarray]
    ) -> np.ndarray:
        """The design that predicts ``test`` from the held-out stimuli alone, rows stacked."""
        designs = Xs if self.partial_designs is None else self.partial_designs(held)
        return np.concatenate([np.asarray(designs[b])[rows] for b, rows in test])

    def slots(self, held: np.ndarray, block: int, rows: np.ndarray) -> np.ndarray | None:
        """Where each held-out stimulus sits in ``rows`` of ``block``, per delay.

        Returns
        -------
        ndarray of shape (n_delays, n_rows, n_held), or None
            The prediction of those rows is ``sum_d slots[d] @ G[d]`` with ``G[d]`` the
            held-out stimuli's features times the weights of delay ``d``; the null relabels
            the stimuli by permuting the rows of ``G``. None when the samples cannot say
            (timed stimuli).
        """
        held_index = np.flatnonzero(held)
        if self.one_per_row:
            member = self.influence[block][rows][:, held_index].toarray().astype(np.float64)
            return member[None]
        if self.occupancy is None or self.held_features is None:
            return None
        occupancy = self.occupancy[block][:, held_index].toarray()
        basis = None if self.nuisance is None else self.nuisance[block]
        if basis is not None and basis.shape[1] == 0:
            basis = None
        # a projected design mixes every row of its block: place the stimuli in all of them
        placed = np.arange(occupancy.shape[0]) if basis is not None else np.asarray(rows)
        out = np.zeros((len(self.delays), len(placed), len(held_index)))
        for i, delay in enumerate(self.delays):
            source = placed - delay
            inside = (source >= 0) & (source < occupancy.shape[0])
            out[i, inside] = occupancy[source[inside]]
        if basis is None:
            return out
        out -= np.einsum("nk,dkh->dnh", basis, np.einsum("nk,dnh->dkh", basis, out))
        return out[:, np.asarray(rows)]

    def row_features(self, held: np.ndarray, designs: Sequence[np.ndarray]) -> np.ndarray:
        """One design row of each held-out stimulus (samples that each show one stimulus)."""
        out = []
        for index in np.flatnonzero(held):
            for block, matrix in enumerate(self.influence):
                rows = matrix[:, index].nonzero()[0]
                if rows.size:
                    out.append(np.asarray(designs[block])[rows[0]])
                    break
        return np.asarray(out, dtype=np.float64)

    def test_units(
        self, test: Sequence[tuple[int, np.ndarray]]
    ) -> list[tuple[list[tuple[int, np.ndarray]], np.ndarray | None]]:
        """How test samples are scored: units of (rows, averaging matrix or None).

        Continuous designs: one unit per block (its test TRs). Trial-wise: one unit for the
        whole fold, each stimulus's rows averaged (``averaging`` of shape
        (n_stimuli_held, n_test_rows)).
        """
        if not self.trialwise:
            return [([(b, rows)], None) for b, rows in test]
        stimulus = np.concatenate(
            [np.asarray(self.influence[b][rows].argmax(axis=1)).ravel() for b, rows in test]
        )
        unique, which = np.unique(stimulus, return_inverse=True)
        averaging = np.zeros((len(unique), len(stimulus)))
        averaging[which, np.arange(len(stimulus))] = 1.0
        averaging /= averaging.sum(axis=1, keepdims=True)
        return [(list(test), averaging)]


def n_stimulus_folds(n_groups: int, n_stimuli: int, trialwise: bool) -> int:
    """Folds of stimuli for ``n_groups`` CV groups: as many as groups, at most one stimulus
    per fold (two trial-wise: a fold's test responses are correlated across its stimuli)."""
    return min(n_groups, n_stimuli // (2 if trialwise else 1))


def deal_stimuli(
    stim_ids: Sequence[str], n_folds: int, *, seed: int = FOLD_SEED
) -> list[list[str]]:
    """Deal stimuli into ``n_folds`` folds of nearly equal size, the same for the same ids.

    Depends on the set of ids only (sorted, then shuffled with ``seed``), so that the
    alignment planned before the fit holds out exactly the fold's stimuli.
    """
    ids = sorted({str(s) for s in stim_ids})
    if n_folds < 2 or n_folds > len(ids):
        raise ValueError(f"need 2 <= n_folds <= {len(ids)} stimuli, got {n_folds}")
    order = np.random.default_rng(seed).permutation(len(ids))
    return [sorted(ids[i] for i in order[k::n_folds]) for k in range(n_folds)]


def stimulus_folds(
    samples: StimulusSamples, n_folds: int, *, seed: int = FOLD_SEED
) -> list[np.ndarray]:
    """The folds of :func:`deal_stimuli` as masks over ``samples.stim_ids``.

    Returns
    -------
    list of ndarray of bool, shape (n_stimuli,)
        The held-out stimuli of each fold; every stimulus is held out exactly once.
    """
    column = {s: i for i, s in enumerate(samples.stim_ids)}
    out = []
    for fold in deal_stimuli(samples.stim_ids, n_folds, seed=seed):
        mask = np.zeros(samples.n_stimuli, dtype=bool)
        mask[[column[s] for s in fold]] = True
        out.append(mask)
    return out


def samples_from_rows(
    row_stimuli: Sequence[Sequence[str]],
    trials: Sequence[Sequence[int]] | None = None,
    *,
    trialwise: bool = True,
) -> StimulusSamples:
    """Samples that each show one stimulus (trial-wise rows, or time points without delays).

    Parameters
    ----------
    row_stimuli : sequence of sequence of str
        Per block, the stimulus of each row.
    trials : sequence of sequence of int, optional
        Per block, the single trials averaged into each row.
    trialwise : bool
        Rows are trials: a held-out stimulus's rows are averaged into one test response.
        False: rows are time points, scored per block.
    """
    stim_ids = sorted({str(s) for rows in row_stimuli for s in rows})
    column = {s: i for i, s in enumerate(stim_ids)}
    influence = []
    for rows in row_stimuli:
        cols = np.array([column[str(s)] for s in rows], dtype=np.int64)
        data = np.ones(len(cols), dtype=bool)
        influence.append(
            sparse.csr_matrix(
                (data, (np.arange(len(cols)), cols)), shape=(len(cols), len(stim_ids))
            )
        )
    total = None
    if trials is not None:
        total = np.zeros(len(stim_ids))
        for rows, counts in zip(row_stimuli, trials, strict=True):
            np.add.at(total, [column[str(s)] for s in rows], np.asarray(counts, dtype=float))
    return StimulusSamples(stim_ids, influence, None, trialwise, total, one_per_row=True)


def samples_from_events(
    events: Sequence[pd.DataFrame],
    run_lengths: Sequence[int],
    tr: float,
    delays: Sequence[int],
    *,
    extent: dict[str, float] | None = None,
    spread: int = 0,
    partial_designs: Callable[[np.ndarray], list[np.ndarray]] | None = None,
    occupancy: list[sparse.csr_matrix] | None = None,
    held_features: Callable[[np.ndarray, int], np.ndarray] | None = None,
    nuisance: list[np.ndarray] | None = None,
) -> StimulusSamples:
    """Continuous samples: the TRs each event's stimulus reaches through the FIR delays.

    Parameters
    ----------
    events : sequence of DataFrame
        Per run, ``onset``, ``duration`` (seconds) and ``stim_id`` (None or NaN: no stimulus).
    run_lengths : sequence of int
        TRs of each run.
    tr : float
    delays : sequence of int
        FIR delays in TRs.
    extent : dict of str to float, optional
        How long a stimulus lasts when its event has no duration (a video's length).
    spread : int
        TRs an event reaches beyond its span before the delays (interpolation windows).
    partial_designs, occupancy, held_features, nuisance
        As the attributes of :class:`StimulusSamples` (``occupancy`` columns in the order of
        the sorted stimulus ids).
    """
    ids: list[str] = []
    for frame in events:
        ids += [str(s) for s in frame["stim_id"] if not _missing(s)]
    stim_ids = sorted(set(ids))
    column = {s: i for i, s in enumerate(stim_ids)}
    extent = extent or {}
    influence = []
    for frame, n_volumes in zip(events, run_lengths, strict=True):
        rows, cols = [], []
        for onset, duration, stim in zip(
            frame["onset"], frame["duration"], frame["stim_id"], strict=True
        ):
            if _missing(stim):
                continue
            length = float(duration) if float(duration) > 0 else extent.get(str(stim), 0.0)
            first = int(np.floor(float(onset) / tr + 1e-6)) - spread
            last = int(np.ceil((float(onset) + max(length, 1e-3)) / tr - 1e-6)) - 1 + spread
            for delay in delays:
                span = np.arange(max(first + delay, 0), min(last + delay, n_volumes - 1) + 1)
                rows.append(span)
                cols.append(np.full(len(span), column[str(stim)]))
        rows_all = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        cols_all = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        matrix = sparse.csr_matrix(
            (np.ones(len(rows_all), dtype=bool), (rows_all, cols_all)),
            shape=(int(n_volumes), len(stim_ids)),
        )
        matrix.data[:] = True  # duplicates summed: back to booleans
        influence.append(matrix)
    return StimulusSamples(
        stim_ids, influence, partial_designs, False, occupancy=occupancy,
        delays=tuple(int(d) for d in delays), held_features=held_features, nuisance=nuisance,
    )  # fmt: skip


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
