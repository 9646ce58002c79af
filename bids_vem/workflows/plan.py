"""What a participant-level run will do, worked out before any node runs.

Everything that can fail because of the user's input (missing runs, missing stimuli, a bad
model spec, captions that do not cover the stimuli) fails here, at once and with one line,
before hours of work start. The plan then drives the nipype graph.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bids_vem.config import RunConfig
from bids_vem.errors import DataError, UsageError
from bids_vem.features.captioning import CaptionerSpec, parse_captioner
from bids_vem.features.extract import expand_feature_space
from bids_vem.features.models import resolve_model_path
from bids_vem.features.specs import FeatureSpaceSpec, check_unique_names, parse_feature_space
from bids_vem.inputs.captions import read_captions
from bids_vem.inputs.layout import collect_runs_report, find_derivatives
from bids_vem.inputs.runs import Run
from bids_vem.inputs.stimuli import StimulusTable, build_stimulus_table
from bids_vem.outputs.atomic import write_text_atomic

__all__ = ["ParticipantPlan", "RunGroup", "plan_participant_level"]

log = logging.getLogger(__name__)


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
        ses = f"_ses-{self.session}" if self.session else ""
        return f"sub-{self.subject}{ses}_task-{self.task}"


@dataclass(frozen=True)
class ParticipantPlan:
    """Inputs found and work to do at the participant level."""

    runs: tuple[Run, ...]
    skipped_runs: tuple[str, ...]
    run_groups: tuple[RunGroup, ...]
    stimuli: StimulusTable
    stimulus_table_tsv: Path
    captions_tsv: Path | None
    #: every feature space fitted (a ``#layers`` spec stands for one per layer)
    feature_spaces: tuple[FeatureSpaceSpec, ...]
    derivatives: tuple[Path, ...]
    #: each model spec as given, with the feature spaces it stands for (one model load each)
    models: tuple[tuple[FeatureSpaceSpec, tuple[FeatureSpaceSpec, ...]], ...] = ()
    #: the captioner's (name, model path), when images are to be captioned
    captioner: CaptionerSpec | None = None
    #: stimuli the captioner captions (all images with --recaption, else those without human captions)
    to_caption: tuple[str, ...] = ()

    @property
    def subjects(self) -> list[str]:
        return sorted({run.subject for run in self.runs})


def _parse_feature_spaces(config: RunConfig) -> tuple[FeatureSpaceSpec, ...]:
    specs = [parse_feature_space(text, "text") for text in config.text_encoders]
    specs += [parse_feature_space(text, "image") for text in config.image_encoders]
    if not specs:
        raise UsageError(
            "no feature space to fit: give --text-encoder and/or --image-encoder "
            "(e.g. --text-encoder sentence:all-MiniLM-L6-v2)"
        )
    return tuple(specs)


def plan_participant_level(config: RunConfig, work_dir: Path) -> ParticipantPlan:
    """Collect runs, stimuli, captions and feature spaces for the participant level.

    Parameters
    ----------
    config : RunConfig
        The run's settings.
    work_dir : Path
        Work directory; the stimulus table and the captions used are written there.

    Returns
    -------
    ParticipantPlan

    Raises
    ------
    BidsVemError
        Any input problem, with its exit code (missing runs 18/66, missing stimuli 66, ...).
    """
    feature_spaces = _parse_feature_spaces(config)
    captioner = None
    if config.captioner and any(spec.modality == "text" for spec in feature_spaces):
        captioner = parse_captioner(config.captioner, config.model_dirs)
        log.info("captioner %s (%s): weights at %s", captioner.name, captioner.text, captioner.path)
    elif config.captioner:
        log.warning("--captioner is not used: no text feature space embeds captions")
    models = []
    for spec in feature_spaces:  # a missing model fails now (exit 66), not after hours of work
        path = resolve_model_path(spec, config.model_dirs, allow_downloads=config.allow_downloads)
        expanded = tuple(
            expand_feature_space(spec, config.model_dirs, allow_downloads=config.allow_downloads)
        )
        models.append((spec, expanded))
        names = ", ".join(fs.name for fs in expanded)
        log.info("feature space(s) %s (%s): weights at %s", names, spec.text, path)
    feature_spaces = tuple(fs for _, expanded in models for fs in expanded)
    check_unique_names(feature_spaces)
    derivatives = tuple(path for _, path in config.derivatives) or tuple(
        # our own outputs (BIDS_DIR/derivatives/bids_vem) hold no preprocessed BOLD
        path
        for path in find_derivatives(config.bids_dir)
        if path.resolve() != config.output_dir.resolve()
    )
    runs, skipped = collect_runs_report(
        config.bids_dir,
        derivatives=derivatives,
        participant_label=config.participant_label,
        session_label=config.session_label,
        task=config.task,
        space=config.space,
        bids_filters=config.bids_filters,
        stim_column=config.stim_column,
    )
    for sentence in skipped:
        log.warning("skipping %s", sentence)

    groups: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.subject, run.task, run.space)].append(run)
    run_groups = tuple(
        RunGroup(subject=s, task=t, space=sp, runs=tuple(group))
        for (s, t, sp), group in sorted(groups.items())
    )
    for group in run_groups:
        log.info(
            "%s: %d run(s) in %s (%s)",
            group.name,
            len(group.runs),
            group.space,
            ", ".join(run.name for run in group.runs),
        )

    stimuli = build_stimulus_table(
        config.bids_dir, [run.events for run in runs], config.stim_column
    )
    log.info("stimulus table: %d unique stimuli named in %s", len(stimuli), config.stim_column)
    if any(spec.modality == "image" for spec in feature_spaces):
        kinds = {stim.kind for stim in stimuli}
        if not (kinds <= {"image"} or kinds <= {"video"}):
            others = [stim.stim_id for stim in stimuli if stim.kind != "image"]
            raise DataError(
                f"image feature spaces embed images or videos, one kind per run: found {sorted(kinds)} "
                f"stimuli (first not an image: {', '.join(others[:5])}); select one kind with --task"
            )

    stories = bool(len(stimuli)) and all(stim.kind in ("text", "words") for stim in stimuli)
    needs_captions = any(spec.modality == "text" for spec in feature_spaces) and not stories
    if needs_captions and config.captions is None and not config.captioner:
        raise UsageError(
            "text feature spaces embed the stimulus captions: give --captions CAPTIONS.tsv "
            "(columns stim_file, caption) or a --captioner"
        )

    work_dir.mkdir(parents=True, exist_ok=True)
    table_tsv = work_dir / "stimuli" / "stimulus_table.tsv"
    table_tsv.parent.mkdir(parents=True, exist_ok=True)
    stimuli.to_tsv(table_tsv)

    captions_tsv, human = None, {}
    if config.captions is not None:
        # with a captioner, human captions may cover only some stimuli: it captions the rest
        human = read_captions(config.captions, None if captioner else stimuli.stim_ids)
        human = {stim_id: human[stim_id] for stim_id in stimuli.stim_ids if stim_id in human}
        log.info(
            "captions: %d human captions for %d stimuli from %s",
            sum(len(v) for v in human.values()),
            len(human),
            config.captions,
        )
        # a normalised copy (only our stimuli, sorted) so that the cache keys on content, not on the file
        captions_tsv = work_dir / "stimuli" / "captions.json"
        write_text_atomic(captions_tsv, json.dumps(human, indent=0, sort_keys=True))
    to_caption: tuple[str, ...] = ()
    if captioner is not None:
        to_caption = tuple(s for s in stimuli.stim_ids if config.recaption or s not in human)
        not_images = [s for s in to_caption if stimuli[s].kind != "image"]
        if not_images:
            raise DataError(
                f"the captioner captions images; {len(not_images)} stimuli without human captions are not "
                f"images (first: {', '.join(not_images[:5])})"
            )
        log.info(
            "captioner %s will caption %d of %d stimuli%s",
            captioner.name,
            len(to_caption),
            len(stimuli),
            " (--recaption)" if config.recaption else "",
        )
    return ParticipantPlan(
        runs=tuple(runs),
        skipped_runs=tuple(skipped),
        run_groups=run_groups,
        stimuli=stimuli,
        stimulus_table_tsv=table_tsv,
        captions_tsv=captions_tsv,
        feature_spaces=feature_spaces,
        derivatives=derivatives,
        captioner=captioner,
        to_caption=to_caption,
        models=tuple(models),
    )
