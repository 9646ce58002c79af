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

Nested leave-one-group-out (:class:`NestedLeaveOneGroupOut`) goes one step further. With
``B = I - H`` and the residuals ``r = B y`` of the model fitted on all groups, the prediction
of group ``g`` by the model fitted without groups ``g`` and ``h`` is, by block elimination of
``(B_SS)^{-1} r_S`` over ``S = g + h``,

    y_g - S_gh^{-1} (r_g - B_gh e_h),   e_h = B_hh^{-1} r_h,   S_gh = B_gg - B_gh B_hh^{-1} B_hg

so every outer fold's inner CV, every outer fold's held-out prediction (``y_h - e_h``) and the
CV over all groups come from one decomposition of the whole design. Per penalty this costs
about three products of ``(n_samples, n_samples)`` by ``(n_samples, n_voxels)`` and one
``(n_samples, n_samples)`` matrix ``B``, where refitting each outer fold costs one product per
fold; the dual's ``B = U diag(alpha / (lam + alpha)) U^T`` and ``r = U (s * U^T y)`` are
formed without the cancellation of ``I - H`` at small penalties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["LeaveOneGroupOut", "NestedLeaveOneGroupOut"]


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


@dataclass
class _Operators:
    """The parts of ``B = I - H`` that one penalty's nested CV needs (groups contiguous)."""

    #: ``s`` (dual: ``r = U (s * U^T y)``) or ``w`` (primal: ``r = y - L (w * L^T y)``)
    factor: torch.Tensor
    B: torch.Tensor  # (n_samples, n_samples)
    within: list  # B_hh^{-1} of each group
    schur: dict  # (h, g) -> S_gh^{-1}


class _GroupData:
    """A chunk's data of one group, centred, with the norms that every score of it reuses."""

    def __init__(self, y: torch.Tensor) -> None:
        self.y = y
        self.centred = y - y.mean(0)
        self.norm = torch.linalg.vector_norm(self.centred, dim=0)

    def score(self, residual: torch.Tensor, score: str) -> torch.Tensor:
        """The score of the prediction ``y - residual`` (0 where data or prediction are constant)."""
        if score == "r2":
            sst = self.norm**2
            sse = torch.linalg.vector_norm(residual, dim=0) ** 2
            return torch.where(sst > 0, 1.0 - sse / torch.where(sst > 0, sst, 1.0), 0.0)
        # the centred prediction, formed elementwise: a heavily penalised prediction is tiny
        # next to the data, and sums of squares expanded around the data would cancel
        predicted = self.centred - residual
        predicted -= predicted.mean(0)
        den = self.norm * torch.linalg.vector_norm(predicted, dim=0)
        num = (predicted.mul_(self.centred)).sum(0)
        return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)


