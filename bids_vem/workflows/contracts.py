"""The contracts between stages: what planning hands to the steps that write the outputs.

Each is a frozen dataclass that serialises to JSON and back (``to_dict``/``from_dict``, as
:class:`~bids_vem.inputs.runs.Run`), so a node reads typed fields, never string keys of a
dictionary. Results are matched to run groups and feature spaces by name, never by order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bids_vem.inputs.runs import Run, SkippedRun
from bids_vem.outputs.names import entity_prefix

__all__ = [
    "AlignmentEntry",
    "FeatureSpaceEntry",
    "FitRecord",
    "OutputPlan",
    "RunGroup",
    "SkippedRun",
    "TransferEntry",
]


@dataclass(frozen=True)
class RunGroup:
    """The runs one encoding model is fitted on: one participant, one task (sessions pooled)."""

    subject: str
    task: str
    space: str
    runs: tuple[Run, ...]

    @property
    def session(self) -> str | None:
        """The session label when every run shares one, else None (the maps then carry no ses-)."""
        sessions = {run.session for run in self.runs}
        return sessions.pop() if len(sessions) == 1 else None

    @property
    def name(self) -> str:
        """``sub-XX[_ses-YY]_task-ZZ``."""
        return entity_prefix({"sub": self.subject, "ses": self.session, "task": self.task})

    @property
    def entities(self) -> dict[str, str | None]:
        """The BIDS entities of the group's maps: sub, ses, task, space."""
        return {"sub": self.subject, "ses": self.session, "task": self.task, "space": self.space}

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "task": self.task,
            "space": self.space,
            "runs": [run.to_dict() for run in self.runs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunGroup:
        runs = tuple(Run.from_dict(run) for run in data["runs"])
        return cls(data["subject"], data["task"], data["space"], runs)


@dataclass(frozen=True)
class FeatureSpaceEntry:
    """A fitted feature space as the outputs name and describe it."""

    name: str
    spec: str
    modality: str
    family: str
    #: for the aligned space: the image space it aligns and the text space it aligns to
    base: str | None = None
    target: str | None = None
    #: for one layer of a ``#layers=`` spec: the spec's name and the layer (number or pooler)
    layer_of: str | None = None
    layer: int | str | None = None


@dataclass(frozen=True)
class TransferEntry:
    """One direction of one ``--transfer``: the model of ``source_task``'s runs in
    ``source_space`` predicts ``target_task``'s runs from their features in ``target_space``."""

    source_task: str
    target_task: str
    source_space: str
    target_space: str
    #: ``same`` (one feature space embeds both tasks' stimuli), ``shared`` (the text and image
    #: towers of one model) or ``mapped`` (separate encoders, through a linear map fitted on
    #: the --transfer-corpus: the unimodal control)
    kind: str

    @property
    def name(self) -> str:
        """The ``desc-`` of its maps: ``<sourceSpace>To<TargetSpace>From<SourceTask>``."""

        def upper(label: str) -> str:
            return label[:1].upper() + label[1:]

        return f"{self.source_space}To{upper(self.target_space)}From{upper(self.source_task)}"


@dataclass(frozen=True)
class AlignmentEntry:
    """The LLM-VEM alignment as the outputs report it."""

    name: str
    base: str
    target: str
    corpus: str | None
    #: the AlignConfig hyperparameters the run used (seed included)
    settings: dict[str, Any]
    #: run group name -> the names of its alignment folds (last: ``final``)
    folds: dict[str, list[str]]


@dataclass(frozen=True)
class OutputPlan:
    """What the output steps need to know of a participant-level run (``plan.json``)."""

    bids_dir: Path
    space: str
    #: model and CV parameters written in every stat-map sidecar
    parameters: dict[str, Any]
    feature_spaces: tuple[FeatureSpaceEntry, ...]
    run_groups: tuple[RunGroup, ...]
    alignment: AlignmentEntry | None = None
    rois: tuple[tuple[str, Path], ...] = ()
    atlases: tuple[str, ...] = ()
    skipped_runs: tuple[SkippedRun, ...] = ()
    n_stimuli: int = 0
    captions: Path | None = None
    derivatives: tuple[Path, ...] = field(default_factory=tuple)
    #: the feature spaces of each banded ridge (--joint)
    joints: tuple[tuple[str, ...], ...] = ()
    #: the text spaces decoded (--decode), the corpus's caption count, the null's permutations
    decode: tuple[str, ...] = ()
    decode_corpus: int = 0
    decode_permutations: int = 0
    #: --rsa, and its searchlight radius (mm; 0: none)
    rsa: bool = False
    rsa_radius: float = 0.0
    #: per run group name, the feature spaces fitted to it when not every space embeds its
    #: stimuli (stories and movies in one run: text spaces on the stories, image spaces on
    #: the movies); a group not named fits every feature space
    group_spaces: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: --transfer, each direction and pair of feature spaces
    transfers: tuple[TransferEntry, ...] = ()
    transfer_permutations: int = 0
    #: the stimulus table and the captions used ({stim_id: [captions]}, JSON) in the work
    #: directory, for the report's strip of stimuli
    stimulus_table: Path | None = None
    captions_json: Path | None = None

    def spaces_of(self, group: RunGroup) -> tuple[FeatureSpaceEntry, ...]:
        """The feature spaces fitted to ``group``'s runs."""
        names = self.group_spaces.get(group.name)
        if names is None:
            return self.feature_spaces
        return tuple(fs for fs in self.feature_spaces if fs.name in names)

    def groups_of(self, subject: str) -> list[RunGroup]:
        """The run groups of one participant, in plan order."""
        return [group for group in self.run_groups if group.subject == subject]

    def to_dict(self) -> dict[str, Any]:
        return {
            "bids_dir": str(self.bids_dir),
            "space": self.space,
            "parameters": self.parameters,
            "feature_spaces": [asdict(fs) for fs in self.feature_spaces],
            "run_groups": [group.to_dict() for group in self.run_groups],
            "alignment": None if self.alignment is None else asdict(self.alignment),
            "rois": [[name, str(path)] for name, path in self.rois],
            "atlases": list(self.atlases),
            "skipped_runs": [skipped.to_dict() for skipped in self.skipped_runs],
            "n_stimuli": self.n_stimuli,
            "captions": None if self.captions is None else str(self.captions),
            "derivatives": [str(path) for path in self.derivatives],
            "joints": [list(spaces) for spaces in self.joints],
            "decode": list(self.decode),
            "decode_corpus": self.decode_corpus,
            "decode_permutations": self.decode_permutations,
            "rsa": self.rsa,
            "rsa_radius": self.rsa_radius,
            "group_spaces": {k: list(v) for k, v in self.group_spaces.items()},
            "transfers": [asdict(t) for t in self.transfers],
            "transfer_permutations": self.transfer_permutations,
            "stimulus_table": None if self.stimulus_table is None else str(self.stimulus_table),
            "captions_json": None if self.captions_json is None else str(self.captions_json),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutputPlan:
        alignment = data.get("alignment")
        return cls(
            bids_dir=Path(data["bids_dir"]),
            space=data["space"],
            parameters=dict(data["parameters"]),
            feature_spaces=tuple(FeatureSpaceEntry(**fs) for fs in data["feature_spaces"]),
            run_groups=tuple(RunGroup.from_dict(group) for group in data["run_groups"]),
            alignment=None if alignment is None else AlignmentEntry(**alignment),
            rois=tuple((name, Path(path)) for name, path in data.get("rois", [])),
            atlases=tuple(data.get("atlases", [])),
            skipped_runs=tuple(SkippedRun.from_dict(s) for s in data.get("skipped_runs", [])),
            n_stimuli=int(data.get("n_stimuli", 0)),
            captions=None if data.get("captions") is None else Path(data["captions"]),
            derivatives=tuple(Path(path) for path in data.get("derivatives", [])),
            joints=tuple(tuple(spaces) for spaces in data.get("joints", [])),
            decode=tuple(data.get("decode", [])),
            decode_corpus=int(data.get("decode_corpus", 0)),
            decode_permutations=int(data.get("decode_permutations", 0)),
            rsa=bool(data.get("rsa", False)),
            rsa_radius=float(data.get("rsa_radius", 0.0)),
            group_spaces={k: tuple(v) for k, v in data.get("group_spaces", {}).items()},
            transfers=tuple(TransferEntry(**t) for t in data.get("transfers", [])),
            transfer_permutations=int(data.get("transfer_permutations", 0)),
            stimulus_table=Path(data["stimulus_table"]) if data.get("stimulus_table") else None,
            captions_json=Path(data["captions_json"]) if data.get("captions_json") else None,
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> OutputPlan:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class FitRecord:
    """What one encoding step produced, named by its run group and feature space."""

    run_group: str
    feature_space: str
    #: the EncodingResult .npz
    result: Path
    #: the weights .npy (--save-weights), else None
    weights: Path | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.run_group, self.feature_space

    def write(self, path: Path) -> Path:
        """Write the record as JSON to ``path``; returns the path."""
        data = {k: None if v is None else str(v) for k, v in asdict(self).items()}
        Path(path).write_text(json.dumps(data, indent=1))
        return Path(path)

    @classmethod
    def read(cls, path: Path) -> FitRecord:
        data = json.loads(Path(path).read_text())
        weights = data.get("weights")
        return cls(
            data["run_group"], data["feature_space"], Path(data["result"]),
            Path(weights) if weights else None,
        )  # fmt: skip
