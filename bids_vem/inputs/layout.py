# Longer than 500 lines: fMRIPrep naming across versions, pybids queries and run matching belong together.
"""Finding the runs to model: raw BIDS (events, metadata) + fMRIPrep derivatives (BOLD, masks).

Both sides are indexed with pybids (``validate=False``, in memory: nothing is written into
BIDS_DIR). Each derivative dataset gets its own layout, so that fMRIPrep 1.0/1.1 outputs
without ``dataset_description.json`` (OpenNeuro's BOLD5000) can be read too. Two namings are
understood:

* fMRIPrep >= 1.2: ``*_space-<s>[_res-<r>]_desc-preproc_bold.nii.gz``, ``*_desc-brain_mask``
  (or ``label-brain_mask``), ``*_desc-confounds_timeseries.tsv`` (or ``_regressors.tsv``);
* fMRIPrep < 1.2: ``*_bold_space-<s>_preproc.nii.gz``, ``*_bold_space-<s>_brainmask.nii.gz``,
  ``*_bold_confounds.tsv``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_vem._utils import LABEL
from bids_vem.config import option_name
from bids_vem.errors import DataError, InputMissingError, NoMatchError, UsageError
from bids_vem.inputs.events import STIM_COLUMNS, read_events, read_tsv_columns, stim_column_of
from bids_vem.inputs.runs import Run, SkippedRun
from bids_vem.inputs.stimuli import WORD_COLUMNS
from bids_vem.inputs.surfaces import SURFACE_SPACES, bold_kind, hemisphere, surface_header
from bids_vem.inputs.transcripts import find_transcript

__all__ = [
    "PreprocBold",
    "list_participants",
    "find_derivatives",
    "parse_space",
    "find_preproc_bold",
    "collect_runs_report",
    "read_bold_header",
]

logger = logging.getLogger(__name__)

#: entities that tell one acquisition (run) from another, in BIDS filename order
_RUN_ENTITIES = (
    "subject",
    "session",
    "task",
    "acquisition",
    "ceagent",
    "reconstruction",
    "direction",
    "run",
    "echo",
)
#: entities that refine a space (fMRIPrep ``--output-spaces MNI152NLin2009cAsym:res-2``)
_SPACE_ENTITIES = {"res": "res", "den": "den", "cohort": "cohort"}
#: datatype folders never needed here (raw) or never holding BOLD (derivatives)
_SKIPPED_FOLDERS = (
    "anat",
    "fmap",
    "dwi",
    "perf",
    "pet",
    "meg",
    "eeg",
    "ieeg",
    "beh",
    "micr",
    "nirs",
    "motion",
    "mrs",
    "figures",
    "log",
)
_LEGACY_BOLD = re.compile(
    r"^(?P<prefix>.+)_bold_space-(?P<space>[A-Za-z0-9]+)_preproc\.nii(\.gz)?$"
)
_NIFTI_EXTENSIONS = [".nii.gz", ".nii"]
_FIXED_KEYS = frozenset({"datatype", "suffix", "space", "extension"})


@dataclass(frozen=True)
class PreprocBold:
    """One preprocessed BOLD run found in a derivative dataset.

    Attributes
    ----------
    subject, session, task, run, acquisition
        BIDS entities (``session``, ``run``, ``acquisition`` None when absent).
    space : str
        The ``space-`` entity.
    bold : Path
        The preprocessed BOLD series.
    mask : Path or None
        Brain mask in the same space (None when absent).
    confounds : Path or None
        Confounds TSV (None when absent).
    tr : float or None
        ``RepetitionTime`` from the BOLD's JSON sidecar (with BIDS inheritance), if any.
    legacy : bool
        True for fMRIPrep < 1.2 naming (``*_bold_space-<s>_preproc.nii.gz``).
    entities : tuple of (str, str)
        Every entity that identifies the acquisition (also ``ceagent``, ``direction``...),
        used to match the raw events.
    bold_right : Path or None
        The right hemisphere's surface BOLD when ``bold`` is the left one (GIFTI).
    """

    subject: str
    session: str | None
    task: str
    run: str | None
    acquisition: str | None
    space: str
    bold: Path
    mask: Path | None
    confounds: Path | None
    tr: float | None
    legacy: bool
    entities: tuple[tuple[str, str], ...]
    bold_right: Path | None = None

    @property
    def name(self) -> str:
        """BIDS prefix of the run, e.g. ``sub-01_ses-1_task-scenes_run-2``."""
        return _run_name(dict(self.entities))


def _run_name(entities: Mapping[str, str]) -> str:
    keys = {
        "subject": "sub",
        "session": "ses",
        "task": "task",
        "acquisition": "acq",
        "ceagent": "ce",
        "reconstruction": "rec",
        "direction": "dir",
        "run": "run",
        "echo": "echo",
    }
    return "_".join(f"{keys[e]}-{entities[e]}" for e in _RUN_ENTITIES if entities.get(e))


#: index entities: BIDS compares their values as numbers (``run-01`` is ``run-1``)
_INDEX_ENTITIES = frozenset({"run", "echo"})


def _entity_value(entity: str, value) -> str | None:
    """An entity's value as BIDS compares it: index entities as numbers, labels as text."""
    if value is None:
        return None
    text = str(value)
    if entity in _INDEX_ENTITIES and text.isdigit():
        return str(int(text))
    return text


