"""The voxelwise encoding model of one participant and one feature space, cross-validated by run.

Two cross-validations, both with whole runs as folds (never random TRs, whose autocorrelation
would leak between training and test):

- **held-out scores** (``r``, ``r2``), nested leave-one-run-out: each run is predicted by a model
  that never saw it, whose per-voxel penalties were chosen by an inner leave-one-run-out CV on
  the other runs; ``r`` is the Pearson correlation per voxel over all held-out predictions
  concatenated, each run's data and predictions z-scored first (so ``r`` is the
  length-weighted mean of the per-run correlations, blind to the scale differences between the
  runs' models: a correlation-scored CV often picks a huge penalty for weak voxels, whose
  predictions keep their time course but shrink towards 0); ``r2`` is ``1 - SSE / SST`` of the
  raw held-out predictions over all runs, so it does see those scales.
- **penalty map** (``alpha``, ``cv_score``), leave-one-run-out over all runs: the penalty a final
  model fitted on all runs would use, and its mean CV score. The number of voxels whose penalty
  sits on an edge of the grid says whether the grid was wide enough.

With only 2 runs no inner CV is possible: each run is predicted from the other with the
penalties of the 2-fold CV over both runs (so the held-out run took part in choosing the
penalty, a small optimistic bias; ``nested`` is False in the result).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch

from bids_vem.encoding.bold import intersect_masks, load_bold, read_confounds
from bids_vem.encoding.design import (
    build_run_design,
    build_run_design_from_timecourse,
    video_timecourse,
    zscore,
)
from bids_vem.encoding.ridge import ridge_cv_alphas, ridge_predict, score_correlation, score_r2
from bids_vem.errors import DataError, InputMissingError
from bids_vem.features.feature_set import FeatureSet
from bids_vem.inputs.runs import Run
from bids_vem.outputs.atomic import atomic_path

__all__ = ["EncodingResult", "fit_encoding_model", "encode_runs"]

#: voxels with a held-out r above this count as "predicted" in summaries
R_THRESHOLD = 0.1

_MAPS = ("r", "r2", "alpha", "cv_score")


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

    @property
    def n_voxels(self) -> int:
        return int(self.r.shape[0])

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
            "cv_score_kind": self.score,
            "mean_r": float(np.mean(r)) if r.size else float("nan"),
            "median_r": float(np.median(r)) if r.size else float("nan"),
            "max_r": float(np.max(r)) if r.size else float("nan"),
            f"n_voxels_r_above_{R_THRESHOLD}": int(np.sum(r > R_THRESHOLD)),
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
        """One map (``"r"``, ``"r2"``, ``"alpha"`` or ``"cv_score"``) as a 3-D image (0 outside)."""
        if name not in _MAPS:
            raise ValueError(f"map must be one of {_MAPS}, got {name!r}")
        if self.mask is None or self.affine is None:
            raise ValueError("this result has no mask: it was not computed from images")
        volume = np.zeros(self.mask.shape, dtype=np.float32)
        volume[self.mask] = getattr(self, name)
        return nib.Nifti1Image(volume, self.affine)

    def save(self, path: Path | str) -> Path:
        """Write as ``.npz`` (no pickle), atomically; returns ``path``."""
        arrays = {name: np.asarray(getattr(self, name)) for name in (*_MAPS, "alphas")}
        if self.mask is not None:
            arrays["mask"] = np.asarray(self.mask, dtype=bool)
        if self.affine is not None:
            arrays["affine"] = np.asarray(self.affine, dtype=np.float64)
        header = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in arrays and f.name not in ("mask", "affine")
        }
        header["delays"] = [int(d) for d in self.delays]
        header["runs"] = list(self.runs)
        arrays["header"] = np.array(json.dumps(header))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:  # a file object: np.savez adds no suffix
                np.savez(handle, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: Path | str) -> EncodingResult:
        """Read a result written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            arrays = {name: data[name] for name in (*_MAPS, "alphas")}
            mask = data["mask"] if "mask" in data else None
            affine = data["affine"] if "affine" in data else None
        header["delays"] = tuple(header.get("delays", ()))
        header["runs"] = tuple(header.get("runs", ()))
        return cls(**arrays, **header, mask=mask, affine=affine)


