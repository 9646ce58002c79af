"""Which stimuli each alignment may train on, so that no encoding test run leaks into it.

The encoding model scores every run on predictions from a model that never saw it (nested
leave-one-run-out). An image encoder aligned on the captions of a test run's images would have
seen that run's stimuli (SCIENCE.md, LLM-VEM leakage rule), so the aligned features used to
predict a run come from an alignment that held out that run's stimuli:

- runs are split into ``n_folds`` contiguous groups (default: one run per group, as the encoding
  CV); fold ``k`` trains on every stimulus not shown in any run of group ``k``;
- a ``final`` alignment trains on all stimuli: it is the exported model, and the features of the
  penalty map (a final model on all runs);
- with an external image-caption corpus (``--align-corpus``) no participant stimulus is trained on,
  and one alignment serves every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bids_vem.config import option_name
from bids_vem.errors import DataError, UsageError

__all__ = ["AlignmentFold", "plan_alignment_folds", "FINAL_FOLD"]

#: name of the alignment trained on every stimulus (exported, used for the penalty map)
FINAL_FOLD = "final"


@dataclass(frozen=True)
class AlignmentFold:
    """One alignment of a run group.

    Attributes
    ----------
    name : str
        ``"final"`` or ``"fold-<k>"``.
    held_out_runs : tuple of str
        Runs whose encoding predictions use this alignment (empty for ``final``).
    train_ids : tuple of str
        Stimuli the alignment may train on, sorted.
    held_out_ids : tuple of str
        Stimuli it must not see: every stimulus of ``held_out_runs``, sorted.
    """

    name: str
    held_out_runs: tuple[str, ...]
    train_ids: tuple[str, ...]
    held_out_ids: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "held_out_runs": list(self.held_out_runs),
            "train_ids": list(self.train_ids),
            "held_out_ids": list(self.held_out_ids),
        }

    @classmethod
    def from_dict(cls, data: dict) -> AlignmentFold:
        return cls(
            name=str(data["name"]),
            held_out_runs=tuple(data["held_out_runs"]),
            train_ids=tuple(data["train_ids"]),
            held_out_ids=tuple(data["held_out_ids"]),
        )


def plan_alignment_folds(
    run_stimuli: Sequence[tuple[str, Sequence[str]]],
    n_folds: int = 0,
    *,
    groups: Sequence[Sequence[int]] | None = None,
    min_train: int = 4,
    stimulus_groups: Sequence[Sequence[str]] | None = None,
) -> list[AlignmentFold]:
    """The alignments a run group needs: one per fold of runs, then ``final``.

    Parameters
    ----------
    run_stimuli : sequence of (run name, stimulus ids)
        Each run of the group, in fold order, with the stimuli its events show.
    n_folds : int
        Number of contiguous groups of runs (0: one per run, as the encoding CV; 1: no folds,
        only ``final``, which then leaks the test runs' stimuli: refused).
    groups : sequence of sequences of int, optional
        Explicit groups of run indices, one fold each, instead of ``n_folds`` contiguous ones
        (the encoding's own folds: the test runs, or the runs of each session). Runs in no group
        are held out by no fold.
    min_train : int
        Fewest stimuli an alignment can train on.
    stimulus_groups : sequence of sequences of str, optional
        The held-out stimuli of each fold when the encoding holds out stimuli, not runs
        (:func:`bids_vem.encoding.stimulus_folds.deal_stimuli`); the folds then name no run.

    Returns
    -------
    list of AlignmentFold
        ``fold-1`` .. ``fold-K`` then ``final``.

    Raises
    ------
    UsageError
        ``n_folds`` is 1, negative or more than the runs.
    DataError
        A fold leaves fewer than ``min_train`` stimuli to train on (the runs show the same
        images): the message suggests ``--align-corpus``.
    """
    n_runs = len(run_stimuli)
    if stimulus_groups is not None:
        every = sorted({str(s) for _, ids in run_stimuli for s in ids})
        folds = []
        for k, held in enumerate(stimulus_groups, start=1):
            train = sorted(set(every) - {str(s) for s in held})
            if len(train) < min_train:
                raise DataError(
                    f"alignment fold {k}: only {len(train)} stimuli are left to train on; align "
                    f"on an external image-caption corpus with {option_name('align_corpus')}"
                )
            folds.append(AlignmentFold(f"fold-{k}", (), tuple(train), tuple(sorted(held))))
        folds.append(AlignmentFold(FINAL_FOLD, (), tuple(every), ()))
        return folds
    if n_runs < 2:
        raise DataError(f"alignment folds need at least 2 runs, found {n_runs}")
    if groups is None:
        n_folds = n_runs if n_folds == 0 else n_folds
        if n_folds < 2 or n_folds > n_runs:
            raise UsageError(
                f"{option_name('align_folds')} must be 0 (one per run) or between 2 and the {n_runs} runs, "
                f"got {n_folds}"
            )
        # contiguous groups of nearly equal size, as sklearn's KFold without shuffling
        sizes = [n_runs // n_folds + (1 if k < n_runs % n_folds else 0) for k in range(n_folds)]
        bounds = np.cumsum([0, *sizes])
        groups = [range(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    every = sorted({str(s) for _, ids in run_stimuli for s in ids})
    folds = []
    for k, indices in enumerate(groups, start=1):
        group = [run_stimuli[i] for i in indices]
        held_out = sorted({str(s) for _, ids in group for s in ids})
        train = sorted(set(every) - set(held_out))
        runs = tuple(name for name, _ in group)
        if len(train) < min_train:
            raise DataError(
                f"alignment fold {k} (held-out runs {', '.join(runs)}): only {len(train)} stimuli are "
                "not shown in those runs; the runs repeat the same images, so align on an external "
                f"image-caption corpus with {option_name('align_corpus')}"
            )
        folds.append(AlignmentFold(f"fold-{k}", runs, tuple(train), tuple(held_out)))
    folds.append(AlignmentFold(FINAL_FOLD, (), tuple(every), ()))
    return folds