class NestedLeaveOneGroupOut(LeaveOneGroupOut):
    """Nested leave-one-group-out CV from one decomposition (module docstring), float64.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        The stacked designs, each group's rows contiguous and in the order of ``sizes``.
    sizes : sequence of int
        Rows of each group (at least 3 groups).
    """

    def __init__(self, X: torch.Tensor, sizes: Sequence[int]) -> None:
        if len(sizes) < 3:
            raise ValueError(
                f"nested leave-one-group-out needs at least 3 groups, got {len(sizes)}"
            )
        starts = [0]
        for size in sizes:
            starts.append(starts[-1] + int(size))
        if starts[-1] != X.shape[0]:
            raise ValueError(f"group sizes {list(sizes)} do not add up to {X.shape[0]} rows")
        self.slices = [slice(a, b) for a, b in zip(starts[:-1], starts[1:], strict=True)]
        super().__init__(X, [range(s.start, s.stop) for s in self.slices])

    @property
    def n_groups(self) -> int:
        return len(self.slices)

    def _factor(self, alpha: float) -> torch.Tensor:
        if self.primal:
            return self.weights(alpha)
        return alpha / (self.eigenvalues + alpha)

    def _block(self, rows: slice, columns: slice, factor: torch.Tensor) -> torch.Tensor:
        """``B[rows, columns]``."""
        block = (self.left[rows] * factor) @ self.left[columns].T
        if not self.primal:
            return block
        block = -block
        if rows.start <= columns.start < rows.stop:
            # the diagonal of I falls in this block at rows offset by columns.start - rows.start
            offset = columns.start - rows.start
            block[offset : offset + (columns.stop - columns.start)].diagonal().add_(1.0)
        return block

    def operators(self, alpha: float) -> _Operators:
        """``B`` (one triangle computed), the inverses of its diagonal blocks and of every pair's
        Schur complement. Explicit inverses: applied as matrix products, several times faster
        than triangular solves, and as accurate here (float64, inverses of at most
        ``(lam_max + alpha) / alpha`` condition)."""
        factor = self._factor(float(alpha))
        n = self.left.shape[0]
        B = torch.empty((n, n), dtype=self.left.dtype, device=self.left.device)
        for h in self.slices:
            below = slice(h.start, n)
            B[below, h] = self._block(below, h, factor)
            B[h, below] = B[below, h].T
        within = [torch.linalg.inv(B[h, h]) for h in self.slices]
        schur = {}
        for i, h in enumerate(self.slices):
            # B_hh^{-1} B_h,all: the Schur complements of h with every other group at once
            solved = within[i] @ B[h, :]
            for j, g in enumerate(self.slices):
                if i != j:
                    schur[i, j] = torch.linalg.inv(B[g, g] - B[g, h] @ solved[:, g])
        return _Operators(factor, B, within, schur)

    def coefficients(self, Y: torch.Tensor) -> torch.Tensor:
        """``L^T Y`` (r, n_voxels_chunk), shared by every penalty."""
        return self.left.T @ Y.to(torch.float64)

    def _residuals(self, Y: torch.Tensor, coefs: torch.Tensor, factor: torch.Tensor, rows=None):
        left = self.left if rows is None else self.left[rows]
        if self.primal:
            return (Y if rows is None else Y[rows]) - left @ (coefs * factor[:, None])
        return left @ (coefs * factor[:, None])

    def group_data(self, Y: torch.Tensor) -> list[_GroupData]:
        """A chunk's data per group, prepared once for the scores of every penalty."""
        Y = Y.to(torch.float64)
        return [_GroupData(Y[h]) for h in self.slices]

    def scores(
        self, data: list[_GroupData], coefs: torch.Tensor, ops: _Operators, score: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores (``"correlation"`` or ``"r2"``) of one penalty for a chunk of voxels.

        Returns
        -------
        outer : torch.Tensor of shape (n_groups, n_voxels_chunk)
            Score of each group's prediction by the model fitted on all other groups.
        inner : torch.Tensor of shape (n_groups, n_voxels_chunk)
            For outer fold ``h``, the sum over the other groups ``g`` of the score of ``g``'s
            prediction by the model fitted without ``g`` and ``h``.
        """
        Y = torch.cat([d.y for d in data])
        residuals = self._residuals(Y, coefs, ops.factor)
        held = [ops.within[i] @ residuals[h] for i, h in enumerate(self.slices)]
        outer = torch.stack([d.score(e, score) for d, e in zip(data, held, strict=True)])
        inner = torch.zeros_like(outer)
        for i, h in enumerate(self.slices):
            coupled = ops.B[:, h] @ held[i]  # B_gh e_h for every g
            for j, g in enumerate(self.slices):
                if i != j:
                    e = ops.schur[i, j] @ (residuals[g] - coupled[g])
                    inner[i] += data[j].score(e, score)
        return outer, inner

    def held_out_at(
        self, Y: torch.Tensor, coefs: torch.Tensor, group: int, alpha: float
    ) -> torch.Tensor:
        """Group ``group``'s prediction by the model fitted on all other groups, penalty
        ``alpha`` (``Y`` and ``coefs`` of the same voxels): (n_g, n_voxels_chunk)."""
        rows = self.slices[group]
        factor = self._factor(float(alpha))
        Y = Y.to(torch.float64)
        residual = self._residuals(Y, coefs, factor, rows)
        return Y[rows] - torch.linalg.solve(self._block(rows, rows, factor), residual)
