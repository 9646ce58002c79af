"""FeatureSet: the matrix of one feature space over the unique stimuli, with its provenance."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bids_vem.outputs.atomic import atomic_path

__all__ = ["FeatureSet", "save_feature_set", "load_feature_set", "read_feature_derivative"]


@dataclass(frozen=True)
class FeatureSet:
    """Features of one feature space.

    Attributes
    ----------
    name : str
        Feature-space name, BIDS-safe (letters and digits), used as ``desc-<name>`` in outputs.
    spec : str
        The model spec that produced the features (``sentence:/models/all-MiniLM-L6-v2``).
    modality : str
        ``"text"`` (from captions) or ``"image"`` (from the stimulus files).
    stim_ids : tuple of str
        Row labels: the stimulus ids (path relative to ``stimuli/``), one per row of ``values``
        (with ``times``, one per frame: a video's id repeats over its frames).
    values : ndarray of shape (n_rows, n_features), float32
    metadata : dict
        Provenance: weights sha256, preprocessing, stimulus-table hash, library versions.
    times : ndarray of shape (n_rows,), float64, or None
        For timed stimuli (video frames): each row's time in seconds from the stimulus onset.
        None for one row per stimulus (images, captions).
    """

    name: str
    spec: str
    modality: str
    stim_ids: tuple[str, ...]
    values: np.ndarray
    metadata: dict = field(default_factory=dict)
    times: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.values.shape[0] != len(self.stim_ids):
            raise ValueError(
                f"feature space {self.name!r}: values of shape {self.values.shape} do not match "
                f"{len(self.stim_ids)} stimulus ids"
            )
        if self.times is not None and self.times.shape != (len(self.stim_ids),):
            raise ValueError(
                f"feature space {self.name!r}: {self.times.shape} times for {len(self.stim_ids)} rows"
            )

    @property
    def timed(self) -> bool:
        """Whether rows are timed samples (video frames) rather than one row per stimulus."""
        return self.times is not None

    def frames(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per stimulus, its rows and their times: ``{stim_id: (features, times)}``."""
        if self.times is None:
            raise ValueError(
                f"feature space {self.name!r} has one row per stimulus, not timed rows"
            )
        rows: dict[str, list[int]] = {}
        for row, stim_id in enumerate(self.stim_ids):  # one pass: movies have 1e5+ frames
            rows.setdefault(stim_id, []).append(row)
        return {stim_id: (self.values[index], self.times[index]) for stim_id, index in rows.items()}

    @property
    def n_features(self) -> int:
        return int(self.values.shape[1])

    def rows(self, stim_ids: list[str] | tuple[str, ...]) -> np.ndarray:
        """Feature rows for ``stim_ids`` in that order, shape (len(stim_ids), n_features)."""
        index = {s: i for i, s in enumerate(self.stim_ids)}
        return self.values[[index[s] for s in stim_ids]]


def save_feature_set(feature_set: FeatureSet, path: Path) -> Path:
    """Write ``feature_set`` as ``.npz`` (no pickle) atomically; returns ``path``."""
    # a unique temporary name (mkstemp) + rename: concurrent writers never clash
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        _write_npz(handle, feature_set)
    return Path(path)


def _write_npz(handle, feature_set: FeatureSet) -> None:
    np.savez(
        handle,
        values=np.ascontiguousarray(feature_set.values, dtype=np.float32),
        stim_ids=np.array(feature_set.stim_ids, dtype=str),
        **(
            {}
            if feature_set.times is None
            else {"times": np.asarray(feature_set.times, np.float64)}
        ),
        header=np.array(
            json.dumps(
                {
                    "name": feature_set.name,
                    "spec": feature_set.spec,
                    "modality": feature_set.modality,
                    "metadata": feature_set.metadata,
                }
            )
        ),
    )


def load_feature_set(path: Path) -> FeatureSet:
    """Read a FeatureSet written by :func:`save_feature_set`."""
    with np.load(Path(path), allow_pickle=False) as data:
        header = json.loads(str(data["header"]))
        return FeatureSet(
            name=header["name"],
            spec=header["spec"],
            modality=header["modality"],
            stim_ids=tuple(str(s) for s in data["stim_ids"]),
            values=data["values"].astype(np.float32, copy=False),
            metadata=header.get("metadata", {}),
            times=data["times"] if "times" in data else None,
        )


def read_feature_derivative(output_dir: Path, name: str) -> FeatureSet:
    """The feature space ``name`` as the participant level wrote it under
    ``OUTPUT_DIR/features`` (``desc-<name>_features.{npy,tsv,json}``).

    Raises
    ------
    FileNotFoundError
        No such feature files.
    """
    folder = Path(output_dir) / "features"
    values = np.load(folder / f"desc-{name}_features.npy", allow_pickle=False)
    lines = (folder / f"desc-{name}_features.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    cells = [line.split("\t") for line in lines[1:]]
    stim_ids = tuple(c[header.index("stim_id")] for c in cells)
    times = np.array([float(c[header.index("time")]) for c in cells]) if "time" in header else None
    sidecar = json.loads((folder / f"desc-{name}_features.json").read_text())
    return FeatureSet(
        name=name,
        spec=sidecar.get("ModelSpec", ""),
        modality=sidecar.get("Modality", ""),
        stim_ids=stim_ids,
        values=values,
        times=times,
    )
