"""Banded ridge over several feature spaces, and the variance each explains uniquely and jointly.

One model per voxel over the concatenated designs of several feature spaces, with one penalty
per space (banded ridge, Nunez-Elizalde et al. 2019; Dupre la Tour et al. 2022): a space that
predicts a voxel poorly is shrunk without shrinking the others. The solver is himalaya's
random search over the simplex of band weights and a penalty grid (``BandedRidgeCV``), on its
torch backend (CUDA when ``device`` is). Three outputs per voxel:

- the joint model's held-out R^2 and r;
- its **split R^2**: the joint prediction is the sum of each space's part; the product measure
  (himalaya's ``r2_score_split``) splits the joint R^2 into one term per space that sum to it;
- **set-theoretic partitioning** (:mod:`bids_vem.analysis.variance_partitioning`): a model on
  every subset of the spaces (banded for two or more, plain ridge for one), all on the same
  folds, give the variance unique to each space and shared by each combination.

Evaluation is nested, so nothing chosen sees the test data: outer folds hold out whole CV groups
(runs or sessions), or, when a stimulus is shown in more than one group, unique stimuli (the
stimulus-disjoint folds of :mod:`bids_vem.encoding.stimulus_folds`: training samples are those
no held-out stimulus shaped, test samples are predicted from the held-out stimuli's features
alone). Inside each outer fold the band weights and penalty of every voxel are chosen by an
inner CV of the same kind on the training samples only (inner validation samples use the full
design, as a hyperparameter search may). Held-out predictions of all folds are pooled, and
R^2 is ``1 - SSE / SST`` with the data centred over the pooled test samples (the convention
under which the split terms sum to R^2).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bids_vem.analysis.variance_partitioning import partition, subsets
from bids_vem.encoding.chunks import DEFAULT_CHUNK_BYTES
from bids_vem.encoding.device import resolve_device
from bids_vem.encoding.nuisance import project_out, training_basis
from bids_vem.encoding.ridge import leave_one_group_out
from bids_vem.encoding.stimulus_folds import StimulusSamples, deal_stimuli, n_stimulus_folds
from bids_vem.encoding.stimulus_folds import stimulus_folds as deal_stimulus_folds
from bids_vem.encoding.voxel_data import VoxelData, as_voxel_data
from bids_vem.errors import DataError
from bids_vem.outputs.atomic import write_npz_atomic

__all__ = [
    "JointResult",
    "fit_joint_model",
    "encode_joint_runs",
    "encode_joint_trials",
    "DEFAULT_ITERATIONS",
]

logger = logging.getLogger(__name__)

#: band-weight samples of the random search (himalaya's tutorials use 20 to 100)
DEFAULT_ITERATIONS = 32
_ARRAYS = ("r2", "r", "split_r2", "subset_r2", "alpha", "alphas")


@dataclass
class JointResult:
    """Per-voxel results of a banded ridge model over several feature spaces.

    Attributes
    ----------
    spaces : tuple of str
        The feature spaces, in band order.
    r2, r : ndarray of shape (n_voxels,), float32
        Held-out R^2 and Pearson r of the joint model (all folds pooled).
    split_r2 : ndarray of shape (n_spaces, n_voxels), float32
        The joint R^2 split among the spaces (product measure); sums to ``r2``.
    subset_r2 : ndarray of shape (2^n - 1, n_voxels), float32
        Held-out R^2 of the model of each subset of spaces
        (:func:`~bids_vem.analysis.variance_partitioning.subsets` order; the last is ``r2``).
    alpha : ndarray of shape (n_spaces, n_voxels), float32
        Each space's penalty in the joint model (geometric mean over the outer folds).
    alphas : ndarray
        The penalty grid of the search.
    n_iterations : int
        Band-weight samples of the random search.
    n_features : tuple of int
        Design columns of each space.
    runs : tuple of str
    n_samples : int
    cross_validation : str
        The outer and inner folds, in words.
    n_folds : int
    test_stimuli_in_training : tuple of int
        Per outer fold, the test stimuli training also showed (0 with stimulus folds).
    nuisance : str
        What was regressed out of the BOLD and projected out of the designs, in words.
    mask, affine : ndarray, optional
        Voxels in the order of the maps, as in :class:`~bids_vem.encoding.model.EncodingResult`.
    """

    spaces: tuple[str, ...]
    r2: np.ndarray
    r: np.ndarray
    split_r2: np.ndarray
    subset_r2: np.ndarray
    alpha: np.ndarray
    alphas: np.ndarray
    n_iterations: int = DEFAULT_ITERATIONS
    n_features: tuple[int, ...] = ()
    runs: tuple[str, ...] = ()
    n_samples: int = 0
    cross_validation: str = ""
    n_folds: int = 0
    test_stimuli_in_training: tuple[int, ...] = ()
    nuisance: str = ""
    mask: np.ndarray | None = None
    affine: np.ndarray | None = None

    @property
    def n_voxels(self) -> int:
        return int(self.r2.shape[0])

    def atoms(self) -> tuple[list[tuple[int, ...]], np.ndarray]:
        """Unique and shared variance of every combination of spaces
        (:func:`~bids_vem.analysis.variance_partitioning.partition`)."""
        return partition(self.subset_r2, len(self.spaces))

    def save(self, path: Path | str) -> Path:
        """Write as ``.npz`` (no pickle), atomically; returns ``path``."""
        arrays = {name: np.asarray(getattr(self, name)) for name in _ARRAYS}
        if self.mask is not None:
            arrays["mask"] = np.asarray(self.mask, dtype=bool)
            arrays["affine"] = np.asarray(self.affine, dtype=np.float64)
        header = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in (*_ARRAYS, "mask", "affine")
        }
        header = {k: list(v) if isinstance(v, tuple) else v for k, v in header.items()}
        arrays["header"] = np.array(json.dumps(header))
        return write_npz_atomic(path, arrays)

    @classmethod
    def load(cls, path: Path | str) -> JointResult:
        """Read a result written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            arrays = {name: data[name] for name in _ARRAYS}
            mask = data["mask"] if "mask" in data else None
            affine = data["affine"] if "affine" in data else None
        for key in ("spaces", "n_features", "runs", "test_stimuli_in_training"):
            header[key] = tuple(header.get(key, ()))
        return cls(**arrays, **header, mask=mask, affine=affine)


