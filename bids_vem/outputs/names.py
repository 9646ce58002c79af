"""BIDS-derivative file names: entities in BIDS order, then bids_vem's ``stat`` key.

BIDS has no stat-map standard (BEP041 has no pull request). bids_vem follows the
de-facto FitLins / nilearn pattern::

    sub-01_task-movie_space-MNI152NLin2009cAsym_desc-clip_stat-r_statmap.nii.gz

How this squares with the rule "``desc`` is always last" (BIDS 1.11): that rule orders the
*entities* of the schema. ``stat`` is not an entity (bidsschematools 2.0.1 lists none, and no
``statmap`` suffix); the derivatives pattern is
``<source entities>[_keyword-<value>]_<suffix>.<extension>``, so non-entity keywords come
after every entity, ``desc`` included. The validator cannot check such names either way
(it reports ``NOT_INCLUDED``), which is why :func:`bids_vem.outputs.dataset.write_bidsignore`
lists ``*_statmap.*``; the rest of the dataset (description, descriptions.tsv, stimuli,
logs) is still validated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from bids_vem._utils import LABEL
from bids_vem.errors import UsageError

__all__ = [
    "ENTITY_ORDER",
    "EXTRA_KEYS",
    "derivative_name",
    "derivative_path",
    "parse_derivative_name",
]

#: BIDS entities (short keys) in the order of the BIDS schema (rules/entities.yaml)
ENTITY_ORDER: tuple[str, ...] = (
    "sub",
    "tpl",
    "ses",
    "cohort",
    "sample",
    "task",
    "tracksys",
    "acq",
    "nuc",
    "voi",
    "ce",
    "trc",
    "stain",
    "rec",
    "dir",
    "run",
    "mod",
    "echo",
    "flip",
    "inv",
    "mt",
    "part",
    "proc",
    "hemi",
    "space",
    "split",
    "recording",
    "chunk",
    "atlas",
    "seg",
    "scale",
    "res",
    "den",
    "label",
    "desc",
)
#: keys that are not BIDS entities, written after ``desc`` in this order (FitLins/nilearn habit)
EXTRA_KEYS: tuple[str, ...] = ("stat",)

#: long names accepted for convenience (pybids / :class:`bids_vem.inputs.runs.Run` spelling)
_ALIASES = {
    "subject": "sub",
    "session": "ses",
    "acquisition": "acq",
    "ceagent": "ce",
    "reconstruction": "rec",
    "direction": "dir",
    "hemisphere": "hemi",
    "resolution": "res",
    "density": "den",
    "description": "desc",
    "statistic": "stat",
}

_EXTENSION = re.compile(r"^(\.[0-9a-zA-Z]+)+$")
_ALL_KEYS = ENTITY_ORDER + EXTRA_KEYS


def _normalise(entities: Mapping[str, object]) -> dict[str, str]:
    """Short keys, string labels; None/empty values dropped; bad keys or labels rejected."""
    out: dict[str, str] = {}
    for key, value in entities.items():
        short = _ALIASES.get(key, key)
        if short not in _ALL_KEYS:
            raise UsageError(f"unknown BIDS entity {key!r}; expected one of {', '.join(_ALL_KEYS)}")
        if value is None or value == "":
            continue
        label = str(value)
        if not LABEL.match(label):
            raise UsageError(
                f"BIDS entity {short!r} must be alphanumeric (letters and digits only), got {label!r}"
            )
        if short in out and out[short] != label:
            raise UsageError(f"BIDS entity {short!r} given twice: {out[short]!r} and {label!r}")
        out[short] = label
    return out


def derivative_name(entities: Mapping[str, object], suffix: str, extension: str) -> str:
    """File name ``<entities>_<suffix><extension>`` with entities in BIDS order.

    Parameters
    ----------
    entities : mapping
        Entity key (short ``sub`` or long ``subject``) to label; None or "" are left out.
        ``stat`` (not a BIDS entity) goes after ``desc``.
    suffix : str
        Alphanumeric suffix (``statmap``, ``summary``...).
    extension : str
        ``.nii.gz``, ``.json``... (the leading dot may be omitted).

    Returns
    -------
    str
        e.g. ``sub-01_task-x_space-MNI152NLin2009cAsym_desc-clip_stat-r_statmap.nii.gz``.

    Raises
    ------
    UsageError
        A label, the suffix or the extension is not alphanumeric, or a key is unknown.
    """
    labels = _normalise(entities)
    if not LABEL.match(suffix or ""):
        raise UsageError(f"BIDS suffix must be alphanumeric, got {suffix!r}")
    if extension and not extension.startswith("."):
        extension = "." + extension
    if not _EXTENSION.match(extension or ""):
        raise UsageError(f"file extension must look like '.nii.gz', got {extension!r}")
    return f"{entity_prefix(labels)}_{suffix}{extension}"


def entity_prefix(entities: Mapping[str, object]) -> str:
    """``key-label`` pairs in BIDS order, joined by ``_``: the name of a run or run group.

    e.g. ``{"subject": "01", "task": "x", "run": "2"}`` -> ``sub-01_task-x_run-2``; None or
    "" values are left out. Raises UsageError as :func:`derivative_name`.
    """
    labels = _normalise(entities)
    return "_".join(f"{key}-{labels[key]}" for key in _ALL_KEYS if key in labels)


def derivative_path(
    output_dir: Path | str,
    entities: Mapping[str, object],
    suffix: str,
    extension: str,
    *,
    datatype: str | None = "func",
) -> Path:
    """Path of a derivative: ``output_dir/sub-XX[/ses-YY]/<datatype>/<name>``.

    Without a ``sub`` entity (group results) the file goes directly in ``output_dir``.
    """
    labels = _normalise(entities)
    path = Path(output_dir)
    if "sub" in labels:
        path = path / f"sub-{labels['sub']}"
        if "ses" in labels:
            path = path / f"ses-{labels['ses']}"
        if datatype:
            path = path / datatype
    return path / derivative_name(labels, suffix, extension)


def parse_derivative_name(name: str | Path) -> tuple[dict[str, str], str, str]:
    """Inverse of :func:`derivative_name`: ``(entities, suffix, extension)``.

    Raises
    ------
    ValueError
        The name is not ``key-label_..._suffix.ext``.
    """
    base = Path(name).name
    stem, dot, rest = base.partition(".")
    extension = dot + rest
    *pairs, suffix = stem.split("_")
    entities: dict[str, str] = {}
    for pair in pairs:
        key, sep, label = pair.partition("-")
        if not sep or not key or not LABEL.match(label):
            raise ValueError(f"{base}: {pair!r} is not a key-label pair")
        entities[key] = label
    if not LABEL.match(suffix):
        raise ValueError(f"{base}: suffix {suffix!r} is not alphanumeric")
    return entities, suffix, extension
