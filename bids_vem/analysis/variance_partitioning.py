"""Set-theoretic variance partitioning of the variance that several feature spaces explain.

With ``n`` feature spaces, a model is fitted on every non-empty subset of them (``2^n - 1``
models; :func:`subsets`), each scored by held-out R^2. Picture the explained variance as a Venn
diagram with one region (an *atom*) per non-empty subset ``S``: the variance explained by
exactly the spaces of ``S`` and none of the others. A model of the spaces ``U`` explains the
atoms that meet ``U``, so with ``N`` all spaces,

    g(V) = R2(N) - R2(N \\ V) = sum of the atoms inside V,

and Moebius inversion gives every atom from the model scores (:func:`partition`):

    atom(S) = sum over non-empty T in S of (-1)^(|S| - |T|) g(T).

For two spaces A and B this is the familiar ``unique A = R2(AB) - R2(B)``,
``unique B = R2(AB) - R2(A)``, ``shared = R2(A) + R2(B) - R2(AB)`` (Lescroart et al. 2015;
de Heer et al. 2017). Held-out R^2 of models fitted with noise is not a measure of sets: an
atom can come out negative (a larger model that overfits, or two spaces whose predictions
cancel). Negative estimates are kept as estimated, not clipped at 0 (clipping biases every
sum and mean upwards); a negative atom means no evidence for that component.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np

__all__ = [
    "MAX_SPACES",
    "NEGATIVE_ESTIMATES",
    "PARTITION_COLUMNS",
    "atom_label",
    "joint_name",
    "partition",
    "partition_rows",
    "subsets",
]

#: at most this many spaces in one joint model (2^n - 1 models are fitted per fold)
MAX_SPACES = 4

#: the sidecar's words on negative estimates
NEGATIVE_ESTIMATES = (
    "kept as estimated, not clipped at 0: held-out R^2 is not a measure of sets, and an atom "
    "comes out negative when a larger model overfits or two spaces' predictions cancel; a "
    "negative value means no evidence for that component (clipping would bias means upwards)"
)


def subsets(n_spaces: int) -> list[tuple[int, ...]]:
    """Every non-empty subset of ``range(n_spaces)``, by size, then in order.

    Raises
    ------
    ValueError
        Fewer than 2 or more than :data:`MAX_SPACES` spaces.
    """
    if not 2 <= n_spaces <= MAX_SPACES:
        raise ValueError(f"variance partitioning takes 2 to {MAX_SPACES} spaces, got {n_spaces}")
    return [c for k in range(1, n_spaces + 1) for c in combinations(range(n_spaces), k)]


def partition(subset_r2: np.ndarray, n_spaces: int) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """The atoms of the Venn diagram from the held-out R^2 of every subset's model.

    Parameters
    ----------
    subset_r2 : ndarray of shape (2^n - 1, n_voxels)
        R^2 of the model of each subset, in the order of :func:`subsets`.
    n_spaces : int

    Returns
    -------
    atoms : list of tuple of int
        The subsets, as :func:`subsets` orders them; a singleton is the space's unique
        variance, a larger subset the variance shared by exactly those spaces.
    values : ndarray of shape (2^n - 1, n_voxels)
        Each atom's variance (module docstring); the atoms sum to the joint model's R^2.
    """
    order = subsets(n_spaces)
    subset_r2 = np.asarray(subset_r2, dtype=np.float64)
    if subset_r2.shape[0] != len(order):
        raise ValueError(f"{len(order)} subset models expected, got {subset_r2.shape[0]}")
    score = {s: subset_r2[i] for i, s in enumerate(order)}
    everything = order[-1]
    full = score[everything]

    def g(inside: tuple[int, ...]) -> np.ndarray:
        rest = tuple(i for i in everything if i not in inside)
        return full - (score[rest] if rest else 0.0)

    values = np.zeros_like(subset_r2)
    for k, atom in enumerate(order):
        for size in range(1, len(atom) + 1):
            for part in combinations(atom, size):
                values[k] += (-1) ** (len(atom) - size) * g(part)
    return order, values


def joint_name(spaces: Sequence[str]) -> str:
    """The name of a joint model, a BIDS label: its spaces' names joined by ``And``."""
    return "And".join(spaces)


def atom_label(atom: Sequence[int], spaces: Sequence[str]) -> str:
    """A BIDS label for an atom: its spaces' names joined by ``And`` (``clipAndminilm``)."""
    return joint_name([spaces[i] for i in atom])


#: columns of the partition tables (``..._desc-<joint>_partition.tsv``)
PARTITION_COLUMNS = {
    "component": "joint (the joint model's R^2), split (a space's part of it), unique or "
    "shared (set-theoretic partitioning).",
    "label": "The feature space(s) of the component, joined by And.",
    "region": "mask (every voxel of the run group's mask) or a --roi region.",
    "n_voxels": "Voxels (surface points) in the region.",
    "mean_r2": "Mean over the region (negative estimates kept).",
    "median_r2": "Median over the region.",
    "percent_positive": "Percent of the region's voxels where the estimate is above 0.",
}


def partition_rows(result, regions: Mapping[str, np.ndarray] | None = None) -> list[dict]:
    """One row per component (joint, split per space, every atom) and region.

    Parameters
    ----------
    result : JointResult
    regions : mapping of str to ndarray of bool, shape (n_voxels,), optional
        ``--roi`` regions over the result's voxels; the whole mask always comes first.
    """
    spaces = list(result.spaces)
    atoms, values = result.atoms()
    components = [("joint", joint_name(spaces), result.r2)]
    components += [("split", s, result.split_r2[i]) for i, s in enumerate(spaces)]
    components += [
        ("unique" if len(a) == 1 else "shared", atom_label(a, spaces), v)
        for a, v in zip(atoms, values, strict=True)
    ]
    everywhere = np.ones(result.n_voxels, dtype=bool)
    rows = []
    for region, inside in {"mask": everywhere, **dict(regions or {})}.items():
        for component, label, value in components:
            v = np.asarray(value, dtype=np.float64)[np.asarray(inside, dtype=bool)]
            rows.append(
                {
                    "component": component,
                    "label": label,
                    "region": region,
                    "n_voxels": int(v.size),
                    "mean_r2": float(np.mean(v)) if v.size else None,
                    "median_r2": float(np.median(v)) if v.size else None,
                    "percent_positive": 100.0 * float(np.mean(v > 0)) if v.size else None,
                }
            )
    return rows
