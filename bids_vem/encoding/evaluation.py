"""How an encoding model is evaluated: which runs are test runs, which repeat, held-out scores.

Three modes (``EncodingResult.evaluation``):

- ``"loro"``: nested leave-one-out by run (or by session with ``cv_groups``), every run is
  predicted by a model that never saw it;
- ``"test-runs"``: the test runs named by ``--test-runs`` are predicted by one model whose
  penalties were chosen by leave-one-run-out CV on the other runs;
- ``"test-runs-averaged"``: as ``"test-runs"``, but test runs that show the same stimulus
  sequence (same stimuli at the same onsets, Huth/Gallant validation runs) are averaged
  (BOLD after cleaning and z-scoring) before scoring: the average has less noise, so its
  r comes closer to the noise ceiling;
- ``"stimulus-folds"`` and ``"test-stimuli"``: folds of unique stimuli, or explicit test
  stimuli (:mod:`bids_vem.encoding.stimulus_folds`).

Held-out scores are accumulated chunk by chunk (:class:`HeldOutScores`): the predictions of
all voxels are never in memory at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from bids_vem.config import option_name
from bids_vem.errors import DataError, UsageError
from bids_vem.inputs.runs import Run

__all__ = [
    "HeldOutScores",
    "combine_fold_p",
    "select_test_runs",
    "repeated_sequences",
    "EVALUATION_MODES",
]

EVALUATION_MODES = ("loro", "test-runs", "test-runs-averaged", "stimulus-folds", "test-stimuli")


def _zscore_columns(x: torch.Tensor) -> torch.Tensor:
    """As :func:`bids_vem.encoding.design.zscore` (ddof 0, constant columns 0), in torch."""
    centred = x - x.mean(0)
    std = torch.sqrt((centred * centred).mean(0))
    scale = x.abs().amax(0) if x.numel() else torch.zeros(x.shape[1:], dtype=x.dtype)
    constant = std <= 1e-12 * torch.clamp(scale, min=1e-300)
    return torch.where(constant, 0.0, centred / torch.where(constant, 1.0, std))


def combine_fold_p(fold_p: np.ndarray) -> np.ndarray:
    """Stouffer's combination of dependent p-values, one row per fold (n_folds, n_voxels).

    The folds' z-values share an unknown positive correlation; its mean over pairs of folds
    is estimated across voxels (clipped to [0, 1]; 1 with fewer than 3 voxels) and the sum of
    z-values divided by its standard deviation under that correlation.
    """
    from scipy import stats

    z = stats.norm.isf(np.clip(np.asarray(fold_p, dtype=np.float64), 1e-300, 1.0))
    n_folds, n_voxels = z.shape
    rho = 1.0
    if n_voxels >= 3:
        with np.errstate(invalid="ignore", divide="ignore"):
            correlations = np.corrcoef(z)
        off = correlations[~np.eye(n_folds, dtype=bool)]
        off = off[np.isfinite(off)]
        rho = float(np.clip(off.mean(), 0.0, 1.0)) if off.size else 1.0
    combined = z.sum(axis=0) / np.sqrt(n_folds + n_folds * (n_folds - 1) * rho)
    return stats.norm.sf(combined)


class HeldOutScores:
    """Held-out r and R^2 per voxel, accumulated over test units and voxel chunks.

    A test unit is one held-out run (or the average of repeated test runs), or the test
    samples of a stimulus fold in one run, with its prediction. ``r`` pools the units after
    z-scoring each unit's data and prediction (the length-weighted mean of per-unit
    correlations, blind to the scale differences between the units' models: pooled raw
    predictions would let a fold's penalty, chosen on the other folds' test samples, weigh
    those samples' scores, a bias of about +0.01 in r measured on pure noise). ``r2`` is
    ``1 - SSE / SST`` of the raw predictions over all units, ``SST`` around the mean of all
    units' data; with ``centred_r2`` (stimulus folds, whose predictions from the held-out
    stimuli alone carry no intercept) of each unit's centred data and prediction.
    Sums are float64.

    With ``n_permutations``, each unit also adds the numerators of ``r`` under a null that
    pairs its data with a permuted prediction (:meth:`null_moments`, :meth:`null_relabel`).
    The null is tested fold by fold (:meth:`begin_fold`, :meth:`end_fold`): a fold's
    prediction never saw its data, so its permutation p-value is exact; but each fold's model
    was trained on the other folds' test data, so the pooled r of cross-validation has a
    larger variance under the null than permutations of fixed predictions give (about twice,
    measured on pure noise, where pooled permutations gave 12% of p < 0.05). So each fold
    gets its exact permutation p, and the folds' p-values are combined by Stouffer's method
    with the correlation between folds' z-values estimated across voxels (signal voxels raise
    the estimate: conservative; on pure noise, 4.7% of p < 0.05 and 0.7% < 0.01). The
    family-wise p combines the folds' max-statistic p-values as twice their mean, valid
    under any dependence (Vovk & Wang 2020). A single fold (explicit test runs or stimuli)
    gives its p-values as they are.

    Parameters
    ----------
    n_voxels : int
    centred_r2 : bool
    n_permutations : int
    seed : int
        Seed of the permutations (each unit's are drawn from it and the unit's number, so that
        every voxel chunk sees the same permutations).
    """

    def __init__(
        self, n_voxels: int, *, centred_r2: bool = False, n_permutations: int = 0, seed: int = 0
    ) -> None:
        self.n_voxels = int(n_voxels)
        self.centred_r2 = centred_r2
        self._zz = np.zeros(n_voxels)  # sum zy * zp
        self._yy = np.zeros(n_voxels)  # sum zy^2
        self._pp = np.zeros(n_voxels)  # sum zp^2
        self._sse = np.zeros(n_voxels)
        # running count, mean and sum of squared deviations of the data (Chan et al.)
        self._n = np.zeros(n_voxels)
        self._mean = np.zeros(n_voxels)
        self._m2 = np.zeros(n_voxels)
        self.n_permutations = int(n_permutations)
        self.seed = int(seed)
        # the current fold's sums and null numerators; the folds' p-values summed
        self._fold = [np.zeros(n_voxels) for _ in range(3)]
        self._null = np.zeros((self.n_permutations, n_voxels), dtype=np.float32)
        self._fold_p: list[np.ndarray] = []
        self._folds_begun = 0
        self._fwe_sum = np.zeros(n_voxels)
        # per test unit, the sums of zy * zp, zy^2 and zp^2 over blocks of its samples
        self._blocks: dict[int, np.ndarray] = {}
        self._block_fold: dict[int, int] = {}
        # signal power and variance of the mean of repeated test runs (noise ceiling)
        self._signal = np.zeros(n_voxels)
        self._variance = np.zeros(n_voxels)
        self.n_units = 0

    def moments(self, Y: torch.Tensor, prediction: torch.Tensor) -> tuple[np.ndarray, ...]:
        """One test unit's sums for a chunk: data and prediction (n_samples, n_voxels_chunk)."""
        y = Y.to(torch.float64)
        p = prediction.to(torch.float64)
        zy, zp = _zscore_columns(y), _zscore_columns(p)
        mean = y.mean(0)
        residual = ((y - mean) - (p - p.mean(0))) if self.centred_r2 else (y - p)
        sums = [
            (zy * zp).sum(0),
            (zy * zy).sum(0),
            (zp * zp).sum(0),
            (residual**2).sum(0),
            mean,
            ((y - mean) ** 2).sum(0),
        ]
        return (float(y.shape[0]), *(t.cpu().numpy() for t in sums))

    def commit(self, voxels: slice, moments: tuple[np.ndarray, ...]) -> None:
        """Add the :meth:`moments` of one unit (numpy only: cannot fail half-way on a GPU)."""
        n_b, zz, yy, pp, sse, mean_b, m2_b = moments
        for total, value in zip(self._fold, (zz, yy, pp), strict=True):
            total[voxels] += value
        self._zz[voxels] += zz
        self._yy[voxels] += yy
        self._pp[voxels] += pp
        self._sse[voxels] += sse
        n_a, mean_a = self._n[voxels], self._mean[voxels]
        n = n_a + n_b
        delta = mean_b - mean_a
        self._mean[voxels] = mean_a + delta * n_b / n
        # centred R^2: SST within units; else around the mean of all units
        self._m2[voxels] += m2_b if self.centred_r2 else m2_b + delta**2 * n_a * n_b / n
        self._n[voxels] = n

    def add(self, voxels: slice, Y: torch.Tensor, prediction: torch.Tensor) -> None:
        """Add one test unit's data and prediction (n_samples, n_voxels_chunk) for ``voxels``."""
        self.commit(voxels, self.moments(Y, prediction))

    def null_moments(
        self, unit: int, Y: torch.Tensor, prediction: torch.Tensor, scheme: str
    ) -> np.ndarray | None:
        """Numerators of ``r`` of one unit under ``n_permutations`` nulls: (n_perm, n_voxels_chunk).

        ``scheme`` ``"shift"``: the prediction is shifted circularly against the data (time
        courses: keeps their autocorrelation; shifts of at least a tenth of the unit);
        ``"permute"``: the rows (stimuli) of the prediction are permuted.
        """
        if not self.n_permutations:
            return None
        y = _zscore_columns(Y.to(torch.float64))
        p = _zscore_columns(prediction.to(torch.float64))
        n = y.shape[0]
        rng = np.random.default_rng([self.seed, int(unit)])
        if n < 2:
            return np.zeros((self.n_permutations, y.shape[1]), dtype=np.float32)
        if scheme == "shift":
            margin = max(1, n // 10) if n > 2 else 1
            shifts = rng.integers(margin, max(margin + 1, n - margin + 1), self.n_permutations) % n
            # circular cross-correlation of data and prediction at every shift, by FFT
            spectrum = torch.fft.rfft(y, dim=0) * torch.conj(torch.fft.rfft(p, dim=0))
            cross = torch.fft.irfft(spectrum, n=n, dim=0)  # cross[s] = sum_t y[t + s] p[t]
            return (
                cross[torch.as_tensor(shifts, device=cross.device)].cpu().numpy().astype(np.float32)
            )
        if scheme != "permute":
            raise ValueError(f"scheme must be 'shift' or 'permute', got {scheme!r}")
        orders = torch.as_tensor(
            np.argsort(rng.random((self.n_permutations, n)), axis=1), device=y.device
        )
        out = torch.empty((self.n_permutations, y.shape[1]), dtype=torch.float64, device=y.device)
        batch = max(1, int(2e7 // max(1, n * y.shape[1])))
        for start in range(0, self.n_permutations, batch):
            index = orders[start : start + batch]
            out[start : start + batch] = (y[index] * p[None]).sum(1)
        return out.cpu().numpy().astype(np.float32)

    def null_relabel(
        self,
        fold: int,
        Y: torch.Tensor,
        prediction: torch.Tensor,
        slots: np.ndarray,
        terms: torch.Tensor,
    ) -> np.ndarray | None:
        """Numerators of ``r`` of one unit when the fold's held-out stimuli are relabelled:
        (n_perm, n_voxels_chunk).

        The prediction of the unit is ``sum_d slots[d] @ terms[d]`` (``terms[d]``: each
        held-out stimulus's features times the weights of delay ``d``); a permutation gives
        stimulus ``s``'s place in time to stimulus ``pi(s)``'s features, the exchangeable unit
        of a stimulus design (the BOLD and the timing stay as they are). One permutation per
        fold, shared by the fold's units. The statistic is the covariance of the z-scored
        data with the relabelled prediction over the observed prediction's standard deviation
        (the numerator of ``r`` for the observed labels), so that it needs only the
        ``n_held x n_held`` matrix of what each stimulus's features give in each stimulus's
        place, not a whole prediction per permutation.
        """
        if not self.n_permutations:
            return None
        y = _zscore_columns(Y.to(torch.float64))
        p = prediction.to(torch.float64)
        spread = torch.sqrt(((p - p.mean(0)) ** 2).mean(0))
        spread = torch.where(spread > 0, spread, torch.inf)
        placed = torch.as_tensor(slots, dtype=torch.float64, device=y.device)
        projected = torch.einsum("drs,rc->dsc", placed, y)  # (n_delays, n_held, c)
        # pairs[s, t] = what stimulus t's features contribute in stimulus s's place
        pairs = torch.einsum("dsc,dtc->stc", projected, terms.to(torch.float64))
        n_held = pairs.shape[0]
        rng = np.random.default_rng([self.seed, 7919, int(fold)])
        orders = np.argsort(rng.random((self.n_permutations, n_held)), axis=1)
        if n_held <= 64:  # one product with the permutations as 0/1 matrices
            chosen = np.zeros((self.n_permutations, n_held, n_held))
            chosen[np.arange(self.n_permutations)[:, None], np.arange(n_held), orders] = 1.0
            chosen = torch.as_tensor(chosen.reshape(self.n_permutations, -1), device=y.device)
            out = chosen @ pairs.reshape(n_held * n_held, -1)
        else:
            orders_t = torch.as_tensor(orders, device=y.device)
            rows = torch.arange(n_held, device=y.device)
            out = torch.empty(
                (self.n_permutations, y.shape[1]), dtype=torch.float64, device=y.device
            )
            batch = max(1, int(2e7 // max(1, n_held * y.shape[1])))
            for start in range(0, self.n_permutations, batch):
                out[start : start + batch] = pairs[rows, orders_t[start : start + batch]].sum(1)
        return (out / spread).cpu().numpy().astype(np.float32)

    @staticmethod
    def block_sums(Y: torch.Tensor, prediction: torch.Tensor, block_rows: int) -> np.ndarray:
        """A unit's ``zy * zp``, ``zy^2`` and ``zp^2`` summed over consecutive blocks of
        ``block_rows`` samples: (3, n_blocks, n_voxels_chunk), the pieces of ``r`` that a
        paired bootstrap resamples (:mod:`bids_vem.analysis.paired`)."""
        zy = _zscore_columns(Y.to(torch.float64))
        zp = _zscore_columns(prediction.to(torch.float64))
        n = zy.shape[0]
        which = torch.as_tensor(np.arange(n) // max(1, block_rows), device=zy.device)
        n_blocks = int(which[-1]) + 1 if n else 0
        out = torch.zeros((3, n_blocks, zy.shape[1]), dtype=torch.float64, device=zy.device)
        for i, values in enumerate((zy * zp, zy * zy, zp * zp)):
            out[i].index_add_(0, which, values)
        return out.cpu().numpy().astype(np.float32)

    def commit_blocks(self, unit: int, voxels: slice, sums: np.ndarray) -> None:
        if unit not in self._blocks:
            self._blocks[unit] = np.zeros((3, sums.shape[1], self.n_voxels), dtype=np.float32)
            self._block_fold[unit] = self._folds_begun
        self._blocks[unit][:, :, voxels] = sums

    @property
    def block_moments(self) -> np.ndarray | None:
        """(3, n_blocks, n_voxels) float32 over all test units, in unit order (None if none)."""
        if not self._blocks:
            return None
        return np.concatenate([self._blocks[k] for k in sorted(self._blocks)], axis=1)

    @property
    def block_folds(self) -> np.ndarray | None:
        """(n_blocks,) int: the fold of each block of :attr:`block_moments`."""
        if not self._blocks:
            return None
        return np.concatenate(
            [np.full(self._blocks[k].shape[1], self._block_fold[k]) for k in sorted(self._blocks)]
        )

    def commit_null(self, voxels: slice, null: np.ndarray | None) -> None:
        if null is not None:
            self._null[:, voxels] += null

    def commit_repeats(self, voxels: slice, signal: np.ndarray, variance: np.ndarray) -> None:
        """Add a repeated unit's signal power and variance of its mean, both summed over samples."""
        self._signal[voxels] += signal
        self._variance[voxels] += variance

    @property
    def r(self) -> np.ndarray:
        """(n_voxels,) float64; 0 where data or prediction are constant in every unit."""
        den = np.sqrt(self._yy * self._pp)
        return np.divide(self._zz, den, out=np.zeros(self.n_voxels), where=den > 0)

    @property
    def r2(self) -> np.ndarray:
        """(n_voxels,) float64; 0 where the data are constant."""
        ratio = np.divide(self._sse, self._m2, out=np.ones(self.n_voxels), where=self._m2 > 0)
        return 1.0 - ratio

    @property
    def noise_ceiling(self) -> np.ndarray | None:
        """Explainable fraction of the averaged test runs' variance (CCmax^2), if any repeated."""
        if not self._variance.any():
            return None
        ratio = np.divide(
            self._signal, self._variance, out=np.zeros(self.n_voxels), where=self._variance > 0
        )
        return np.clip(ratio, 0.0, 1.0)

    def begin_fold(self) -> None:
        """Start the units of one fold (one model)."""
        self._folds_begun += 1
        for total in self._fold:
            total[:] = 0.0
        self._null[:] = 0.0

    def end_fold(self) -> None:
        """Turn the fold's null into its p-values (per voxel and family-wise) and keep them."""
        if not self.n_permutations:
            return
        zz, yy, pp = self._fold
        den = np.sqrt(yy * pp)
        r = np.divide(zz, den, out=np.zeros(self.n_voxels), where=den > 0).astype(np.float32)
        null = self._null / np.where(den > 0, den, 1.0)[None].astype(np.float32)
        null[:, den <= 0] = 0.0
        exceed = (null >= r[None] - 1e-7).sum(axis=0)
        self._fold_p.append(((1.0 + exceed) / (self.n_permutations + 1.0)).astype(np.float32))
        peak = null.max(axis=1)
        above = (peak[:, None] >= r[None] - 1e-7).sum(axis=0)
        self._fwe_sum += (1.0 + above) / (self.n_permutations + 1.0)

    @property
    def n_folds(self) -> int:
        return len(self._fold_p)

    def permutation_p(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Per-voxel p, Benjamini-Hochberg q and family-wise p of ``r > 0`` (class docstring).

        A fold's ``p = (1 + #{null r >= r}) / (n_permutations + 1)``, its family-wise p the
        same against the largest null r over all voxels of each permutation.
        """
        if not self.n_permutations or not self.n_folds:
            return None
        from scipy import stats

        if self.n_folds == 1:
            p, fwe = self._fold_p[0].astype(np.float64), self._fwe_sum.copy()
        else:
            p = combine_fold_p(np.vstack(self._fold_p))
            fwe = np.minimum(1.0, 2.0 * self._fwe_sum / self.n_folds)
        q = stats.false_discovery_control(p, method="bh")
        return p, q, fwe


def _names_run(label: str, run: Run) -> bool:
    """Whether ``label`` (``2``, ``02``, ``run-2`` or the run's BIDS name) names ``run``."""
    if label == run.name:
        return True
    if run.run is None:
        return False
    label = label.removeprefix("run-")
    if label.isdigit() and run.run.isdigit():
        return int(label) == int(run.run)
    return label == run.run


def select_test_runs(runs: Sequence[Run], labels: Sequence[str], group: str = "") -> list[int]:
    """Indices of the runs that ``--test-runs`` names.

    Parameters
    ----------
    runs : sequence of Run
        One run group (a participant's runs of one task).
    labels : sequence of str
        Run labels (``2``, ``run-2``), BIDS run names (``sub-01_ses-2_task-x_run-2``),
        whole sessions (``ses-2``) or whole tasks (``task-x``, in a model over tasks).
    group : str
        Name of the run group, for messages.

    Returns
    -------
    list of int
        Sorted indices into ``runs``.

    Raises
    ------
    UsageError
        A label that names no run of the group, or test runs that leave fewer than 2 runs to
        train on.
    """
    chosen: set[int] = set()
    where = f" of {group}" if group else ""
    for label in labels:
        label = str(label).strip()
        if label.startswith("ses-"):
            matches = {i for i, run in enumerate(runs) if run.session == label[4:]}
        elif label.startswith("task-"):  # a story's runs in a model over tasks (--pool-tasks)
            matches = {i for i, run in enumerate(runs) if run.task == label[5:]}
        else:
            matches = {i for i, run in enumerate(runs) if _names_run(label, run)}
        if not matches:
            known = ", ".join(run.name for run in runs)
            raise UsageError(
                f"{option_name('test_runs')} {label}: no run{where} matches (runs: {known})"
            )
        chosen |= matches
    if len(runs) - len(chosen) < 2:
        raise UsageError(
            f"{option_name('test_runs')} {' '.join(labels)}: leaves {len(runs) - len(chosen)} run(s){where} to "
            "train on; the penalties need at least 2 (leave-one-run-out)"
        )
    return sorted(chosen)


def _sequence(events: pd.DataFrame) -> tuple:
    rows = []
    for onset, stim in zip(events["onset"], events["stim_id"], strict=True):
        if stim is None or (isinstance(stim, float) and math.isnan(stim)):
            continue
        rows.append((round(float(onset), 3), str(stim)))
    return tuple(sorted(rows))


def repeated_sequences(
    test_runs: Sequence[int], events: Sequence[pd.DataFrame], names: Sequence[str]
) -> list[list[int]]:
    """Group test runs whose events show the same stimuli at the same onsets (to the ms).

    Parameters
    ----------
    test_runs : sequence of int
        Indices of the test runs.
    events : sequence of DataFrame
        Events of every run (``onset``, ``stim_id``), indexed like ``names``.
    names : sequence of str
        Run names, for messages.

    Returns
    -------
    list of list of int
        The test runs grouped, each group in run order, groups in order of their first run;
        a run without a repeat is a group of one.

    Raises
    ------
    DataError
        No two test runs show the same sequence (nothing to average).
    """
    groups: dict[tuple, list[int]] = {}
    for index in test_runs:
        groups.setdefault(_sequence(events[index]), []).append(index)
    out = list(groups.values())
    if all(len(group) == 1 for group in out):
        listed = ", ".join(names[i] for i in test_runs)
        raise DataError(
            f"{option_name('average_test_repeats')}: no two test runs show the same stimuli at the same "
            f"onsets ({listed}); name repeated runs with {option_name('test_runs')}"
        )
    return out
