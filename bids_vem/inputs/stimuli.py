"""The stimulus table: every stimulus the events name, resolved under ``stimuli/`` and hashed.

BIDS puts stimulus files in a top-level ``stimuli/`` folder; ``events.tsv`` names them in its
``stim_file`` column, relative to that folder. The table lists each stimulus once, with its
kind (by extension) and the sha256 of its content, so that features can be cached by content.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from bids_vem.errors import DataError, InputMissingError
from bids_vem.inputs.events import read_events, read_tsv_columns
from bids_vem.outputs.atomic import write_text_atomic

__all__ = [
    "Stimulus",
    "StimulusTable",
    "STIMULUS_KINDS",
    "WORDS_PREFIX",
    "WORD_COLUMNS",
    "build_stimulus_table",
    "words_stim_id",
    "stimulus_kind",
    "file_sha256",
]

logger = logging.getLogger(__name__)

#: file extensions (lower case) of each stimulus kind
STIMULUS_KINDS: dict[str, frozenset[str]] = {
    "image": frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}),
    "video": frozenset({".mp4", ".mkv", ".avi", ".webm", ".mov"}),
    "text": frozenset({".txt"}),
    # the words of a run's events (a ``word``/``text`` column): the events file is the stimulus
    "words": frozenset(),
    "audio": frozenset({".wav", ".flac", ".mp3", ".ogg"}),
}
_KIND_OF_EXTENSION = {ext: kind for kind, exts in STIMULUS_KINDS.items() for ext in exts}
_TSV_COLUMNS = ("stim_id", "path", "kind", "sha256")
#: how many names an error message lists at most
_MAX_LISTED = 20
_BLOCK_SIZE = 1 << 20


@dataclass(frozen=True)
class Stimulus:
    """One stimulus file.

    Attributes
    ----------
    stim_id : str
        Posix path relative to ``stimuli/`` as written in the events (normalised).
    path : Path
        Absolute path of the file.
    kind : str
        ``"image"``, ``"video"``, ``"text"`` or ``"audio"``.
    sha256 : str
        Hex sha256 of the file content.
    """

    stim_id: str
    path: Path
    kind: str
    sha256: str


@dataclass(frozen=True)
class StimulusTable:
    """The unique stimuli of a dataset, sorted by ``stim_id``."""

    stimuli: tuple[Stimulus, ...]

    def __post_init__(self) -> None:
        ids = [s.stim_id for s in self.stimuli]
        if ids != sorted(set(ids)):
            raise ValueError("StimulusTable needs unique stimuli sorted by stim_id")

    @property
    def stim_ids(self) -> tuple[str, ...]:
        """Stimulus identifiers, in table order."""
        return tuple(s.stim_id for s in self.stimuli)

    def __len__(self) -> int:
        return len(self.stimuli)

    def __iter__(self) -> Iterator[Stimulus]:
        return iter(self.stimuli)

    @cached_property
    def _by_id(self) -> dict[str, Stimulus]:
        return {s.stim_id: s for s in self.stimuli}

    def __contains__(self, stim_id: object) -> bool:
        return stim_id in self._by_id

    def __getitem__(self, stim_id: str) -> Stimulus:
        """The stimulus with this ``stim_id`` (KeyError when absent)."""
        return self._by_id[stim_id]

    def by_kind(self, kind: str) -> StimulusTable:
        """The sub-table of one kind (``"image"``, ``"video"``, ``"text"``, ``"audio"``)."""
        if kind not in STIMULUS_KINDS:
            raise ValueError(f"unknown stimulus kind {kind!r}; known: {', '.join(STIMULUS_KINDS)}")
        return StimulusTable(tuple(s for s in self.stimuli if s.kind == kind))

    @property
    def content_hash(self) -> str:
        """sha256 over the sorted ``(stim_id, sha256)`` pairs: names and contents, not paths."""
        digest = hashlib.sha256()
        for stim_id, sha in sorted((s.stim_id, s.sha256) for s in self.stimuli):
            digest.update(f"{stim_id}\t{sha}\n".encode())
        return digest.hexdigest()

    def to_tsv(self, path: Path) -> Path:
        """Write the table as TSV (columns stim_id, path, kind, sha256), atomically."""
        lines = ["\t".join(_TSV_COLUMNS)]
        for s in self.stimuli:
            lines.append("\t".join((s.stim_id, str(s.path), s.kind, s.sha256)))
        return write_text_atomic(path, "\n".join(lines) + "\n")

    @classmethod
    def from_tsv(cls, path: Path) -> StimulusTable:
        """Read a table written by :meth:`to_tsv`.

        Raises
        ------
        DataError
            When columns are missing or a kind is unknown (the message names the file).
        """
        path = Path(path)
        columns = read_tsv_columns(path)
        missing = [c for c in _TSV_COLUMNS if c not in columns]
        if missing:
            raise DataError(f"{path}: not a stimulus table, missing column(s) {', '.join(missing)}")
        frame = pd.read_csv(
            path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE
        )
        unknown = sorted(set(frame["kind"]) - set(STIMULUS_KINDS))
        if unknown:
            raise DataError(f"{path}: unknown stimulus kind(s) {', '.join(unknown)}")
        rows = frame.sort_values("stim_id", kind="stable")
        try:
            return cls(
                tuple(
                    Stimulus(r.stim_id, Path(r.path), r.kind, r.sha256)
                    for r in rows.itertuples(index=False)
                )
            )
        except ValueError as err:
            raise DataError(f"{path}: stim_id values are not unique") from err


#: stimulus ids of runs whose events carry the words themselves (``events/<events file name>``)
WORDS_PREFIX = "events/"
#: events columns that carry words, in order of preference
WORD_COLUMNS = ("word", "text")


def words_stim_id(events_path: Path) -> str:
    """Stimulus id of the words carried by an events file (``events/<file name>``)."""
    return WORDS_PREFIX + Path(events_path).name


def stimulus_kind(stim_id: str) -> str | None:
    """Kind of a stimulus from its file extension (case-insensitive), None when unknown."""
    if stim_id.startswith(WORDS_PREFIX):
        return "words"
    return _KIND_OF_EXTENSION.get(Path(stim_id).suffix.lower())


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK_SIZE):
            digest.update(block)
    return digest.hexdigest()


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    if len(names) > _MAX_LISTED:
        shown += f", ... (first {_MAX_LISTED} shown)"
    return shown


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _allowed_target(resolved: Path, stimuli_root: Path) -> bool:
    """Whether a resolved stimulus path may be read.

    Inside ``stimuli/``, or a git-annex object: DataLad and OpenNeuro datasets store every
    file as a symlink into ``.git/annex/objects``, which is content-addressed and safe.
    """
    if _inside(resolved, stimuli_root):
        return True
    parts = resolved.parts
    return any(parts[i : i + 3] == (".git", "annex", "objects") for i in range(len(parts) - 2))


def build_stimulus_table(
    bids_dir: Path, events_files: Iterable[Path], stim_column: str = "stim_file"
) -> StimulusTable:
    """Collect the unique stimuli named in events files, resolved under ``bids_dir/stimuli``.

    Parameters
    ----------
    bids_dir : Path
        Root of the raw BIDS dataset (the one holding ``stimuli/``).
    events_files : iterable of Path
        ``events.tsv`` files (e.g. ``run.events`` of the selected runs).
    stim_column : str
        Column naming the stimulus file relative to ``stimuli/``.

    Returns
    -------
    StimulusTable
        One row per unique stimulus, sorted by ``stim_id``; contents hashed in a thread pool.

    Raises
    ------
    DataError
        A stimulus path that leaves ``stimuli/`` (absolute, ``..``, or a symlink to a file
        outside it) or has an extension of no known kind; the message names the stimulus
        and the events file (exit 65). Bad events files also raise DataError.
    InputMissingError
        Stimuli that do not exist, all in one message: their count and the first 20 (exit 66).
    """
    bids_dir = Path(bids_dir).absolute()
    stimuli_dir = bids_dir / "stimuli"
    stimuli_root = stimuli_dir.resolve()

    first_seen: dict[str, Path] = {}
    word_events: dict[str, Path] = {}
    for events_path in events_files:
        columns = read_tsv_columns(Path(events_path))
        if stim_column not in columns and any(c in columns for c in WORD_COLUMNS):
            # a story told in the events themselves: one stimulus, the events file
            word_events[words_stim_id(events_path)] = Path(events_path).absolute()
            continue
        events = read_events(Path(events_path), stim_column=stim_column)
        for stim_id in events["stim_id"]:
            if stim_id is not None and stim_id not in first_seen:
                first_seen[stim_id] = Path(events_path)

    resolved: dict[str, Path] = {}
    missing: list[str] = []
    for stim_id in sorted(first_seen):
        source = first_seen[stim_id]
        if stim_id.startswith("/") or ".." in stim_id.split("/"):
            raise DataError(
                f"{source}: stimulus {stim_id!r} in column '{stim_column}' leaves the stimuli "
                f"folder; BIDS stimulus paths are relative to {stimuli_dir}"
            )
        if stimulus_kind(stim_id) is None:
            raise DataError(
                f"{source}: stimulus {stim_id!r} has an extension of no known kind; "
                f"known: {', '.join(sorted(_KIND_OF_EXTENSION))}"
            )
        candidate = stimuli_dir / stim_id
        if not candidate.is_file():  # also False for a dangling (not fetched) annex link
            missing.append(stim_id)
            continue
        target = candidate.resolve()
        if not _allowed_target(target, stimuli_root):
            raise DataError(
                f"{source}: stimulus {stim_id!r} is a link to {target}, outside {stimuli_dir}"
            )
        resolved[stim_id] = candidate

    if missing:
        hint = "" if stimuli_dir.is_dir() else f" (there is no {stimuli_dir} folder)"
        raise InputMissingError(
            f"{len(missing)} stimulus files named in {stim_column} are missing under "
            f"{stimuli_dir}{hint}: {_listing(missing)}"
        )

    resolved.update(word_events)
    ids = sorted(resolved)
    n_workers = min(8, (os.cpu_count() or 1) + 4, max(len(ids), 1))

    def _hash(stim_id: str) -> str:
        try:
            return file_sha256(resolved[stim_id])
        except OSError as err:
            raise InputMissingError(
                f"{resolved[stim_id]}: stimulus {stim_id!r} cannot be read ({err.strerror or err})"
            ) from err

    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        hashes = list(pool.map(_hash, ids))

    table = StimulusTable(
        tuple(
            Stimulus(stim_id, resolved[stim_id], stimulus_kind(stim_id), sha)
            for stim_id, sha in zip(ids, hashes, strict=True)
        )
    )
    logger.info(
        "%d stimuli (%s) under %s",
        len(table),
        ", ".join(f"{len(table.by_kind(k))} {k}" for k in STIMULUS_KINDS if table.by_kind(k)),
        stimuli_dir,
    )
    return table
