"""Reading BIDS ``events.tsv`` files: onsets, durations and the stimulus each event shows."""

from __future__ import annotations

import csv
import posixpath
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bids_vem.config import option_name
from bids_vem.errors import DataError, InputMissingError

__all__ = [
    "read_events",
    "read_tsv",
    "read_tsv_columns",
    "seconds",
    "normalise_stim_id",
    "MISSING_VALUES",
    "STIM_COLUMNS",
    "stim_column_of",
]


#: cell values that BIDS (and real datasets) use for "no value"
MISSING_VALUES = frozenset({"", "n/a"})
#: stimulus columns of published datasets, tried in this order when ``stim_file`` (BIDS, the
#: default of ``--stim-column``) is absent: NOD's COCO runs (``condition``), THINGS-fMRI
#: (``file_path``), Generic Object Decoding (``stimulus_name``), BOLD5000 (``ImgName``)
STIM_COLUMNS = ("stim_file", "condition", "file_path", "stimulus", "stimulus_name", "ImgName")


def stim_column_of(columns: Sequence[str], requested: str = STIM_COLUMNS[0]) -> str | None:
    """The column of an events file that names its stimuli, None when it has none.

    ``requested`` when present. When the default ``stim_file`` is absent, the first of
    :data:`STIM_COLUMNS` present (the stimulus table logs the choice). A column named
    explicitly (anything but the default) has no fallback.
    """
    if requested in columns:
        return requested
    if requested != STIM_COLUMNS[0]:
        return None
    return next((name for name in STIM_COLUMNS[1:] if name in columns), None)


def normalise_stim_id(value: object) -> str | None:
    """Normalise one cell of the stimulus column to a posix path relative to ``stimuli/``.

    Surrounding blanks are dropped, backslashes become slashes, ``./`` and repeated
    slashes are removed. ``..`` and a leading ``/`` are kept on purpose: the stimulus
    table refuses such paths with a message that names them.

    Parameters
    ----------
    value : object
        The cell as read (a string; ``None`` or NaN for empty cells).

    Returns
    -------
    str or None
        The normalised path, or None for ``n/a`` and empty cells (no stimulus).
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    if text in MISSING_VALUES:
        return None
    text = text.replace("\\", "/")
    absolute = text.startswith("/")
    # normpath would also collapse "a/../b", which would hide an escape: drop only "." parts
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not parts:
        return None
    joined = posixpath.join(*parts)
    return "/" + joined if absolute else joined


def read_tsv_columns(path: Path) -> list[str]:
    """Column names of a TSV file (its first line) without reading the rest.

    Raises
    ------
    InputMissingError
        When the file does not exist or cannot be read.
    DataError
        When the file is empty.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header = handle.readline()
    except FileNotFoundError as err:
        raise InputMissingError(f"{path}: no such file") from err
    except (OSError, UnicodeDecodeError) as err:
        raise InputMissingError(f"{path}: cannot be read ({err})") from err
    if not header.strip():
        raise DataError(f"{path}: empty file, expected a header line of tab-separated column names")
    return [name.strip() for name in header.rstrip("\r\n").split("\t")]


def read_tsv(path: Path, usecols: Sequence[str] | None = None) -> pd.DataFrame:
    """A BIDS TSV as strings: ``n/a``, ``NA`` and quotes kept as written, header names stripped.

    Raises
    ------
    DataError
        Not a valid tab-separated file (exit 65); the message names the file.
    """
    try:
        frame = pd.read_csv(
            path,
            sep="\t",
            dtype=str,
            keep_default_na=False,  # "NA" or "null" may be real stimulus names or words
            quoting=csv.QUOTE_NONE,  # captions hold quotes: keep them as written
            encoding="utf-8-sig",
            usecols=usecols,
        )
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"{path}: not a valid tab-separated file ({err})") from err
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def seconds(cells: pd.Series, column: str, where: Path | str) -> pd.Series:
    """One TSV column as float seconds; ``n/a`` is NaN, any other text an error naming the row."""
    raw = cells.astype(str).str.strip()
    missing = raw.isin(MISSING_VALUES)
    values = pd.to_numeric(raw.where(~missing), errors="coerce")
    bad = values.isna() & ~missing
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{where}: column '{column}' must be numeric (seconds), "
            f"found {cells.iloc[row]!r} on data row {row + 1}"
        )
    return values.astype(float)


def read_events(path: Path, stim_column: str = "stim_file") -> pd.DataFrame:
    """Read one BIDS ``events.tsv`` with the stimulus of each event.

    Parameters
    ----------
    path : Path
        The ``*_events.tsv`` file.
    stim_column : str
        Column naming each event's stimulus file, relative to ``stimuli/`` (BIDS ``stim_file``).

    Returns
    -------
    pandas.DataFrame
        One row per event, in file order: ``onset`` and ``duration`` (float seconds), ``stim_id``
        (normalised path relative to ``stimuli/``, None where the cell is ``n/a`` or empty),
        followed by the other original columns as strings.

    Raises
    ------
    InputMissingError
        When the file does not exist or cannot be read (exit 66).
    DataError
        When ``onset``/``duration``/``stim_column`` is missing, a time is not numeric, a
        duration is negative, or an event with a stimulus has no onset or duration (exit 65).
    """
    path = Path(path)
    columns = read_tsv_columns(path)
    missing = [c for c in ("onset", "duration") if c not in columns]
    if missing:
        raise DataError(
            f"{path}: events.tsv lacks the required column(s) {', '.join(missing)}; "
            f"its columns are {', '.join(columns)}"
        )
    column = stim_column_of(columns, stim_column)
    if column is None:
        tried = (
            f"nor any of {', '.join(STIM_COLUMNS[1:])} " if stim_column == STIM_COLUMNS[0] else ""
        )
        raise DataError(
            f"{path}: no stimulus column '{stim_column}' {tried}(set it with "
            f"{option_name('stim_column')}); its columns are {', '.join(columns)}"
        )
    frame = read_tsv(path)
    onset = seconds(frame["onset"], "onset", path)
    duration = seconds(frame["duration"], "duration", path)
    stim_id = frame[column].map(normalise_stim_id).astype(object)
    stim_id = stim_id.where(stim_id.notna(), None)

    if onset.isna().any():
        row = int(np.flatnonzero(onset.isna().to_numpy())[0])
        raise DataError(f"{path}: onset is n/a on data row {row + 1}; every event needs an onset")
    negative = duration < 0
    if negative.any():
        row = int(np.flatnonzero(negative.to_numpy())[0])
        raise DataError(f"{path}: negative duration {duration.iloc[row]} on data row {row + 1}")
    # the design places each stimulus over onset..onset+duration: it needs a number
    unknown = duration.isna() & stim_id.notna()
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise DataError(
            f"{path}: duration is n/a on data row {row + 1}, which shows stimulus "
            f"{stim_id.iloc[row]!r}; events with a stimulus need a duration"
        )

    others = frame.drop(columns=[c for c in ("onset", "duration", "stim_id") if c in frame])
    out = pd.concat(
        [
            pd.DataFrame({"onset": onset, "duration": duration, "stim_id": stim_id}),
            others,
        ],
        axis=1,
    )
    return out.reset_index(drop=True)
