"""Nuisance regressors taken out of the design as they are out of the BOLD.

The BOLD of a continuous design is cleaned run by run before the model sees it
(:func:`~bids_vem.encoding.bold.load_bold`, nilearn ``signal.clean``): its constant, linear
trend, confounds and cosine drifts are projected out. A design left as it was still holds the
part of the stimulus that those regressors explain, and the model fits it to data from which
that part was removed: when a confound tracks the stimulus (motion locked to the trials, a
global signal the task drives), the weights are biased. Projecting the same regressors out of
the design too gives, by the Frisch-Waugh-Lovell theorem, exactly the weights of one model in
which the nuisance regressors are fitted alongside the features without penalty (Lindquist et
al. 2019 make the same argument for filters). That is the default
(``--confound-regression bold-and-design``); ``bold`` keeps the older practice.

Stories add one more: the Lanczos resampling of word features sums the words within its
window (:func:`~bids_vem.encoding.resample.lanczos_resample`), so the magnitude of a story's
per-TR features follows how many words were spoken. Any feature space with a mean direction
then predicts voxels that only follow the word rate. ``--word-rate regress`` (the default)
projects the word rate at the FIR delays out of the BOLD and the design (Huth lab practice
counts the words per TR the same way).

Stimulus-disjoint folds train on part of a run. The projection over the whole run carries a
little of the held-out stimuli into the training rows, of their features into the design's and
of their responses into the data's; wide designs learn the held-out responses from that pair.
So those training rows are residualised against the nuisance on the training rows alone
(:func:`training_basis`), as they were centred on their own before: the nuisance is fitted on
training samples only.

The projection of one run is ``X - Q (Q^T X)`` with ``Q`` an orthonormal basis of the run's
nuisance regressors, computed once per run (nilearn's ``signal.clean`` on each design would
orthogonalise the confounds again for every design and every fold; it stays the reference in
the tests).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bids_vem.config import setting_choices
from bids_vem.encoding.voxel_data import VoxelData

__all__ = [
    "CONFOUND_REGRESSION",
    "WORD_RATE",
    "cosine_drifts",
    "cleaning_regressors",
    "orthonormal_basis",
    "project_out",
    "training_basis",
    "word_rate_features",
    "nuisance_description",
    "Nuisance",
    "ProjectedVoxelData",
]

#: ``--confound-regression`` values: where the cleaning regressors are projected out
CONFOUND_REGRESSION = setting_choices("confound_regression")
#: ``--word-rate`` values
WORD_RATE = setting_choices("word_rate")


def filters_drift(n_volumes: int, tr: float, high_pass: float) -> bool:
    """Whether a cosine high-pass at ``high_pass`` Hz adds a drift regressor to a run (a
    cutoff below the run's lowest frequency does not)."""
    return high_pass > 0 and high_pass * n_volumes * tr > 1.0


def cosine_drifts(n_volumes: int, tr: float, high_pass: float) -> np.ndarray:
    """nilearn's discrete cosine drifts below ``high_pass`` Hz, without the constant
    (``make_first_level_design_matrix``); none when the cutoff adds no regressor.

    Returns
    -------
    ndarray of shape (n_volumes, n_drifts), float64
    """
    from nilearn.glm.first_level import make_first_level_design_matrix

    if not filters_drift(n_volumes, tr, high_pass):
        return np.zeros((n_volumes, 0))
    frames = np.arange(n_volumes, dtype=np.float64) * tr
    drift = make_first_level_design_matrix(frames, None, drift_model="cosine", high_pass=high_pass)
    return drift.drop(columns="constant").to_numpy(dtype=np.float64)


def cleaning_regressors(
    n_volumes: int, tr: float, confounds: np.ndarray | None, high_pass: float
) -> np.ndarray:
    """The regressors :func:`~bids_vem.encoding.bold.load_bold` removes from a run's BOLD.

    The constant and linear trend (``detrend=True``), the confounds, and the discrete cosine
    drifts below ``high_pass`` (nilearn's, from ``make_first_level_design_matrix``) when the
    cutoff adds one.

    Returns
    -------
    ndarray of shape (n_volumes, n_regressors), float64
    """
    frames = np.arange(n_volumes, dtype=np.float64)
    columns = [np.ones((n_volumes, 1)), (frames - frames.mean())[:, None]]
    if confounds is not None:
        confounds = np.asarray(confounds, dtype=np.float64)
        columns.append(confounds[:, None] if confounds.ndim == 1 else confounds)
    columns.append(cosine_drifts(n_volumes, tr, high_pass))
    return np.hstack(columns)


def orthonormal_basis(regressors: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """An orthonormal basis of the span of ``regressors`` less its part in ``exclude``.

    Parameters
    ----------
    regressors : ndarray of shape (n_samples, n_regressors)
        Any scale, possibly collinear (confounds often are, with the drift).
    exclude : ndarray of shape (n_samples, k), optional
        Orthonormal columns already accounted for.

    Returns
    -------
    ndarray of shape (n_samples, rank), float64
    """
    R = np.asarray(regressors, dtype=np.float64)
    if R.ndim == 1:
        R = R[:, None]
    if exclude is not None and exclude.size:
        R = R - exclude @ (exclude.T @ R)
    norms = np.linalg.norm(R, axis=0)
    # columns with nothing left (constant confounds, what ``exclude`` already spans)
    R = R[:, norms > 1e-9 * max(float(np.sqrt(R.shape[0])), 1.0)]
    if R.shape[1] == 0:
        return np.zeros((R.shape[0], 0))
    R = R / np.linalg.norm(R, axis=0)  # one scale: a rank decision unaffected by units
    U, s, _ = np.linalg.svd(R, full_matrices=False)
    keep = s > s[0] * max(R.shape) * np.finfo(np.float64).eps
    return U[:, keep]


def training_basis(nuisance: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    """What training rows of part of a run are residualised against: an orthonormal basis of
    the constant and the run's nuisance on those rows (None without nuisance: centring).

    A run's data and designs were cleaned over all its samples, held-out ones included: the
    projection carries a little of the held-out stimuli's features into the training rows of
    the design and of their responses into the data's, and a model fitted on both would learn
    the held-out responses from them. Fitting the nuisance anew on the training rows removes
    both, as centring them removes the means (an intercept fitted on training rows only).
    """
    if nuisance is None or nuisance.shape[1] == 0:
        return None
    rows = np.asarray(rows)
    # every voxel chunk of a split asks again for each of its runs: keep the recent ones
    key = (id(nuisance), rows.tobytes())
    hit = _TRAINING_BASES.get(key)
    if hit is not None and hit[0] is nuisance:
        return hit[1]
    basis = orthonormal_basis(np.hstack([np.ones((len(rows), 1)), nuisance[rows]]))
    if len(_TRAINING_BASES) >= _TRAINING_BASES_KEPT:
        del _TRAINING_BASES[next(iter(_TRAINING_BASES))]
    _TRAINING_BASES[key] = (nuisance, basis)
    return basis


#: recent training bases by (run nuisance, rows); the nuisance is kept so that its id stays its
_TRAINING_BASES: dict[tuple[int, bytes], tuple[np.ndarray, np.ndarray]] = {}
_TRAINING_BASES_KEPT = 256


def project_out(X: np.ndarray, basis: np.ndarray | None) -> np.ndarray:
    """``X`` less its projection on the orthonormal ``basis`` (rows are samples), same dtype."""
    if basis is None or basis.shape[1] == 0:
        return X
    X = np.asarray(X)
    out = X - basis @ (basis.T @ X.astype(np.float64))
    return out.astype(X.dtype if X.dtype.kind == "f" else np.float64, copy=False)


def word_rate_features(features):
    """``features`` with every word's row replaced by 1: Lanczos-resampled, the word rate."""
    return dataclasses.replace(
        features,
        name=f"{features.name}-wordrate",
        values=np.ones((len(features.stim_ids), 1), dtype=np.float32),
    )


def nuisance_description(
    confounds: Sequence[str],
    high_pass: float,
    confound_regression: str,
    word_rate: bool,
    delays: Sequence[int],
) -> str:
    """What :class:`Nuisance` takes out, in words (the sidecars' ``NuisanceRegression``)."""
    cleaning = ["constant", "linear trend"]
    if confounds:
        cleaning.append(f"confounds {', '.join(confounds)}")
    cleaning.append("fMRIPrep's non-steady-state outliers where present")
    if high_pass > 0:
        cleaning.append(f"discrete cosine drifts below {high_pass:g} Hz")
    where = (
        "regressed out of the BOLD and projected out of the design (as one model with them "
        "unpenalised)"
        if confound_regression != "bold"
        else "regressed out of the BOLD only"
    )
    text = f"{', '.join(cleaning)}: {where}"
    if word_rate:
        text += (
            "; word rate (words per TR, Lanczos-resampled like the word features, at the FIR "
            f"delays {', '.join(str(int(d)) for d in delays)} TRs): projected out of the BOLD "
            "and the design"
        )
    return text


@dataclass
class Nuisance:
    """What is projected out of each run's design and, still, out of its cleaned BOLD.

    Attributes
    ----------
    design : list of ndarray of shape (n_volumes_i, k_i)
        Per run, the orthonormal basis projected out of every design of the run (full,
        per-fold and the held-out stimuli's partial designs alike).
    bold : list of ndarray of shape (n_volumes_i, m_i)
        Per run, the orthonormal basis still to project out of the cleaned BOLD (the word
        rate; orthogonal to what cleaning removed). Width 0: nothing.
    description : str
        In words, for the sidecars' ``NuisanceRegression``.
    centres : bool
        ``design`` holds each run's constant.
    """

    design: list[np.ndarray]
    bold: list[np.ndarray]
    description: str = ""
    centres: bool = False

    def designs(self, Xs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each run's design with the nuisance projected out."""
        return [project_out(X, basis) for X, basis in zip(Xs, self.design, strict=True)]

    def voxel_data(self, data: VoxelData) -> VoxelData:
        """``data`` with the remaining nuisance projected out as it is read, and the design's
        nuisance known to the fits (``nuisance``: training rows of part of a run are
        residualised against it)."""
        if all(basis.shape[1] == 0 for basis in self.design):
            return data
        return ProjectedVoxelData(data, self.bold, self.design)


class ProjectedVoxelData(VoxelData):
    """Another :class:`~bids_vem.encoding.voxel_data.VoxelData` with per-run orthonormal
    regressors projected out of each chunk as it is read (no copy of the data on disk).

    Parameters
    ----------
    data : VoxelData
    bases : sequence of ndarray of shape (n_samples_i, m_i)
        Per run, what to project out as it is read (width 0: nothing).
    nuisance : sequence of ndarray of shape (n_samples_i, k_i), optional
        Per run, all that the data and designs are clean of (the ``nuisance`` attribute of
        :class:`~bids_vem.encoding.voxel_data.VoxelData`); default ``bases``.
    """

    def __init__(
        self,
        data: VoxelData,
        bases: Sequence[np.ndarray],
        nuisance: Sequence[np.ndarray] | None = None,
    ) -> None:
        nuisance = bases if nuisance is None else nuisance
        for what in (bases, nuisance):
            if len(what) != data.n_runs:
                raise ValueError(f"{len(what)} nuisance bases for {data.n_runs} runs")
            for run, (basis, n) in enumerate(zip(what, data.run_lengths, strict=True)):
                if basis.shape[0] != n:
                    raise ValueError(
                        f"run {run}: nuisance of {basis.shape[0]} rows for {n} samples"
                    )
        self.data = data
        self.bases = [np.asarray(b, dtype=np.float64) for b in bases]
        self.nuisance = [np.asarray(b, dtype=np.float64) for b in nuisance]
        self.run_lengths = tuple(data.run_lengths)
        self.n_voxels = data.n_voxels

    def read(self, run: int, voxels: slice) -> np.ndarray:
        Y = self.data.read(run, voxels)
        basis = self.bases[run]
        if basis.shape[1] == 0:
            return Y
        return (Y - basis @ (basis.T @ Y.astype(np.float64))).astype(np.float32)