def _run_key(entities: Mapping) -> tuple[str | None, ...]:
    return tuple(_entity_value(e, entities.get(e)) for e in _RUN_ENTITIES)


# ----------------------------------------------------------------------------- arguments
def _check_labels(values: Sequence[str] | str, option: str, prefix: str = "") -> tuple[str, ...]:
    """Strip an optional ``sub-``/``ses-`` prefix and check BIDS labels are alphanumeric."""
    if isinstance(values, str):
        values = (values,)
    out = []
    for value in values:
        label = str(value)
        if prefix and label.startswith(prefix):
            label = label[len(prefix) :]
        if not LABEL.match(label):
            raise UsageError(f"{option}: {value!r} is not a BIDS label (letters and digits only)")
        out.append(label)
    return tuple(dict.fromkeys(out))


def parse_space(space: str) -> tuple[str, dict[str, str]]:
    """Split an fMRIPrep output-space spec: ``"MNI152NLin2009cAsym:res-2"`` -> name, entities.

    Raises
    ------
    UsageError
        When the name or a modifier is not a BIDS label, or a modifier is not res/den/cohort.
    """
    name, *modifiers = str(space).split(":")
    if not LABEL.match(name):
        raise UsageError(
            f"{option_name('space')}: {space!r} is not a space label (letters and digits only)"
        )
    extra: dict[str, str] = {}
    for modifier in modifiers:
        key, _, value = modifier.partition("-")
        if key not in _SPACE_ENTITIES or not LABEL.match(value):
            raise UsageError(
                f"{option_name('space')}: {modifier!r} in {space!r} is not one of res-<label>, den-<label>, "
                "cohort-<label>"
            )
        extra[_SPACE_ENTITIES[key]] = value
    return name, extra


def _query_value(value):
    """fMRIPrep filter-file values: null -> Query.NONE, "*" -> Query.ANY."""
    from bids.layout import Query

    if value is None:
        return Query.NONE
    if value == "*":
        return Query.ANY
    if isinstance(value, list):
        return [_query_value(v) for v in value]
    return value


def _filters_for(bids_filters: Mapping | None, query: str) -> dict:
    if not bids_filters:
        return {}
    if not isinstance(bids_filters, Mapping):
        raise UsageError(
            f"{option_name('bids_filters')} must hold a JSON object of queries (bold, events...)"
        )
    entities = bids_filters.get(query, {})
    if not isinstance(entities, Mapping):
        raise UsageError(
            f"{option_name('bids_filters')}: {query!r} must map entity names to values"
        )
    return {str(k).lower(): _query_value(v) for k, v in entities.items()}


def _describe_filters(**filters) -> str:
    shown = {k: v for k, v in filters.items() if v not in (None, (), [], {})}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "none"


# ----------------------------------------------------------------------------- datasets
def list_participants(bids_dir: Path) -> list[str]:
    """Participant labels (without ``sub-``) of the raw dataset, sorted.

    Raises
    ------
    InputMissingError
        When ``bids_dir`` is not a directory (exit 66).
    """
    bids_dir = Path(bids_dir)
    if not bids_dir.is_dir():
        raise InputMissingError(
            f"BIDS_DIR {bids_dir} is not a directory (check the path and container bind mounts)"
        )
    return sorted(
        p.name[4:] for p in bids_dir.iterdir() if p.name.startswith("sub-") and p.is_dir()
    )


def find_derivatives(bids_dir: Path) -> list[Path]:
    """The derivative datasets under ``BIDS_DIR/derivatives`` that hold preprocessed BOLD, sorted.

    A folder counts when it has a ``dataset_description.json`` or ``sub-*`` folders (fMRIPrep
    < 1.2 and OpenNeuro's NOD ship none: used with a warning) and preprocessed BOLD files in
    any fMRIPrep naming; other derivatives (FreeSurfer, ciftify, MRIQC, earlier bids_vem
    outputs) are never indexed: pybids would take our own TSV columns for entities, and
    indexing them costs time.
    """
    folder = Path(bids_dir) / "derivatives"
    if not folder.is_dir():
        return []
    found = []
    candidates = []
    for path in sorted(folder.iterdir()):
        if not path.is_dir() or path.name.startswith("."):
            continue
        candidates.append(path)
        if not (path / "dataset_description.json").is_file() and not any(path.glob("sub-*/")):
            # one level deeper: BOLD Moments ships derivatives/versionB/fmriprep
            candidates += [c for c in sorted(path.iterdir()) if c.is_dir() and c.name[0] != "."]
    for path in candidates:
        described = (path / "dataset_description.json").is_file()
        if not described and not any(path.glob("sub-*/")):
            continue
        if not _holds_preprocessed_bold(path):
            logger.debug("%s: no preprocessed BOLD, not indexed", path)
            continue
        if not described:
            logger.warning(
                "%s has no dataset_description.json; reading it as fMRIPrep outputs", path
            )
        found.append(path)
    return found


