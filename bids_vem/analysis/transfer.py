"""Cross-modal transfer (Tang et al. 2023): a model of one task's runs predicts another's.

An encoding model is fitted on every run of the *source* task (stories, say, from a text
feature space), one penalty per voxel chosen by leave-one-run-out cross-validation within
that task, exactly as a within-task model. Its weights then predict the *target* task's runs
(movies) from the target stimuli's features in a space the weights apply to:

- ``same``: one feature space embeds both tasks' stimuli;
- ``shared``: the text and image towers of one model (BridgeTower, CLIP), whose outputs share
  a space, layer to layer;
- ``mapped``: separate text and image encoders (the unimodal control), the target features
  carried into the source space by a ridge map fitted on an image-caption corpus
  (:func:`fit_feature_map`; Flickr30K in the paper).

The transfer r of a voxel is Pearson's r between its measured and predicted target BOLD,
each target run z-scored (the length-weighted mean of the runs' r). Its null shuffles each
target run's prediction in blocks of ``block_trs`` TRs (10: the block permutation of this
literature, which keeps the autocorrelation within blocks), so p is one-sided
(``(1 + #{null >= r}) / (1 + n)``) and q the Benjamini-Hochberg FDR over the mask. Target
runs never enter the fit: no selection leakage is possible.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from bids_vem.encoding.chunks import voxel_chunk_for_memory
from bids_vem.encoding.device import resolve_device
from bids_vem.encoding.ridge import ridge_cv_alphas, ridge_predict
from bids_vem.encoding.voxel_data import VoxelData
from bids_vem.errors import DataError
from bids_vem.features.feature_set import FeatureSet
from bids_vem.outputs.atomic import write_npz_atomic

__all__ = [
    "BLOCK_TRS",
    "FeatureMap",
    "TransferResult",
    "VoxelColumns",
    "block_permutation",
    "fit_feature_map",
    "fit_transfer",
    "transfer_runs",
]

#: TRs per block of the permutation null
BLOCK_TRS = 10


@dataclass(frozen=True)
class FeatureMap:
    """A linear map from one feature space into another, fitted on paired rows.

    ``apply`` computes ``(x - mean_in) @ coef + mean_out`` row by row; being linear it
    commutes with the averaging of frames and the Lanczos resampling of words.
    """

    source: str
    target: str
    mean_in: np.ndarray
    coef: np.ndarray
    mean_out: np.ndarray
    alpha: float
    n_pairs: int
    #: cross-validated R^2 of the map (5 folds of pairs), averaged over output dimensions
    r2: float

    def apply(self, features: FeatureSet) -> FeatureSet:
        """``features`` (in ``source``'s space) carried into ``target``'s space."""
        if features.n_features != len(self.mean_in):
            raise DataError(
                f"feature map {self.source} -> {self.target}: {features.name} has "
                f"{features.n_features} features, the map takes {len(self.mean_in)}"
            )
        values = (features.values.astype(np.float64) - self.mean_in) @ self.coef + self.mean_out
        metadata = dict(features.metadata) | {"mapped_to": self.target}
        return replace(features, values=values.astype(np.float32), metadata=metadata)

    def describe(self) -> dict:
        return {
            "From": self.source, "To": self.target, "Alpha": self.alpha,
            "Pairs": self.n_pairs, "CrossValidatedR2": round(self.r2, 4),
        }  # fmt: skip

    def save(self, path: Path | str) -> Path:
        header = {"source": self.source, "target": self.target, "alpha": self.alpha,
                  "n_pairs": self.n_pairs, "r2": self.r2}  # fmt: skip
        return write_npz_atomic(
            path,
            {"mean_in": self.mean_in, "coef": self.coef, "mean_out": self.mean_out,
             "header": np.array(json.dumps(header))},
        )  # fmt: skip

    @classmethod
    def load(cls, path: Path | str) -> FeatureMap:
        with np.load(Path(path), allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            return cls(mean_in=data["mean_in"], coef=data["coef"], mean_out=data["mean_out"],
                       **header)  # fmt: skip


def fit_feature_map(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    source: str,
    target: str,
    alphas: Sequence[float] = tuple(np.logspace(-2, 6, 17)),
    seed: int = 0,
) -> FeatureMap:
    """Ridge map from rows of ``X`` (one space) to the paired rows of ``Y`` (another).

    One penalty for all output dimensions, chosen by efficient leave-one-out
    (scikit-learn's ``RidgeCV``); the reported R^2 is that of 5 folds of pairs.

    Parameters
    ----------
    X : ndarray of shape (n_pairs, d_in)
    Y : ndarray of shape (n_pairs, d_out)
    source, target : str
        The feature spaces' names.
    alphas : sequence of float
    seed : int
        Seed of the folds of the reported R^2.
    """
    from sklearn.linear_model import Ridge, RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict

    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    if len(X) != len(Y) or len(X) < 4:
        raise DataError(
            f"feature map {source} -> {target}: needs 4 or more paired rows, got {len(X)}"
        )
    mean_in, mean_out = X.mean(0), Y.mean(0)
    model = RidgeCV(alphas=np.asarray(alphas, float), fit_intercept=False)
    model.fit(X - mean_in, Y - mean_out)
    folds = KFold(min(5, len(X)), shuffle=True, random_state=seed)
    predicted = cross_val_predict(Ridge(alpha=model.alpha_), X, Y, cv=folds)
    ss = ((Y - Y.mean(0)) ** 2).sum(0)
    r2 = 1 - ((Y - predicted) ** 2).sum(0) / np.where(ss > 0, ss, 1)
    return FeatureMap(
        source=source, target=target, mean_in=mean_in, coef=np.asarray(model.coef_).T,
        mean_out=mean_out, alpha=float(model.alpha_), n_pairs=len(X), r2=float(np.mean(r2)),
    )  # fmt: skip


class VoxelColumns(VoxelData):
    """Some voxels of another :class:`VoxelData` (sorted column indices), renumbered."""

    def __init__(self, data: VoxelData, columns: np.ndarray) -> None:
        self.data, self.columns = data, np.asarray(columns, dtype=np.int64)
        self.run_lengths = tuple(data.run_lengths)
        self.n_voxels = len(self.columns)
        self.nuisance = data.nuisance

    def read(self, run: int, voxels: slice) -> np.ndarray:
        wanted = self.columns[voxels]
        if not len(wanted):
            return np.zeros((self.run_lengths[run], 0), np.float32)
        lo, hi = int(wanted[0]), int(wanted[-1]) + 1
        return np.asarray(self.data.read(run, slice(lo, hi)))[:, wanted - lo]


def block_permutation(
    run_lengths: Sequence[int], block: int, rng: np.random.Generator
) -> np.ndarray:
    """Row order of the concatenated runs with each run's blocks of ``block`` rows shuffled
    (the last, shorter block included) and runs kept apart."""
    order, start = [], 0
    for n in run_lengths:
        blocks = [np.arange(start + b, start + min(b + block, n)) for b in range(0, n, block)]
        order += [blocks[i] for i in rng.permutation(len(blocks))]
        start += n
    return np.concatenate(order) if order else np.zeros(0, np.int64)


def _zscored_runs(Y: torch.Tensor, run_lengths: Sequence[int]) -> torch.Tensor:
    """Each run's rows z-scored per column (constant columns stay 0)."""
    parts = []
    for part in torch.split(Y, list(run_lengths)):
        centred = part - part.mean(0)
        scale = centred.pow(2).mean(0).sqrt()
        parts.append(centred / torch.where(scale > 0, scale, torch.ones_like(scale)))
    return torch.cat(parts)


def fit_transfer(
    source_Xs: Sequence[np.ndarray],
    source_data: VoxelData,
    target_Xs: Sequence[np.ndarray],
    target_data: VoxelData,
    *,
    alphas: Sequence[float] | np.ndarray,
    n_permutations: int = 200,
    block_trs: int = BLOCK_TRS,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, np.ndarray]:
    """Fit on the source runs, predict the target runs, score with a block-permutation null.

    Parameters
    ----------
    source_Xs : list of ndarray (n_samples_i, n_features)
        Each source run's design (z-scored, delayed).
    source_data : VoxelData
        The source runs' cleaned BOLD.
    target_Xs : list of ndarray (n_samples_j, n_features)
        Each target run's design in the space the weights apply to.
    target_data : VoxelData
        The target runs' cleaned BOLD, the same voxels as ``source_data``.
    alphas : sequence of float
        Penalty grid; each voxel's by leave-one-run-out CV over the source runs.
    n_permutations, block_trs, seed
        The null (0: no p).
    device : str or torch.device

    Returns
    -------
    dict
        ``r`` (transfer r), ``p`` (None without permutations), ``alpha``, ``source_r``
        (the source model's cross-validated r within its own task), each (n_voxels,).
    """
    if source_data.n_voxels != target_data.n_voxels:
        raise ValueError("source and target data must hold the same voxels")
    widths = {X.shape[1] for X in [*source_Xs, *target_Xs]}
    if len(widths) != 1:
        raise DataError(
            f"transfer: the source and target designs differ in width ({sorted(widths)}): the "
            "feature spaces must have as many features"
        )
    if len(source_Xs) < 2:
        raise DataError("transfer: the source task needs 2 or more runs to choose penalties")
    device = resolve_device(device)
    alpha, cv = ridge_cv_alphas(source_Xs, source_data, alphas, device=device)
    # the cross-validated r of each voxel's chosen penalty (rows of cv follow ``alphas``)
    chosen = np.abs(np.log(np.asarray(alphas, float))[:, None] - np.log(alpha)[None]).argmin(0)
    source_r = cv[chosen, np.arange(len(alpha))]
    X_train = np.concatenate([np.asarray(X, np.float32) for X in source_Xs])
    X_test = np.concatenate([np.asarray(X, np.float32) for X in target_Xs])
    n_voxels = source_data.n_voxels
    r = np.zeros(n_voxels)
    exceed = np.zeros(n_voxels)
    rng = np.random.default_rng(seed)
    orders = [
        torch.as_tensor(block_permutation(target_data.run_lengths, block_trs, rng))
        for _ in range(n_permutations)
    ]
    n_rows = sum(target_data.run_lengths)
    # voxels at once: source and target data, prediction and z-scores within about 256 MB
    chunk = voxel_chunk_for_memory(
        None, n_samples=sum(source_data.run_lengths) + 4 * n_rows, n_features=X_train.shape[1],
        n_alphas=1, n_voxels=n_voxels, itemsize=8,
    )  # fmt: skip
    for start in range(0, n_voxels, chunk):
        part = slice(start, min(start + chunk, n_voxels))
        Y_train = np.concatenate([source_data.read(i, part) for i in range(source_data.n_runs)])
        predicted = ridge_predict(X_train, Y_train, X_test, alpha[part], device)
        Y_test = np.concatenate([target_data.read(i, part) for i in range(target_data.n_runs)])
        zy = _zscored_runs(torch.as_tensor(Y_test, dtype=torch.float64, device=device),
                           target_data.run_lengths)  # fmt: skip
        zp = _zscored_runs(torch.as_tensor(predicted, dtype=torch.float64, device=device),
                           target_data.run_lengths)  # fmt: skip
        observed = (zy * zp).sum(0) / n_rows
        r[part] = observed.cpu().numpy()
        count = torch.zeros_like(observed)
        for order in orders:
            count += ((zy * zp[order.to(device)]).sum(0) / n_rows >= observed).double()
        exceed[part] = count.cpu().numpy()
    p = (1 + exceed) / (1 + n_permutations) if n_permutations else None
    return {"r": r, "p": p, "alpha": np.asarray(alpha, float), "source_r": np.asarray(source_r)}


@dataclass
class TransferResult:
    """One transfer: the model of ``source_task`` in ``source_space`` scored on
    ``target_task``'s runs from ``target_space`` features."""

    r: np.ndarray
    p: np.ndarray | None
    alpha: np.ndarray
    source_r: np.ndarray
    source_task: str
    target_task: str
    source_space: str
    target_space: str
    kind: str
    source_runs: tuple[str, ...]
    target_runs: tuple[str, ...]
    n_permutations: int
    block_trs: int
    delays: tuple[int, ...]
    feature_map: dict = field(default_factory=dict)
    mask: np.ndarray | None = None
    affine: np.ndarray | None = None

    @property
    def q(self) -> np.ndarray | None:
        """Benjamini-Hochberg FDR of ``p`` over the mask."""
        from scipy import stats

        return None if self.p is None else stats.false_discovery_control(self.p, method="bh")

    def save(self, path: Path | str) -> Path:
        """Write as ``.npz`` (no pickle), atomically; returns ``path``."""
        arrays = {k: np.asarray(getattr(self, k)) for k in ("r", "alpha", "source_r")}
        if self.p is not None:
            arrays["p"] = self.p
        if self.mask is not None:
            arrays["mask"] = np.asarray(self.mask, bool)
            arrays["affine"] = np.asarray(self.affine, np.float64)
        skip = {"r", "p", "alpha", "source_r", "mask", "affine"}
        header = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        header = {k: list(v) if isinstance(v, tuple) else v for k, v in header.items()}
        arrays["header"] = np.array(json.dumps(header))
        return write_npz_atomic(path, arrays)

    @classmethod
    def load(cls, path: Path | str) -> TransferResult:
        with np.load(Path(path), allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            arrays = {k: data[k] for k in ("r", "alpha", "source_r")}
            arrays["p"] = data["p"] if "p" in data else None
            arrays["mask"] = data["mask"] if "mask" in data else None
            arrays["affine"] = data["affine"] if "affine" in data else None
        for key in ("source_runs", "target_runs", "delays"):
            header[key] = tuple(header[key])
        return cls(**arrays, **header)


def transfer_runs(
    source_runs: Sequence,
    target_runs: Sequence,
    source_features: FeatureSet,
    target_features: FeatureSet,
    *,
    kind: str,
    alphas: Sequence[float] | np.ndarray,
    stim_column: str = "stim_file",
    delays: Sequence[int] = (1, 2, 3, 4),
    delays_seconds: Sequence[float] = (),
    confounds: Sequence[str] = (),
    high_pass: float = 0.0,
    source_bold=None,
    target_bold=None,
    feature_map: FeatureMap | None = None,
    oversampling: int = 10,
    n_permutations: int = 200,
    block_trs: int = BLOCK_TRS,
    seed: int = 0,
    device: str | torch.device = "cpu",
    confound_regression: str = "bold-and-design",
    word_rate: str = "regress",
) -> TransferResult:
    """Transfer between two tasks' continuous runs of one participant (module docstring).

    Designs and cleaned BOLD are those of :func:`~bids_vem.encoding.model.encode_runs` (same
    delays, confounds, voxel stores); the voxels are those inside both tasks' masks.

    Parameters
    ----------
    source_runs, target_runs : sequence of Run
        One task's runs each, same participant and space, same TR.
    source_features, target_features : FeatureSet
        Each task's stimuli in its feature space.
    kind : {"same", "shared", "mapped"}
    feature_map : FeatureMap, optional
        Carries ``target_features`` into the source space (``mapped``).
    alphas, stim_column, delays, delays_seconds, confounds, high_pass, oversampling, seed,
    device, confound_regression, word_rate
        As in :func:`~bids_vem.encoding.model.encode_runs`; ``source_bold``/``target_bold``
        the tasks' voxel stores (``bold`` there).
    n_permutations, block_trs
        The null of :func:`fit_transfer`.
    """
    from bids_vem.encoding.model import (
        RunDesigns,
        _check_runs,
        _cleaned_with,
        _run_events,
        _voxel_data,
        delays_in_trs,
    )

    source_runs, target_runs = _check_runs(source_runs), _check_runs(target_runs)
    trs = {float(run.tr) for run in [*source_runs, *target_runs]}
    if len(trs) != 1:
        raise DataError(f"transfer: the source and target runs differ in TR ({sorted(trs)} s)")
    delays = delays_in_trs(delays, delays_seconds, trs.pop())
    if feature_map is not None:
        target_features = feature_map.apply(target_features)
    designs = []
    for runs, features, bold in (
        (source_runs, source_features, source_bold),
        (target_runs, target_features, target_bold),
    ):
        data, mask = _voxel_data(runs, bold, confounds, high_pass)
        events = [_run_events(run.events, stim_column) for run in runs]
        designer = RunDesigns(runs, events, data.run_lengths, delays, oversampling)
        # each task's own nuisance (its confounds; its word rate when it is a story)
        data = designer.remove_nuisance(
            [features], **_cleaned_with(bold, confounds, high_pass),
            confound_regression=confound_regression, word_rate=word_rate,
        ).voxel_data(data)  # fmt: skip
        Xs, _ = designer.designs(features)
        designs.append((Xs, data, np.asarray(mask.dataobj) > 0, np.asarray(mask.affine)))
    (source_Xs, source_data, source_mask, affine), (target_Xs, target_data, target_mask, _) = (
        designs
    )
    if source_mask.shape != target_mask.shape:
        raise DataError(
            f"transfer: the source runs' grid {source_mask.shape} differs from the target runs' "
            f"{target_mask.shape}"
        )
    both = source_mask & target_mask
    scores = fit_transfer(
        source_Xs, VoxelColumns(source_data, np.flatnonzero(both[source_mask])),
        target_Xs, VoxelColumns(target_data, np.flatnonzero(both[target_mask])),
        alphas=alphas, n_permutations=n_permutations, block_trs=block_trs, seed=seed,
        device=device,
    )  # fmt: skip
    return TransferResult(
        **scores,
        source_task=source_runs[0].task, target_task=target_runs[0].task,
        source_space=source_features.name, target_space=target_features.name, kind=kind,
        source_runs=tuple(run.name for run in source_runs),
        target_runs=tuple(run.name for run in target_runs),
        n_permutations=n_permutations, block_trs=block_trs, delays=tuple(delays),
        feature_map={} if feature_map is None else feature_map.describe(),
        mask=both, affine=affine,
    )  # fmt: skip
