# Longer than 500 lines: EncodingResult, the fit with its evaluation schemes and encode_runs share their helpers.
"""The voxelwise encoding model of one participant and one feature space, cross-validated.

Folds are whole runs, or, when a stimulus is shown in more than one run, unique stimuli
(:mod:`bids_vem.encoding.stimulus_folds`; ``folds="auto"``); never random TRs, whose
autocorrelation would leak between training and test. With folds of runs, two
cross-validations:

- **held-out scores** (``r``, ``r2``), nested leave-one-run-out: each run is predicted by a model
  that never saw it, whose per-voxel penalties were chosen by an inner leave-one-run-out CV on
  the other runs; ``r`` is the Pearson correlation per voxel over all held-out predictions
  concatenated, each run's data and predictions z-scored first (so ``r`` is the
  length-weighted mean of the per-run correlations, blind to the scale differences between the
  runs' models: a correlation-scored CV often picks a huge penalty for weak voxels, whose
  predictions keep their time course but shrink towards 0); ``r2`` is ``1 - SSE / SST`` of the
  raw held-out predictions over all runs, so it does see those scales. Computed, when every fold
  uses the same designs and memory allows, from one decomposition of all runs
  (:class:`~bids_vem.encoding.logo.NestedLeaveOneGroupOut`: the same numbers as refitting every
  inner and outer fold, without refitting any).
- **penalty map** (``alpha``, ``cv_score``), leave-one-run-out over all runs: the penalty a final
  model fitted on all runs would use, and its mean CV score. The number of voxels whose penalty
  sits on an edge of the grid says whether the grid was wide enough.

With only 2 runs no inner CV is possible: each run is predicted from the other with the
penalties of the 2-fold CV over both runs (so the held-out run took part in choosing the
penalty, a small optimistic bias; ``nested`` is False in the result).

Other evaluations (:mod:`bids_vem.encoding.evaluation`): explicit test runs (penalty map by
leave-one-run-out CV on the other runs, one model fitted on them, scores on the test runs only),
optionally with repeated test runs averaged; folds of whole sessions instead of runs
(``cv_groups``); folds of stimuli, nested the same way, or explicit test stimuli. Every fold's
count of test stimuli also seen in training is recorded. Permutation statistics, noise ceilings
and the block moments of paired comparisons come from the held-out predictions
(:class:`~bids_vem.encoding.evaluation.HeldOutScores`). Voxel data are read in voxel chunks
(from memory or from a :class:`~bids_vem.encoding.voxel_data.VoxelStore` on disk) and held-out
scores accumulated chunk by chunk: memory is set by the chunk (``mem_mb``), not by the number
of voxels.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from bids_vem.config import EvaluationSettings, check_setting, option_name
from bids_vem.encoding.bold import load_bold, run_confounds, runs_mask
from bids_vem.encoding.chunks import ChunkPlan, engine_bytes, voxel_chunk_for_memory
from bids_vem.encoding.design import (
    add_delays,
    build_run_design_from_timecourse,
    check_timecourse,
    column_scale,
    feature_timecourse,
    stimulus_occupancy,
    video_timecourse,
)
from bids_vem.encoding.device import resolve_device
from bids_vem.encoding.evaluation import HeldOutScores, repeated_sequences, select_test_runs
from bids_vem.encoding.logo import NestedLeaveOneGroupOut
from bids_vem.encoding.nuisance import (
    Nuisance,
    cleaning_regressors,
    nuisance_description,
    orthonormal_basis,
    word_rate_features,
)
from bids_vem.encoding.ridge import (
    TIE_SLOPE,
    Split,
    leave_one_group_out,
    read_selection,
    ridge_cv_alphas,
    ridge_cv_splits,
    solve_chunks,
    stack_designs,
)
from bids_vem.encoding.stimulus_folds import (
    StimulusSamples,
    n_stimulus_folds,
    samples_from_events,
    stimulus_folds,
)
from bids_vem.encoding.voxel_data import (
    InMemoryVoxelData,
    RunSubset,
    VoxelData,
    VoxelStore,
    as_voxel_data,
)
from bids_vem.errors import DataError, InputMissingError, UsageError
from bids_vem.features.feature_set import FeatureSet
from bids_vem.inputs.runs import Run
from bids_vem.outputs.atomic import atomic_path, write_npz_atomic

logger = logging.getLogger(__name__)

__all__ = ["EncodingResult", "fit_encoding_model", "encode_runs", "write_weights"]

#: voxels with a held-out r above this count as "predicted" in summaries without permutations
R_THRESHOLD = 0.1
#: FDR level at which a voxel counts as predicted (with permutations)
SIGNIFICANCE = 0.05

_MAPS = ("r", "r2", "alpha", "cv_score")
#: maps a result may have: permutation statistics and the noise ceiling
_OPTIONAL_MAPS = ("p", "q", "p_fwe", "nc")


@dataclass
class EncodingResult:
    """Per-voxel results of one encoding model.

    Attributes
    ----------
    r, r2 : ndarray of shape (n_voxels,), float32
        Held-out Pearson r (runs z-scored, then pooled) and R^2 (raw predictions pooled) of all
        runs' held-out predictions (nested CV; module docstring).
    alpha : ndarray of shape (n_voxels,), float32
        Penalty chosen by leave-one-run-out CV over all runs.
    cv_score : ndarray of shape (n_voxels,), float32
        Mean CV score of ``alpha`` over those folds (correlation, or R^2 when ``score="r2"``).
    alphas : ndarray of shape (n_alphas,), float64
        The penalty grid.
    n_alpha_low, n_alpha_high : int
        Voxels whose ``alpha`` is the smallest / largest of the grid.
    n_runs, n_samples, n_features : int
        Runs, time points (all runs) and design columns (features x delays).
    delays : tuple of int
        FIR delays in TRs (empty when unknown).
    feature_space : str
        Name of the feature space.
    nested : bool
        True when held-out scores come from nested CV (>= 3 runs).
    mask : ndarray of shape (X, Y, Z), bool, or None
        Voxels in the order of the maps (when the data came from images).
    affine : ndarray of shape (4, 4) or None
        Affine of ``mask``.
    runs : tuple of str
        Names of the runs, in fold order.
    score : str
        What the CV maximised to choose penalties (``"correlation"`` or ``"r2"``).
    evaluation : str
        ``"loro"`` (nested leave-one-out), ``"test-runs"`` or ``"test-runs-averaged"``
        (:mod:`bids_vem.encoding.evaluation`).
    test_runs : tuple of str
        The test runs (explicit test runs only; empty for ``"loro"``).
    repeats : tuple of tuple of str
        Test runs averaged together (``"test-runs-averaged"``).
    cv_groups : str
        What a CV fold holds out: ``"run"``, ``"session"`` or ``"stimulus"``.
    voxel_chunk : int
        Voxels per chunk at the end of the fit (after any out-of-memory halving); 0 if unknown.
    p, q, p_fwe : ndarray of shape (n_voxels,), float32, or None
        Permutation p-value of ``r > 0``, its Benjamini-Hochberg q and the family-wise p
        (:class:`~bids_vem.encoding.evaluation.HeldOutScores`); None without permutations.
    nc : ndarray of shape (n_voxels,), float32, or None
        Noise ceiling, a fraction of the test data's variance
        (:mod:`bids_vem.encoding.noise_ceiling`); None without repeats.
    n_permutations : int
    permutation : str
        What the null permuted, in words.
    cross_validation : str
        The folds, and why they were chosen, in words (the sidecars' ``CrossValidation``).
    n_folds : int
    test_stimuli_in_training : tuple of int
        Per fold, the test stimuli that training also showed (0 for stimulus folds).
    nuisance : str
        What was regressed out of the BOLD and projected out of the design, in words
        (:mod:`bids_vem.encoding.nuisance`; empty when the caller gave designs and data).
    block_moments : ndarray of shape (3, n_blocks, n_voxels), float32, or None
        Sums of z-scored data x prediction, data^2 and prediction^2 over blocks of test
        samples (:mod:`bids_vem.analysis.paired`).
    block_folds : ndarray of shape (n_blocks,), int, or None
        The fold (model) of each block.
    """

    r: np.ndarray
    r2: np.ndarray
    alpha: np.ndarray
    cv_score: np.ndarray
    alphas: np.ndarray
    n_alpha_low: int
    n_alpha_high: int
    n_runs: int
    n_samples: int
    n_features: int
    delays: tuple[int, ...] = ()
    feature_space: str = ""
    nested: bool = True
    mask: np.ndarray | None = None
    affine: np.ndarray | None = None
    runs: tuple[str, ...] = field(default_factory=tuple)
    score: str = "correlation"
    evaluation: str = "loro"
    test_runs: tuple[str, ...] = field(default_factory=tuple)
    repeats: tuple[tuple[str, ...], ...] = field(default_factory=tuple)
    cv_groups: str = "run"
    voxel_chunk: int = 0
    p: np.ndarray | None = None
    q: np.ndarray | None = None
    p_fwe: np.ndarray | None = None
    nc: np.ndarray | None = None
    n_permutations: int = 0
    permutation: str = ""
    cross_validation: str = ""
    n_folds: int = 0
    test_stimuli_in_training: tuple[int, ...] = ()
    nuisance: str = ""
    block_moments: np.ndarray | None = None
    block_folds: np.ndarray | None = None

    @property
    def n_voxels(self) -> int:
        return int(self.r.shape[0])

    @property
    def rnorm(self) -> np.ndarray | None:
        """Noise-normalised r, ``r / sqrt(nc)`` (NaN where the ceiling is 0), if ``nc``."""
        if self.nc is None:
            return None
        nc = np.asarray(self.nc, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(nc > 0, self.r / np.sqrt(np.where(nc > 0, nc, 1.0)), np.nan)
        return out.astype(np.float32)

    def significant(self, level: float = SIGNIFICANCE) -> np.ndarray | None:
        """Voxels whose permutation q (FDR) is below ``level``; None without permutations."""
        return None if self.q is None else np.asarray(self.q) < level

    def summary(self) -> dict:
        """Scalar figures for reports and logs (JSON-ready)."""
        r = self.r.astype(np.float64)
        return {
            "feature_space": self.feature_space,
            "n_voxels": self.n_voxels,
            "n_runs": self.n_runs,
            "n_samples": self.n_samples,
            "n_features": self.n_features,
            "delays": list(self.delays),
            "nested_cv": self.nested,
            "evaluation": self.evaluation,
            "cv_folds": self.cv_groups,
            "n_test_runs": len(self.test_runs) if self.test_runs else self.n_runs,
            "test_runs": list(self.test_runs),
            "n_repeat_groups": len(self.repeats),
            "cv_score_kind": self.score,
            "mean_r": float(np.mean(r)) if r.size else float("nan"),
            "median_r": float(np.median(r)) if r.size else float("nan"),
            "max_r": float(np.max(r)) if r.size else float("nan"),
            f"n_voxels_r_above_{R_THRESHOLD}": int(np.sum(r > R_THRESHOLD)),
            "cross_validation": self.cross_validation,
            "n_folds": int(self.n_folds),
            "max_test_stimuli_in_training": max(self.test_stimuli_in_training, default=0),
            "n_permutations": int(self.n_permutations),
            "n_voxels_q_below_0.05": (
                int(np.sum(self.q < SIGNIFICANCE)) if self.q is not None else None
            ),
            "n_voxels_fwe_p_below_0.05": (
                int(np.sum(self.p_fwe < SIGNIFICANCE)) if self.p_fwe is not None else None
            ),
            "median_nc": float(np.median(self.nc)) if self.nc is not None and r.size else None,
            "mean_r2": float(np.mean(self.r2)) if r.size else float("nan"),
            "max_r2": float(np.max(self.r2)) if r.size else float("nan"),
            "alpha_min": float(np.min(self.alphas)),
            "alpha_max": float(np.max(self.alphas)),
            "n_alphas": int(len(self.alphas)),
            "median_alpha": float(np.median(self.alpha)) if r.size else float("nan"),
            "n_alpha_low": int(self.n_alpha_low),
            "n_alpha_high": int(self.n_alpha_high),
        }

    def to_nifti(self, name: str) -> nib.Nifti1Image:
        """One map (``"r"``, ``"r2"``, ``"alpha"``, ``"cv_score"``, ``"p"``...) as a 3-D image."""
        if name not in (*_MAPS, *_OPTIONAL_MAPS, "rnorm") or getattr(self, name) is None:
            raise ValueError(f"this result has no map {name!r}")
        if self.mask is None or self.affine is None:
            raise ValueError("this result has no mask: it was not computed from images")
        volume = np.zeros(self.mask.shape, dtype=np.float32)
        volume[self.mask] = getattr(self, name)
        return nib.Nifti1Image(volume, self.affine)

    def save(self, path: Path | str) -> Path:
        """Write as ``.npz`` (no pickle), atomically; returns ``path``."""
        arrays = {name: np.asarray(getattr(self, name)) for name in (*_MAPS, "alphas")}
        arrays |= {
            name: np.asarray(getattr(self, name))
            for name in _OPTIONAL_MAPS
            if getattr(self, name) is not None
        }
        if self.block_moments is not None:
            arrays["block_moments"] = np.asarray(self.block_moments, dtype=np.float32)
            arrays["block_folds"] = np.asarray(self.block_folds, dtype=np.int64)
        if self.mask is not None:
            arrays["mask"] = np.asarray(self.mask, dtype=bool)
        if self.affine is not None:
            arrays["affine"] = np.asarray(self.affine, dtype=np.float64)
        header = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in arrays
            and f.name not in ("mask", "affine", "block_moments", "block_folds")
        }
        header["delays"] = [int(d) for d in self.delays]
        header["runs"] = list(self.runs)
        header["test_runs"] = list(self.test_runs)
        header["repeats"] = [list(group) for group in self.repeats]
        header["test_stimuli_in_training"] = [int(n) for n in self.test_stimuli_in_training]
        arrays["header"] = np.array(json.dumps(header))
        return write_npz_atomic(path, arrays)

    @classmethod
    def load(cls, path: Path | str) -> EncodingResult:
        """Read a result written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            arrays = {name: data[name] for name in (*_MAPS, "alphas")}
            arrays |= {
                name: data[name]
                for name in (*_OPTIONAL_MAPS, "block_moments", "block_folds")
                if name in data
            }
            mask = data["mask"] if "mask" in data else None
            affine = data["affine"] if "affine" in data else None
        header["delays"] = tuple(header.get("delays", ()))
        header["runs"] = tuple(header.get("runs", ()))
        header["test_runs"] = tuple(header.get("test_runs", ()))
        header["repeats"] = tuple(tuple(group) for group in header.get("repeats", ()))
        header["test_stimuli_in_training"] = tuple(header.get("test_stimuli_in_training", ()))
        return cls(**arrays, **header, mask=mask, affine=affine)


def _edge_counts(alpha: np.ndarray, alphas: np.ndarray) -> tuple[int, int]:
    low = int(np.sum(np.isclose(alpha, alphas.min(), rtol=1e-6)))
    high = int(np.sum(np.isclose(alpha, alphas.max(), rtol=1e-6)))
    return low, high


def _resolve_fold_designs(
    fold: Sequence[int], Xs: Sequence[np.ndarray], test_designs: dict
) -> Sequence[np.ndarray]:
    """The designs that predict the runs of one fold (all its runs must agree)."""
    chosen = {id(test_designs.get(i, Xs)) for i in fold}
    if len(chosen) > 1:
        raise ValueError(f"held-out runs {list(fold)} are predicted from different designs")
    return test_designs.get(fold[0], Xs)


@dataclass
class _Unit:
    """One test unit: its parts (repeated runs are averaged, truncated to the shortest), each
    with the design rows that predict it, and an optional averaging of its rows (a trial-wise
    fold: the repeats of each held-out stimulus)."""

    parts: list[tuple[list, np.ndarray]]
    averaging: np.ndarray | None = None
    #: for the null that relabels held-out stimuli (:meth:`StimulusSamples.slots`): where each
    #: sits in the unit, their feature rows, and the fold (one relabelling per fold)
    slots: np.ndarray | None = None
    held_features: np.ndarray | None = None
    fold: int = 0


def _unit_data(
    unit: _Unit, data: VoxelData, predictions: list[torch.Tensor], voxels: slice, device
):
    """The unit's data and prediction for a chunk (float64), and its repeats' noise sums."""
    ys = [read_selection(data, rows, voxels, device, torch.float64) for rows, _ in unit.parts]
    n = min(len(y) for y in ys)
    ys = [y[:n] for y in ys]
    ps = [p[:n].to(torch.float64) for p in predictions]
    Y, P = sum(ys) / len(ys), sum(ps) / len(ps)
    repeats = None
    if len(ys) > 1:
        # Schoppe et al. (2016): signal power from the variance of the sum and of each repeat
        k = len(ys)
        total = sum(ys)
        signal = (total.var(0, correction=0) - sum(y.var(0, correction=0) for y in ys)) / (
            k * (k - 1)
        )
        repeats = ((signal * n).cpu().numpy(), (Y.var(0, correction=0) * n).cpu().numpy())
    if unit.averaging is not None:
        averaging = torch.as_tensor(unit.averaging, dtype=torch.float64, device=Y.device)
        Y, P = averaging @ Y, averaging @ P
    return Y, P, repeats


#: working arrays larger than this live in a temporary file (mapped), not in memory
_SCRATCH_IN_MEMORY = 1 << 30


def _scratch(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised working array; past 1 GiB memory-mapped on an anonymous temporary file
    (deleted when the array is), so that a whole-brain fit stays within its memory budget."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes <= _SCRATCH_IN_MEMORY:
        return np.empty(shape, dtype)
    return np.memmap(tempfile.TemporaryFile(), dtype=dtype, mode="w+", shape=shape)


#: samples of a time course per block of the paired bootstrap (keeps its autocorrelation)
BLOCK_TRS = 10


def _block_rows(n_rows: int, permutation: str) -> int:
    """Block size of a unit: 10 TRs of a time course; test stimuli in about 20 blocks."""
    if permutation == "permute":
        return max(1, -(-n_rows // 20))
    return BLOCK_TRS


def _held_out_terms(unit: _Unit, weights: torch.Tensor) -> torch.Tensor:
    """Each held-out stimulus's prediction per delay, ``G[d] = features @ W_d``:
    (n_delays, n_held, n_voxels_chunk); the design's columns are delay-major."""
    n_delays = unit.slots.shape[0]
    features = torch.as_tensor(unit.held_features, dtype=weights.dtype, device=weights.device)
    width = features.shape[1]
    return torch.stack(
        [features @ weights[d * width : (d + 1) * width] for d in range(n_delays)]
    ).to(torch.float64)


def write_weights(
    path: Path | str,
    X: np.ndarray,
    data: VoxelData,
    runs: Sequence[int],
    alpha: np.ndarray,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    chunks: ChunkPlan | None = None,
) -> Path:
    """Ridge weights of a model fitted on ``runs`` as ``.npy``, written voxel chunk by chunk.

    Parameters
    ----------
    path : Path
        Output ``.npy`` file (written atomically).
    X : ndarray of shape (n_samples, n_features)
        Designs of ``runs``, stacked.
    data : VoxelData
    runs : sequence of int
        The runs of ``data`` the model is fitted on.
    alpha : ndarray of shape (n_voxels,)
        Each voxel's penalty.

    Returns
    -------
    Path
        A float32 array of shape (n_features, n_voxels) (column-major on disk, so that each
        chunk is appended as it comes; ``np.load`` reads it as usual).
    """
    path = Path(path)
    n_features = np.shape(X)[1]
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle,
            {"descr": "<f4", "fortran_order": True, "shape": (n_features, data.n_voxels)},
        )

        def append(voxels: slice, results: list[torch.Tensor]) -> None:
            block = results[0].to("cpu", torch.float32).numpy()  # (n_features, n_voxels_chunk)
            handle.write(np.ascontiguousarray(block.T).tobytes())

        solve_chunks(
            X, data, runs, alpha, [None], append, device=device, dtype=dtype, chunks=chunks
        )
    return path


def fit_encoding_model(
    Xs: Sequence[np.ndarray],
    Ys: Sequence[np.ndarray] | VoxelData,
    alphas: Sequence[float] | np.ndarray,
    *,
    device: str | torch.device = "cpu",
    n_voxels_chunk: int | None = None,
    run_names: Sequence[str] | None = None,
    delays: Sequence[int] = (),
    feature_space: str = "",
    score: str = "correlation",
    dtype: torch.dtype = torch.float32,
    test_designs: Mapping[int, Sequence[np.ndarray]] | None = None,
    test_runs: Sequence[int] | None = None,
    repeats: Sequence[Sequence[int]] | None = None,
    cv_groups: Sequence[Hashable] | None = None,
    cv_groups_name: str = "run",
    mem_mb: float | None = None,
    weights_path: Path | str | None = None,
    stimulus_samples: StimulusSamples | None = None,
    folds: str = "auto",
    test_stimuli: np.ndarray | None = None,
    n_permutations: int = 0,
    permutation: str = "shift",
    seed: int = 0,
    stimulus_fold_designs: Mapping[frozenset, tuple[list[np.ndarray], Callable, Callable | None]]
    | None = None,
) -> EncodingResult:
    """Fit and evaluate a ridge encoding model (module docstring).

    Works with any designs and data paired by run: TR-level designs of continuous runs, or
    trial-wise designs (one row per trial) with the trial responses of each run.

    Parameters
    ----------
    Xs : list of ndarray of shape (n_samples_i, n_features)
        Design of each run (z-scored per run).
    Ys : list of ndarray of shape (n_samples_i, n_voxels), or VoxelData
        BOLD of each run (z-scored per run); a
        :class:`~bids_vem.encoding.voxel_data.VoxelStore` streams it from disk.
    alphas : sequence of float
        Penalty grid (log-spaced over many decades).
    device, n_voxels_chunk, dtype
        As in :func:`bids_vem.encoding.ridge.ridge_cv_alphas`; results do not depend on the
        chunk (a CUDA out-of-memory error halves it and goes on).
    run_names : sequence of str, optional
        Names of the runs, for messages and the result.
    delays, feature_space
        Recorded in the result.
    score : {"correlation", "r2"}
        What the CV maximises to choose penalties. Correlation (the field's habit) is blind to
        the scale of the predictions and often picks the largest penalty for weak voxels;
        R^2 is not.
    test_designs : mapping of int to list of ndarray, optional
        For some held-out runs (by index), the designs of all runs to use when that run is
        predicted (inner CV, refit and prediction), e.g. from features of an aligned encoder
        that never saw the run's stimuli; ``Xs`` still give the penalty map.
    test_runs : sequence of int, optional
        Explicit test runs (``evaluation="test-runs"``): penalties by leave-one-run-out CV on
        the other runs, one model fitted on them, scores on the test runs only. Default:
        nested leave-one-out over all runs (``evaluation="loro"``).
    repeats : sequence of sequence of int, optional
        With ``test_runs``: the test runs grouped by repeated stimulus sequence; each group's
        data and predictions are averaged (over its shortest run's length) before scoring
        (``evaluation="test-runs-averaged"``).
    cv_groups : sequence of hashable, optional
        A label per run (e.g. its session): folds hold out all runs of one label, in the CV
        and in the nested evaluation. Default: one run per fold.
    cv_groups_name : str
        What the folds are (``"run"``, ``"session"``), recorded in the result.
    mem_mb : float, optional
        Memory budget of the fit in MB: sets the voxel chunk
        (:func:`~bids_vem.encoding.chunks.voxel_chunk_for_memory`) unless ``n_voxels_chunk``.
    weights_path : Path, optional
        Write the weights of the final model (all runs; with ``test_runs``, the training
        runs) there (:func:`write_weights`).
    stimulus_samples : StimulusSamples, optional
        Which stimuli shaped each sample (:mod:`bids_vem.encoding.stimulus_folds`): enables
        stimulus-disjoint folds and the count of test stimuli seen in training.
    folds : {"auto", "groups", "stimulus"}
        ``"auto"``: folds of unique stimuli when a stimulus is shown in more than one CV group
        (run or session), else folds of groups; ``"groups"``, ``"stimulus"``: forced.
    test_stimuli : ndarray of bool, optional
        Explicit test stimuli (over ``stimulus_samples.stim_ids``,
        ``evaluation="test-stimuli"``).
    n_permutations : int
        Permutations of the null of every voxel's r (0: none): p, FDR q and family-wise p.
    permutation : {"shift", "permute"}
        What the null does to each test unit's prediction: circular shifts (time courses) or
        permutations of its rows (stimuli, trial-wise).
    seed : int
        Seed of the permutations.
    stimulus_fold_designs : mapping, optional
        For a stimulus fold (the frozenset of its held-out stimulus ids), the designs of all
        blocks, the partial-design function and the held-out feature rows function
        (:class:`~bids_vem.encoding.stimulus_folds.StimulusSamples`) to use: an aligned encoder
        that never saw them, as ``test_designs`` for folds of runs.

    Returns
    -------
    EncodingResult

    Raises
    ------
    DataError
        Fewer than 2 runs (or groups), or runs that disagree in features or voxels.
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    data = as_voxel_data(Ys)
    names = list(run_names) if run_names is not None else [f"run {i + 1}" for i in range(len(Xs))]
    n_features = _check_designs(Xs, data, names)
    device = resolve_device(device)
    itemsize = torch.empty((), dtype=dtype).element_size()
    chunk = n_voxels_chunk or voxel_chunk_for_memory(
        mem_mb,
        n_samples=sum(data.run_lengths),
        n_features=n_features,
        n_alphas=len(alphas),
        n_voxels=data.n_voxels,
        itemsize=itemsize,
    )
    plan = ChunkPlan(chunk)
    fit = _Fit(
        Xs, data, alphas, names, dict(test_designs or {}),
        None if cv_groups is None else list(cv_groups), cv_groups_name, score,
        dict(device=device, dtype=dtype, chunks=plan), stimulus_samples, n_permutations,
        permutation, seed, stimulus_fold_designs,
    )  # fmt: skip
    fit.mem_mb = mem_mb
    scheme = _choose_folds(fit, folds, test_runs, test_stimuli)
    if test_stimuli is not None:
        n_inner = len(leave_one_group_out(len(Xs), fit.groups))
        evaluated = fit.on_test_stimuli(np.asarray(test_stimuli, dtype=bool), n_inner)
    elif scheme.stimulus_folds is not None:
        if test_designs and not stimulus_fold_designs:
            raise UsageError(
                "per-fold aligned features follow folds of runs, but these runs repeat stimuli "
                f"and are evaluated on folds of stimuli: align on an external corpus "
                f"({option_name('align_corpus')}) or force {option_name('cv_groups')} run"
            )
        evaluated = fit.stimulus_disjoint(scheme.stimulus_folds)
    elif test_runs is None:
        if repeats:
            raise ValueError("repeats are averaged only among explicit test runs")
        evaluated = fit.nested_leave_one_out()
    else:
        evaluated = fit.on_test_runs(test_runs, repeats)
    description = scheme.describe(fit.overlap)
    if max(fit.overlap, default=0) > 0:
        logger.warning(
            "%s: %s; the scores measure in part how well the features tell the repeated "
            "stimuli apart",
            feature_space or "encoding model",
            description,
        )
    else:
        logger.info("%s cross-validation: %s", feature_space or "encoding model", description)
    alpha = evaluated.alpha
    if weights_path is not None:
        designs = evaluated.model_designs
        write_weights(
            weights_path,
            stack_designs(designs, evaluated.model_runs, training=True, nuisance=data.nuisance),
            data,
            evaluated.model_runs,
            alpha,
            **fit.options,
        )
    chosen = np.argmin(np.abs(np.log(alphas)[:, None] - np.log(alpha)[None, :]), axis=0)
    cv_score = evaluated.cv_scores[chosen, np.arange(alpha.size)]
    low, high = _edge_counts(alpha, alphas)
    stats = fit.scores.permutation_p()
    p, q, p_fwe = stats if stats is not None else (None, None, None)
    nc = (
        fit.scores.noise_ceiling
        if stimulus_samples is None or not stimulus_samples.trialwise
        else None
    )
    return EncodingResult(
        r=fit.scores.r.astype(np.float32),
        r2=fit.scores.r2.astype(np.float32),
        alpha=alpha.astype(np.float32),
        cv_score=cv_score.astype(np.float32),
        alphas=alphas,
        n_alpha_low=low,
        n_alpha_high=high,
        n_runs=len(Xs),
        n_samples=int(sum(data.run_lengths)),
        n_features=n_features,
        delays=tuple(int(d) for d in delays),
        feature_space=feature_space,
        nested=evaluated.nested,
        runs=tuple(names),
        score=score,
        evaluation=evaluated.evaluation,
        test_runs=tuple(names[i] for i in evaluated.test),
        repeats=tuple(tuple(names[i] for i in unit) for unit in evaluated.units if len(unit) > 1),
        cv_groups="stimulus"
        if evaluated.evaluation.endswith(("stimulus-folds", "stimuli"))
        else cv_groups_name,
        voxel_chunk=plan.size,
        p=None if p is None else p.astype(np.float32),
        q=None if q is None else q.astype(np.float32),
        p_fwe=None if p_fwe is None else p_fwe.astype(np.float32),
        nc=None if nc is None else nc.astype(np.float32),
        n_permutations=int(n_permutations),
        permutation=_PERMUTATION_TEXT[permutation] if n_permutations else "",
        cross_validation=description,
        n_folds=scheme.n_folds,
        test_stimuli_in_training=tuple(fit.overlap),
        block_moments=fit.scores.block_moments,
        block_folds=fit.scores.block_folds,
    )


_PERMUTATION_TEXT = {
    "shift": "each test unit's prediction circularly shifted against its data (time courses "
    "keep their autocorrelation)",
    "permute": "the test stimuli's predictions permuted among them (stimulus labels exchanged)",
}


@dataclass
class _FoldScheme:
    """The folds chosen, and the words that say why."""

    kind: str  # "groups", "stimulus", "test-runs", "test-stimuli"
    groups_name: str
    n_folds: int
    n_groups: int
    n_stimuli: int = 0
    n_test_stimuli: int = 0
    n_repeated: int = 0
    max_groups: int = 0
    stimulus_folds: list[np.ndarray] | None = None
    forced: bool = False

    def describe(self, overlap: Sequence[int]) -> str:
        g = self.groups_name
        repeats = (
            f"{self.n_repeated} of {self.n_stimuli} unique stimuli shown in more than one {g} "
            f"(up to {self.max_groups} {g}s)"
            if self.n_repeated
            else f"no stimulus shown in more than one {g}"
        )
        seen = max(overlap, default=0)
        leak = f"; up to {seen} test stimuli per fold also in training" if seen else ""
        if self.kind == "stimulus":
            why = "forced" if self.forced else "chosen because stimuli repeat"
            return (
                f"stimulus-disjoint: {self.n_folds} folds of unique stimuli ({repeats}; {why}); "
                "each fold trains on the samples no held-out stimulus shaped and tests on the "
                "held-out stimuli's samples, predicted from their features alone"
            )
        if self.kind == "test-stimuli":
            return (
                f"explicit test stimuli ({self.n_test_stimuli} stimuli held out; {repeats}); "
                "penalties by stimulus-disjoint CV on the training stimuli"
            )
        if self.kind == "test-runs":
            return f"explicit test runs; penalties by leave-one-{g}-out CV on the others ({repeats}){leak}"
        return f"leave-one-{g}-out over {self.n_groups} {g}s ({repeats}){leak}"


def _choose_folds(fit: _Fit, folds: str, test_runs, test_stimuli) -> _FoldScheme:
    """Folds of groups or of stimuli (``folds``), with the figures that explain the choice."""
    if folds not in ("auto", "groups", "stimulus"):
        raise ValueError(f"folds must be auto, groups or stimulus, got {folds!r}")
    n_groups = len(leave_one_group_out(fit.n_runs, fit.groups))
    scheme = _FoldScheme("groups", fit.groups_name, n_groups, n_groups)
    samples = fit.samples
    if samples is None:
        if folds == "stimulus" or test_stimuli is not None:
            raise ValueError("stimulus folds need stimulus_samples")
        return scheme
    per_stimulus = samples.shown_in(fit.groups).sum(axis=0)  # groups showing each stimulus
    scheme.n_stimuli = samples.n_stimuli
    scheme.n_repeated = int(np.sum(per_stimulus > 1))
    scheme.max_groups = int(per_stimulus.max()) if samples.n_stimuli else 0
    repeated = per_stimulus > 1
    if test_stimuli is not None:
        scheme.kind, scheme.n_folds = "test-stimuli", 1
        scheme.n_test_stimuli = int(np.sum(test_stimuli))
        return scheme
    if test_runs is not None:
        scheme.kind, scheme.n_folds = "test-runs", 1
        return scheme
    if folds == "groups" or (folds == "auto" and not repeated.any()):
        return scheme
    per_fold = 2 if samples.trialwise else 1
    n_folds = n_stimulus_folds(n_groups, samples.n_stimuli, samples.trialwise)
    if n_folds < 2:
        raise DataError(
            f"stimulus-disjoint cross-validation needs at least {2 * per_fold} unique stimuli; "
            f"found {samples.n_stimuli}"
        )
    scheme.kind, scheme.n_folds, scheme.forced = "stimulus", n_folds, folds == "stimulus"
    scheme.stimulus_folds = stimulus_folds(samples, n_folds)
    return scheme


def _check_designs(Xs: Sequence[np.ndarray], data: VoxelData, names: list[str]) -> int:
    """The number of design columns, once the designs are known to fit the runs' data."""
    if len(Xs) != data.n_runs or len(names) != len(Xs):
        raise ValueError(f"{len(Xs)} designs, {data.n_runs} data blocks, {len(names)} run names")
    if len(Xs) < 2:
        found = f"; found {len(Xs)}" + (f": {names[0]}" if names else "")
        raise DataError(f"leave-one-run-out needs at least 2 runs{found}")
    n_features = {X.shape[1] for X in Xs}
    if len(n_features) != 1:
        raise DataError(f"runs {', '.join(names)} disagree in design columns {sorted(n_features)}")
    for name, X, n in zip(names, Xs, data.run_lengths, strict=True):
        if len(X) != n:
            raise DataError(f"{name}: design has {len(X)} rows but the BOLD {n} volumes")
    return n_features.pop()


@dataclass
class _Evaluated:
    """What an evaluation scheme chose and fitted (the held-out scores are in ``_Fit.scores``)."""

    evaluation: str
    #: the penalty map of the reported model, and the CV scores of every penalty
    alpha: np.ndarray
    cv_scores: np.ndarray
    nested: bool
    #: the runs (and their designs) of the model whose weights are written
    model_runs: list[int]
    model_designs: Sequence[np.ndarray]
    #: explicit test runs, and the groups of repeated test runs averaged before scoring
    test: list[int] = field(default_factory=list)
    units: list[list[int]] = field(default_factory=list)


class _Fit:
    """The runs' designs and data, the penalty grid and the CV folds of one encoding model."""

    def __init__(
        self, Xs, data, alphas, names, test_designs, groups, groups_name, score, options,
        samples=None, n_permutations=0, permutation="shift", seed=0, fold_sets=None,
    ) -> None:  # fmt: skip
        self.Xs, self.data, self.alphas, self.names = Xs, data, alphas, names
        self.n_runs = len(Xs)
        for test, designs in test_designs.items():
            if len(designs) != self.n_runs or any(
                D.shape != X.shape for D, X in zip(designs, Xs, strict=True)
            ):
                raise ValueError(f"designs for held-out run {test} do not match the runs' designs")
        self.test_designs, self.groups, self.groups_name = test_designs, groups, groups_name
        self.score, self.options = score, options
        self.samples: StimulusSamples | None = samples
        self.n_permutations, self.permutation, self.seed = n_permutations, permutation, seed
        self.scores = self._new_scores(centred_r2=False)
        self.overlap: list[int] = []
        self._n_units = 0
        self._partial: dict[bytes, list[np.ndarray]] = {}
        self.fold_sets = dict(fold_sets or {})
        #: the memory budget of the fit (``--mem``), None for none
        self.mem_mb: float | None = None

    def _new_scores(self, centred_r2: bool) -> HeldOutScores:
        return HeldOutScores(
            self.data.n_voxels,
            centred_r2=centred_r2,
            n_permutations=self.n_permutations,
            seed=self.seed,
        )

    def _cv(self, designs, runs: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Penalty per voxel by leave-one-group-out CV over ``runs`` (default: all)."""
        if runs is None:
            return ridge_cv_alphas(
                designs, self.data, self.alphas, score=self.score, groups=self.groups,
                **self.options,
            )  # fmt: skip
        groups = None if self.groups is None else [self.groups[i] for i in runs]
        return ridge_cv_alphas(
            [designs[i] for i in runs], RunSubset(self.data, runs), self.alphas,
            score=self.score, groups=groups, **self.options,
        )  # fmt: skip

    def _chunk_scorer(self, units: list[_Unit], relabel: bool) -> Callable:
        """``on_chunk(voxels, predictions)`` scoring each unit (its predictions in the order of
        its parts) with its permutation nulls; with ``relabel`` the last prediction is the
        weights (n_columns, n_voxels_chunk)."""
        keys = list(range(self._n_units, self._n_units + len(units)))
        self._n_units += len(units)
        device = self.options["device"]

        def on_chunk(voxels: slice, predictions: list[torch.Tensor]) -> None:
            weights = predictions[-1] if relabel else None
            results, start = [], 0
            for key, unit in zip(keys, units, strict=True):
                parts = predictions[start : start + len(unit.parts)]
                start += len(unit.parts)
                Y, P, repeats = _unit_data(unit, self.data, parts, voxels, device)
                if unit.slots is not None and self.n_permutations:
                    null = self.scores.null_relabel(
                        unit.fold, Y, P, unit.slots, _held_out_terms(unit, weights)
                    )
                else:
                    null = self.scores.null_moments(key, Y, P, self.permutation)
                blocks = self.scores.block_sums(Y, P, _block_rows(len(Y), self.permutation))
                results.append((key, self.scores.moments(Y, P), null, repeats, blocks))
            # committed once the whole chunk succeeded
            for key, moments, null, repeats, blocks in results:
                self.scores.commit(voxels, moments)
                self.scores.commit_null(voxels, null)
                self.scores.commit_blocks(key, voxels, blocks)
                if repeats is not None:
                    self.scores.commit_repeats(voxels, *repeats)

        return on_chunk

    def _predict(self, designs, train, alpha: np.ndarray, units: list[_Unit]) -> None:
        """Fit on ``train`` (a selection) and score each unit, with its permutation nulls."""
        relabel = self.n_permutations > 0 and any(u.slots is not None for u in units)
        outputs = [design for unit in units for _, design in unit.parts]
        on_chunk = self._chunk_scorer(units, relabel)
        self.scores.begin_fold()
        solve_chunks(
            stack_designs(designs, train, training=True, nuisance=self.data.nuisance),
            self.data, train, alpha,
            outputs + ([None] if relabel else []), on_chunk, **self.options,
        )  # fmt: skip
        self.scores.end_fold()

    def _nested_from_one_decomposition(self, folds: list[list[int]]):
        """Nested leave-one-group-out from one decomposition of all runs
        (:class:`~bids_vem.encoding.logo.NestedLeaveOneGroupOut`), float64.

        Returns
        -------
        alpha, cv_scores : ndarray
            The penalty map over all folds, as :meth:`_cv`.
        predictions : ndarray of shape (n_samples, n_voxels), float32
            Each fold's held-out prediction (runs in the order of ``folds``), its penalties
            chosen by CV on the other folds.
        """
        device, plan, alphas = self.options["device"], self.options["chunks"], self.alphas
        order = [run for fold in folds for run in fold]
        sizes = [sum(self.data.run_lengths[run] for run in fold) for fold in folds]
        X = torch.as_tensor(stack_designs(self.Xs, order)).to(device, torch.float64)
        engine = NestedLeaveOneGroupOut(X, sizes)
        n_groups, n_voxels = engine.n_groups, self.data.n_voxels
        coefs = _scratch((engine.left.shape[1], n_voxels), np.float64)

        def read(part: slice) -> torch.Tensor:
            return read_selection(self.data, order, part, device, torch.float64)

        def project(part: slice) -> None:
            coefs[:, part] = engine.coefficients(read(part)).cpu().numpy()

        plan.run(n_voxels, project)
        # the voxels in one chunk (the usual case below whole brain): read and centre the data
        # once for every penalty, not once per penalty
        prepared: dict[tuple[int, int], list] = {}

        def group_data(part: slice) -> list:
            key = (part.start, part.stop)
            if key in prepared:
                return prepared[key]
            data = engine.group_data(read(part))
            if part.start == 0 and part.stop == n_voxels:
                prepared[key] = data
            return data

        outer = np.zeros((len(alphas), n_voxels))
        inner = np.zeros((n_groups, len(alphas), n_voxels))
        for k, alpha in enumerate(
            tqdm(alphas, desc="nested CV penalties", unit="penalty", disable=None, leave=False)
        ):
            ops = engine.operators(float(alpha))

            def score(part: slice, k: int = k, ops=ops) -> None:
                C = torch.as_tensor(coefs[:, part]).to(device)
                out, within = engine.scores(group_data(part), C, ops, self.score)
                outer[k, part] = out.sum(0).cpu().numpy()
                inner[:, k, part] = within.cpu().numpy()

            plan.run(n_voxels, score)
            del ops, score  # one penalty's operators in memory at a time (2 n^2 floats)
        prepared.clear()
        slope = TIE_SLOPE * np.log(alphas)[:, None]
        cv_scores = outer / n_groups
        alpha_map = alphas[np.argmax(cv_scores + slope, axis=0)]
        chosen = np.argmax(inner / (n_groups - 1) + slope[None], axis=1)  # (n_groups, n_voxels)
        predictions = _scratch((X.shape[0], n_voxels), np.float32)

        def predict(part: slice) -> None:
            Y, C = read(part), torch.as_tensor(coefs[:, part]).to(device)
            for h, rows in enumerate(engine.slices):
                block = np.empty((rows.stop - rows.start, part.stop - part.start), np.float32)
                for k in np.unique(chosen[h, part]):
                    these = torch.as_tensor(np.flatnonzero(chosen[h, part] == k), device=device)
                    held = engine.held_out_at(Y[:, these], C[:, these], h, float(alphas[k]))
                    block[:, these.cpu().numpy()] = held.cpu().numpy()
                predictions[rows, part] = block

        plan.run(n_voxels, predict)
        return alpha_map, cv_scores, predictions

    def _run_overlap(self, test: list[int]) -> None:
        if self.samples is not None:
            train = [i for i in range(self.n_runs) if i not in test]
            self.overlap.append(self.samples.overlap(test, train))

    def nested_leave_one_out(self) -> _Evaluated:
        """Every fold predicted by a model that never saw it, its penalties by inner CV."""
        folds = leave_one_group_out(self.n_runs, self.groups)
        if len(folds) < 2:
            raise DataError(
                f"leave-one-{self.groups_name}-out needs at least 2 {self.groups_name}s; "
                f"found 1 ({', '.join(self.names)})"
            )
        nested = len(folds) >= 3
        if nested and not self.test_designs and self._shared_fits_in_memory(len(folds)):
            return self._nested_leave_one_out_shared(folds)
        # penalties a final model on all runs would use
        alpha, cv_scores = self._cv(self.Xs)
        for fold in folds:
            train = [i for i in range(self.n_runs) if i not in fold]
            self._run_overlap(fold)
            designs = _resolve_fold_designs(fold, self.Xs, self.test_designs)
            if nested:
                alpha_fold, _ = self._cv(designs, train)
            elif fold[0] in self.test_designs:
                alpha_fold, _ = self._cv(designs)
            else:
                alpha_fold = alpha
            units = [_Unit([([i], designs[i])]) for i in fold]
            self._predict(designs, train, alpha_fold, units)
        return _Evaluated("loro", alpha, cv_scores, nested, list(range(self.n_runs)), self.Xs)

    def _shared_fits_in_memory(self, n_folds: int) -> bool:
        """Whether :meth:`_nested_leave_one_out_shared` stays within ``mem_mb``: it holds two
        ``(n_samples, n_samples)`` matrices and every fold's CV scores of every voxel, where
        refitting fold by fold holds one fold's decomposition."""
        if self.mem_mb is None:
            return True
        n, p = sum(self.data.run_lengths), self.Xs[0].shape[1]
        rank, n_voxels = min(n, p), self.data.n_voxels
        scores = 8 * (n_folds + 1) * len(self.alphas) * n_voxels
        scratch = min(8 * rank * n_voxels, _SCRATCH_IN_MEMORY) + min(
            4 * n * n_voxels, _SCRATCH_IN_MEMORY
        )
        fixed = 8 * (n * p + n * rank + 2 * n * n) + scores + scratch
        chunk = self.options["chunks"].size
        needed = engine_bytes(n, p, len(self.alphas), n_voxels, 0) + fixed + 8 * 7 * n * chunk
        if needed <= self.mem_mb * 2**20:
            return True
        logger.info(
            "nested CV refits each fold: one decomposition for all folds would need %.0f MB "
            "(budget %.0f MB)",
            needed / 2**20,
            self.mem_mb,
        )
        return False

    def _nested_leave_one_out_shared(self, folds: list[list[int]]) -> _Evaluated:
        """:meth:`nested_leave_one_out` when every fold uses the same designs: the inner CVs,
        the held-out predictions and the penalty map from one decomposition of all runs (the
        same numbers as refitting each fold, to rounding)."""
        alpha, cv_scores, predictions = self._nested_from_one_decomposition(folds)
        plan = self.options["chunks"]
        start = {}
        offset = 0
        for run in (run for fold in folds for run in fold):
            start[run] = offset
            offset += self.data.run_lengths[run]
        for fold in folds:
            self._run_overlap(fold)
            units = [_Unit([([i], self.Xs[i])]) for i in fold]
            on_chunk = self._chunk_scorer(units, relabel=False)
            rows = [slice(start[i], start[i] + self.data.run_lengths[i]) for i in fold]

            def work(part: slice, rows=rows, on_chunk=on_chunk) -> None:
                device = self.options["device"]
                on_chunk(part, [torch.as_tensor(predictions[r, part]).to(device) for r in rows])

            self.scores.begin_fold()
            plan.run(self.data.n_voxels, work)
            self.scores.end_fold()
        return _Evaluated("loro", alpha, cv_scores, True, list(range(self.n_runs)), self.Xs)

    def on_test_runs(
        self, test_runs: Sequence[int], repeats: Sequence[Sequence[int]] | None
    ) -> _Evaluated:
        """Penalties by CV on the training runs, one model fitted on them, scored on the test."""
        n_runs = self.n_runs
        test = sorted({int(i) for i in test_runs})
        if not test or test[0] < 0 or test[-1] >= n_runs:
            raise ValueError(f"test runs {list(test_runs)} are not run indices 0..{n_runs - 1}")
        train = [i for i in range(n_runs) if i not in test]
        units = [sorted(unit) for unit in repeats] if repeats else [[i] for i in test]
        if sorted(i for unit in units for i in unit) != test:
            raise ValueError(f"repeat groups {units} do not partition the test runs {test}")
        train_groups = None if self.groups is None else [self.groups[i] for i in train]
        if len(leave_one_group_out(len(train), train_groups)) < 2:
            listed = ", ".join(self.names[i] for i in train)
            raise DataError(
                f"the training runs ({listed}) form fewer than 2 {self.groups_name}s: "
                "no cross-validation of the penalties is possible"
            )
        self._run_overlap(test)
        designs = _resolve_fold_designs(test, self.Xs, self.test_designs)
        alpha, cv_scores = self._cv(designs, train)
        self._predict(
            designs, train, alpha, [_Unit([([i], designs[i]) for i in unit]) for unit in units]
        )
        evaluation = "test-runs-averaged" if repeats else "test-runs"
        return _Evaluated(evaluation, alpha, cv_scores, True, train, designs, test, units)

    # ------------------------------------------------------------ stimulus-disjoint folds
    def _fold_set(self, held: np.ndarray):
        """The designs, partial designs and held-out feature rows that serve the fold holding
        out ``held``: an aligned encoder that never saw those stimuli, else the shared ones."""
        key = frozenset(self.samples.stim_ids[i] for i in np.flatnonzero(held))
        shared = (self.Xs, self.samples.partial_designs, self.samples.held_features)
        return self.fold_sets.get(key, shared)

    def _held_designs(self, held: np.ndarray, Xs, partial) -> list[np.ndarray]:
        """Each block's design from the stimuli ``held`` alone.

        Cached for the shared encoder only, whose designs every outer fold's inner CV asks
        for again. A fold's own encoder (an alignment that never saw the fold's stimuli) asks
        once per (outer, inner) pair: caching those kept one full-size design per pair, n_folds
        squared of them (100 GB at NOD's 40 runs of 256 volumes).
        """
        if partial is None:
            return Xs
        if partial is not self.samples.partial_designs:
            return partial(held)
        key = np.packbits(held).tobytes()
        if key not in self._partial:
            self._partial[key] = partial(held)
        return self._partial[key]

    def _split(self, held: np.ndarray, within, Xs, partial) -> Split | None:
        fold = self.samples.split(held, within)
        if not fold.train or not fold.test:
            return None
        designs = self._held_designs(held, Xs, partial)
        test = np.concatenate([np.asarray(designs[b])[rows] for b, rows in fold.test])
        return Split(fold.train, fold.test, test)

    def _cv_splits(self, splits: list[Split | None], Xs) -> tuple[np.ndarray, np.ndarray]:
        splits = [split for split in splits if split is not None]
        if len(splits) < 2:
            raise DataError(
                "stimulus-disjoint cross-validation: fewer than 2 folds keep both training and "
                "test samples (every sample is shaped by stimuli of every fold); use "
                f"{option_name('cv_groups')} run, or fewer, longer-spaced events"
            )
        return ridge_cv_splits(Xs, self.data, splits, self.alphas, score=self.score, **self.options)

    def _stimulus_units(self, held: np.ndarray, test, fold_set, fold: int) -> list[_Unit]:
        Xs, partial, held_features = fold_set
        designs = self._held_designs(held, Xs, partial)
        units = []
        for rows, averaging in self.samples.test_units(test):
            design = np.concatenate([np.asarray(designs[b])[r] for b, r in rows])
            unit = _Unit([(rows, design)], averaging, fold=fold)
            if averaging is None and self.n_permutations:
                ((block, block_rows),) = rows
                unit.slots = self.samples.slots(held, block, block_rows)
                if self.samples.one_per_row:
                    unit.held_features = self.samples.row_features(held, Xs)
                elif unit.slots is not None:
                    unit.held_features = held_features(held, block)
            units.append(unit)
        return units

    def stimulus_disjoint(self, folds: list[np.ndarray]) -> _Evaluated:
        """Nested CV over folds of unique stimuli (:mod:`bids_vem.encoding.stimulus_folds`)."""
        self.scores = self._new_scores(centred_r2=True)
        shared = self.samples.partial_designs
        alpha, cv_scores = self._cv_splits(
            [self._split(held, None, self.Xs, shared) for held in folds], self.Xs
        )
        nested = len(folds) >= 3
        for k, held in enumerate(folds):
            fold = self.samples.split(held)
            if not fold.train or not fold.test:
                continue
            self.overlap.append(0)
            fold_set = self._fold_set(held)
            Xs, partial, _ = fold_set
            if nested:
                inner = [
                    self._split(other, fold.train, Xs, partial)
                    for j, other in enumerate(folds)
                    if j != k
                ]
                alpha_fold, _ = self._cv_splits(inner, Xs)
            else:
                alpha_fold = alpha
            units = self._stimulus_units(held, fold.test, fold_set, k)
            self._predict(Xs, fold.train, alpha_fold, units)
        every = list(range(self.n_runs))
        return _Evaluated("stimulus-folds", alpha, cv_scores, nested, every, self.Xs)

    def on_test_stimuli(self, held: np.ndarray, n_inner: int) -> _Evaluated:
        """Penalties by stimulus-disjoint CV on the other stimuli, one model, scored on ``held``."""
        self.scores = self._new_scores(centred_r2=True)
        fold = self.samples.split(held)
        if not fold.train or not fold.test:
            raise DataError(
                f"{option_name('test_stimuli')}: every sample is shaped by a test stimulus; "
                "nothing is left to train on"
            )
        fold_set = self._fold_set(held)
        Xs, partial, _ = fold_set
        remaining = np.flatnonzero(~held)
        inner = []
        for part in np.array_split(remaining, max(2, min(n_inner, len(remaining)))):
            mask = np.zeros_like(held)
            mask[part] = True
            inner.append(self._split(mask, fold.train, Xs, partial))
        alpha, cv_scores = self._cv_splits(inner, Xs)
        self.overlap.append(0)
        self._predict(Xs, fold.train, alpha, self._stimulus_units(held, fold.test, fold_set, 0))
        return _Evaluated("test-stimuli", alpha, cv_scores, True, fold.train, Xs)


def _run_events(path: Path, stim_column: str) -> pd.DataFrame:
    """The run's events; a run whose events carry the words of a story is one event, its story."""
    from bids_vem.inputs.events import read_events, read_tsv_columns, stim_column_of
    from bids_vem.inputs.stimuli import WORD_COLUMNS, words_stim_id

    columns = read_tsv_columns(path)
    if stim_column_of(columns, stim_column) is None and any(c in columns for c in WORD_COLUMNS):
        # words sit at their own onsets (times from the run start): place the story at 0
        return pd.DataFrame({"onset": [0.0], "duration": [0.0], "stim_id": [words_stim_id(path)]})
    return read_events(path, stim_column)


def encode_runs(
    runs: Sequence[Run],
    feature_set: FeatureSet,
    *,
    stim_column: str = "stim_file",
    delays: Sequence[int] = (1, 2, 3, 4),
    alphas: Sequence[float] | np.ndarray,
    confounds: Sequence[str] = (),
    device: str | torch.device = "cpu",
    n_voxels_chunk: int | None = None,
    oversampling: int = 10,
    score: str = "correlation",
    fold_feature_sets: Sequence[tuple[Sequence[str], FeatureSet]] = (),
    bold: VoxelStore | None = None,
    test_runs: Sequence[str] = (),
    average_test_repeats: bool = False,
    cv_groups: str = "auto",
    mem_mb: float | None = None,
    weights_path: Path | str | None = None,
    test_stimuli: str | None = None,
    n_permutations: int = 0,
    high_pass: float = 0.0,
    delays_seconds: Sequence[float] = (),
    seed: int = 0,
    stimulus_fold_feature_sets: Sequence[tuple[Sequence[str], FeatureSet]] = (),
    confound_regression: str = "bold-and-design",
    word_rate: str = "regress",
) -> EncodingResult:
    """Encoding model of one participant's runs from one feature space.

    Reads each run's events and BOLD, builds its design (:func:`build_run_design`; for video
    frames, :func:`video_timecourse` then :func:`build_run_design_from_timecourse`), cleans its
    BOLD inside the voxels common to all runs' masks (:func:`load_bold`; or reads it from a
    :class:`~bids_vem.encoding.voxel_data.VoxelStore` written by
    :func:`~bids_vem.encoding.bold.write_bold_store`), records which stimuli shape each TR
    (:func:`~bids_vem.encoding.stimulus_folds.samples_from_events`), then calls
    :func:`fit_encoding_model`.

    Parameters
    ----------
    runs : sequence of Run
        The participant's runs (one space).
    feature_set : FeatureSet
        Features of every stimulus the events name.
    stim_column : str
        Events column naming the stimulus.
    delays : sequence of int
        FIR delays in TRs.
    alphas : sequence of float
        Penalty grid.
    confounds : sequence of str
        Confound columns to regress out of the BOLD (ignored with ``bold``: the store was
        cleaned when written); fMRIPrep's non-steady-state outliers are always regressed out.
    device, n_voxels_chunk, score, mem_mb, weights_path, n_permutations, seed
        As in :func:`fit_encoding_model`.
    oversampling : int
        Time-grid steps per TR for the design.
    fold_feature_sets : sequence of (run names, FeatureSet)
        Features to use when those runs are held out (the aligned encoder of a fold that never
        saw their stimuli); ``feature_set`` gives the penalty map and the other runs.
    bold : VoxelStore, optional
        The runs' cleaned BOLD on disk (same runs, same order). Default: cleaned here, in memory.
    test_runs : sequence of str
        ``--test-runs`` labels (:func:`~bids_vem.encoding.evaluation.select_test_runs`).
    average_test_repeats : bool
        Average test runs that show the same stimulus sequence before scoring.
    cv_groups : {"auto", "run", "session", "stimulus"}
        What a CV fold holds out (``auto``: stimuli when one is shown in several runs).
    test_stimuli : str, optional
        ``--test-stimuli``: a file of stimulus names, or ``COLUMN=VALUE`` of the events.
    high_pass : float
        Cosine high-pass of the BOLD cleaned here (Hz; 0: none).
    delays_seconds : sequence of float
        FIR delays in seconds, rounded to TRs (instead of ``delays``).
    stimulus_fold_feature_sets : sequence of (stimulus ids, FeatureSet)
        Features to use in the stimulus fold that holds out those stimuli (an aligned encoder
        that never saw them).
    confound_regression : {"bold-and-design", "bold"}
        Project the confounds, trend and drifts the BOLD was cleaned of out of the design too
        (:mod:`bids_vem.encoding.nuisance`).
    word_rate : {"regress", "none"}
        Project a story's word rate out of the BOLD and the design.

    Returns
    -------
    EncodingResult
        With ``mask`` and ``affine`` of the common mask.

    Raises
    ------
    DataError
        Runs with different TRs or mask grids, fewer than 2 runs, bad events or BOLD.
    InputMissingError
        Unreadable files.
    UsageError
        Test runs, test stimuli or CV groups that do not fit the runs.
    """
    runs = _check_runs(runs)
    names = [run.name for run in runs]
    # the library API gets the checks of the settings (bids_vem.config), word for word
    EvaluationSettings(
        test_runs=tuple(test_runs),
        average_test_repeats=average_test_repeats,
        cv_groups=cv_groups,
        test_stimuli=test_stimuli,
    )
    tr = float(runs[0].tr)
    delays = delays_in_trs(delays, delays_seconds, tr)
    groups = _session_groups(runs) if cv_groups == "session" else None
    test = select_test_runs(runs, test_runs) if test_runs else None
    data, mask = _voxel_data(runs, bold, confounds, high_pass)
    events = [_run_events(run.events, stim_column) for run in runs]
    repeats = repeated_sequences(test, events, names) if average_test_repeats else None

    designer = RunDesigns(runs, events, data.run_lengths, delays, oversampling)
    nuisance = designer.remove_nuisance(
        [feature_set], **_cleaned_with(bold, confounds, high_pass),
        confound_regression=confound_regression, word_rate=word_rate,
    )  # fmt: skip
    data = nuisance.voxel_data(data)
    Xs, scales = designer.designs(feature_set)
    test_designs: dict[int, list[np.ndarray]] = {}
    for held_out, features in fold_feature_sets:
        fold_Xs, _ = designer.designs(features)
        for run_name in held_out:
            if run_name not in names:
                raise DataError(f"fold features name run {run_name}, which is not among {names}")
            test_designs[names.index(run_name)] = fold_Xs
    stimulus_fold_designs = {}
    for held_ids, features in stimulus_fold_feature_sets:
        fold_Xs, fold_scales = designer.designs(features)
        stimulus_fold_designs[frozenset(held_ids)] = (
            fold_Xs,
            designer.partial_for(features, fold_scales),
            designer.held_features_for(features, fold_scales),
        )
    samples = designer.samples(feature_set, scales)
    held = None
    if test_stimuli:
        held = test_stimulus_mask(test_stimuli, samples.stim_ids, runs, stim_column)
    result = fit_encoding_model(
        Xs,
        data,
        alphas,
        device=device,
        n_voxels_chunk=n_voxels_chunk,
        run_names=names,
        delays=delays,
        feature_space=feature_set.name,
        score=score,
        test_designs=test_designs,
        test_runs=test,
        repeats=repeats,
        cv_groups=groups,
        cv_groups_name="session" if cv_groups == "session" else "run",
        mem_mb=mem_mb,
        weights_path=weights_path,
        stimulus_samples=samples,
        folds=FOLDS_OF_CV_GROUPS[cv_groups],
        test_stimuli=held,
        n_permutations=n_permutations,
        permutation="shift",
        seed=seed,
        stimulus_fold_designs=stimulus_fold_designs,
    )
    result.mask = np.asarray(mask.dataobj) > 0
    result.affine = np.asarray(mask.affine)
    result.nuisance = nuisance.description
    return result


def _cleaned_with(bold: VoxelStore | None, confounds: Sequence[str], high_pass: float) -> dict:
    """The confounds and high-pass the runs' BOLD was cleaned with: a voxel store's own (it
    was cleaned when written), else those given."""
    if bold is None:
        return {"confounds": list(confounds), "high_pass": float(high_pass)}
    return {
        "confounds": list(bold.metadata.get("confounds", confounds)),
        "high_pass": float(bold.metadata.get("high_pass", high_pass)),
    }


class RunDesigns:
    """The designs of one participant's runs from any feature space, and which stimuli shape
    each TR (:class:`~bids_vem.encoding.stimulus_folds.StimulusSamples`).

    Parameters
    ----------
    runs : list of Run
    events : list of DataFrame
        Each run's events (:func:`_run_events`).
    run_lengths : sequence of int
        TRs of each run.
    delays : sequence of int
        FIR delays in TRs.
    oversampling : int
        Time-grid steps per TR.
    """

    def __init__(self, runs, events, run_lengths, delays, oversampling: int) -> None:
        self.runs, self.events, self.run_lengths = list(runs), list(events), list(run_lengths)
        self.delays, self.oversampling = tuple(delays), oversampling
        self.tr = float(self.runs[0].tr)
        self.stim_ids = sorted(
            {str(s) for e in self.events for s in e["stim_id"].dropna().astype(str)}
        )
        #: projected out of every design (:meth:`remove_nuisance`); None: nothing
        self.nuisance: Nuisance | None = None

    def remove_nuisance(
        self,
        feature_sets: Sequence[FeatureSet],
        *,
        confounds: Sequence[str],
        high_pass: float,
        confound_regression: str = "bold-and-design",
        word_rate: str = "regress",
    ) -> Nuisance:
        """Decide what every design of these runs has projected out (module
        :mod:`bids_vem.encoding.nuisance`), and return it (its ``voxel_data`` gives the BOLD
        to fit).

        Parameters
        ----------
        feature_sets : sequence of FeatureSet
            The spaces fitted to this BOLD; the word rate is that of the first story space
            (Lanczos-resampled words), the same for all of them.
        confounds, high_pass
            What the BOLD was cleaned with (:func:`~bids_vem.encoding.bold.load_bold`).
        confound_regression : {"bold-and-design", "bold"}
        word_rate : {"regress", "none"}
        """
        check_setting("confound_regression", confound_regression)
        check_setting("word_rate", word_rate)
        story = next(
            (fs for fs in feature_sets if fs.timed and fs.metadata.get("resample") == "lanczos"),
            None,
        )
        rates = None
        if word_rate == "regress" and story is not None:
            rates = [
                add_delays(tc, self.delays) for tc in self.timecourses(word_rate_features(story))
            ]
        design, bold = [], []
        for index, (run, n) in enumerate(zip(self.runs, self.run_lengths, strict=True)):
            table = run_confounds(run.confounds, confounds)
            cleaning = orthonormal_basis(cleaning_regressors(n, self.tr, table, high_pass))
            rate = np.zeros((n, 0))
            if rates is not None:
                rate = orthonormal_basis(rates[index], exclude=cleaning)
            bold.append(rate)
            design.append(np.hstack([cleaning, rate]) if confound_regression != "bold" else rate)
        self.nuisance = Nuisance(
            design,
            bold,
            nuisance_description(
                confounds, high_pass, confound_regression, rates is not None, self.delays
            ),
            centres=confound_regression != "bold",
        )
        return self.nuisance

    def timecourses(self, features: FeatureSet) -> list[np.ndarray]:
        """Each run's stimulus features on the TR grid (before z-scoring and delays)."""
        return _run_timecourses(
            features, self.runs, self.events, self.run_lengths, self.oversampling
        )

    def designs(self, features: FeatureSet) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Each run's design (z-scored, delayed, the nuisance projected out) and the column
        scales of its time course."""
        full = self.timecourses(features)
        scales = [column_scale(tc) for tc in full]
        if self.nuisance is not None and self.nuisance.centres:
            # not centred before the delays: the projection centres it, and the design is
            # then exactly the sum of its stimuli's parts (:meth:`partial_for`)
            Xs = [
                add_delays(
                    check_timecourse(tc, source=str(run.events)) / scale, self.delays
                ).astype(np.float32)
                for tc, scale, run in zip(full, scales, self.runs, strict=True)
            ]
        else:
            Xs = [
                build_run_design_from_timecourse(tc, self.delays, source=str(run.events))
                for tc, run in zip(full, self.runs, strict=True)
            ]
        if self.nuisance is not None:
            Xs = self.nuisance.designs(Xs)
        return Xs, scales

    def partial_for(self, features: FeatureSet, scales: list[np.ndarray]) -> Callable:
        """``partial_designs(held)``: the held-out stimuli's part of each design, on the full
        design's scale, not centred."""

        def partial_designs(held: np.ndarray) -> list[np.ndarray]:
            chosen = {self.stim_ids[i] for i in np.flatnonzero(held)}
            out = [
                add_delays(tc / scale, self.delays).astype(np.float32)
                for tc, scale in zip(self.timecourses(_only(features, chosen)), scales, strict=True)
            ]
            # the full design is the sum of its stimuli's parts, projected alike
            return out if self.nuisance is None else self.nuisance.designs(out)

        return partial_designs

    def held_features_for(self, features: FeatureSet, scales: list[np.ndarray]) -> Callable | None:
        """``held_features(held, block)``: the held-out stimuli's feature rows on a block's
        scale (None for timed features, whose null shifts in time)."""

        def held_features(held: np.ndarray, block: int) -> np.ndarray:
            rows = features.rows([self.stim_ids[i] for i in np.flatnonzero(held)])
            return rows.astype(np.float64) / scales[block]

        return None if features.timed else held_features

    def samples(self, features: FeatureSet, scales: list[np.ndarray]) -> StimulusSamples:
        """Which stimuli shape each TR, with the partial designs of ``features``."""
        extent = {}
        if features.timed:
            extent = {
                stim: float(np.max(stamps, initial=0.0))
                for stim, (_, stamps) in features.frames().items()
            }
        spread = 3 if features.metadata.get("resample") == "lanczos" else 0
        occupancy = None
        if not features.timed:  # where each image sits in time: the null relabels images
            occupancy = [
                stimulus_occupancy(e, self.stim_ids, n, self.tr, self.oversampling)
                for e, n in zip(self.events, self.run_lengths, strict=True)
            ]
        samples = samples_from_events(
            self.events, self.run_lengths, self.tr, self.delays, extent=extent, spread=spread,
            partial_designs=self.partial_for(features, scales), occupancy=occupancy,
            held_features=self.held_features_for(features, scales),
            nuisance=None if self.nuisance is None else self.nuisance.design,
        )  # fmt: skip
        if samples.stim_ids != self.stim_ids:
            raise RuntimeError("stimulus order of the samples differs from the designs'")
        return samples


def _only(features: FeatureSet, stim_ids: set[str]) -> FeatureSet:
    """``features`` with every other stimulus's rows zeroed: placed with all the run's events,
    they give the held-out stimuli's part of the time course (frames averaged within a TR
    keep the count of every frame shown in it)."""
    keep = np.isin(np.asarray(features.stim_ids, dtype=object), list(stim_ids))
    values = np.where(keep[:, None], features.values, 0).astype(features.values.dtype)
    return dataclasses.replace(features, values=values)


#: ``--cv-groups`` value -> ``fit_encoding_model(folds=...)``
FOLDS_OF_CV_GROUPS = {"auto": "auto", "run": "groups", "session": "groups", "stimulus": "stimulus"}

#: FIR delays should span about this window (seconds) of the hemodynamic response
DELAY_WINDOW = (2.0, 10.0)


def delays_in_trs(
    delays: Sequence[int], delays_seconds: Sequence[float], tr: float
) -> tuple[int, ...]:
    """The FIR delays in TRs (from seconds when given), with a warning when they do not cover
    about 2-10 s after a stimulus at this TR."""
    if delays_seconds:
        out = tuple(sorted({int(round(float(s) / tr)) for s in delays_seconds}))
    else:
        out = tuple(int(d) for d in delays)
    seconds = [d * tr for d in out]
    low, high = DELAY_WINDOW
    if seconds and (min(seconds) > low + tr / 2 or max(seconds) < high - tr):
        logger.warning(
            "FIR delays of %s TRs cover %.1f-%.1f s at TR %.2f s; the hemodynamic response spans "
            "about %g-%g s after a stimulus (set %s or %s)",
            list(out), min(seconds), max(seconds), tr, low, high,
            option_name("delays"), option_name("delays_seconds"),
        )  # fmt: skip
    return out


def test_stimulus_mask(
    spec: str, stim_ids: Sequence[str], runs: Sequence[Run], stim_column: str
) -> np.ndarray:
    """``--test-stimuli`` as a mask over ``stim_ids``: a file of names, or COLUMN=VALUE.

    Raises
    ------
    UsageError
        The file is missing, the column absent from every run, or no stimulus matches.
    """
    from bids_vem.inputs.events import normalise_stim_id, read_tsv, stim_column_of

    flag = option_name("test_stimuli")
    path = Path(spec)
    if "=" in spec and not path.exists():
        column, value = spec.split("=", 1)
        names: set[str] = set()
        seen_column = False
        for run in runs:
            frame = read_tsv(run.events)
            stimuli = stim_column_of(list(frame.columns), stim_column)
            if column not in frame.columns or stimuli is None:
                continue
            seen_column = True
            rows = frame[frame[column].astype(str).str.strip() == value.strip()]
            names |= {n for n in (normalise_stim_id(v) for v in rows[stimuli]) if n}
        if not seen_column:
            raise UsageError(f"{flag} {spec}: no events file of these runs has a column '{column}'")
        where = f"events with {column} = {value}"
    else:
        if not path.is_file():
            raise UsageError(f"{flag} {spec}: not a file of stimulus names, nor COLUMN=VALUE")
        lines = path.read_text(encoding="utf-8").splitlines()
        names = {n for n in (normalise_stim_id(line) for line in lines if line.strip()) if n}
        where = str(path)
    mask = np.array([s in names for s in stim_ids], dtype=bool)
    if not mask.any():
        shown = ", ".join(sorted(names)[:3]) or "none"
        raise UsageError(f"{flag} {spec}: no stimulus of these runs is among the {where} ({shown})")
    if mask.all():
        raise UsageError(
            f"{flag} {spec}: every stimulus is a test stimulus; none is left to train on"
        )
    return mask


def _check_runs(runs: Sequence[Run]) -> list[Run]:
    """The runs, once known to be at least two with one repetition time."""
    runs = list(runs)
    if not runs:
        raise DataError("no runs to encode")
    trs = {round(float(run.tr), 6) for run in runs}
    if len(trs) != 1:
        listed = ", ".join(f"{run.name} ({run.tr:g} s)" for run in runs)
        raise DataError(f"runs have different repetition times: {listed}")
    if len(runs) < 2:
        raise DataError(f"leave-one-run-out needs at least 2 runs; found 1: {runs[0].name}")
    return runs


def _session_groups(runs: list[Run]) -> list[str]:
    """Each run's session, the unit of leave-one-session-out folds."""
    missing = [run.name for run in runs if run.session is None]
    if missing:
        raise UsageError(
            f"{option_name('cv_groups')} session: run(s) without a session: {', '.join(missing)}"
        )
    return [run.session for run in runs]


def _voxel_data(
    runs: list[Run], bold: VoxelStore | None, confounds: Sequence[str], high_pass: float = 0.0
):
    """The runs' cleaned BOLD (from the voxel store, or loaded here) and the common mask."""
    names = [run.name for run in runs]
    if bold is not None:
        if list(bold.run_names) != names:
            raise DataError(
                f"{bold.header_path}: the voxel store holds runs {list(bold.run_names)}, "
                f"not {names}"
            )
        return bold, nib.load(bold.header_path.parent / bold.metadata["mask"])
    mask = runs_mask(runs)
    Ys = []
    for run in runs:
        if confounds and run.confounds is None:
            raise InputMissingError(
                f"{run.name}: confounds {', '.join(confounds)} requested but the run has no "
                "confounds file"
            )
        table = run_confounds(run.confounds, confounds)
        Ys.append(load_bold(run.bold, mask, table, run.tr, high_pass, run.bold_right))
    return InMemoryVoxelData(Ys), mask


def _run_timecourses(
    features: FeatureSet,
    runs: list[Run],
    events: list[pd.DataFrame],
    run_lengths: Sequence[int],
    oversampling: int,
) -> list[np.ndarray]:
    """Each run's stimulus features on the TR grid (before z-scoring and delays)."""
    frames = features.frames() if features.timed else None
    # video frames are averaged within each TR, words of a story Lanczos-interpolated
    resample = features.metadata.get("resample", "average")
    out = []
    for run, run_events, n_volumes in zip(runs, events, run_lengths, strict=True):
        source = str(run.events)
        if features.timed:
            # timed rows (frames, words): each at its event's onset + its time
            out.append(
                video_timecourse(
                    run_events, frames, n_volumes, run.tr, source=source, resample=resample
                )
            )
        else:
            out.append(
                feature_timecourse(
                    run_events,
                    features,
                    n_volumes,
                    run.tr,
                    oversampling=oversampling,
                    source=source,
                )  # fmt: skip
            )
    return out