#: file names of preprocessed BOLD in every fMRIPrep naming (volumes, surfaces, CIFTI)
_PREPROC_GLOBS = (
    "*desc-preproc_bold.nii*",
    "*_bold_space-*_preproc.nii*",
    "*.func.gii",
    "*.dtseries.nii",
)


def _holds_preprocessed_bold(root: Path) -> bool:
    for func in (*root.glob("sub-*/func"), *root.glob("sub-*/ses-*/func")):
        if any(next(func.glob(pattern), None) is not None for pattern in _PREPROC_GLOBS):
            return True
    return False


def _ignore_patterns(subjects: Sequence[str]) -> list:
    """Folders pybids need not index: speeds up large datasets a lot."""
    patterns: list = [
        "code",
        "stimuli",
        "sourcedata",
        "models",
        "derivatives",
        "derivative",  # Lebel et al.'s TextGrids and pycortex database (not BIDS)
        re.compile(r"/\."),
        re.compile(r"/(" + "|".join(_SKIPPED_FOLDERS) + r")(/|$)"),
    ]
    if subjects:
        wanted = "|".join(re.escape(s) for s in subjects)
        patterns.append(re.compile(rf"^/sub-(?!(?:{wanted})(?:/|$))[^/]+"))
    return patterns


def _layout(root: Path, *, derivative: bool, subjects: Sequence[str]):
    from bids import BIDSLayout
    from bids.layout import BIDSLayoutIndexer

    indexer = BIDSLayoutIndexer(validate=False, ignore=_ignore_patterns(subjects))
    config = ["bids", "derivatives"] if derivative else ["bids"]
    try:
        return BIDSLayout(root, validate=False, derivatives=False, config=config, indexer=indexer)
    except (ValueError, OSError) as err:
        raise InputMissingError(f"{root}: cannot be indexed as a BIDS dataset ({err})") from err


def _get(layout, **query) -> list:
    try:
        return layout.get(**query)
    except ValueError as err:  # pybids: "'foo' is not a recognized entity"
        raise UsageError(f"{option_name('bids_filters')}: {err}") from err


# ----------------------------------------------------------------------------- derivatives
def _entities(bids_file) -> dict:
    return {k: v for k, v in bids_file.get_entities().items()}


def _surface_in_layout(layout, space: str, space_entities: dict, query: dict) -> list:
    """Surface BOLD of one derivative dataset: GIFTI left hemispheres (their right ones are
    found beside them) or CIFTI dense time series, in every fMRIPrep naming."""
    query = {k: v for k, v in query.items() if k not in _FIXED_KEYS and k != "desc"}
    if space == "fsLR":
        # fMRIPrep 1.2-20.0 named the CIFTI without a space: it was always fsLR
        return [
            f
            for f in _get(
                layout,
                datatype="func",
                suffix="bold",
                extension=".dtseries.nii",
                **query,
                **space_entities,
            )
            if f.get_entities().get("space") in (None, "fsLR")
        ]
    files = _get(
        layout,
        datatype="func",
        space=space,
        extension=[".func.gii", ".L.func.gii"],
        **query,
        **space_entities,
    )
    return [
        f
        for f in files
        if hemisphere(f.path, f.get_entities().get("hemi")) == "L"
        and f.get_entities().get("suffix", "bold") == "bold"
    ]


def _right_hemisphere(left: Path) -> Path | None:
    """The right hemisphere's file beside a left one, in the naming of its generation."""
    name = left.name
    for a, b in (
        ("_hemi-L_", "_hemi-R_"),
        ("_hemi-L.", "_hemi-R."),
        (".L.func.gii", ".R.func.gii"),
    ):
        if a in name:
            right = left.with_name(name.replace(a, b))
            return right if right.is_file() or right.is_symlink() else None
    return None


def _preproc_in_layout(layout, space: str, space_entities: dict, query: dict):
    """Preprocessed BOLD files of one derivative dataset: (modern, legacy) pybids files."""
    if space in SURFACE_SPACES:
        return _surface_in_layout(layout, space, space_entities, query), []
    # the query itself fixes these; --space chooses the space
    query = {k: v for k, v in query.items() if k not in _FIXED_KEYS}
    modern_query = {"desc": "preproc", **query, **space_entities}
    modern = _get(
        layout,
        datatype="func",
        suffix="bold",
        space=space,
        extension=_NIFTI_EXTENSIONS,
        **modern_query,
    )
    legacy_query = {k: v for k, v in query.items() if k != "desc"}
    legacy = [
        f
        for f in _get(
            layout,
            datatype="func",
            suffix="preproc",
            space=space,
            extension=_NIFTI_EXTENSIONS,
            **legacy_query,
        )
        if _LEGACY_BOLD.match(Path(f.path).name)
    ]
    return modern, legacy


