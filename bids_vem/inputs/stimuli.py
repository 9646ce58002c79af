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
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from bids_vem.config import option_name
from bids_vem.errors import DataError, InputMissingError
from bids_vem.inputs.events import read_events, read_tsv_columns, stim_column_of
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
    # transcripts: plain text with timings beside it, Praat TextGrids, Gentle alignments
    "text": frozenset({".txt", ".textgrid"}),
    # the words of a run's events (a ``word``/``text`` column): the events file is the stimulus
    "words": frozenset(),
    # names that are no file at all (Haxby's categories in trial_type): the name is the text
    "label": frozenset(),
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


#: the file a Gentle forced alignment writes per story (Narratives: gentle/<story>/align.json)
GENTLE_ALIGNMENT = "align.json"
#: stimulus ids of runs whose events carry the words themselves (``events/<events file name>``)
WORDS_PREFIX = "events/"
#: events columns that carry words, in order of preference
WORD_COLUMNS = ("word", "text")


def words_stim_id(events_path: Path) -> str:
    """Stimulus id of the words carried by an events file (``events/<file name>``)."""
    return WORDS_PREFIX + Path(events_path).name


def stimulus_kind(stim_id: str, path: Path | str | None = None) -> str | None:
    """Kind of a stimulus from its file extension (case-insensitive), None when unknown.

    A name written without extension (``n02766534_15976``) takes the kind of the file it
    resolved to, ``path``.
    """
    if stim_id.startswith(WORDS_PREFIX):
        return "words"
    if stim_id.rsplit("/", 1)[-1] == GENTLE_ALIGNMENT:
        return "text"
    kind = _KIND_OF_EXTENSION.get(Path(stim_id).suffix.lower())
    if kind is None and path is not None:
        kind = _KIND_OF_EXTENSION.get(Path(path).suffix.lower())
    return kind


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


def _allowed_target(resolved: Path, roots: Iterable[Path]) -> bool:
    """Whether a resolved stimulus path may be read.

    Inside a stimulus folder (after resolving its own links), or a git-annex object: DataLad
    and OpenNeuro datasets store every file as a symlink into ``.git/annex/objects``, which is
    content-addressed and safe.
    """
    if any(_inside(resolved, root) for root in roots):
        return True
    parts = resolved.parts
    return any(parts[i : i + 3] == (".git", "annex", "objects") for i in range(len(parts) - 2))


class _FolderIndex:
    """Every file under the stimulus folders, by base name and by name without extension:
    built once, and only when some stimulus is not at the path the events give."""

    def __init__(self, roots: list[Path]) -> None:
        self.by_name: dict[str, list[Path]] = {}
        self.by_stem: dict[str, list[Path]] = {}
        for root in roots:
            if not root.is_dir():
                continue
            for folder, dirs, files in os.walk(root, followlinks=True):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.startswith("."):
                        continue
                    path = Path(folder) / name
                    relative = path.relative_to(root).as_posix()
                    self.by_name.setdefault(name, []).append(path)
                    stem = Path(name).stem
                    self.by_stem.setdefault(stem, []).append(path)
                    relative_stem = relative.rsplit(".", 1)[0] if "." in name else relative
                    if relative_stem != stem:
                        self.by_stem.setdefault(relative_stem, []).append(path)

    def find(self, stim_id: str) -> list[Path]:
        """Candidates for a stimulus not found at its path: a name without extension matches
        the files of that name (path or base name) with any extension; a file name matches
        the files of that base name in any subfolder (BOLD5000's bare names)."""
        base = stim_id.rsplit("/", 1)[-1]
        if stimulus_kind(stim_id) is None:
            found = self.by_stem.get(stim_id) or self.by_stem.get(base) or []
            return [p for p in found if stimulus_kind(p.name) is not None]
        return list(self.by_name.get(base, []))


@dataclass
class _Resolution:
    """Where each stimulus named in the events was found, and what could not be."""

    roots: list[Path]
    found: dict[str, Path]
    missing: list[str]
    #: stimuli found by name in a subfolder or by stem, not at their own path
    by_name: int = 0
    #: names of no known kind that are no file (labels when every name is one)
    labels: dict[str, Path] = field(default_factory=dict)


