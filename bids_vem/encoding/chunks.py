"""How many voxels the ridge engine processes at once: from a memory budget, shrunk on GPU OOM.

Everything the engine holds for a chunk of ``c`` voxels grows linearly in ``c`` (the chunk's
data of all runs, its eigen-coefficients, one penalty's predictions, the score moments); what
does not depend on ``c`` (the designs, the decompositions of a fold, the per-voxel results) is
fixed. :func:`voxel_chunk_for_memory` solves ``fixed + c * per_voxel <= budget`` for ``c``.

A CUDA out-of-memory error inside a chunk halves the chunk and retries it
(:class:`ChunkPlan`); work for a chunk only commits its results once it succeeded, so a retry
changes nothing but the chunking (and results do not depend on the chunking).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bids_vem.config import option_name

__all__ = ["ChunkPlan", "voxel_chunk_for_memory", "DEFAULT_CHUNK_BYTES"]

logger = logging.getLogger(__name__)

#: default working memory of a chunk when no budget is given (256 MB)
DEFAULT_CHUNK_BYTES = 256 * 2**20
#: part of --mem left to the Python process, torch and the libraries (not the engine's arrays)
_BASELINE_BYTES = 700 * 2**20


def _engine_bytes(
    n_samples: int, n_features: int, n_alphas: int, n_voxels: int, chunk: int, itemsize: int = 4
) -> int:
    """Bytes the engine holds with chunks of ``chunk`` voxels (an upper estimate)."""
    rank = min(n_samples, n_features)
    # one fold's decomposition: float64 designs, Gram matrix and eigenvectors, L (n x r) in
    # float32, the held-out projection (n x r) in float64 and float32
    fixed = 8 * n_samples * n_features * 2 + 8 * 3 * rank * rank + itemsize * 2 * n_samples * rank
    fixed += 8 * n_samples * rank + 8 * n_features * rank
    # per-voxel results: CV score sums (n_alphas) and the held-out moments (float64)
    fixed += 8 * (n_alphas + 16) * n_voxels
    # per voxel of a chunk: its data read (buffers + the concatenated copies), the
    # eigen-coefficients and products in float32 and float64, one penalty's predictions and
    # the score moments of every penalty
    per_voxel = itemsize * 3 * n_samples + (itemsize + 8) * 3 * rank + 8 * 6 * n_alphas
    per_voxel += itemsize * 2 * n_samples
    return fixed + chunk * per_voxel


def voxel_chunk_for_memory(
    mem_mb: float | None,
    *,
    n_samples: int,
    n_features: int,
    n_alphas: int,
    n_voxels: int,
    itemsize: int = 4,
) -> int:
    """Voxels per chunk so that the engine stays within ``mem_mb`` (module docstring).

    Parameters
    ----------
    mem_mb : float or None
        Memory budget of the fit in MB (``--mem``). None: chunks of about
        :data:`DEFAULT_CHUNK_BYTES`.
    n_samples, n_features, n_alphas, n_voxels : int
        Samples of all runs, design columns, penalties, voxels.
    itemsize : int
        Bytes per element of the products with voxel data (4: float32).

    Returns
    -------
    int
        Between 1 and ``n_voxels``. A budget too small for even one voxel gives 1 (the fit
        then needs more than ``mem_mb``; the caller may warn).
    """
    one = _engine_bytes(n_samples, n_features, n_alphas, n_voxels, 1, itemsize)
    zero = _engine_bytes(n_samples, n_features, n_alphas, n_voxels, 0, itemsize)
    per_voxel = one - zero
    if mem_mb is None:
        budget = zero + DEFAULT_CHUNK_BYTES
    else:
        budget = int(mem_mb * 2**20) - _BASELINE_BYTES
    return int(max(1, min(n_voxels, (budget - zero) // per_voxel)))


def engine_bytes(
    n_samples: int, n_features: int, n_alphas: int, n_voxels: int, chunk: int, itemsize: int = 4
) -> int:
    """The engine's estimated memory (bytes) with chunks of ``chunk`` voxels, baseline included."""
    return _BASELINE_BYTES + _engine_bytes(
        n_samples, n_features, n_alphas, n_voxels, chunk, itemsize
    )


def _is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError)


@dataclass
class ChunkPlan:
    """The current chunk size of one fit; halves on CUDA out-of-memory and stays halved.

    Attributes
    ----------
    size : int
        Voxels per chunk.
    halvings : int
        How many times an out-of-memory error halved it.
    """

    size: int
    halvings: int = 0

    def __post_init__(self) -> None:
        self.size = max(1, int(self.size))

    def run(self, n_voxels: int, work: Callable[[slice], None]) -> None:
        """Call ``work(voxels)`` on consecutive chunks covering ``range(n_voxels)``.

        ``work`` must commit its results only at its end: on a CUDA out-of-memory error the
        chunk is retried with half the size (a warning is logged the first time).

        Raises
        ------
        torch.cuda.OutOfMemoryError
            Out of memory with a chunk of a single voxel.
        """
        start = 0
        while start < n_voxels:
            part = slice(start, min(start + self.size, n_voxels))
            try:
                work(part)
            except Exception as err:
                if not _is_out_of_memory(err) or self.size == 1:
                    raise
                failed = True
            else:
                failed = False
            if failed:  # out of the except block: the traceback no longer holds the chunk
                self._halve()
                continue
            start = part.stop

    def _halve(self) -> None:
        self.size = max(1, self.size // 2)
        self.halvings += 1
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if self.halvings == 1:
            logger.warning(
                "GPU out of memory: voxel chunks halved to %d voxels and the chunk retried "
                f"(further halvings are not logged); a smaller {option_name('mem_mb')} sets smaller chunks",
                self.size,
            )
