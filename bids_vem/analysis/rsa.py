"""Representational similarity analysis: brain RDMs, model RDMs and their rank correlation.

Following Kriegeskorte et al. (2008) and Nili et al. (2014), as Doerig et al. (2025) apply it:

- **stimulus patterns**: single-trial responses (:mod:`bids_vem.encoding.trialwise`),
  z-scored per session; each stimulus's trials averaged, and, when every stimulus was shown at
  least twice, split into two halves by presentation (odd and even repeats);
- **brain RDM**: with two halves, the cross-validated Euclidean distance
  ``(a_i - a_j) . (b_i - b_j) / n_voxels`` (rsatoolbox's crossnobis without noise
  normalisation): noise is independent between the halves, so its expectation is the true
  squared distance, 0 for identical patterns, unbiased by noise; otherwise the correlation
  distance ``1 - r`` of the mean patterns;
- **model RDM**: the correlation distance between stimuli's feature vectors (one row per
  stimulus; timed features, video frames, are averaged per stimulus first);
- **comparison**: Spearman's rho and Kendall's tau-a between the condensed RDMs (tau-a, not
  tau-b, because a model RDM with ties should not be rewarded for them; Nili et al. 2014),
  each with a permutation test that relabels the stimuli of the model RDM
  (``p = (1 + #{null >= observed}) / (1 + n_permutations)``);
- **noise ceiling** (across participants, :func:`noise_ceiling`): the upper bound is the mean
  rank correlation of each participant's RDM with the mean of all participants' rank-transformed
  RDMs, the lower bound with the mean of the others' (rsatoolbox's ``boot_noise_ceiling``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, rankdata

__all__ = [
    "RSA_METHODS",
    "StimulusPatterns",
    "stimulus_patterns",
    "correlation_rdm",
    "crossvalidated_rdm",
    "brain_rdm",
    "model_rdm",
    "compare_rdms",
    "permutation_p",
    "noise_ceiling",
    "square",
    "RSA_COLUMNS",
    "RSAResult",
    "rsa_of_run_group",
    "GROUP_RSA_COLUMNS",
    "read_rdm",
    "group_rsa_rows",
]

#: the rank correlations computed between RDMs
RSA_METHODS = ("spearman", "tau-a")


@dataclass
class StimulusPatterns:
    """Response patterns of the unique stimuli of one run group.

    Attributes
    ----------
    stim_ids : list of str
        Sorted.
    mean : ndarray of shape (n_stimuli, n_voxels)
        All trials of each stimulus averaged.
    halves : ndarray of shape (2, n_stimuli, n_voxels), optional
        The averages of odd and even presentations, when every stimulus was shown twice or
        more.
    """

    stim_ids: list[str]
    mean: np.ndarray
    halves: np.ndarray | None = None

    @property
    def measure(self) -> str:
        return "crossvalidated euclidean" if self.halves is not None else "correlation distance"


def stimulus_patterns(trial_betas) -> StimulusPatterns:
    """Stimulus patterns from single-trial responses (module docstring)."""
    from bids_vem.encoding.trialwise import average_repeats, zscore_per_session

    responses = zscore_per_session(trial_betas)
    trials = trial_betas.trials
    stim_ids = [str(s) for s in trials["stim_id"]]
    ids, mean, counts = average_repeats(responses, stim_ids)
    halves = None
    if counts.min() >= 2:
        # presentation order: session, run, onset (as the trials were shown)
        keys = [
            (str(s), str(r), float(o) if o == o else float(i))
            for i, (s, r, o) in enumerate(
                zip(trials["session"], trials["run"], trials["onset"], strict=True)
            )
        ]
        seen: dict[str, int] = {}
        half = np.zeros(len(stim_ids), dtype=int)
        for i in sorted(range(len(stim_ids)), key=lambda k: keys[k]):
            half[i] = seen.get(stim_ids[i], 0) % 2
            seen[stim_ids[i]] = seen.get(stim_ids[i], 0) + 1
        index = {s: k for k, s in enumerate(ids)}
        halves = np.zeros((2, len(ids), responses.shape[1]))
        count = np.zeros((2, len(ids)))
        for i, stim in enumerate(stim_ids):
            halves[half[i], index[stim]] += responses[i]
            count[half[i], index[stim]] += 1
        halves /= count[..., None]
    # stimuli sorted by id: RDMs of participants and models line up
    order = np.argsort(np.asarray(ids, dtype=object))
    return StimulusPatterns(
        [ids[k] for k in order],
        np.asarray(mean, dtype=np.float64)[order],
        None if halves is None else halves[:, order],
    )


def _upper(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, k=1)


def correlation_rdm(patterns: np.ndarray) -> np.ndarray:
    """``1 - r`` between every pair of rows (condensed, upper triangle row by row)."""
    X = np.asarray(patterns, dtype=np.float64)
    X = X - X.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    X = X / np.where(norm > 0, norm, 1.0)
    i, j = _upper(len(X))
    return (1.0 - X @ X.T)[i, j]


def crossvalidated_rdm(half_a: np.ndarray, half_b: np.ndarray) -> np.ndarray:
    """Cross-validated Euclidean distance ``(a_i - a_j) . (b_i - b_j) / n_voxels``, averaged
    over both orders of the halves (condensed)."""
    A, B = np.asarray(half_a, np.float64), np.asarray(half_b, np.float64)
    G = A @ B.T  # a_i . b_j
    i, j = _upper(len(A))
    # (a_i - a_j).(b_i - b_j) = a_i.b_i - a_i.b_j - a_j.b_i + a_j.b_j
    d = np.diag(G)[i] - G[i, j] - G[j, i] + np.diag(G)[j]
    return d / A.shape[1]


def brain_rdm(patterns: StimulusPatterns, voxels: np.ndarray | None = None) -> np.ndarray:
    """The brain RDM of ``patterns`` over ``voxels`` (all by default)."""
    pick = slice(None) if voxels is None else voxels
    if patterns.halves is not None:
        return crossvalidated_rdm(patterns.halves[0][:, pick], patterns.halves[1][:, pick])
    return correlation_rdm(patterns.mean[:, pick])


def model_rdm(feature_set, stim_ids: Sequence[str]) -> np.ndarray:
    """Correlation-distance RDM of a feature space over ``stim_ids`` (timed rows averaged)."""
    if feature_set.timed:
        frames = feature_set.frames()
        rows = np.vstack([np.asarray(frames[s][0], np.float64).mean(axis=0) for s in stim_ids])
    else:
        rows = feature_set.rows(list(stim_ids))
    return correlation_rdm(rows)


def square(condensed: np.ndarray, n: int) -> np.ndarray:
    """The symmetric (n, n) RDM with a zero diagonal."""
    out = np.zeros((n, n))
    i, j = _upper(n)
    out[i, j] = out[j, i] = condensed
    return out


def _tau_a(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-a from scipy's tau-b: ``(C - D) / (n (n - 1) / 2)``."""
    n = len(x)
    tau_b = kendalltau(x, y, variant="b").statistic
    if not np.isfinite(tau_b):
        return 0.0

    def tied(v: np.ndarray) -> float:
        counts = np.unique(v, return_counts=True)[1]
        return float(np.sum(counts * (counts - 1) / 2))

    n0 = n * (n - 1) / 2
    return float(tau_b * np.sqrt((n0 - tied(x)) * (n0 - tied(y))) / n0)