def _resolve_stimuli(
    first_seen: dict[str, Path], roots: list[Path], stim_column: str
) -> _Resolution:
    allowed = [root.resolve() for root in roots]
    result = _Resolution(roots, {}, [])
    index: _FolderIndex | None = None
    for stim_id in sorted(first_seen):
        source = first_seen[stim_id]
        if stim_id.startswith("/") or ".." in stim_id.split("/"):
            raise DataError(
                f"{source}: stimulus {stim_id!r} in column '{stim_column}' leaves the stimuli "
                f"folder; BIDS stimulus paths are relative to {roots[-1]}"
            )
        candidate = next((root / stim_id for root in roots if (root / stim_id).is_file()), None)
        if candidate is None:
            index = index or _FolderIndex(roots)
            matches = index.find(stim_id)
            if len(matches) > 1:
                shown = ", ".join(str(m) for m in matches[:5])
                raise DataError(
                    f"{source}: stimulus {stim_id!r} matches {len(matches)} files ({shown}); "
                    "name it by its path relative to the stimulus folder"
                )
            if matches:
                candidate = matches[0]
                result.by_name += 1
        if candidate is None:  # also for a dangling (not fetched) annex link
            if stimulus_kind(stim_id) is None:
                result.labels[stim_id] = source
            else:
                result.missing.append(stim_id)
            continue
        target = candidate.resolve()
        if not _allowed_target(target, allowed):
            raise DataError(
                f"{source}: stimulus {stim_id!r} is a link to {target}, outside "
                f"{' and '.join(str(r) for r in roots)}"
            )
        if stimulus_kind(stim_id, candidate) is None:
            found = "" if candidate.name == stim_id.rsplit("/", 1)[-1] else f" ({candidate.name})"
            raise DataError(
                f"{source}: stimulus {stim_id!r}{found} has an extension of no known kind; "
                f"known: {', '.join(sorted(_KIND_OF_EXTENSION))}"
            )
        result.found[stim_id] = candidate
    if result.labels and (result.found or result.missing):
        # some names are files: one that is not is a mistake, not a label
        stim_id, source = next(iter(result.labels.items()))
        raise DataError(
            f"{source}: stimulus {stim_id!r} has an extension of no known kind and no file of "
            f"that name exists; known: {', '.join(sorted(_KIND_OF_EXTENSION))}"
        )
    return result