def _edge_counts(alpha: np.ndarray, alphas: np.ndarray) -> tuple[int, int]:
    low = int(np.sum(np.isclose(alpha, alphas.min(), rtol=1e-6)))
    high = int(np.sum(np.isclose(alpha, alphas.max(), rtol=1e-6)))
    return low, high


def fit_encoding_model(
    Xs: Sequence[np.ndarray],
    Ys: Sequence[np.ndarray],
    alphas: Sequence[float] | np.ndarray,
    *,
    device: str | torch.device = "cpu",
    n_voxels_chunk: int | None = None,
    run_names: Sequence[str] | None = None,
    delays: Sequence[int] = (),
    feature_space: str = "",
    score: str = "correlation",
    dtype: torch.dtype = torch.float32,
) -> EncodingResult:
    """Fit and evaluate a ridge encoding model with leave-one-run-out CV (module docstring).

    Parameters
    ----------
    Xs : list of ndarray of shape (n_samples_i, n_features)
        Design of each run (z-scored per run).
    Ys : list of ndarray of shape (n_samples_i, n_voxels)
        BOLD of each run (z-scored per run).
    alphas : sequence of float
        Penalty grid (log-spaced over many decades).
    device, n_voxels_chunk, dtype
        As in :func:`bids_vem.encoding.ridge.ridge_cv_alphas`; results do not depend on the chunk.
    run_names : sequence of str, optional
        Names of the runs, for messages and the result.
    delays, feature_space
        Recorded in the result.
    score : {"correlation", "r2"}
        What the CV maximises to choose penalties. Correlation (the field's habit) is blind to
        the scale of the predictions and often picks the largest penalty for weak voxels;
        R^2 is not.

    Returns
    -------
    EncodingResult

    Raises
    ------
    DataError
        Fewer than 2 runs, or runs that disagree in features or voxels.
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    names = list(run_names) if run_names is not None else [f"run {i + 1}" for i in range(len(Xs))]
    if len(Xs) != len(Ys) or len(names) != len(Xs):
        raise ValueError(f"{len(Xs)} designs, {len(Ys)} data blocks, {len(names)} run names")
    if len(Xs) < 2:
        found = f"; found {len(Xs)}" + (f": {names[0]}" if names else "")
        raise DataError(f"leave-one-run-out needs at least 2 runs{found}")
    n_features = {X.shape[1] for X in Xs}
    n_voxels = {Y.shape[1] for Y in Ys}
    if len(n_features) != 1 or len(n_voxels) != 1:
        raise DataError(
            f"runs {', '.join(names)} disagree in design columns {sorted(n_features)} "
            f"or voxels {sorted(n_voxels)}"
        )
    for name, X, Y in zip(names, Xs, Ys, strict=True):
        if len(X) != len(Y):
            raise DataError(f"{name}: design has {len(X)} rows but the BOLD {len(Y)} volumes")
    options = dict(device=device, n_voxels_chunk=n_voxels_chunk, dtype=dtype)
    n_runs = len(Xs)

    # penalties a final model on all runs would use
    alpha, cv_scores = ridge_cv_alphas(Xs, Ys, alphas, score=score, **options)
    chosen = np.argmin(np.abs(np.log(alphas)[:, None] - np.log(alpha)[None, :]), axis=0)
    cv_score = cv_scores[chosen, np.arange(alpha.size)]

    # held-out predictions: each run from a model that never saw it
    predictions = []
    for test in range(n_runs):
        train = [i for i in range(n_runs) if i != test]
        if n_runs >= 3:
            alpha_test, _ = ridge_cv_alphas(
                [Xs[i] for i in train], [Ys[i] for i in train], alphas, score=score, **options
            )
        else:
            alpha_test = alpha
        predictions.append(
            ridge_predict(
                np.concatenate([Xs[i] for i in train]),
                np.concatenate([Ys[i] for i in train]),
                Xs[test],
                alpha_test,
                **options,
            )
        )
    Y_all = np.concatenate(Ys)
    Y_pred = np.concatenate(predictions)
    # r pools runs after standardising each run's data and predictions: each run's model has
    # its own penalties, hence its own scale (a penalty of 1e8 predicts with a tiny variance but
    # the same time course), and raw pooling would let that scale, not the fit, set r
    r = score_correlation(
        np.concatenate([zscore(Y) for Y in Ys]), np.concatenate([zscore(P) for P in predictions])
    )
    low, high = _edge_counts(alpha, alphas)
    return EncodingResult(
        r=r.astype(np.float32),
        r2=score_r2(Y_all, Y_pred).astype(np.float32),
        alpha=alpha.astype(np.float32),
        cv_score=cv_score.astype(np.float32),
        alphas=alphas,
        n_alpha_low=low,
        n_alpha_high=high,
        n_runs=n_runs,
        n_samples=int(len(Y_all)),
        n_features=n_features.pop(),
        delays=tuple(int(d) for d in delays),
        feature_space=feature_space,
        nested=n_runs >= 3,
        runs=tuple(names),
        score=score,
    )


def _run_events(path: Path, stim_column: str) -> pd.DataFrame:
    """The run's events; a run whose events carry the words of a story is one event, its story."""
    from bids_vem.inputs.events import read_events, read_tsv_columns
    from bids_vem.inputs.stimuli import WORD_COLUMNS, words_stim_id

    columns = read_tsv_columns(path)
    if stim_column not in columns and any(c in columns for c in WORD_COLUMNS):
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
) -> EncodingResult:
    """Encoding model of one participant's runs from one feature space.

    Reads each run's events and BOLD, builds its design (:func:`build_run_design`; for video
    frames, :func:`video_timecourse` then :func:`build_run_design_from_timecourse`), cleans its
    BOLD inside the voxels common to all runs' masks (:func:`load_bold`), then calls
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
        Confound columns to regress out of the BOLD.
    device, n_voxels_chunk, score
        As in :func:`fit_encoding_model`.
    oversampling : int
        Time-grid steps per TR for the design.

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
    """
    runs = list(runs)
    if not runs:
        raise DataError("no runs to encode")
    trs = {round(float(run.tr), 6) for run in runs}
    if len(trs) != 1:
        listed = ", ".join(f"{run.name} ({run.tr:g} s)" for run in runs)
        raise DataError(f"runs have different repetition times: {listed}")
    if len(runs) < 2:
        raise DataError(f"leave-one-run-out needs at least 2 runs; found 1: {runs[0].name}")
    mask = intersect_masks([run.mask for run in runs])
    frames = feature_set.frames() if feature_set.timed else None
    # video frames are averaged within each TR, words of a story Lanczos-interpolated
    resample = feature_set.metadata.get("resample", "average")

    Xs, Ys = [], []
    for run in runs:
        if confounds and run.confounds is None:
            raise InputMissingError(
                f"{run.name}: confounds {', '.join(confounds)} requested but the run has no "
                "confounds file"
            )
        Y = load_bold(run.bold, mask, read_confounds(run.confounds, confounds), run.tr)
        events = _run_events(run.events, stim_column)
        if feature_set.timed:
            # video frames: each frame at onset + its time, averaged within each TR
            X = build_run_design_from_timecourse(
                video_timecourse(
                    events, frames, Y.shape[0], run.tr, source=str(run.events), resample=resample
                ),
                delays,
                source=str(run.events),
            )
        else:
            X = build_run_design(
                events,
                feature_set,
                Y.shape[0],
                run.tr,
                delays,
                oversampling=oversampling,
                source=str(run.events),
            )
        Xs.append(X)
        Ys.append(Y)
    result = fit_encoding_model(
        Xs,
        Ys,
        alphas,
        device=device,
        n_voxels_chunk=n_voxels_chunk,
        run_names=[run.name for run in runs],
        delays=delays,
        feature_space=feature_set.name,
        score=score,
    )
    result.mask = np.asarray(mask.dataobj) > 0
    result.affine = np.asarray(mask.affine)
    return result
