"""Group statistics of encoding maps: one-sample t-test across participants, FDR."""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["group_ttest", "one_sample_ttest", "fisher_z"]

#: r is clipped to +-(1 - R_CLIP) before Fisher's transform so that r = 1 stays finite
R_CLIP = 1e-7


def fisher_z(r: np.ndarray) -> np.ndarray:
    """Fisher's ``arctanh`` of correlations (clipped just inside (-1, 1)); NaN stays NaN."""
    r = np.asarray(r, dtype=np.float64)
    return np.arctanh(np.clip(r, -1 + R_CLIP, 1 - R_CLIP))


def one_sample_ttest(z: np.ndarray, alternative: str = "greater") -> dict[str, np.ndarray]:
    """One-sample t-test of values against 0 across participants, per voxel, with BH FDR.

    Parameters
    ----------
    z : ndarray of shape (n_subjects, n_voxels)
        Values (Fisher-z of r, or differences of them); NaN where a participant has no data.
    alternative : {"greater", "two-sided", "less"}

    Returns
    -------
    dict of ndarray of shape (n_voxels,)
        ``t``, ``p``, ``q`` (Benjamini-Hochberg, ``scipy.stats.false_discovery_control``, over
        the voxels with a finite p) and ``n`` (participants with data). Voxels with fewer than
        2 participants, or with all participants equal, have NaN t, p and q.
    """
    if alternative not in ("greater", "two-sided", "less"):
        raise ValueError(f"alternative must be greater, two-sided or less, got {alternative!r}")
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"values must be (n_subjects, n_voxels), got shape {z.shape}")
    present = np.isfinite(z)
    n = present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_z = np.nansum(np.where(present, z, 0.0), 0) / n
        sq = np.nansum(np.where(present, (z - mean_z) ** 2, 0.0), 0)
        sd = np.sqrt(sq / (n - 1))
        t = mean_z / (sd / np.sqrt(n))
    # identical values up to rounding: no variance to test against
    varies = sd > 1e-12 * np.maximum(np.abs(mean_z), 1e-12)
    t = np.where((n >= 2) & varies, t, np.nan)
    df = np.maximum(n - 1, 1)
    if alternative == "greater":
        p = stats.t.sf(t, df)
    elif alternative == "less":
        p = stats.t.cdf(t, df)
    else:
        p = 2 * stats.t.sf(np.abs(t), df)
    q = np.full_like(p, np.nan)
    tested = np.isfinite(p)
    if tested.any():
        q[tested] = stats.false_discovery_control(p[tested], method="bh")
    return {"t": t, "p": p, "q": q, "n": n}


def group_ttest(r_maps: np.ndarray, alternative: str = "greater") -> dict[str, np.ndarray]:
    """One-sample t-test of encoding accuracy across participants, per voxel, with BH FDR.

    The test is on Fisher-z transformed r (whose sampling distribution is closer to normal);
    the null hypothesis is a mean z of 0. The default is one-sided, ``r > 0``: an encoding
    model is only of interest when it predicts, and a negative mean r is not evidence of
    encoding. ``alternative="two-sided"`` gives the two-tailed test of Doerig et al. (2025).

    Parameters
    ----------
    r_maps : ndarray of shape (n_subjects, n_voxels)
        Held-out r of each participant in a common space; NaN where a voxel is outside a
        participant's mask (those participants are left out of that voxel's test).
    alternative : {"greater", "two-sided", "less"}

    Returns
    -------
    dict of ndarray of shape (n_voxels,)
        ``mean_r`` (mean of r over the participants with data) and the keys of
        :func:`one_sample_ttest` on the Fisher-z values.
    """
    r_maps = np.asarray(r_maps, dtype=np.float64)
    if r_maps.ndim != 2:
        raise ValueError(f"r_maps must be (n_subjects, n_voxels), got shape {r_maps.shape}")
    out = one_sample_ttest(fisher_z(r_maps), alternative)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = out["n"]
        present = np.isfinite(r_maps)
        out["mean_r"] = np.where(n > 0, np.nansum(np.where(present, r_maps, 0.0), 0) / n, np.nan)
    return out