def build_stimulus_table(
    bids_dir: Path,
    events_files: Iterable[Path],
    stim_column: str = "stim_file",
    stimuli_dir: Path | Sequence[Path] | None = None,
) -> StimulusTable:
    """Collect the unique stimuli named in events files, resolved under the stimulus folders.

    Each name is looked up in ``stimuli_dir`` (``--stimuli-dir``, for stimuli kept outside
    BIDS_DIR: BOLD5000, THINGS, BOLD Moments), then in ``bids_dir/stimuli``: first at the
    path the events give; else a name without extension (GOD's ``stimulus_name``) by the one
    file of that name with any extension, and a file name by the one file of that base name
    in any subfolder (BOLD5000's bare names against ``Presented_Stimuli/{COCO,ImageNet,Scene}``).
    Events whose stimulus is ``n/a`` (blank, catch, oddball, fixation trials) are counted and
    skipped.

    Parameters
    ----------
    bids_dir : Path
        Root of the raw BIDS dataset (the one holding ``stimuli/``).
    events_files : iterable of Path
        ``events.tsv`` files (e.g. ``run.events`` of the selected runs).
    stim_column : str
        Column naming the stimulus file relative to the stimulus folder (the default,
        ``stim_file``, falls back on the usual names when absent:
        :func:`~bids_vem.inputs.events.stim_column_of`).
    stimuli_dir : Path or sequence of Path, optional
        Stimulus folders outside BIDS_DIR (``--stimuli-dir``, ``--transcripts``), searched
        first, in this order.

    Returns
    -------
    StimulusTable
        One row per unique stimulus (keyed by the name the events give), sorted by
        ``stim_id``; contents hashed in a thread pool.

    Raises
    ------
    DataError
        A stimulus path that leaves the stimulus folders (absolute, ``..``, or a link to a
        file outside them, once resolved), a name that matches several files, or an
        extension of no known kind; the message names the stimulus and the events file
        (exit 65). Bad events files also raise DataError.
    InputMissingError
        Stimuli that do not exist, all in one message: their count and the first 20 (exit 66).
    """
    bids_dir = Path(bids_dir).absolute()
    if stimuli_dir is None:
        stimuli_dir = []
    elif isinstance(stimuli_dir, (str, Path)):
        stimuli_dir = [stimuli_dir]
    roots = [Path(folder).absolute() for folder in stimuli_dir]
    for root in roots:
        if not root.is_dir():
            raise InputMissingError(f"{option_name('stimuli_dir')} {root}: no such folder")
    roots.append(bids_dir / "stimuli")

    first_seen: dict[str, Path] = {}
    word_events: dict[str, Path] = {}
    n_blank, n_events = 0, 0
    fallbacks: dict[str, list[str]] = {}
    for events_path in events_files:
        columns = read_tsv_columns(Path(events_path))
        column = stim_column_of(columns, stim_column)
        if column is None and any(c in columns for c in WORD_COLUMNS):
            # a story told in the events themselves: one stimulus, the events file
            word_events[words_stim_id(events_path)] = Path(events_path).absolute()
            continue
        if column is not None and column != stim_column:
            fallbacks.setdefault(column, []).append(Path(events_path).name)
        events = read_events(Path(events_path), stim_column=stim_column)
        n_events += len(events)
        n_blank += int(events["stim_id"].isna().sum())
        for stim_id in events["stim_id"]:
            if stim_id is not None and stim_id not in first_seen:
                first_seen[stim_id] = Path(events_path)
    for column, names in fallbacks.items():
        logger.info(
            "%d events file(s) have no '%s' column (e.g. %s): their stimuli are read from "
            "'%s' (choose another with %s)",
            len(names),
            stim_column,
            names[0],
            column,
            option_name("stim_column"),
        )
    if n_blank:
        logger.info(
            "%d of %d events name no stimulus (n/a: blank, catch, oddball or fixation trials); "
            "they are left out of the stimulus features",
            n_blank,
            n_events,
        )

    resolution = _resolve_stimuli(first_seen, roots, stim_column)
    if resolution.missing:
        folders = " or ".join(str(r) for r in roots)
        hint = "" if any(r.is_dir() for r in roots) else f" (there is no {folders} folder)"
        advice = "" if stimuli_dir else f"; stimuli kept elsewhere: {option_name('stimuli_dir')}"
        raise InputMissingError(
            f"{len(resolution.missing)} stimulus files named in {stim_column} are missing under "
            f"{folders}{hint}: {_listing(resolution.missing)}{advice}"
        )
    if resolution.by_name:
        logger.info(
            "%d stimuli found by file name in a subfolder or without their extension",
            resolution.by_name,
        )
    if resolution.labels and not word_events:
        labels = sorted(resolution.labels)
        logger.warning(
            "no stimulus file is named in '%s': its %d values (%s) are labels; text feature "
            "spaces embed the labels themselves, image feature spaces have no pixels to embed",
            stim_column,
            len(labels),
            ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else ""),
        )
        return StimulusTable(
            tuple(
                Stimulus(s, resolution.labels[s], "label", hashlib.sha256(s.encode()).hexdigest())
                for s in labels
            )
        )
    resolved = dict(resolution.found)
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
            Stimulus(stim_id, resolved[stim_id], stimulus_kind(stim_id, resolved[stim_id]), sha)
            for stim_id, sha in zip(ids, hashes, strict=True)
        )
    )
    logger.info(
        "%d stimuli (%s) under %s",
        len(table),
        ", ".join(f"{len(table.by_kind(k))} {k}" for k in STIMULUS_KINDS if table.by_kind(k)),
        " and ".join(str(r) for r in roots if r.is_dir()) or "no folder",
    )
    return table
