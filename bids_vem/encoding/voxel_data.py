"""Voxel time series of several runs, read in voxel chunks: in memory or streamed from disk.

The ridge engine never needs all voxels at once: it reads, for chosen runs, the time series of
one chunk of voxels (``read(run, voxels)`` -> (n_samples_run, n_voxels_chunk)). Two sources
give that:

- :class:`InMemoryVoxelData`: a list of per-run arrays (n_samples_i, n_voxels);
- :class:`VoxelStore`: one float32 file on disk (in the work directory) written once, run by
  run (one run in memory at a time), laid out per run voxel-major, so that a voxel chunk of a
  run is one contiguous range of the file. Chunks are read with positional reads into fresh
  buffers, not through a memory map: pages of a mapping would count as the process's resident
  memory and stay mapped, while a read buffer is freed with the chunk.

The data file is a standard ``.npy`` file of one float32 vector (``np.load(path,
mmap_mode="r")`` opens it); the layout is described by a JSON header beside it, written last
(a store without its header is incomplete).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bids_vem.errors import DataError, InputMissingError
from bids_vem.outputs.atomic import atomic_path, write_text_atomic

__all__ = [
    "VoxelData",
    "InMemoryVoxelData",
    "RunSubset",
    "VoxelStore",
    "write_voxel_store",
    "as_voxel_data",
]

_FORMAT = "bids_vem voxel store 1"
#: voxels written per block while a run is transposed into the file (bounds the copy)
_WRITE_BLOCK = 8192


class VoxelData:
    """Interface: the time series of ``n_voxels`` voxels over several runs.

    Attributes
    ----------
    run_lengths : tuple of int
        Samples (TRs, trials) of each run.
    n_voxels : int
    nuisance : list of ndarray of shape (n_samples_i, k_i), or None
        Per run, the orthonormal nuisance basis projected out of its data and designs
        (:mod:`bids_vem.encoding.nuisance`). The training rows of part of a run are then
        residualised against it, restricted to those rows, where they would only be centred
        (:func:`~bids_vem.encoding.ridge.read_selection`). None: no nuisance.
    """

    run_lengths: tuple[int, ...]
    n_voxels: int
    nuisance: Sequence[np.ndarray] | None = None

    @property
    def n_runs(self) -> int:
        return len(self.run_lengths)

    def read(self, run: int, voxels: slice) -> np.ndarray:
        """Data of one run for a contiguous range of voxels.

        Returns
        -------
        ndarray of shape (n_samples_run, n_voxels_chunk), float32 (may be a non-contiguous view)
        """
        raise NotImplementedError


@dataclass
class InMemoryVoxelData(VoxelData):
    """Per-run arrays held in memory (what tests and small data use)."""

    arrays: Sequence[np.ndarray]
    run_lengths: tuple[int, ...] = field(init=False)
    n_voxels: int = field(init=False)

    def __post_init__(self) -> None:
        shapes = [np.shape(Y) for Y in self.arrays]
        if any(len(s) != 2 for s in shapes):
            raise ValueError(f"each run's data must be 2-D (n_samples, n_voxels), got {shapes}")
        n_voxels = {s[1] for s in shapes}
        if len(n_voxels) > 1:
            raise ValueError(f"runs disagree in n_voxels: {sorted(n_voxels)}")
        self.run_lengths = tuple(int(s[0]) for s in shapes)
        self.n_voxels = int(n_voxels.pop()) if n_voxels else 0

    def read(self, run: int, voxels: slice) -> np.ndarray:
        return np.asarray(self.arrays[run])[:, voxels]


class RunSubset(VoxelData):
    """Some runs of another :class:`VoxelData`, renumbered 0, 1, ... (no copy)."""

    def __init__(self, data: VoxelData, runs: Sequence[int]) -> None:
        self.data = data
        self.runs = [int(i) for i in runs]
        self.run_lengths = tuple(data.run_lengths[i] for i in self.runs)
        self.n_voxels = data.n_voxels
        if data.nuisance is not None:
            self.nuisance = [data.nuisance[i] for i in self.runs]

    def read(self, run: int, voxels: slice) -> np.ndarray:
        return self.data.read(self.runs[run], voxels)


def as_voxel_data(Ys: Sequence[np.ndarray] | VoxelData) -> VoxelData:
    """``Ys`` itself when it is a :class:`VoxelData`, else the per-run arrays wrapped."""
    return Ys if isinstance(Ys, VoxelData) else InMemoryVoxelData(list(Ys))


def _pread_into(fd: int, buffer: np.ndarray, offset: int) -> None:
    view = memoryview(buffer).cast("B")
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            raise InputMissingError(f"voxel store: file ends {len(view) - done} bytes early")
        done += n


class VoxelStore(VoxelData):
    """Voxel data of several runs in one float32 file (module docstring).

    Open an existing store with ``VoxelStore(header_path)``; write one with
    :func:`write_voxel_store`.

    Attributes
    ----------
    header_path, data_path : Path
    run_names : tuple of str
    run_lengths : tuple of int
    n_voxels : int
    metadata : dict
        What the writer recorded (mask file, confounds...).
    """

    def __init__(self, header_path: Path | str) -> None:
        self.header_path = Path(header_path)
        try:
            header = json.loads(self.header_path.read_text())
        except FileNotFoundError as err:
            raise InputMissingError(f"{self.header_path}: voxel store header not found") from err
        except (OSError, json.JSONDecodeError) as err:
            raise InputMissingError(
                f"{self.header_path}: cannot read the voxel store header ({err})"
            ) from err
        if header.get("format") != _FORMAT:
            raise DataError(f"{self.header_path}: not a voxel store ({header.get('format')!r})")
        self.data_path = self.header_path.parent / header["data"]
        self.run_names = tuple(run["name"] for run in header["runs"])
        self.run_lengths = tuple(int(run["n_samples"]) for run in header["runs"])
        self.n_voxels = int(header["n_voxels"])
        self.metadata = dict(header.get("metadata", {}))
        self._data_offset = int(header["data_offset"])
        expected = self._data_offset + 4 * self.n_voxels * sum(self.run_lengths)
        if not self.data_path.is_file() or self.data_path.stat().st_size != expected:
            raise InputMissingError(
                f"{self.data_path}: voxel store data missing or of the wrong size "
                f"(expected {expected} bytes)"
            )
        starts = np.concatenate([[0], np.cumsum(self.run_lengths)[:-1]]).astype(int)
        self._run_offsets = [self._data_offset + 4 * self.n_voxels * int(s) for s in starts]

    def read(self, run: int, voxels: slice) -> np.ndarray:
        start, stop, _ = voxels.indices(self.n_voxels)
        n_samples = self.run_lengths[run]
        out = np.empty((max(0, stop - start), n_samples), dtype="<f4")
        if out.size:
            with open(self.data_path, "rb", buffering=0) as handle:
                offset = self._run_offsets[run] + 4 * start * n_samples
                _pread_into(handle.fileno(), out, offset)
        return out.T  # (n_samples, n_voxels_chunk), a transposed view

    def read_all(self, run: int) -> np.ndarray:
        """The whole run (n_samples, n_voxels): for small data and tests only."""
        return np.ascontiguousarray(self.read(run, slice(0, self.n_voxels)))


def write_voxel_store(
    header_path: Path | str,
    runs: Iterable[tuple[str, np.ndarray]],
    n_voxels: int,
    run_lengths: Sequence[int],
    *,
    metadata: dict | None = None,
) -> VoxelStore:
    """Write runs' voxel data to a :class:`VoxelStore`, one run at a time.

    Parameters
    ----------
    header_path : Path
        The JSON header; the data go beside it (same name, ``.npy``).
    runs : iterable of (name, ndarray of shape (n_samples_i, n_voxels))
        Consumed lazily: a generator that loads one run at a time keeps one run in memory.
    n_voxels : int
    run_lengths : sequence of int
        Samples of each run, in order (the file is sized before the first run is read).
    metadata : dict, optional
        JSON-ready, kept in the header.

    Returns
    -------
    VoxelStore

    Raises
    ------
    DataError
        A run whose shape differs from what was announced.
    """
    header_path = Path(header_path)
    data_path = header_path.with_suffix(".npy")
    total = int(n_voxels) * int(sum(run_lengths))
    names: list[str] = []
    with atomic_path(data_path) as tmp:
        with open(tmp, "wb") as handle:
            np.lib.format.write_array_header_1_0(
                handle, {"descr": "<f4", "fortran_order": False, "shape": (total,)}
            )
            data_offset = handle.tell()
            for index, (name, Y) in enumerate(runs):
                if index >= len(run_lengths) or np.shape(Y) != (run_lengths[index], n_voxels):
                    expected = (
                        (run_lengths[index], n_voxels) if index < len(run_lengths) else "no run"
                    )
                    raise DataError(
                        f"{name}: voxel data of shape {np.shape(Y)}, expected {expected}"
                    )
                names.append(name)
                # voxel-major per run: a chunk of voxels of one run is contiguous on disk
                for start in range(0, n_voxels, _WRITE_BLOCK):
                    block = np.asarray(Y[:, start : start + _WRITE_BLOCK], dtype="<f4")
                    handle.write(np.ascontiguousarray(block.T).tobytes())
                del Y
            if len(names) != len(run_lengths):
                raise DataError(
                    f"voxel store: {len(names)} runs written, {len(run_lengths)} announced"
                )
    header = {
        "format": _FORMAT,
        "data": data_path.name,
        "data_offset": data_offset,
        "n_voxels": int(n_voxels),
        "runs": [
            {"name": name, "n_samples": int(n)} for name, n in zip(names, run_lengths, strict=True)
        ],
        "metadata": metadata or {},
    }
    write_text_atomic(header_path, json.dumps(header, indent=1))
    return VoxelStore(header_path)