def _spaces_found(layouts: Sequence) -> list[str]:
    spaces = set()
    for layout in layouts:
        for f in layout.get(
            datatype="func", suffix=["bold", "preproc"], extension=_NIFTI_EXTENSIONS
        ):
            ents = f.get_entities()
            if "space" in ents and (ents.get("desc") == "preproc" or ents["suffix"] == "preproc"):
                spaces.add(str(ents["space"]))
        for f in layout.get(datatype="func", extension=[".func.gii", ".L.func.gii"]):
            if "space" in f.get_entities():
                spaces.add(str(f.get_entities()["space"]))
        if layout.get(datatype="func", suffix="bold", extension=".dtseries.nii"):
            spaces.add("fsLR")
    return sorted(spaces)


def _companions(layout, space: str, space_entities: dict) -> tuple[dict, dict]:
    """Brain masks (keyed by run + space refinements) and confounds (keyed by run)."""
    masks: dict = {}
    for f in layout.get(datatype="func", suffix="mask", space=space, extension=_NIFTI_EXTENSIONS):
        ents = f.get_entities()
        if ents.get("desc") == "brain" or ents.get("label") == "brain":
            refine = tuple(
                str(ents.get(k)) if ents.get(k) is not None else None for k in _SPACE_ENTITIES
            )
            masks[(_run_key(ents), refine)] = Path(f.path)
    confounds: dict = {}
    for f in layout.get(datatype="func", suffix=["timeseries", "regressors"], extension=".tsv"):
        ents = f.get_entities()
        if ents.get("desc") in (None, "confounds") and "space" not in ents:
            key = _run_key(ents)
            # fMRIPrep >= 21 names it desc-confounds_timeseries; prefer that over older names
            if key not in confounds or ents.get("desc") == "confounds":
                confounds[key] = Path(f.path)
    return masks, confounds


