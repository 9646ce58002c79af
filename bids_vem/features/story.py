"""Story stimuli: timed words, each embedded with its context, resampled to TRs.

Words come from one of two places:

- the events of a run, when its rows carry words: a ``word`` column (one word per row) or a
  ``text`` column (a cell of several words is spread evenly over the row's duration);
- a transcript named by the events (``stim_file`` = ``stories/<name>.txt``): the ``.txt`` holds
  the plain text for readers, and the word timings sit beside it in ``stories/<name>.tsv``, a
  BIDS-style TSV with columns ``onset`` (seconds from the start of the story), ``duration``
  (optional; ``n/a`` allowed) and ``word``. The words bids_vem embeds are those of the ``.tsv``.

Each word is embedded with up to ``n_context`` words on each side (Tang et al. 2023: 20), or
with only the words before it (``causal=True``), by any text encoder. The word features are then
resampled to TRs by Lanczos interpolation, as in the Huth lab code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bids_vem.config import setting_default
from bids_vem.errors import DataError, InputMissingError
from bids_vem.inputs.events import MISSING_VALUES, read_tsv, read_tsv_columns, seconds

__all__ = [
    "DEFAULT_CONTEXT",
    "TIMINGS_COLUMNS",
    "read_word_timings",
    "is_spoken_word",
    "read_event_words",
    "story_words",
    "word_contexts",
    "story_features",
]

#: words of context on each side of a word (Tang et al. 2023)
#: words of context on each side (Tang et al. 2023: 20), as --context-words defaults
DEFAULT_CONTEXT: int = setting_default("context_words")
#: columns of a transcript's timings file; ``duration`` may be absent
TIMINGS_COLUMNS = ("onset", "duration", "word")
#: events columns that carry words, in order of preference
_WORD_COLUMNS = ("word", "text")


def _is_missing(cell: object) -> bool:
    return (
        cell is None
        or (isinstance(cell, float) and np.isnan(cell))
        or str(cell).strip() in MISSING_VALUES
    )


#: tokens of forced aligners that are not words: silences, breaths, laughter, noise
_NOT_WORDS = frozenset({"", "sp", "sil", "spn", "<sil>", "<unk>", "{sl}", "{ns}", "{lg}", "{br}"})


def is_spoken_word(token: str) -> bool:
    """Whether an aligner token is a word (not ``sp``, ``sil``, ``{LG}``, ``<unk>`` or empty)."""
    text = token.strip()
    if text.lower() in _NOT_WORDS:
        return False
    # {LG}, {BR}, [noise], <laugh>: annotations, not words
    return not (text[:1] in "{[<" and text[-1:] in "}]>")


def _textgrid_words(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The word tier of a Praat TextGrid (Lebel et al.: tiers ``phone`` and ``word``)."""
    from praatio import textgrid

    try:
        grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=False)
    except Exception as err:  # noqa: BLE001 - praatio raises several types for bad files
        raise DataError(f"{path}: not a readable Praat TextGrid ({err})") from err
    names = list(grid.tierNames)
    tier = next((n for n in names if n.lower() in ("word", "words")), None) or next(
        (n for n in names if "word" in n.lower()), None
    )
    if tier is None:
        raise DataError(f"{path}: no word tier (tiers: {', '.join(names) or 'none'})")
    entries = [e for e in grid.getTier(tier).entries if is_spoken_word(str(e.label))]
    words = [str(e.label).strip() for e in entries]
    onsets = np.array([float(e.start) for e in entries], dtype=np.float64)
    durations = np.array([float(e.end) - float(e.start) for e in entries], dtype=np.float64)
    return words, onsets, durations