Rows = list[tuple[int, np.ndarray]]


@dataclass
class _Fold:
    """One outer fold: training rows, how test rows are scored, the test designs per space and
    the inner CV splits (positions in the stacked training rows)."""

    train: Rows
    units: list[tuple[Rows, np.ndarray | None]]
    test_designs: list[np.ndarray]
    inner: list[tuple[np.ndarray, np.ndarray]]
    overlap: int = 0
    n_test: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.n_test = sum(
            sum(len(rows) for _, rows in parts) if averaging is None else averaging.shape[0]
            for parts, averaging in self.units
        )


def _positions(train: Rows, lengths: Sequence[int]) -> list[np.ndarray]:
    """Per block, the position of each of its rows in the stacked training rows (-1: absent)."""
    where = [np.full(n, -1, dtype=np.int64) for n in lengths]
    start = 0
    for block, rows in train:
        where[block][rows] = np.arange(start, start + len(rows))
        start += len(rows)
    return where


def _stacked(where: list[np.ndarray], rows: Rows) -> np.ndarray:
    return np.concatenate([where[b][r] for b, r in rows]) if rows else np.zeros(0, np.int64)


def _group_folds(designs, lengths, groups, samples) -> list[_Fold]:
    n_blocks = len(lengths)
    outer = leave_one_group_out(n_blocks, groups)
    if len(outer) < 3:
        raise DataError(
            f"banded ridge with nested cross-validation needs at least 3 CV groups; found "
            f"{len(outer)}"
        )
    return [_block_fold(designs, lengths, groups, samples, test) for test in outer]