def _tr_from_metadata(metadata: Mapping) -> float | None:
    value = metadata.get("RepetitionTime")
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def find_preproc_bold(
    derivatives: Sequence[Path],
    *,
    space: str = "MNI152NLin2009cAsym",
    participant_label: Sequence[str] = (),
    session_label: Sequence[str] = (),
    task: Sequence[str] = (),
    bids_filters: Mapping | None = None,
) -> list[PreprocBold]:
    """Preprocessed BOLD runs in ``space`` in derivative datasets, with masks and confounds.

    The derivative-side half of :func:`collect_runs_report`: no raw data is read, and no image is
    opened (empty, annexed files are fine here).

    Parameters
    ----------
    derivatives : sequence of Path
        Derivative dataset folders (e.g. from :func:`find_derivatives`).
    space : str
        ``space-`` entity, optionally refined fMRIPrep-style: ``MNI152NLin2009cAsym:res-2``.
    participant_label, session_label, task : sequence of str
        Entity filters (empty: all). ``sub-``/``ses-`` prefixes are accepted.
    bids_filters : dict, optional
        fMRIPrep ``--bids-filter-file`` contents; its ``"bold"`` entities filter the BOLD
        query (``null`` means "absent", ``"*"`` means "any value").

    Returns
    -------
    list of PreprocBold
        Sorted by run name.

    Raises
    ------
    UsageError
        A label that is not alphanumeric, a bad space spec or filter (exit 64).
    InputMissingError
        No derivative folder, or no preprocessed BOLD in ``space`` at all; the message lists
        the spaces that were found (exit 66).
    NoMatchError
        BOLD exists in ``space`` but the session/task/filters select none (exit 18).
    """
    space_name, space_entities = parse_space(space)
    subjects = _check_labels(participant_label, f"{option_name('participant_label')}", "sub-")
    sessions = _check_labels(session_label, f"{option_name('session_label')}", "ses-")
    tasks = _check_labels(task, f"{option_name('task')}")
    bold_filters = _filters_for(bids_filters, "bold")

    roots = [Path(d) for d in derivatives]
    if not roots:
        raise InputMissingError(
            f"no derivatives: put fMRIPrep outputs under BIDS_DIR/derivatives or pass {option_name('derivatives')}"
        )
    for root in roots:
        if not root.is_dir():
            raise InputMissingError(f"{option_name('derivatives')} {root}: no such folder")
    layouts = [_layout(root, derivative=True, subjects=subjects) for root in roots]

    selection = {}
    if subjects:
        selection["subject"] = list(subjects)
    base = [_preproc_in_layout(lay, space_name, space_entities, selection) for lay in layouts]
    if not any(modern or legacy for modern, legacy in base):
        found = _spaces_found(layouts)
        who = f" for sub-{', sub-'.join(subjects)}" if subjects else ""
        what = (
            "surface BOLD"
            if space_name in SURFACE_SPACES
            else "preprocessed BOLD (desc-preproc_bold)"
        )
        raise InputMissingError(
            f"no {what} in space {space}{who} under "
            f"{', '.join(str(r) for r in roots)}; spaces found: {', '.join(found) or 'none'}"
        )

    query = {**bold_filters, **selection}
    if sessions:
        query["session"] = list(sessions)
    if tasks:
        query["task"] = list(tasks)
    out: list[PreprocBold] = []
    for layout in layouts:
        modern, legacy = _preproc_in_layout(layout, space_name, space_entities, query)
        if not (modern or legacy):
            continue
        masks, confounds = _companions(layout, space_name, space_entities)
        for f in modern:
            ents = _entities(f)
            if space_name in SURFACE_SPACES:
                out.append(_surface_bold(f, ents, space_name, confounds))
                continue
            refine = tuple(
                str(ents.get(k)) if ents.get(k) is not None else None for k in _SPACE_ENTITIES
            )
            out.append(
                _preproc_bold(
                    ents,
                    space_name,
                    Path(f.path),
                    masks.get((_run_key(ents), refine)),
                    confounds.get(_run_key(ents)),
                    _tr_from_metadata(f.get_metadata()),
                    legacy=False,
                )
            )
        for f in legacy:
            ents = _entities(f)
            match = _LEGACY_BOLD.match(Path(f.path).name)
            folder = Path(f.path).parent
            prefix, legacy_space = match["prefix"], match["space"]
            mask = folder / Path(f.path).name.replace("_preproc.nii", "_brainmask.nii")
            conf = folder / f"{prefix}_bold_confounds.tsv"
            out.append(
                _preproc_bold(
                    ents,
                    legacy_space,
                    Path(f.path),
                    mask if mask.is_file() else None,
                    conf if conf.is_file() else None,
                    _tr_from_metadata(f.get_metadata()),
                    legacy=True,
                )
            )
    if legacy_found := [p for p in out if p.legacy]:
        logger.info(
            "reading %d preprocessed BOLD files in fMRIPrep < 1.2 naming (e.g. %s)",
            len(legacy_found),
            legacy_found[0].bold.name,
        )
    if not out:
        raise NoMatchError(
            "no preprocessed BOLD in space "
            f"{space} matches the filters: "
            + _describe_filters(
                participant_label=list(subjects),
                session_label=list(sessions),
                task=list(tasks),
                bids_filters_bold=dict((bids_filters or {}).get("bold", {})),
            )
        )
    return sorted(out, key=lambda p: (p.name, str(p.bold)))


def _surface_bold(f, ents: dict, space: str, confounds: dict) -> PreprocBold:
    """A surface run: no brain mask (the points with signal are the mask); a GIFTI left
    hemisphere with its right one.

    Raises
    ------
    InputMissingError
        A GIFTI left hemisphere without its right one beside it.
    """
    bold = Path(f.path)
    right = _right_hemisphere(bold) if bold_kind(bold) == "gifti" else None
    if bold_kind(bold) == "gifti" and right is None:
        raise InputMissingError(f"{bold}: no right hemisphere (hemi-R) beside this left one")
    pre = _preproc_bold(
        ents, space, bold, None, confounds.get(_run_key(ents)), _tr_from_metadata(f.get_metadata()),
        legacy=False,
    )  # fmt: skip
    return replace(pre, bold_right=right)


def _preproc_bold(ents, space, bold, mask, confounds, tr, *, legacy) -> PreprocBold:
    def text(key):
        return None if ents.get(key) is None else str(ents[key])

    return PreprocBold(
        subject=text("subject"),
        session=text("session"),
        task=text("task"),
        run=text("run"),
        acquisition=text("acquisition"),
        space=space,
        bold=bold,
        mask=mask,
        confounds=confounds,
        tr=tr,
        legacy=legacy,
        entities=tuple((e, str(ents[e])) for e in _RUN_ENTITIES if ents.get(e) is not None),
    )


