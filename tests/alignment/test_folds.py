"""Alignment folds: no stimulus of a run is trained on by the alignment that predicts it."""

from __future__ import annotations

import pytest

from bids_vem.alignment.folds import FINAL_FOLD, AlignmentFold, plan_alignment_folds
from bids_vem.errors import DataError, UsageError


def _runs(n_runs: int, per_run: int = 6, shared: int = 0):
    # run k shows its own images plus `shared` images common to every run
    common = [f"common{i}.png" for i in range(shared)]
    return [(f"run-{k}", [f"r{k}_{i}.png" for i in range(per_run)] + common) for k in range(n_runs)]


def test_one_fold_per_run_holds_out_exactly_that_runs_stimuli():
    runs = _runs(4)
    folds = plan_alignment_folds(runs)
    assert [f.name for f in folds] == ["fold-1", "fold-2", "fold-3", "fold-4", FINAL_FOLD]
    every = {s for _, ids in runs for s in ids}
    for fold, (name, ids) in zip(folds[:-1], runs, strict=True):
        assert fold.held_out_runs == (name,)
        assert set(fold.held_out_ids) == set(ids)
        assert set(fold.train_ids) == every - set(ids)
        assert not set(fold.train_ids) & set(fold.held_out_ids)
    assert set(folds[-1].train_ids) == every and folds[-1].held_out_ids == ()


def test_images_shown_in_several_runs_are_held_out_wherever_they_appear():
    runs = [("a", ["x", "y", "p"]), ("b", ["x", "q", "r"]), ("c", ["s", "t", "u", "v", "w"])]
    folds = plan_alignment_folds(runs, min_train=2)
    # x is shown in runs a and b: neither fold that predicts them may train on it
    assert "x" not in folds[0].train_ids and "x" not in folds[1].train_ids
    assert "x" in folds[2].train_ids


def test_fewer_folds_group_contiguous_runs():
    folds = plan_alignment_folds(_runs(5), n_folds=2)
    assert [f.held_out_runs for f in folds[:-1]] == [
        ("run-0", "run-1", "run-2"),
        ("run-3", "run-4"),
    ]


def test_fold_round_trips_through_json_dict():
    fold = plan_alignment_folds(_runs(3))[1]
    assert AlignmentFold.from_dict(fold.to_dict()) == fold


def test_runs_that_repeat_the_same_images_ask_for_a_corpus():
    with pytest.raises(DataError, match="--align-corpus"):
        plan_alignment_folds(_runs(3, per_run=1, shared=10))


@pytest.mark.parametrize("n_folds", [1, 5, -1])
def test_impossible_fold_counts_are_usage_errors(n_folds):
    with pytest.raises(UsageError, match="--align-folds"):
        plan_alignment_folds(_runs(4), n_folds=n_folds)


def test_explicit_groups_follow_the_encoding_folds():
    # --test-runs 3 4: one alignment holds out both test runs, the final one sees everything
    folds = plan_alignment_folds(_runs(4), groups=[[2, 3]])
    assert [f.name for f in folds] == ["fold-1", FINAL_FOLD]
    assert folds[0].held_out_runs == ("run-2", "run-3")
    assert not {s for s in folds[0].train_ids if s.startswith(("r2_", "r3_"))}
