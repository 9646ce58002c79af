"""Leave-one-group-out ridge predictions from one decomposition, without refitting.

For ridge without intercept the hat matrix of penalty ``alpha`` is ``H = L diag(w) L^T``
(dual, ``X X^T = U diag(lam) U^T``: ``L = U``, ``w = lam / (lam + alpha)``; primal,
``X^T X = V diag(lam) V^T``: ``L = X V``, ``w = 1 / (lam + alpha)``), and the prediction of
group ``g`` by the model fitted on every other group is exactly

    y_g - (I - H_gg)^{-1} (y_g - (H y)_g)

(the block form of the leave-one-out identity; e.g. Hastie, Tibshirani & Friedman 2009,
section 7.10). One decomposition of the CV's whole design then gives every fold's held-out
predictions: a leave-one-run-out CV over ``k`` runs costs one eigendecomposition instead of
``k``, plus a small ``(n_g, n_g)`` solve per fold and penalty. The identity holds for folds
that are whole groups of a partition, with designs not re-centred per fold (the blocks are
z-scored once, as :func:`~bids_vem.encoding.ridge.ridge_cv_alphas` uses them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["LeaveOneGroupOut"]


class LeaveOneGroupOut:
    """The decomposition of a stacked design and its folds' held-out predictions (float64).

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        The stacked designs of all groups.
    groups : sequence of sequence of int
        Row indices of each fold's held-out group (a partition of the rows).
    """

    def __init__(self, X: torch.Tensor, groups: Sequence[Sequence[int]]) -> None:
        from bids_vem.encoding.ridge import gram_eigh

        X = X.to(torch.float64)
        n_samples, n_features = X.shape
        # as the refit on the same design chooses, so that it finds this decomposition cached
        self.primal = n_samples >= n_features
        self.eigenvalues, vectors = gram_eigh(X, self.primal)
        self.left = (X @ vectors) if self.primal else vectors  # (n_samples, r)
        self.groups = [torch.as_tensor(list(g), device=X.device) for g in groups]

    def weights(self, alpha: float) -> torch.Tensor:
        """``w`` of the hat matrix for ``alpha``: (r,)."""
        if self.primal:
            return 1.0 / (self.eigenvalues + alpha)
        return self.eigenvalues / (self.eigenvalues + alpha)

    def held_out(self, Y: torch.Tensor, alphas: Sequence[float]):
        """Each fold's held-out prediction of ``Y`` (n_samples, n_voxels_chunk), per penalty.

        Yields
        ------
        list of torch.Tensor of shape (n_g, n_voxels_chunk), float64
            One list per penalty of ``alphas``, folds in the order of ``groups``.
        """
        Y = Y.to(torch.float64)
        coefs = self.left.T @ Y  # (r, c), once for every penalty
        for alpha in alphas:
            w = self.weights(float(alpha))
            fitted = self.left @ (coefs * w[:, None])
            out = []
            for rows in self.groups:
                left = self.left[rows]
                leverage = (left * w) @ left.T  # H_gg
                eye = torch.eye(len(rows), dtype=torch.float64, device=left.device)
                # float64 throughout: (I - H_gg)^-1 magnifies rounding errors by up to
                # (lam_max + alpha) / alpha (float32 products changed tested penalties)
                out.append(Y[rows] - torch.linalg.solve(eye - leverage, Y[rows] - fitted[rows]))
            yield out
