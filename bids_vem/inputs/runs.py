"""The unit of fMRI data bids_vem works on: one preprocessed BOLD run and what goes with it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from bids_vem.outputs.names import entity_prefix

__all__ = ["Run", "SkippedRun", "slice_time_reference"]


@dataclass(frozen=True)
class Run:
    """One BOLD run with its preprocessed derivatives.

    Attributes
    ----------
    subject, session, task, run, acquisition
        BIDS entities of the raw run (``session``, ``run`` and ``acquisition`` may be None).
    space : str
        Template or native space of ``bold`` (``MNI152NLin2009cAsym``, ``T1w``...).
    bold : Path
        Preprocessed BOLD (fMRIPrep ``space-<s>_desc-preproc_bold.nii.gz``).
    mask : Path or None
        Brain mask in the same space (``desc-brain_mask``); None when the derivatives have
        none (NOD): one is derived from the BOLD (:func:`bids_vem.encoding.bold.runs_mask`).
    events : Path
        Raw ``events.tsv`` of the run.
    confounds : Path or None
        fMRIPrep ``desc-confounds_timeseries.tsv`` (None when absent).
    tr : float
        Repetition time in seconds.
    n_volumes : int
        Number of volumes in ``bold``.
    bold_right : Path or None
        Surface BOLD of the right hemisphere when ``bold`` is the left one (GIFTI pairs);
        None for volumes and CIFTI (:mod:`bids_vem.inputs.surfaces`).
    """

    subject: str
    session: str | None
    task: str
    run: str | None
    acquisition: str | None
    space: str
    bold: Path
    mask: Path | None
    events: Path
    confounds: Path | None
    tr: float
    n_volumes: int
    bold_right: Path | None = None

    @property
    def name(self) -> str:
        """BIDS prefix of the run, e.g. ``sub-01_ses-1_task-scenes_run-2``."""
        return entity_prefix(
            {"sub": self.subject, "ses": self.session, "task": self.task}
            | {"acq": self.acquisition, "run": self.run}
        )

    def to_dict(self) -> dict:
        """JSON-ready dictionary (paths as strings)."""
        out = asdict(self)
        for key in ("bold", "mask", "events", "confounds", "bold_right"):
            out[key] = None if out[key] is None else str(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Run:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        for key in ("bold", "mask", "events", "confounds", "bold_right"):
            data[key] = None if data.get(key) is None else Path(data[key])
        return cls(**data)


def slice_time_reference(run: Run) -> float:
    """When in each TR the run's volumes were sampled, as a fraction of the TR (nilearn's
    ``slice_time_ref``), from the BOLD's JSON sidecar.

    fMRIPrep shifts every slice to one reference time when it corrects slice timing and
    writes ``SliceTimingCorrected: true`` and ``StartTime`` (seconds into the TR) beside the
    preprocessed BOLD; volume ``k`` then shows the brain at ``(k + StartTime / TR) * TR``.
    Without slice-timing correction (or a sidecar saying so) a volume is placed at the start
    of its TR, as nilearn's default: 0.
    """
    sidecar = run.bold.with_name(run.bold.name.split(".")[0] + ".json")
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0.0
    start = meta.get("StartTime")
    if not meta.get("SliceTimingCorrected") or not isinstance(start, (int, float)):
        return 0.0
    tr = float(meta.get("RepetitionTime") or run.tr)
    return min(max(float(start) / tr, 0.0), 1.0)


class SkippedRun(str):
    """A run found but not used: the sentence that says so, with ``subject`` and ``run``.

    A ``str`` (``"sub-01_task-x_run-1: no events.tsv ..."``) so that it logs and prints as
    the sentence; the fields say whose run it is without parsing the text.
    """

    subject: str
    run: str
    reason: str

    def __new__(cls, subject: str, run: str, reason: str) -> SkippedRun:
        sentence = super().__new__(cls, f"{run}: {reason}")
        sentence.subject, sentence.run, sentence.reason = subject, run, reason
        return sentence

    def to_dict(self) -> dict[str, str]:
        return {"subject": self.subject, "run": self.run, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> SkippedRun:
        return cls(data["subject"], data["run"], data["reason"])