# ----------------------------------------------------------------------------- images
def read_bold_header(path: Path) -> tuple[int, float | None]:
    """Number of volumes and the TR (seconds, None if not set) from a NIfTI header only.

    Raises
    ------
    InputMissingError
        The file is missing or empty (an annexed file whose content was not fetched; exit 66).
    DataError
        The file is not a readable NIfTI image or not 4D (exit 65).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError as err:
        raise InputMissingError(
            f"{path}: no such file (a dangling link: run `datalad get`?)"
        ) from err
    if size == 0:
        raise InputMissingError(
            f"{path}: empty file (0 bytes): its content was not fetched (`datalad get` it?)"
        )
    try:
        header = nib.load(path).header
    except Exception as err:  # nibabel raises several types for broken files
        raise DataError(f"{path}: not a readable NIfTI image ({err})") from err
    shape = header.get_data_shape()
    if len(shape) != 4:
        raise DataError(f"{path}: a BOLD series must be 4D, this image has shape {tuple(shape)}")
    zooms = header.get_zooms()
    tr = float(zooms[3]) if len(zooms) > 3 and zooms[3] > 0 else None
    if tr is not None:
        _, time_unit = header.get_xyzt_units()
        tr = {"msec": tr / 1000.0, "usec": tr / 1e6}.get(time_unit, tr)
    return int(shape[3]), tr


# ----------------------------------------------------------------------------- raw side
def _events_for(candidates: list[tuple[dict, Path]], bold_key: dict) -> Path | None:
    """The events file of a run by BIDS inheritance: all its entities match; most specific wins."""
    best: tuple[int, int, Path] | None = None
    for ents, path in candidates:
        if any(
            ents.get(e) is not None
            and _entity_value(e, ents[e]) != _entity_value(e, bold_key.get(e))
            for e in _RUN_ENTITIES
        ):
            continue
        rank = (sum(ents.get(e) is not None for e in _RUN_ENTITIES), len(path.parts), path)
        if best is None or rank[:2] > best[:2]:
            best = rank
    return None if best is None else best[2]


def collect_runs_report(
    bids_dir: Path,
    *,
    derivatives: Sequence[Path] = (),
    participant_label: Sequence[str] = (),
    session_label: Sequence[str] = (),
    task: Sequence[str] = (),
    space: str = "MNI152NLin2009cAsym",
    bids_filters: Mapping | None = None,
    stim_column: str = "stim_file",
    transcripts: Path | None = None,
) -> tuple[list[Run], list[SkippedRun]]:
    """The runs to model, and one sentence per run that was found but cannot be used.

    A run is kept when it has a preprocessed BOLD in ``space`` and a raw ``events.tsv`` (found
    by BIDS inheritance, entities compared as BIDS does: ``run-01`` is ``run-1``) with a
    stimulus column that names at least one stimulus, or, with ``transcripts``, a story. A
    run without a brain mask in its space gets one derived from its BOLD later
    (:func:`bids_vem.encoding.bold.runs_mask`). Confounds are optional. The TR comes from the
    preprocessed BOLD's JSON, else from the raw BOLD's metadata, else from the NIfTI header;
    the number of volumes from the NIfTI header (the data are not read).

    Parameters
    ----------
    bids_dir : Path
        Raw BIDS dataset.
    derivatives : sequence of Path
        Derivative datasets; empty: every dataset under ``BIDS_DIR/derivatives``.
    participant_label, session_label, task : sequence of str
        Entity filters (empty: all); ``sub-``/``ses-`` prefixes are accepted.
    space : str
        Output space, optionally with ``:res-<r>`` (fMRIPrep syntax).
    bids_filters : dict, optional
        fMRIPrep ``--bids-filter-file`` contents: ``"bold"`` filters the preprocessed BOLD,
        ``"events"`` the raw events files.
    stim_column : str
        Events column naming the stimulus files.
    transcripts : Path, optional
        Folder of story transcripts (``--transcripts``): a run without events whose task
        has a transcript there is kept, its ``events`` the transcript
        (:func:`bids_vem.inputs.transcripts.story_run` derives its events).

    Returns
    -------
    runs : list of Run
        Sorted by subject, session, task, acquisition, run.
    skipped : list of SkippedRun
        One sentence (a str) per run left out, naming it and saying why; its ``subject``,
        ``run`` and ``reason`` fields say the same without parsing.

    Raises
    ------
    UsageError
        Unknown participant (the message lists the existing ones), a label that is not
        alphanumeric, a bad space spec or filter, or two BOLD files for one run (exit 64).
    InputMissingError
        No derivatives, no preprocessed BOLD in ``space`` (the message lists the spaces found),
        an empty (not fetched) BOLD file, or no usable run at all (exit 66).
    NoMatchError
        The filters select no preprocessed BOLD (exit 18).
    DataError
        A broken NIfTI header or events file (exit 65).
    """
    bids_dir = Path(bids_dir)
    _check_raw_dataset(bids_dir)
    subjects = _known_participants(bids_dir, participant_label)
    derivatives = [Path(d) for d in derivatives] or find_derivatives(bids_dir)
    present = bids_dir / "derivatives"
    if not derivatives and present.is_dir():
        others = sorted(p.name for p in present.iterdir() if p.is_dir() and p.name[0] != ".")
        if others:
            raise InputMissingError(
                f"no preprocessed BOLD (fMRIPrep) in any derivative dataset under {present} "
                f"(found: {', '.join(others[:10])}); run fMRIPrep or pass "
                f"{option_name('derivatives')}"
            )
    preprocs = find_preproc_bold(
        derivatives,
        space=space,
        participant_label=subjects,
        session_label=session_label,
        task=task,
        bids_filters=bids_filters,
    )
    raw = _layout(bids_dir, derivative=False, subjects=subjects)
    events_candidates = [
        (_entities(f), Path(f.path))
        for f in _get(
            raw, suffix="events", extension=".tsv", **_filters_for(bids_filters, "events")
        )
    ]
    raw_bold = {
        _run_key(_entities(f)): f
        for f in raw.get(datatype="func", suffix="bold", extension=_NIFTI_EXTENSIONS)
    }

    runs: list[Run] = []
    skipped: list[SkippedRun] = []
    unreadable: list[InputMissingError] = []
    timing: list[str] = []
    seen: dict[tuple, Path] = {}
    used_events: set[Path] = set()
    for pre in preprocs:
        # outputs are named after Run.name: two BOLD files with one such name would collide
        identity = (pre.subject, pre.session, pre.task, pre.acquisition, pre.run)
        if identity in seen:
            raise UsageError(
                f"two preprocessed BOLD files for {pre.name} in space {space}: {seen[identity]} "
                f"and {pre.bold}; choose one with {option_name('space')} {pre.space}:res-<label> "
                f"or {option_name('bids_filters')}"
            )
        seen[identity] = pre.bold
        key = dict(pre.entities)
        events = _events_for(events_candidates, key)
        if events is not None:
            used_events.add(events)
        elif transcripts is not None:
            # Lebel et al.: story runs have no events; the task is the story
            events = find_transcript(Path(transcripts), pre.task)
        reason, onsets = _why_unusable(pre, events, bids_dir, stim_column)
        if reason:
            skipped.append(SkippedRun(pre.subject, pre.name, reason))
            continue
        try:
            if bold_kind(pre.bold) == "volume":
                n_volumes, header_tr = read_bold_header(pre.bold)
            else:
                n_volumes, header_tr = surface_header(pre.bold, pre.bold_right)
        except InputMissingError as err:
            unreadable.append(err)
            continue
        tr = _repetition_time(pre, raw_bold.get(_run_key(key)), header_tr)
        reason = _timing_problem(events, onsets, n_volumes, tr)
        if reason:
            skipped.append(SkippedRun(pre.subject, pre.name, reason))
            timing.append(reason)
            continue
        shared = {f: getattr(pre, f) for f in ("subject", "session", "task", "run", "acquisition")}
        shared |= {f: getattr(pre, f) for f in ("space", "bold", "mask", "confounds", "bold_right")}
        runs.append(Run(**shared, events=events, tr=tr, n_volumes=n_volumes))
    if unreadable:
        raise InputMissingError(
            f"{len(unreadable)} preprocessed BOLD file(s) cannot be read; first: {unreadable[0]}"
        )
    skipped += _events_without_bold(
        events_candidates, used_events, subjects, session_label, task, bids_filters, space
    )
    for sentence in skipped:
        logger.warning("skipping %s", sentence)
    if not runs and timing:
        raise DataError(f"no usable run in {bids_dir}: {timing[0]}")
    if not runs:
        raise InputMissingError(
            f"no usable run in {bids_dir} (space {space}, stimulus column '{stim_column}'): "
            f"{len(skipped)} skipped, e.g. {skipped[0] if skipped else 'none found'}"
        )
    runs.sort(key=_run_sort_key)
    return runs, skipped


def _check_raw_dataset(bids_dir: Path) -> None:
    """Refuse a derivative dataset (the fMRIPrep folder) given as BIDS_DIR, saying so.

    Raises
    ------
    UsageError
        ``dataset_description.json`` says ``DatasetType: derivative`` (exit 64).
    """
    import json

    try:
        description = json.loads((bids_dir / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return
    if isinstance(description, dict) and description.get("DatasetType") == "derivative":
        made_by = ", ".join(
            str(g.get("Name")) for g in description.get("GeneratedBy", []) if isinstance(g, dict)
        )
        raise UsageError(
            f"BIDS_DIR {bids_dir} is a derivative dataset"
            + (f" (made by {made_by})" if made_by else "")
            + f": give the raw dataset as BIDS_DIR, and this folder with "
            f"{option_name('derivatives')} if it is not under BIDS_DIR/derivatives"
        )


def _known_participants(bids_dir: Path, participant_label: Sequence[str]) -> tuple[str, ...]:
    """The requested labels, each a participant of ``bids_dir`` (UsageError listing them)."""
    existing = list_participants(bids_dir)
    subjects = _check_labels(participant_label, option_name("participant_label"), "sub-")
    unknown = [s for s in subjects if s not in existing]
    if unknown:
        raise UsageError(
            f"{option_name('participant_label')}: {', '.join(unknown)} not found in {bids_dir}; "
            f"participants there: {', '.join(existing[:50]) or 'none'} (check the BIDS_DIR path "
            "and container bind mounts)"
        )
    return subjects


def _why_unusable(
    pre: PreprocBold, events: Path | None, bids_dir: Path, stim_column: str
) -> tuple[str | None, np.ndarray | None]:
    """Why a preprocessed run cannot be modelled (no events, mask or stimuli), else None; and
    the onsets of its events (None for a story, whose words carry their own times)."""
    if events is None:
        return f"no events.tsv in {bids_dir} (preprocessed BOLD {pre.bold.name})", None
    if events.suffix.lower() != ".tsv" or not events.name.endswith("_events.tsv"):
        return None, None  # a story's transcript (--transcripts): its words carry their times
    columns = read_tsv_columns(events)
    column = stim_column_of(columns, stim_column)
    if column is None:
        if any(c in columns for c in WORD_COLUMNS):
            return None, None
        tried = f"'{stim_column}'" + (
            f" (nor {', '.join(STIM_COLUMNS[1:])})" if stim_column == STIM_COLUMNS[0] else ""
        )
        return f"{events.name} has no stimulus column {tried} nor a word/text column", None
    table = read_events(events, stim_column=stim_column)
    if table["stim_id"].isna().all():
        return f"{events.name} names no stimulus in '{column}'", None
    return None, table["onset"].to_numpy(dtype=float)


#: a run whose events fall outside it for more than this fraction is refused
OUTSIDE_FRACTION = 0.25


def _timing_problem(
    events: Path, onsets: np.ndarray | None, n_volumes: int, tr: float
) -> str | None:
    """Why the run's event timing cannot match its BOLD (onsets in ms, wrong TR), else None.

    Events that start after the last volume were never seen: a few (a scan stopped early) are
    dropped with a warning; more than a quarter of the run's events refuse the run.
    """
    if onsets is None:
        return None  # a story's words: placed by their own times
    duration = n_volumes * tr
    outside = onsets[onsets >= duration]
    if not outside.size:
        return None
    shown = ", ".join(f"{o:g}" for o in outside[:3]) + (", ..." if outside.size > 3 else "")
    sentence = (
        f"{events.name}: {outside.size} of {onsets.size} events start after the run's "
        f"{duration:g} s ({n_volumes} volumes x TR {tr:g} s), at onsets {shown} s"
    )
    if outside.size > OUTSIDE_FRACTION * onsets.size:
        return sentence + " (onsets in milliseconds, or a wrong RepetitionTime?)"
    logger.warning("%s; those events are ignored", sentence)
    return None


def _repetition_time(pre: PreprocBold, raw_file, header_tr: float | None) -> float:
    """TR from the preprocessed sidecar, else the raw BOLD's metadata, else the NIfTI header."""
    tr = pre.tr
    if tr is None and raw_file is not None:
        tr = _tr_from_metadata(raw_file.get_metadata())
    if tr is None:
        tr = header_tr
    if tr is None or tr <= 0:
        raise DataError(
            f"{pre.bold}: no RepetitionTime in its JSON sidecar, the raw BOLD metadata or "
            "the NIfTI header"
        )
    return tr