def _block_fold(designs, lengths, groups, samples, test: Sequence[int]) -> _Fold:
    """The fold that tests on the blocks ``test`` and trains on the others, with an inner
    leave-one-group-out CV on those."""
    train_blocks = [b for b in range(len(lengths)) if b not in test]
    train = [(b, np.arange(lengths[b])) for b in train_blocks]
    where = _positions(train, lengths)
    inner_groups = None if groups is None else [groups[b] for b in train_blocks]
    inner = []
    for held in leave_one_group_out(len(train_blocks), inner_groups):
        val = [train_blocks[i] for i in held]
        val_rows = np.concatenate([where[b] for b in val])
        fit_rows = np.concatenate([where[b] for b in train_blocks if b not in val])
        inner.append((fit_rows, val_rows))
    units = [([(b, np.arange(lengths[b]))], None) for b in test]
    tests = [np.concatenate([space[b] for b in test]) for space in designs]
    overlap = samples[0].overlap(test, train_blocks) if samples else 0
    return _Fold(train, units, tests, inner, overlap)


def _test_run_folds(designs, lengths, groups, samples, test: Sequence[int]) -> list[_Fold]:
    """``--test-runs``: one fold, the test blocks held out of all fitting."""
    train_blocks = [b for b in range(len(lengths)) if b not in test]
    inner_groups = None if groups is None else [groups[b] for b in train_blocks]
    if len(leave_one_group_out(len(train_blocks), inner_groups)) < 2:
        raise DataError(
            "banded ridge with test runs needs at least 2 CV groups among the training runs "
            "for its inner cross-validation"
        )
    return [_block_fold(designs, lengths, groups, samples, list(test))]


def _stimulus_fold_list(designs, lengths, groups, samples) -> list[_Fold]:
    first = samples[0]
    n_groups = len(leave_one_group_out(len(lengths), groups))
    n_folds = n_stimulus_folds(n_groups, first.n_stimuli, first.trialwise)
    if n_folds < 3:
        raise DataError(
            f"banded ridge with nested stimulus-disjoint folds needs at least 3 folds; "
            f"{first.n_stimuli} stimuli over {n_groups} groups give {n_folds}"
        )
    out = []
    for held in deal_stimulus_folds(first, n_folds):
        split = first.split(held)
        where = _positions(split.train, lengths)
        training_ids = [first.stim_ids[i] for i in np.flatnonzero(~held)]
        inner = []
        for inner_ids in deal_stimuli(training_ids, min(n_folds - 1, len(training_ids))):
            inner_held = np.isin(first.stim_ids, inner_ids)
            inner_split = first.split(inner_held, within=split.train)
            if inner_split.train and inner_split.test:
                inner.append(
                    (_stacked(where, inner_split.train), _stacked(where, inner_split.test))
                )
        units = first.test_units(split.test)
        tests = [
            space_samples.test_design(held, split.test, space)
            for space_samples, space in zip(samples, designs, strict=True)
        ]
        out.append(_Fold(split.train, units, tests, inner))
    return out


def _describe(kind: str, n_folds: int, groups_name: str, test_names: Sequence[str] = ()) -> str:
    if kind == "test-runs":
        return (
            f"test runs {', '.join(test_names)} held out of all fitting; band weights and "
            f"penalties by an inner leave-one-{groups_name}-out CV on the training "
            f"{groups_name}s"
        )
    if kind == "stimulus":
        return (
            f"nested stimulus-disjoint cross-validation: {n_folds} outer folds of unique stimuli "
            "(stimuli repeat across "
            f"{groups_name}s); band weights and penalties by an inner stimulus-disjoint CV on "
            "each fold's training samples"
        )
    return (
        f"nested leave-one-{groups_name}-out over {n_folds} {groups_name}s; band weights and "
        f"penalties by an inner leave-one-{groups_name}-out CV on each fold's training "
        f"{groups_name}s"
    )