def _gentle_words(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Words of a Gentle alignment (``align.json``, Narratives): those found in the audio."""
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        entries = [
            w
            for w in data["words"]
            if w.get("case") == "success"
            and "start" in w
            and is_spoken_word(str(w.get("word", "")))
        ]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a Gentle alignment with a 'words' list ({err})") from err
    words = [str(w["word"]).strip() for w in entries]
    onsets = np.array([float(w["start"]) for w in entries], dtype=np.float64)
    durations = np.array([float(w["end"]) - float(w["start"]) for w in entries], dtype=np.float64)
    return words, onsets, durations


def read_word_timings(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read the word timings of a transcript.

    Parameters
    ----------
    path : Path
        The transcript ``<name>.txt`` (its timings are read from ``<name>.tsv`` beside it), the
        timings ``.tsv`` itself, a Praat TextGrid (its word tier; Lebel et al. 2023) or a
        Gentle alignment ``align.json`` (Narratives). Silences and noises of forced aligners
        (``sp``, ``{LG}``, empty intervals) are not words and are dropped.

    Returns
    -------
    words : list of str
        Words in time order (rows with an empty or ``n/a`` word are skipped).
    onsets : ndarray of shape (n_words,)
        Onsets in seconds from the start of the story.
    durations : ndarray of shape (n_words,)
        Durations in seconds (NaN where unknown or when the file has no ``duration`` column).

    Raises
    ------
    InputMissingError
        The timings file does not exist (exit 66); the message names the transcript and the
        file expected.
    DataError
        Columns ``onset``/``word`` are missing, or an onset is not a finite number (exit 65).
    """
    path = Path(path)
    if path.suffix.lower() == ".textgrid":
        return _sorted(*_textgrid_words(path))
    if path.suffix.lower() == ".json":
        return _sorted(*_gentle_words(path))
    timings = path.with_suffix(".tsv")
    if not timings.is_file():
        raise InputMissingError(
            f"{path}: no word timings; expected {timings.name} beside it, a TSV with columns "
            f"{', '.join(TIMINGS_COLUMNS)} (seconds from the start of the story)"
        )
    columns = read_tsv_columns(timings)
    missing = [c for c in ("onset", "word") if c not in columns]
    if missing:
        raise DataError(
            f"{timings}: word timings lack the column(s) {', '.join(missing)}; "
            f"its columns are {', '.join(columns)}"
        )
    frame = read_tsv(timings)  # "null" and "NA" are words
    frame = frame[~frame["word"].map(_is_missing)]
    frame = frame[frame["word"].map(is_spoken_word)].reset_index(drop=True)
    onsets = seconds(frame["onset"], "onset", timings).to_numpy(np.float64)
    durations = (
        seconds(frame["duration"], "duration", timings).to_numpy(np.float64)
        if "duration" in frame
        else np.full(len(frame), np.nan)
    )
    if not np.all(np.isfinite(onsets)):
        row = int(np.flatnonzero(~np.isfinite(onsets))[0])
        raise DataError(f"{timings}: onset is n/a on data row {row + 1}; every word needs one")
    order = np.argsort(onsets, kind="stable")
    words = [str(frame["word"].iloc[i]).strip() for i in order]
    return words, onsets[order], durations[order]


def _sorted(words, onsets, durations):
    order = np.argsort(onsets, kind="stable")
    return [words[i] for i in order], onsets[order], durations[order]


def _words_from_column(events: pd.DataFrame, column: str, where: str) -> tuple[list, list]:
    words: list[str] = []
    onsets: list[float] = []
    for row, (cell, onset, duration) in enumerate(
        zip(events[column], events["onset"], events["duration"], strict=True)
    ):
        if _is_missing(cell):
            continue
        if not np.isfinite(onset):
            raise DataError(f"{where}onset is not a number on data row {row + 1}")
        tokens = str(cell).split()
        # several words in one cell: spread evenly over the row's duration
        step = duration / len(tokens) if np.isfinite(duration) and duration > 0 else 0.0
        for i, token in enumerate(tokens):
            words.append(token)
            onsets.append(float(onset) + i * step)
    return words, onsets


def _words_from_transcripts(
    events: pd.DataFrame, stimuli_dir: Path, where: str
) -> tuple[list, list]:
    words: list[str] = []
    onsets: list[float] = []
    for row, (stim_id, onset, duration) in enumerate(
        zip(events["stim_id"], events["onset"], events["duration"], strict=True)
    ):
        if _is_missing(stim_id) or Path(str(stim_id)).suffix.lower() != ".txt":
            continue
        if not np.isfinite(onset):
            raise DataError(f"{where}onset is not a number on data row {row + 1}")
        story, times, _ = read_word_timings(Path(stimuli_dir) / str(stim_id))
        # words at or after the end of the event were not heard (duration 0 or n/a: all)
        heard = times < duration if np.isfinite(duration) and duration > 0 else np.isfinite(times)
        words.extend(w for w, keep in zip(story, heard, strict=True) if keep)
        onsets.extend(float(onset) + times[heard])
    return words, onsets


def story_words(
    source: pd.DataFrame | Path | str,
    *,
    stimuli_dir: Path | None = None,
    source_name: str | None = None,
) -> tuple[list[str], np.ndarray]:
    """The timed words of a run's events or of one transcript.

    Parameters
    ----------
    source : DataFrame or Path
        Events of a run (``onset``, ``duration`` and a ``word`` or ``text`` column, or
        ``stim_id`` naming ``.txt`` transcripts), or the path of a transcript ``.txt`` (or its
        timings ``.tsv``).
    stimuli_dir : Path, optional
        Folder the events' ``stim_id`` values are relative to (BIDS ``stimuli/``); needed when
        the events name transcripts.
    source_name : str, optional
        Name of the events file, used in error messages.

    Returns
    -------
    words : list of str
    onsets : ndarray of shape (n_words,), float64
        Seconds from the start of the run (events) or of the story (a transcript path); in time
        order. Transcript words are placed at the event's onset plus their own onset.

    Raises
    ------
    DataError
        The events carry no words (no ``word``/``text`` column and no ``.txt`` stimulus), or an
        onset is not a number (exit 65).
    InputMissingError
        A transcript's timings file is missing (exit 66).
    """
    if not isinstance(source, pd.DataFrame):
        words, onsets, _ = read_word_timings(Path(source))
        return words, onsets

    where = f"{source_name}: " if source_name else ""
    column = next((c for c in _WORD_COLUMNS if c in source.columns), None)
    names_transcripts = "stim_id" in source.columns and any(
        not _is_missing(s) and Path(str(s)).suffix.lower() == ".txt" for s in source["stim_id"]
    )
    if column is not None:
        words, onsets = _words_from_column(source, column, where)
    elif names_transcripts:
        if stimuli_dir is None:
            raise ValueError("the events name .txt transcripts: pass stimuli_dir to find them")
        words, onsets = _words_from_transcripts(source, Path(stimuli_dir), where)
    else:
        raise DataError(
            f"{where}events carry no words: expected a 'word' or 'text' column, or stimuli "
            "that are .txt transcripts with word timings beside them"
        )
    onsets_array = np.asarray(onsets, dtype=np.float64)
    order = np.argsort(onsets_array, kind="stable")
    return [words[i] for i in order], onsets_array[order]


def read_event_words(path: Path) -> tuple[list[str], np.ndarray]:
    """The timed words of an events file with a ``word`` or ``text`` column (see :func:`story_words`).

    Onsets are seconds from the start of the run; ``n/a`` durations are NaN.
    """
    frame = read_tsv(path)
    for column in ("onset", "duration"):
        if column in frame:
            frame[column] = seconds(frame[column], column, path)
    return story_words(frame, source_name=str(path))


def word_contexts(
    words: Sequence[str], n_context: int = DEFAULT_CONTEXT, *, causal: bool = False
) -> list[str]:
    """Each word with its neighbours, as the text to embed for it.

    Parameters
    ----------
    words : sequence of str
    n_context : int
        Words of context on each side (fewer at the start and end of the story).
    causal : bool
        Only the ``n_context`` words before each word (what a listener has heard so far).

    Returns
    -------
    list of str
        ``contexts[i]`` is ``words[i - n_context : i + n_context + 1]`` joined by spaces
        (``words[i - n_context : i + 1]`` when causal), cut at the story's edges.
    """
    if n_context < 0:
        raise ValueError(f"n_context must be >= 0, got {n_context}")
    words = [str(w) for w in words]
    contexts = []
    for i in range(len(words)):
        stop = i + 1 if causal else i + n_context + 1
        contexts.append(" ".join(words[max(0, i - n_context) : stop]))
    return contexts


def story_features(
    words: Sequence[str],
    encode_texts: Callable[[list[str]], np.ndarray],
    n_context: int = DEFAULT_CONTEXT,
    *,
    causal: bool = False,
    batch_size: int = 64,
) -> np.ndarray:
    """Features of each word in its context, with any text encoder.

    Parameters
    ----------
    words : sequence of str
    encode_texts : callable
        Takes a list of texts and returns their features, shape (n_texts, n_features).
    n_context, causal
        As in :func:`word_contexts`.
    batch_size : int
        Texts per call of ``encode_texts``. Identical contexts are encoded once.

    Returns
    -------
    ndarray of shape (n_words, n_features), float32
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    contexts = word_contexts(words, n_context, causal=causal)
    unique = list(dict.fromkeys(contexts))
    blocks = []
    for start in range(0, len(unique), batch_size):
        batch = unique[start : start + batch_size]
        features = np.asarray(encode_texts(batch))
        if features.ndim != 2 or features.shape[0] != len(batch):
            raise ValueError(
                f"the text encoder returned shape {features.shape} for {len(batch)} texts"
            )
        blocks.append(features.astype(np.float32, copy=False))
    if not blocks:
        raise ValueError("no words to encode")
    table = np.concatenate(blocks)
    row = {context: i for i, context in enumerate(unique)}
    return table[[row[c] for c in contexts]]