def _events_without_bold(
    events_candidates, used_events, subjects, session_label, task, bids_filters, space
) -> list[SkippedRun]:
    """Runs of the selection whose events have no preprocessed BOLD in this space."""
    bold_filters = _filters_for(bids_filters, "bold")
    sessions = _check_labels(session_label, option_name("session_label"), "ses-")
    tasks = _check_labels(task, option_name("task"))
    out = []
    for ents, path in events_candidates:
        if path in used_events or ents.get("subject") is None or ents.get("datatype") != "func":
            continue
        if (
            (subjects and str(ents["subject"]) not in subjects)
            or (sessions and str(ents.get("session")) not in sessions)
            or (tasks and str(ents.get("task")) not in tasks)
        ):
            continue
        if not _matches_simple_filters(ents, bold_filters):
            continue
        reason = f"{path.name} has no preprocessed BOLD in space {space}"
        out.append(SkippedRun(str(ents["subject"]), _run_name(ents), reason))
    return out


def _matches_simple_filters(ents: Mapping, filters: Mapping) -> bool:
    """Apply plain-valued BOLD filters (run, acquisition...) to raw events entities."""
    for key, wanted in filters.items():
        if key not in _RUN_ENTITIES or not isinstance(wanted, (str, int, list)):
            continue
        values = wanted if isinstance(wanted, list) else [wanted]
        have = ents.get(key)
        if have is None or not any(_same_label(have, v) for v in values):
            return False
    return True


def _same_label(have, wanted) -> bool:
    if isinstance(wanted, int) or (isinstance(wanted, str) and wanted.isdigit()):
        return str(have).isdigit() and int(have) == int(wanted)
    return str(have) == str(wanted)


def _run_sort_key(run: Run) -> tuple:
    def number(label):
        return (0, int(label), "") if label and label.isdigit() else (1, 0, label or "")

    return (run.subject, run.session or "", run.task, run.acquisition or "", number(run.run))