def _chunk_size(mem_mb: float | None, n_samples: int, n_arrays: int, n_voxels: int) -> int:
    budget = DEFAULT_CHUNK_BYTES if not mem_mb else max(64 * 2**20, (mem_mb - 700) * 2**20)
    per_voxel = 4 * n_samples * (4 + n_arrays)
    return int(max(1, min(n_voxels, budget // max(1, per_voxel))))


def fit_joint_model(
    designs: Sequence[Sequence[np.ndarray]],
    Ys: Sequence[np.ndarray] | VoxelData,
    *,
    spaces: Sequence[str],
    alphas: Sequence[float] | np.ndarray,
    samples: Sequence[StimulusSamples] | None = None,
    groups: Sequence[Hashable] | None = None,
    groups_name: str = "run",
    folds: str = "auto",
    n_iterations: int = DEFAULT_ITERATIONS,
    seed: int = 0,
    device: str | torch.device = "cpu",
    mem_mb: float | None = None,
    n_voxels_chunk: int | None = None,
    run_names: Sequence[str] | None = None,
    test_runs: Sequence[int] | None = None,
) -> JointResult:
    """Banded ridge over several feature spaces with variance partitioning (module docstring).

    Parameters
    ----------
    designs : sequence (spaces) of sequence (blocks) of ndarray of shape (n_samples_b, p_s)
        Each space's design of each block (run, session or trial group), z-scored per block.
    Ys : sequence of ndarray of shape (n_samples_b, n_voxels), or VoxelData
        The blocks' responses.
    spaces : sequence of str
        The spaces' names.
    alphas : sequence of float
        Penalty grid of the search.
    samples : sequence of StimulusSamples, optional
        One per space (same stimuli and samples; each with its space's partial designs):
        enables stimulus-disjoint folds.
    groups : sequence of hashable, optional
        A CV group per block (default: one per block).
    groups_name : str
        What a group is, for messages (``"run"``, ``"session"``).
    folds : {"auto", "groups", "stimulus"}
        As in :func:`~bids_vem.encoding.model.fit_encoding_model`.
    n_iterations : int
        Band-weight samples of the random search.
    seed : int
        Seed of the search.
    device : str or torch.device
    mem_mb, n_voxels_chunk
        Memory budget (sets the voxel chunk) or the chunk itself.
    run_names : sequence of str, optional
    test_runs : sequence of int, optional
        Blocks held out of all fitting (``--test-runs``): one fold that trains on the others
        (band weights and penalties by an inner leave-one-group-out CV on them) and scores on
        these, instead of the nested CV.

    Returns
    -------
    JointResult

    Raises
    ------
    DataError
        Spaces that disagree in blocks or rows, or too few groups or stimuli for nested folds.
    """
    from himalaya.backend import get_backend, set_backend
    from himalaya.ridge import BandedRidgeCV, RidgeCV

    n_spaces = len(spaces)
    order = subsets(n_spaces)
    data = as_voxel_data(Ys)
    lengths = list(data.run_lengths)
    for name, space in zip(spaces, designs, strict=True):
        if [len(X) for X in space] != lengths:
            raise DataError(f"feature space {name}: design rows {[len(X) for X in space]} differ "
                            f"from the data's {lengths}")  # fmt: skip
    widths = [int(space[0].shape[1]) for space in designs]
    columns = np.cumsum([0, *widths])
    repeated = samples is not None and bool(samples[0].repeated(groups).any())
    if folds not in ("auto", "groups", "stimulus"):
        raise ValueError(f"folds must be auto, groups or stimulus, got {folds!r}")
    names = (
        list(run_names) if run_names is not None else [f"run {i + 1}" for i in range(len(lengths))]
    )
    if test_runs:
        fold_list = _test_run_folds(designs, lengths, groups, samples, test_runs)
        kind = "test-runs"
    elif samples is not None and (folds == "stimulus" or (folds == "auto" and repeated)):
        fold_list, kind = _stimulus_fold_list(designs, lengths, groups, samples), "stimulus"
    else:
        fold_list, kind = _group_folds(designs, lengths, groups, samples), "group"
    description = _describe(
        kind, len(fold_list), groups_name, [names[i] for i in (test_runs or ())]
    )
    logger.info("banded ridge over %s: %s", " + ".join(spaces), description)

    device = resolve_device(device)
    previous = get_backend().name
    backend = set_backend("torch_cuda" if device.type == "cuda" else "torch", on_error="raise")
    n_test = sum(f.n_test for f in fold_list)
    n_voxels = data.n_voxels
    chunk = n_voxels_chunk or _chunk_size(mem_mb, sum(lengths), len(order) + n_spaces, n_voxels)
    subset_r2 = np.zeros((len(order), n_voxels))
    split_r2 = np.zeros((n_spaces, n_voxels))
    r = np.zeros(n_voxels)
    log_alpha = np.zeros((n_spaces, n_voxels))

    def numpy(a) -> np.ndarray:
        return np.asarray(backend.to_numpy(a), dtype=np.float64)

    steps = len(range(0, n_voxels, chunk)) * len(fold_list) * len(order)
    progress = tqdm(total=steps, desc="banded ridge fits", unit="fit", disable=None, leave=False)
    try:
        for start in range(0, n_voxels, chunk):
            voxels = slice(start, min(n_voxels, start + chunk))
            blocks = [data.read(b, voxels) for b in range(len(lengths))]
            Y_test = np.zeros((n_test, voxels.stop - voxels.start))
            P = np.zeros((len(order), *Y_test.shape))
            P_split = np.zeros((n_spaces, *Y_test.shape))
            row = 0
            for fold in fold_list:
                Y_parts, X_parts = [], []
                for b, rows in fold.train:
                    y_part = blocks[b][rows]
                    x_part = np.hstack([space[b][rows] for space in designs])
                    if data.nuisance is not None and len(rows) < lengths[b]:
                        # part of a run: its nuisance fitted anew on the training rows
                        # (bids_vem.encoding.nuisance.training_basis)
                        basis = training_basis(data.nuisance[b], rows)
                        y_part, x_part = project_out(y_part, basis), project_out(x_part, basis)
                    Y_parts.append(y_part)
                    X_parts.append(x_part)
                Y_train = np.concatenate(Y_parts)
                X_train = np.concatenate(X_parts).astype(np.float32)
                X_test = np.hstack(fold.test_designs).astype(np.float32)
                ys = [
                    np.concatenate([blocks[b][rows] for b, rows in parts])
                    for parts, _ in fold.units
                ]
                for k, subset in enumerate(order):
                    cols = np.concatenate([np.arange(columns[s], columns[s + 1]) for s in subset])
                    if len(subset) == 1:
                        model = RidgeCV(alphas=np.asarray(alphas), cv=fold.inner)
                        model.fit(X_train[:, cols], Y_train)
                        predicted = [numpy(model.predict(X_test[:, cols]))]
                    else:
                        band = np.concatenate([np.full(widths[s], i) for i, s in enumerate(subset)])
                        model = BandedRidgeCV(
                            groups=band,
                            solver_params=dict(
                                n_iter=n_iterations, alphas=np.asarray(alphas),
                                progress_bar=False, n_targets_batch=None,
                            ),
                            cv=fold.inner,
                            random_state=seed,
                        )  # fmt: skip
                        model.fit(X_train[:, cols], Y_train)
                        parts = numpy(model.predict(X_test[:, cols], split=True))
                        predicted = [parts.sum(axis=0)]
                        if k == len(order) - 1:  # the joint model: every space's part
                            predicted.append(parts)
                            # the penalty of space i is exp(-delta_i) (band weights 1/alpha)
                            log_alpha[:, voxels] -= numpy(model.deltas_) / len(fold_list)
                    _place(fold, ys, predicted, P[k], P_split, row, k == len(order) - 1, Y_test)
                    progress.update()
                row += fold.n_test
            y = Y_test - Y_test.mean(axis=0)
            sst = np.sum(y**2, axis=0)
            ok = sst > 0
            for k in range(len(order)):
                sse = np.sum((y - P[k]) ** 2, axis=0)
                subset_r2[k, voxels] = np.where(ok, 1 - sse / np.where(ok, sst, 1), 0.0)
            total = P[-1]
            for i in range(n_spaces):
                term = 2 * np.sum(y * P_split[i], axis=0) - np.sum(P_split[i] * total, axis=0)
                split_r2[i, voxels] = np.where(ok, term / np.where(ok, sst, 1), 0.0)
            pc = total - total.mean(axis=0)
            denom = np.sqrt(sst * np.sum(pc**2, axis=0))
            r[voxels] = np.where(
                denom > 0, np.sum(y * pc, axis=0) / np.where(denom > 0, denom, 1), 0
            )
    finally:
        progress.close()
        set_backend(previous)
    return JointResult(
        spaces=tuple(spaces),
        r2=subset_r2[-1].astype(np.float32),
        r=r.astype(np.float32),
        split_r2=split_r2.astype(np.float32),
        subset_r2=subset_r2.astype(np.float32),
        alpha=np.exp(log_alpha).astype(np.float32),
        alphas=np.asarray(alphas, dtype=np.float64),
        n_iterations=int(n_iterations),
        n_features=tuple(widths),
        runs=tuple(names),
        n_samples=int(sum(lengths)),
        cross_validation=description,
        n_folds=len(fold_list),
        test_stimuli_in_training=tuple(int(f.overlap) for f in fold_list),
    )


def _place(fold: _Fold, ys, predicted, P_k, P_split, row, joint: bool, Y_test) -> None:
    """Write a fold's test data and predictions into the pooled arrays, averaging the repeats
    of a stimulus (trial-wise units) as the data are."""
    at, offset = row, 0
    for (_, averaging), y in zip(fold.units, ys, strict=True):
        n_rows = len(y)
        pieces = [p[..., offset : offset + n_rows, :] for p in predicted]
        offset += n_rows
        if averaging is not None:
            y = averaging @ y
            pieces = [np.einsum("ij,...jv->...iv", averaging, p) for p in pieces]
        n = len(y)
        Y_test[at : at + n] = y
        P_k[at : at + n] = pieces[0]
        if joint:
            P_split[:, at : at + n] = pieces[1]
        at += n


def encode_joint_runs(
    runs: Sequence,
    feature_sets: Sequence,
    *,
    alphas: Sequence[float] | np.ndarray,
    stim_column: str = "stim_file",
    delays: Sequence[int] = (1, 2, 3, 4),
    delays_seconds: Sequence[float] = (),
    confounds: Sequence[str] = (),
    high_pass: float = 0.0,
    bold=None,
    cv_groups: str = "auto",
    oversampling: int = 10,
    n_iterations: int = DEFAULT_ITERATIONS,
    seed: int = 0,
    device: str | torch.device = "cpu",
    mem_mb: float | None = None,
    confound_regression: str = "bold-and-design",
    word_rate: str = "regress",
    test_runs: Sequence[str] = (),
) -> JointResult:
    """Banded ridge of one participant's continuous runs over several feature spaces.

    The designs, cleaned BOLD and stimulus samples are those of
    :func:`~bids_vem.encoding.model.encode_runs` (same delays, confounds, voxel store), so
    each subset model of one space is that space's encoding model on these folds.

    Parameters
    ----------
    runs : sequence of Run
    feature_sets : sequence of FeatureSet
        2 to 4 feature spaces.
    alphas, stim_column, delays, delays_seconds, confounds, high_pass, bold, cv_groups,
    oversampling, seed, device, mem_mb, confound_regression, word_rate
        As in :func:`~bids_vem.encoding.model.encode_runs` (one nuisance for all spaces).
    n_iterations : int
        Band-weight samples of the random search.
    test_runs : sequence of str
        ``--test-runs`` labels (:func:`~bids_vem.encoding.evaluation.select_test_runs`): held
        out of all fitting, as the single-space models hold them out.

    Returns
    -------
    JointResult
        With ``mask`` and ``affine`` of the common mask.
    """
    from bids_vem.encoding.evaluation import select_test_runs
    from bids_vem.encoding.model import (
        FOLDS_OF_CV_GROUPS,
        RunDesigns,
        _check_runs,
        _cleaned_with,
        _run_events,
        _session_groups,
        _voxel_data,
        delays_in_trs,
    )

    runs = _check_runs(runs)
    delays = delays_in_trs(delays, delays_seconds, float(runs[0].tr))
    groups = _session_groups(runs) if cv_groups == "session" else None
    test = select_test_runs(runs, test_runs) if test_runs else None
    data, mask = _voxel_data(runs, bold, confounds, high_pass)
    events = [_run_events(run.events, stim_column) for run in runs]
    designer = RunDesigns(runs, events, data.run_lengths, delays, oversampling)
    nuisance = designer.remove_nuisance(
        feature_sets, **_cleaned_with(bold, confounds, high_pass),
        confound_regression=confound_regression, word_rate=word_rate,
    )  # fmt: skip
    data = nuisance.voxel_data(data)
    designs, samples = [], []
    for features in feature_sets:
        Xs, scales = designer.designs(features)
        designs.append(Xs)
        samples.append(designer.samples(features, scales))
    result = fit_joint_model(
        designs, data, spaces=[fs.name for fs in feature_sets], alphas=alphas, samples=samples,
        groups=groups, groups_name="session" if cv_groups == "session" else "run",
        folds=FOLDS_OF_CV_GROUPS[cv_groups], n_iterations=n_iterations, seed=seed,
        device=device, mem_mb=mem_mb, run_names=[run.name for run in runs], test_runs=test,
    )  # fmt: skip
    result.mask = np.asarray(mask.dataobj) > 0
    result.affine = np.asarray(mask.affine)
    result.nuisance = nuisance.description
    return result


def encode_joint_trials(
    runs_or_betas,
    feature_sets: Sequence,
    *,
    alphas: Sequence[float] | np.ndarray,
    cv_groups: str = "auto",
    n_iterations: int = DEFAULT_ITERATIONS,
    seed: int = 0,
    device: str | torch.device = "cpu",
    mem_mb: float | None = None,
    **betas_options,
) -> JointResult:
    """Banded ridge of one participant's single-trial responses over several feature spaces.

    Trials, groups and designs as :func:`~bids_vem.encoding.trialwise.encode_trials` makes
    them; ``betas_options`` go to :func:`~bids_vem.encoding.trialwise.load_trial_betas`.
    """
    from bids_vem.encoding.model import FOLDS_OF_CV_GROUPS
    from bids_vem.encoding.stimulus_folds import samples_from_rows
    from bids_vem.encoding.trialwise import load_trial_betas, trial_blocks

    known = sorted(set.intersection(*(set(fs.stim_ids) for fs in feature_sets)))
    trial_betas = load_trial_betas(runs_or_betas, known, **betas_options)
    groups_of = "session" if cv_groups == "session" else "run"
    blocks = [trial_blocks(trial_betas, fs, cv_groups=groups_of) for fs in feature_sets]
    samples = samples_from_rows(blocks[0].stim_ids, blocks[0].n_trials)
    result = fit_joint_model(
        [b.Xs for b in blocks], blocks[0].Ys, spaces=[fs.name for fs in feature_sets],
        alphas=alphas, samples=[samples] * len(blocks), groups_name=groups_of,
        folds=FOLDS_OF_CV_GROUPS[cv_groups], n_iterations=n_iterations, seed=seed,
        device=device, mem_mb=mem_mb, run_names=blocks[0].names,
    )  # fmt: skip
    result.mask = trial_betas.mask
    result.affine = trial_betas.affine
    return result