def compare_rdms(a: np.ndarray, b: np.ndarray, method: str) -> float:
    """Rank correlation of two condensed RDMs: ``"spearman"`` or ``"tau-a"``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if method == "spearman":
        ra, rb = rankdata(a), rankdata(b)
        ra, rb = ra - ra.mean(), rb - rb.mean()
        denominator = np.sqrt(np.sum(ra**2) * np.sum(rb**2))
        return float(np.sum(ra * rb) / denominator) if denominator > 0 else 0.0
    if method == "tau-a":
        return _tau_a(a, b)
    raise ValueError(f"unknown RDM comparison {method!r}; known: {', '.join(RSA_METHODS)}")


def permutation_p(
    brain: np.ndarray,
    model: np.ndarray,
    n_stimuli: int,
    method: str,
    n_permutations: int,
    seed: int = 0,
) -> float | None:
    """Permutation p of ``compare_rdms(brain, model) > 0``: the model RDM's stimuli relabelled
    (rows and columns permuted together); None without permutations."""
    if not n_permutations:
        return None
    observed = compare_rdms(brain, model, method)
    M = square(model, n_stimuli)
    i, j = _upper(n_stimuli)
    rng = np.random.default_rng(seed)
    if method == "spearman":  # ranks of the brain RDM once; the model's ranks permute with it
        rb = rankdata(brain)
        rb = (rb - rb.mean()) / np.linalg.norm(rb - rb.mean())
        ranked = square(rankdata(model), n_stimuli)
        null = []
        for _ in range(n_permutations):
            order = rng.permutation(n_stimuli)
            rm = ranked[np.ix_(order, order)][i, j]
            rm = rm - rm.mean()
            null.append(float(rb @ rm / np.linalg.norm(rm)))
    else:
        null = [
            compare_rdms(brain, M[np.ix_(order, order)][i, j], method)
            for order in (rng.permutation(n_stimuli) for _ in range(n_permutations))
        ]
    return float((1 + np.sum(np.asarray(null) >= observed)) / (1 + n_permutations))


def noise_ceiling(rdms: np.ndarray, method: str) -> tuple[float, float]:
    """Lower and upper noise ceiling of RDMs of several participants (Nili et al. 2014).

    Parameters
    ----------
    rdms : ndarray of shape (n_participants, n_pairs)
        Condensed RDMs over the same stimuli.
    method : {"spearman", "tau-a"}

    Returns
    -------
    lower, upper : float
        Mean correlation of each RDM with the mean of the others' rank-transformed RDMs
        (lower) and of all of them (upper).
    """
    ranked = np.vstack([rankdata(r) for r in np.asarray(rdms, np.float64)])
    everyone = ranked.mean(axis=0)
    lower, upper = [], []
    for k in range(len(ranked)):
        others = np.delete(ranked, k, axis=0).mean(axis=0)
        lower.append(compare_rdms(others, rdms[k], method))
        upper.append(compare_rdms(everyone, rdms[k], method))
    return float(np.mean(lower)), float(np.mean(upper))


#: columns of the RSA tables (``..._rsa.tsv``)
RSA_COLUMNS = {
    "region": "mask (every voxel of the run group's mask) or a --roi region.",
    "feature_space": "The model whose RDM (correlation distance of its features) is compared.",
    "n_stimuli": "Stimuli in the RDMs.",
    "n_voxels": "Voxels of the region.",
    "measure": "Dissimilarity of the brain RDM: crossvalidated euclidean (odd vs even "
    "presentations) or correlation distance (1 - r of the mean patterns).",
    "spearman": "Spearman's rho between the brain RDM and the model RDM.",
    "p_spearman": "Permutation p of rho > 0 (the model's stimuli relabelled).",
    "tau_a": "Kendall's tau-a between the brain RDM and the model RDM.",
    "p_tau_a": "Permutation p of tau-a > 0.",
}


@dataclass
class RSAResult:
    """RSA of one run group: brain RDMs per region, model RDMs, their comparison, and the
    searchlight maps.

    Attributes
    ----------
    stim_ids : list of str
    regions : list of str
        ``mask`` and the ``--roi`` names.
    brain_rdms : ndarray of shape (n_regions, n_pairs)
    n_voxels : list of int
        Voxels of each region.
    feature_spaces : list of str
    model_rdms : ndarray of shape (n_models, n_pairs)
    rows : list of dict
        :data:`RSA_COLUMNS`, one row per region and model.
    measure : str
    searchlight : ndarray of shape (n_models, n_voxels), optional
        Spearman's rho of each sphere.
    radius : float
        Sphere radius in mm (0: no searchlight).
    mask, affine : ndarray, optional
    """

    stim_ids: list[str]
    regions: list[str]
    brain_rdms: np.ndarray
    n_voxels: list[int]
    feature_spaces: list[str]
    model_rdms: np.ndarray
    rows: list[dict]
    measure: str
    searchlight: np.ndarray | None = None
    radius: float = 0.0
    n_permutations: int = 0
    mask: np.ndarray | None = None
    affine: np.ndarray | None = None

    def save(self, path) -> Path:
        import json

        from bids_vem.outputs.atomic import write_npz_atomic

        arrays = {"brain_rdms": self.brain_rdms, "model_rdms": self.model_rdms}
        for name in ("searchlight", "mask", "affine"):
            if getattr(self, name) is not None:
                arrays[name] = np.asarray(getattr(self, name))
        header = {
            "stim_ids": self.stim_ids, "regions": self.regions, "n_voxels": self.n_voxels,
            "feature_spaces": self.feature_spaces, "rows": self.rows, "measure": self.measure,
            "radius": self.radius, "n_permutations": self.n_permutations,
        }  # fmt: skip
        arrays["header"] = np.array(json.dumps(header))
        return write_npz_atomic(path, arrays)

    @classmethod
    def load(cls, path) -> RSAResult:
        import json

        with np.load(Path(path), allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            arrays = {k: data[k] for k in ("searchlight", "mask", "affine") if k in data}
            return cls(
                brain_rdms=data["brain_rdms"], model_rdms=data["model_rdms"], **header, **arrays
            )


def rsa_of_run_group(
    runs_or_betas,
    feature_sets: Sequence,
    *,
    rois: Sequence[tuple[str, Path]] = (),
    radius: float = 0.0,
    n_permutations: int = 1000,
    seed: int = 0,
    geometry=None,
    **betas_options,
) -> RSAResult:
    """RSA of one participant's run group (module docstring): brain RDMs of the mask and each
    region, compared with every feature space's RDM; a searchlight when ``radius`` > 0.

    ``betas_options`` go to :func:`~bids_vem.encoding.trialwise.load_trial_betas`; the
    stimuli are those every feature space describes. ``geometry``
    (:class:`~bids_vem.inputs.surfaces.SurfaceGeometry`) when the runs are surfaces: regions
    are surface regions and the searchlight runs on the template mesh.
    """
    from bids_vem.analysis.comparison import roi_points, roi_voxels
    from bids_vem.analysis.searchlight import (
        searchlight_rsa,
        sphere_neighbourhoods,
        surface_coordinates,
        voxel_coordinates,
    )
    from bids_vem.encoding.trialwise import load_trial_betas

    known = sorted(set.intersection(*(set(fs.stim_ids) for fs in feature_sets)))
    trial_betas = load_trial_betas(runs_or_betas, known, **betas_options)
    patterns = stimulus_patterns(trial_betas)
    n = len(patterns.stim_ids)
    if n < 4:
        from bids_vem.errors import DataError

        raise DataError(f"RSA needs at least 4 stimuli; the trials show {n}")
    regions = {"mask": np.ones(patterns.mean.shape[1], dtype=bool)}
    inside = np.asarray(trial_betas.mask, dtype=bool)
    if rois and geometry is not None:
        from bids_vem.outputs.surfaces import SurfaceMask

        regions |= roi_points(list(rois), SurfaceMask(geometry, inside.reshape(-1)))
    elif rois:
        regions |= roi_voxels(list(rois), trial_betas.mask, trial_betas.affine)
    brains = np.vstack([brain_rdm(patterns, np.flatnonzero(v)) for v in regions.values()])
    models = np.vstack([model_rdm(fs, patterns.stim_ids) for fs in feature_sets])
    rows = []
    for (region, voxels), brain in zip(regions.items(), brains, strict=True):
        for fs, model in zip(feature_sets, models, strict=True):
            rows.append({
                "region": region, "feature_space": fs.name, "n_stimuli": n,
                "n_voxels": int(voxels.sum()), "measure": patterns.measure,
                "spearman": compare_rdms(brain, model, "spearman"),
                "p_spearman": permutation_p(brain, model, n, "spearman", n_permutations, seed),
                "tau_a": compare_rdms(brain, model, "tau-a"),
                "p_tau_a": permutation_p(brain, model, n, "tau-a", n_permutations, seed),
            })  # fmt: skip
    searchlight = None
    if radius > 0 and trial_betas.mask is not None:
        xyz = (
            voxel_coordinates(inside, trial_betas.affine)
            if geometry is None
            else surface_coordinates(geometry, inside.reshape(-1))
        )
        neighbourhoods = sphere_neighbourhoods(xyz, radius)
        searchlight = searchlight_rsa(patterns, neighbourhoods, models).astype(np.float32)
    return RSAResult(
        stim_ids=patterns.stim_ids,
        regions=list(regions),
        brain_rdms=brains.astype(np.float32),
        n_voxels=[int(v.sum()) for v in regions.values()],
        feature_spaces=[fs.name for fs in feature_sets],
        model_rdms=models.astype(np.float32),
        rows=rows,
        measure=patterns.measure,
        searchlight=searchlight,
        radius=float(radius),
        n_permutations=int(n_permutations),
        mask=trial_betas.mask,
        affine=trial_betas.affine,
    )


#: columns of the group RSA tables (``group/task-<t>_space-<s>_rsa.tsv``)
GROUP_RSA_COLUMNS = {
    "region": "mask or a --roi region (its participants' RDMs).",
    "feature_space": "The model whose RDM is compared.",
    "method": "spearman (rho) or tau-a.",
    "n_subjects": "Participants with an RDM of this region.",
    "n_stimuli": "Stimuli every participant's RDM holds (the RDMs are compared on these).",
    "mean": "Mean over participants of the model's rank correlation with their RDM.",
    "sem": "Its standard error.",
    "t": "One-sample t of the correlations across participants (greater than 0).",
    "p": "One-sided p of that t-test.",
    "noise_ceiling_lower": "Mean correlation of each participant's RDM with the mean of the "
    "others' rank-transformed RDMs (Nili et al. 2014).",
    "noise_ceiling_upper": "Mean correlation of each participant's RDM with the mean of all "
    "participants' rank-transformed RDMs.",
}


def read_rdm(path) -> tuple[list[str], np.ndarray]:
    """A square RDM TSV written by the participant level: (stimuli, condensed RDM)."""
    lines = Path(path).read_text().splitlines()
    stim_ids = lines[0].split("\t")[1:]
    matrix = np.array([[float(v) for v in line.split("\t")[1:]] for line in lines[1:]])
    return stim_ids, matrix[_upper(len(stim_ids))]


def group_rsa_rows(
    rdms: dict[str, tuple[list[str], np.ndarray]], models: dict[str, object], region: str
) -> list[dict]:
    """Group statistics and noise ceilings of one region (:data:`GROUP_RSA_COLUMNS`).

    Parameters
    ----------
    rdms : dict of str to (stimuli, condensed RDM)
        Each participant's RDM of the region.
    models : dict of str to FeatureSet
        The feature spaces compared.
    """
    from scipy.stats import ttest_1samp

    common = sorted(set.intersection(*(set(ids) for ids, _ in rdms.values())))
    n = len(common)
    stacked = []
    for ids, condensed in rdms.values():
        index = {s: k for k, s in enumerate(ids)}
        position = np.array([index[s] for s in common])
        stacked.append(square(condensed, len(ids))[np.ix_(position, position)][_upper(n)])
    stacked = np.asarray(stacked)
    rows = []
    for name, feature_set in models.items():
        model = model_rdm(feature_set, common)
        for method in RSA_METHODS:
            values = np.array([compare_rdms(r, model, method) for r in stacked])
            lower, upper = noise_ceiling(stacked, method)
            test = ttest_1samp(values, 0.0, alternative="greater")
            rows.append({
                "region": region, "feature_space": name, "method": method,
                "n_subjects": len(values), "n_stimuli": n, "mean": float(values.mean()),
                "sem": float(values.std(ddof=1) / np.sqrt(len(values))),
                "t": float(test.statistic), "p": float(test.pvalue),
                "noise_ceiling_lower": lower, "noise_ceiling_upper": upper,
            })  # fmt: skip
    return rows
