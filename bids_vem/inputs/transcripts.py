"""Stories told by transcripts kept beside the dataset (``--transcripts``), matched to runs.

Story datasets rarely name their word timings in events: Lebel et al. (ds003020) have no
``events.tsv`` for story runs, one task per story and Praat TextGrids in
``derivative/TextGrids/<story>.TextGrid``; Narratives (ds002345) name the audio
(``pieman_audio.wav``) and keep Gentle alignments in ``stimuli/gentle/<story>/align.json``.
A run's story is found by its task label, or by the stem of the stimulus its events name
(the longest story name that starts it: ``pieman_audio`` -> ``pieman``). The run then gets
derived events, written to the work directory (never into BIDS_DIR), that name the
transcript as its stimulus: the rest of the pipeline reads stories as it reads any stimulus.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import pandas as pd

from bids_vem.errors import DataError
from bids_vem.inputs.events import read_events
from bids_vem.inputs.runs import Run
from bids_vem.inputs.stimuli import GENTLE_ALIGNMENT
from bids_vem.outputs.atomic import write_text_atomic

__all__ = ["find_transcript", "transcript_for_stimulus", "story_run"]

logger = logging.getLogger(__name__)


def find_transcript(folder: Path, story: str) -> Path | None:
    """The word timings of ``story`` in ``folder``: ``<story>.TextGrid`` (any case),
    ``<story>/align.json`` (Gentle) or ``<story>.tsv``; None when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() == ".textgrid" and path.stem == story:
            return path
    for candidate in (folder / story / GENTLE_ALIGNMENT, folder / f"{story}.tsv"):
        if candidate.is_file():
            return candidate
    return None


def transcript_for_stimulus(folder: Path, stim_id: str) -> Path | None:
    """The transcript of the story a stimulus (an audio file) tells: its stem, or the
    longest prefix of it that ends at a ``_``/``-`` (``pieman_audio`` -> ``pieman``)."""
    stem = Path(stim_id).name.split(".", 1)[0]
    cuts = [len(stem)] + [m.start() for m in re.finditer(r"[_-]", stem)][::-1]
    for cut in cuts:
        found = find_transcript(folder, stem[:cut])
        if found is not None:
            return found
    return None


def story_run(run: Run, folder: Path, stim_column: str, work_dir: Path) -> Run:
    """The run with derived events naming its story's transcript (relative to ``folder``).

    A run without events (its ``events`` is the transcript found for its task) tells the
    story from its start (onset 0). A run whose events name audio keeps those events'
    onsets and durations for the rows whose stimulus has a transcript; the other rows
    (music, silence) name no stimulus.

    Raises
    ------
    DataError
        No row of the run's events names a story with a transcript in ``folder``.
    """
    folder = Path(folder).absolute()
    events = Path(run.events)
    if events.is_relative_to(folder):
        frame = pd.DataFrame(
            {
                "onset": [0.0],
                "duration": [0.0],
                stim_column: [events.relative_to(folder).as_posix()],
            }
        )
        source = f"task-{run.task}"
    else:
        table = read_events(events, stim_column=stim_column)
        # Narratives: a music row and a story row may name the same audio; the story rows
        # are the story
        told = (
            table["trial_type"].astype(str).str.strip().str.lower() == "story"
            if "trial_type" in table
            else pd.Series(False, index=table.index)
        )
        if not told.any():
            told[:] = True
        stories = [
            None if stim is None or not tells else transcript_for_stimulus(folder, stim)
            for stim, tells in zip(table["stim_id"], told, strict=True)
        ]
        if not any(stories):
            raise DataError(
                f"{events}: none of its stimuli tells a story with a transcript in {folder} "
                "(by file name, or a name it starts with)"
            )
        frame = pd.DataFrame(
            {
                "onset": table["onset"],
                "duration": table["duration"],
                stim_column: [
                    "n/a" if story is None else story.relative_to(folder).as_posix()
                    for story in stories
                ],
            }
        )
        source = events.name
    derived = Path(work_dir) / "events" / f"{run.name}_desc-story_events.tsv"
    write_text_atomic(derived, frame.to_csv(sep="\t", index=False, na_rep="n/a"))
    logger.info(
        "%s: story %s from %s",
        run.name,
        ", ".join(sorted(set(frame[stim_column]) - {"n/a"})),
        source,
    )
    return dataclasses.replace(run, events=derived)
