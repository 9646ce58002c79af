"""What a participant-level run will do, worked out before any node runs.

Everything that can fail because of the user's input (missing runs, missing stimuli, a bad
model spec, captions that do not cover the stimuli) fails here, at once and with one line,
before hours of work start. The plan then drives the nipype graph.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from bids_vem.alignment.folds import AlignmentFold, plan_alignment_folds
from bids_vem.config import RunConfig, option_name
from bids_vem.errors import DataError, InputMissingError, UsageError
from bids_vem.features.batching import check_images
from bids_vem.features.captioning import CaptionerSpec, parse_captioner
from bids_vem.features.extract import expand_feature_space
from bids_vem.features.models import resolve_model_path
from bids_vem.features.specs import FeatureSpaceSpec, check_unique_names, parse_feature_space
from bids_vem.inputs.captions import read_captions
from bids_vem.inputs.checks import check_runs
from bids_vem.inputs.layout import collect_runs_report, find_derivatives
from bids_vem.inputs.runs import Run, SkippedRun
from bids_vem.inputs.stimuli import StimulusTable, build_stimulus_table
from bids_vem.inputs.surfaces import bold_kind
from bids_vem.inputs.transcripts import story_run
from bids_vem.outputs.atomic import write_text_atomic
from bids_vem.workflows.contracts import FeatureSpaceEntry, RunGroup, TransferEntry

__all__ = ["AlignmentPlan", "ParticipantPlan", "RunGroup", "plan_participant_level"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlignmentPlan:
    """The LLM-VEM alignment: which encoder is aligned to which captions, on which images."""

    name: str
    base: FeatureSpaceSpec
    target: FeatureSpaceSpec
    #: an external image-caption corpus folder (None: the run groups' own stimuli, by fold)
    corpus: Path | None
    #: per run group name, its alignment folds ending with ``final`` (empty with a corpus)
    folds: dict[str, tuple[AlignmentFold, ...]]

    def feature_space_entry(self) -> FeatureSpaceEntry:
        """The aligned feature space as the outputs list feature spaces."""
        return FeatureSpaceEntry(
            name=self.name,
            spec=f"{self.base.text} aligned to {self.target.name} caption embeddings",
            modality="image",
            family="aligned",
            base=self.base.name,
            target=self.target.name,
        )


@dataclass(frozen=True)
class ParticipantPlan:
    """Inputs found and work to do at the participant level."""

    runs: tuple[Run, ...]
    skipped_runs: tuple[SkippedRun, ...]
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
    #: the alignment stage (--align), else None
    alignment: AlignmentPlan | None = None
    #: regions of interest (name, mask path) for the summaries
    rois: tuple[tuple[str, Path], ...] = ()
    #: parcellations that summarise surface maps (--atlas)
    atlases: tuple[str, ...] = ()
    #: per run group name, the user's single-trial betas (--betas): (image, table) pairs, one
    #: per group, run or session
    betas: dict[str, tuple[tuple[Path, Path], ...]] | None = None
    #: captions in --decode-corpus (0: none)
    decode_corpus_size: int = 0
    #: per model spec name, the stimuli it embeds when not all (stories and movies in one
    #: run: text spaces embed the stories, image spaces the movies); a spec not named embeds all
    spec_stimuli: dict[str, tuple[str, ...]] | None = None
    #: per run group name, the feature spaces fitted to it when not all of them
    group_spaces: dict[str, tuple[str, ...]] | None = None
    #: --transfer: each direction and pair of feature spaces
    transfers: tuple[TransferEntry, ...] = ()

    def spaces_of(self, group: RunGroup) -> tuple[FeatureSpaceSpec, ...]:
        """The feature spaces fitted to ``group``'s runs."""
        names = (self.group_spaces or {}).get(group.name)
        if names is None:
            return self.feature_spaces
        return tuple(fs for fs in self.feature_spaces if fs.name in names)

    @property
    def feature_maps(self) -> tuple[tuple[str, str], ...]:
        """(text space, image space) of every linear map ``--transfer`` needs (the unimodal
        control), each once."""
        modality = {fs.name: fs.modality for fs in self.feature_spaces}
        pairs = {
            tuple(sorted((t.source_space, t.target_space), key=lambda n: modality[n] != "text"))
            for t in self.transfers
            if t.kind == "mapped"
        }
        return tuple(sorted(pairs))

    @property
    def subjects(self) -> list[str]:
        return sorted({run.subject for run in self.runs})


def _parse_feature_spaces(config: RunConfig) -> tuple[FeatureSpaceSpec, ...]:
    specs = [parse_feature_space(text, "text") for text in config.text_encoders]
    specs += [parse_feature_space(text, "image") for text in config.image_encoders]
    if not specs:
        raise UsageError(
            f"no feature space to fit: give {option_name('text_encoders')} and/or {option_name('image_encoders')} "
            f"(e.g. {option_name('text_encoders')} sentence:all-MiniLM-L6-v2)"
        )
    return tuple(specs)


#: the task label of the maps of a model fitted across tasks (--pool-tasks)
POOLED_TASK = "pooled"


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
    captioner, models = _plan_models(config)
    feature_spaces = tuple(fs for _, expanded in models for fs in expanded)
    check_unique_names(feature_spaces)
    _check_joint_sets(config, feature_spaces)
    derivatives, runs, skipped, run_groups = _plan_runs(config, work_dir)
    stimuli, table_tsv = _plan_stimuli(config, runs, feature_spaces, work_dir)
    spec_stimuli, group_spaces = _plan_coverage(config, models, stimuli, run_groups)
    transfers = _plan_transfers(config, models, run_groups, group_spaces)
    captions_tsv, to_caption = _plan_captions(config, stimuli, captioner, work_dir)
    for group in run_groups:
        _check_evaluation(config, group)
    betas = _check_trialwise(config, run_groups, stimuli, work_dir)
    corpus_size = _check_decoding(config, feature_spaces, stimuli)
    _check_rsa(config, stimuli, runs)
    # alignment folds follow the encoding's test runs or session folds (checked above)
    alignment = _plan_alignment(config, models, run_groups, stimuli) if config.align else None
    for name, path in config.rois:
        if not path.is_file():
            raise InputMissingError(f"{option_name('rois')} {name}={path}: no such file")
    _check_surface_rois(config, runs)
    if config.atlases and any(bold_kind(run.bold) != "cifti" for run in runs):
        raise UsageError(
            f"{option_name('atlases')} {', '.join(config.atlases)}: the atlases are on fsLR 32k; "
            f"use {option_name('space')} fsLR (CIFTI), or {option_name('rois')} with a mask in "
            "the space of the maps"
        )
    return ParticipantPlan(
        spec_stimuli=spec_stimuli or None,
        group_spaces=group_spaces or None,
        transfers=transfers,
        decode_corpus_size=corpus_size,
        alignment=alignment,
        rois=config.rois,
        atlases=config.atlases,
        betas=betas,
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


def _check_joint_sets(config: RunConfig, feature_spaces) -> None:
    """Every ``--joint`` names feature spaces of this run (the aligned space has per-fold
    features, which a joint model does not take)."""
    names = [fs.name for fs in feature_spaces]
    if config.analyses.joint_sets and (config.test_runs or config.test_stimuli):
        logger.warning(
            "%s is evaluated by nested cross-validation over all runs (or stimuli); %s and %s "
            "apply to the single-space models only",
            option_name("joint"), option_name("test_runs"), option_name("test_stimuli"),
        )  # fmt: skip
    for spaces in config.analyses.joint_sets:
        unknown = [name for name in spaces if name not in names]
        if unknown:
            aligned = config.align and config.align_name in unknown
            raise UsageError(
                f"{option_name('joint')} {','.join(spaces)}: "
                + (
                    f"the aligned space {config.align_name} has per-fold features and cannot "
                    "enter a joint model"
                    if aligned
                    else f"no feature space {', '.join(unknown)} (this run fits {', '.join(names)})"
                )
            )


def _check_decoding(config: RunConfig, feature_spaces, stimuli: StimulusTable) -> int:
    """``--decode`` names text feature spaces of this run; decoding needs one response per
    image (single trials); the corpus reads. Returns the corpus's caption count."""
    from bids_vem.inputs.captions import read_caption_corpus

    if not config.decode:
        if config.decode_corpus is not None:
            logger.warning(
                "%s is not used: no %s", option_name("decode_corpus"), option_name("decode")
            )
        return 0
    modality = {fs.name: fs.modality for fs in feature_spaces}
    for name in config.decode:
        if modality.get(name) != "text":
            found = ", ".join(n for n, m in modality.items() if m == "text") or "none"
            raise UsageError(
                f"{option_name('decode')} {name}: not a text feature space of this run "
                f"(text feature spaces: {found})"
            )
    kinds = sorted({s.kind for s in stimuli} - {"image"})
    if kinds:
        raise UsageError(
            f"{option_name('decode')}: caption decoding reads one response per image trial; "
            f"these runs also show {', '.join(kinds)} stimuli"
        )
    if config.decode_corpus is None:
        return 0
    n = len(read_caption_corpus(config.decode_corpus))
    logger.info("decoding corpus: %d captions from %s", n, config.decode_corpus)
    return n


def _check_rsa(config: RunConfig, stimuli: StimulusTable, runs) -> None:
    """``--rsa`` reads one response pattern per image from single trials; a surface
    searchlight needs a template mesh."""
    if not config.rsa:
        return
    kinds = sorted({s.kind for s in stimuli} - {"image"})
    if kinds:
        raise UsageError(
            f"{option_name('rsa')}: RSA reads one response pattern per image trial; these runs "
            f"also show {', '.join(kinds)} stimuli"
        )
    if config.rsa_radius > 0 and runs and bold_kind(runs[0].bold) != "volume":
        space = config.space
        if space not in ("fsaverage5", "fsLR"):
            raise UsageError(
                f"{option_name('rsa')}: a surface searchlight needs a template mesh offline "
                f"(fsaverage5 or fsLR); {option_name('space')} {space} has none here (set "
                f"{option_name('rsa_radius')} 0 for region RSA only)"
            )


def _plan_models(config: RunConfig):
    """The captioner and each model spec with the feature spaces it stands for, all resolved.

    A missing model fails now (exit 66), not after hours of work.
    """
    feature_spaces = _parse_feature_spaces(config)
    captioner = None
    if config.captioner and any(spec.modality == "text" for spec in feature_spaces):
        captioner = parse_captioner(config.captioner, config.model_dirs)
        logger.info(
            "captioner %s (%s): weights at %s", captioner.name, captioner.text, captioner.path
        )
    elif config.captioner:
        logger.warning(
            f"{option_name('captioner')} is not used: no text feature space embeds captions"
        )
    models = []
    for spec in feature_spaces:
        path = resolve_model_path(spec, config.model_dirs, allow_downloads=config.allow_downloads)
        expanded = tuple(
            expand_feature_space(spec, config.model_dirs, allow_downloads=config.allow_downloads)
        )
        models.append((spec, expanded))
        names = ", ".join(fs.name for fs in expanded)
        logger.info("feature space(s) %s (%s): weights at %s", names, spec.text, path)
    return captioner, models


def _plan_runs(config: RunConfig, work_dir: Path):
    """The derivative datasets read, the usable runs, the skipped ones, and the run groups."""
    derivatives = tuple(path for _, path in config.derivatives) or tuple(
        # our own outputs (BIDS_DIR/derivatives/bids_vem) hold no preprocessed BOLD
        path
        for path in find_derivatives(config.bids_dir)
        if path.resolve() != config.output_dir.resolve()
    )
    runs, skipped = collect_runs_report(
        config.bids_dir, derivatives=derivatives, **config.inputs.run_query()
    )
    if config.transcripts is not None:
        # each run's story, as derived events in the work directory
        runs = [story_run(run, config.transcripts, config.stim_column, work_dir) for run in runs]
    continuous = config.design != "trialwise"
    check_runs(
        runs,
        confounds=config.confounds,
        delays=config.delays if continuous else (),
        delays_seconds=config.delays_seconds if continuous else (),
    )
    groups: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        # --pool-tasks: one model over the tasks (Lebel et al.: one story per task)
        task = POOLED_TASK if config.pool_tasks else run.task
        groups[(run.subject, task, run.space)].append(run)
    run_groups = tuple(
        RunGroup(subject=s, task=t, space=sp, runs=tuple(group))
        for (s, t, sp), group in sorted(groups.items())
    )
    for group in run_groups:
        logger.info(
            "%s: %d run(s) in %s (%s)",
            group.name,
            len(group.runs),
            group.space,
            ", ".join(run.name for run in group.runs),
        )
    return derivatives, runs, skipped, run_groups


def _plan_stimuli(config: RunConfig, runs, feature_spaces, work_dir: Path):
    """The table of unique stimuli (written to the work dir), checked against the spaces."""
    folders = [f for f in (config.stimuli_dir, config.transcripts) if f is not None]
    stimuli = build_stimulus_table(
        config.bids_dir, [run.events for run in runs], config.stim_column, folders or None
    )
    logger.info("stimulus table: %d unique stimuli named in %s", len(stimuli), config.stim_column)
    images = [stim.path for stim in stimuli if stim.kind == "image"]
    if images and (
        any(spec.modality == "image" for spec in feature_spaces) or config.captioner or config.align
    ):
        # a corrupt image fails now, named, not after an hour of features or alignment
        logger.info("checking that %d stimulus images decode", len(images))
        check_images(images)
    # with stories among the stimuli, text spaces embed the stories (_plan_coverage)
    stories = any(stim.kind in STORY_KINDS for stim in stimuli)
    labels = bool(len(stimuli)) and all(stim.kind == "label" for stim in stimuli)
    needs_captions = (
        any(spec.modality == "text" for spec in feature_spaces) and not stories and not labels
    )
    if needs_captions and config.captions is None and not config.captioner:
        raise UsageError(
            f"text feature spaces embed the stimulus captions: give {option_name('captions')} "
            f"CAPTIONS.tsv (columns stim_file, caption) or a {option_name('captioner')}"
        )
    table_tsv = work_dir / "stimuli" / "stimulus_table.tsv"
    table_tsv.parent.mkdir(parents=True, exist_ok=True)
    stimuli.to_tsv(table_tsv)
    return stimuli, table_tsv


#: stimulus kinds that are stories (text spaces embed them as words in context)
STORY_KINDS = ("text", "words")


def _plan_coverage(config: RunConfig, models, stimuli: StimulusTable, run_groups):
    """Which stimuli each model spec embeds, and which feature spaces each run group fits.

    Every space embeds every stimulus, except when stories and other stimuli meet in one run
    (a story task and a movie task for ``--transfer``): then text spaces embed the stories
    and image spaces the images or videos, and each run group fits the spaces that embed all
    its stimuli. Returns ({spec name: stimulus ids}, {run group name: feature-space names}),
    both empty when every space embeds everything.
    """
    stories = [s.stim_id for s in stimuli if s.kind in STORY_KINDS]
    others = [s for s in stimuli if s.kind not in STORY_KINDS]
    mixed = bool(stories) and bool(others)
    pictures = others if mixed else list(stimuli)
    if any(spec.modality == "image" for spec, _ in models):
        kinds = {stim.kind for stim in pictures}
        if not pictures or not (kinds <= {"image"} or kinds <= {"video"}):
            odd = [stim.stim_id for stim in pictures if stim.kind != "image"] or stories
            raise DataError(
                f"image feature spaces embed images or videos, one kind per run: found "
                f"{sorted(kinds) or ['text']} stimuli (first not an image: {', '.join(odd[:5])}); "
                f"select one kind with {option_name('task')}"
            )
    if not mixed:
        return {}, {}
    if config.align:
        raise UsageError(
            f"{option_name('align')} aligns an image encoder on image stimuli; these runs also "
            f"tell stories ({', '.join(stories[:3])}): select the image tasks with {option_name('task')}"
        )
    picture_ids = tuple(s.stim_id for s in pictures)
    spec_stimuli = {
        spec.name: tuple(stories) if spec.modality == "text" else picture_ids for spec, _ in models
    }
    group_spaces = {}
    for group in run_groups:
        shown = {s for run in group.runs for s in _run_stimulus_ids(run, config.stim_column)}
        names = tuple(
            fs.name
            for spec, expanded in models
            if shown <= set(spec_stimuli[spec.name])
            for fs in expanded
        )
        if not names:
            kinds = sorted({str(stimuli[s].kind) for s in shown})
            raise DataError(
                f"{group.name}: no feature space embeds all its stimuli ({', '.join(kinds)}): "
                f"text spaces embed the stories of these runs, image spaces images or videos "
                f"(one kind per task)"
            )
        group_spaces[group.name] = names
        logger.info("%s: fits %s (the spaces that embed its stimuli)", group.name, ", ".join(names))
    for spaces in config.analyses.joint_sets:
        if not any(set(spaces) <= set(names) for names in group_spaces.values()):
            raise UsageError(
                f"{option_name('joint')} {','.join(spaces)}: no task's stimuli are embedded by "
                "all of these feature spaces"
            )
    return spec_stimuli, group_spaces


def _transfer_kind(source: FeatureSpaceSpec, target: FeatureSpaceSpec, corpus: bool) -> str | None:
    """How the model of ``source`` features applies to ``target`` features (TransferEntry)."""
    if source.name == target.name:
        return "same"
    if source.modality == target.modality:
        return None
    if (source.family, source.model, source.weights, source.layer) == (
        target.family, target.model, target.weights, target.layer,
    ):  # fmt: skip
        return "shared"
    if corpus and source.layer is None and target.layer is None:
        return "mapped"
    return None


def _plan_transfers(
    config: RunConfig, models, run_groups: tuple[RunGroup, ...], group_spaces: dict
) -> tuple[TransferEntry, ...]:
    """Each direction of each ``--transfer`` with every pair of feature spaces that carries a
    model from one task's stimuli to the other's (:func:`_transfer_kind`)."""
    analyses = config.analyses
    if not analyses.transfer:
        if analyses.transfer_corpus is not None:
            logger.warning(
                "%s is not used: no %s", option_name("transfer_corpus"), option_name("transfer")
            )
        return ()
    option = option_name("transfer")
    if config.design != "continuous":
        raise UsageError(
            f"{option} predicts the target task's BOLD time courses: use {option_name('design')} continuous"
        )
    if config.pool_tasks:
        raise UsageError(
            f"{option} trains on one task and tests on another: leave out {option_name('pool_tasks')}"
        )
    if analyses.transfer_corpus is not None:
        from bids_vem.alignment.stage import read_alignment_corpus

        corpus = read_alignment_corpus(analyses.transfer_corpus, "transfer_corpus")
        logger.info("transfer corpus: %d captioned images from %s", len(corpus.images), corpus.root)
    specs = {fs.name: fs for _, expanded in models for fs in expanded}
    entries = []
    for pair in analyses.transfer_pairs:
        spaces: dict[str, set[str]] = {}
        for task in pair:
            groups = [g for g in run_groups if g.task == task]
            if not groups:
                found = ", ".join(sorted({g.task for g in run_groups}))
                raise UsageError(
                    f"{option} {':'.join(pair)}: no runs of task {task} (tasks: {found})"
                )
            spaces[task] = {n for g in groups for n in group_spaces.get(g.name, specs)}
        subjects = [{(g.subject, g.space) for g in run_groups if g.task == task} for task in pair]
        if not subjects[0] & subjects[1]:
            raise UsageError(
                f"{option} {':'.join(pair)}: no participant has runs of both tasks in one space"
            )
        for source, target in (pair, pair[::-1]):
            found = [
                TransferEntry(source, target, s, t, kind)
                for s in sorted(spaces[source])
                for t in sorted(spaces[target])
                if (
                    kind := _transfer_kind(specs[s], specs[t], analyses.transfer_corpus is not None)
                )
            ]
            if not found:
                raise UsageError(
                    f"{option} {':'.join(pair)}: no feature-space pair carries a model of {source} "
                    f"({', '.join(sorted(spaces[source]))}) to {target} ({', '.join(sorted(spaces[target]))}); "
                    "give one model's text and image towers (bridgetower, openclip) as "
                    f"{option_name('text_encoders')} and {option_name('image_encoders')}, or "
                    f"{option_name('transfer_corpus')} for separate encoders"
                )
            entries += found
            logger.info(
                "transfer %s -> %s: %s", source, target,
                ", ".join(f"{e.source_space}->{e.target_space} ({e.kind})" for e in found),
            )  # fmt: skip
    return tuple(entries)


def _plan_captions(config: RunConfig, stimuli, captioner, work_dir: Path):
    """The human captions used (a normalised copy in the work dir) and what the captioner does."""
    captions_tsv, human = None, {}
    if config.captions is not None:
        # with a captioner, human captions may cover only some stimuli: it captions the rest
        human = read_captions(config.captions, None if captioner else stimuli.stim_ids)
        human = {stim_id: human[stim_id] for stim_id in stimuli.stim_ids if stim_id in human}
        logger.info(
            "captions: %d human captions for %d stimuli from %s",
            sum(len(v) for v in human.values()),
            len(human),
            config.captions,
        )
    labels = {
        s.stim_id: [s.stim_id] for s in stimuli if s.kind == "label" and s.stim_id not in human
    }
    if labels:  # a label (Haxby's "face") is its own caption
        human = {**labels, **human}
        logger.info("captions: the %d labels are their own captions", len(labels))
    if human or config.captions is not None:
        # a normalised copy (only our stimuli, sorted): the cache keys on content, not the file
        captions_tsv = work_dir / "stimuli" / "captions.json"
        write_text_atomic(captions_tsv, json.dumps(human, indent=0, sort_keys=True))
    to_caption: tuple[str, ...] = ()
    if captioner is not None:
        to_caption = tuple(s for s in stimuli.stim_ids if config.recaption or s not in human)
        not_images = [s for s in to_caption if stimuli[s].kind != "image"]
        if not_images:
            raise DataError(
                f"the captioner captions images; {len(not_images)} stimuli without human "
                f"captions are not images (first: {', '.join(not_images[:5])})"
            )
        logger.info(
            "captioner %s will caption %d of %d stimuli%s",
            captioner.name,
            len(to_caption),
            len(stimuli),
            f" ({option_name('recaption')})" if config.recaption else "",
        )
    return captions_tsv, to_caption


def _pick(
    specs: list[FeatureSpaceSpec], wanted: str | None, option: str, what: str
) -> FeatureSpaceSpec:
    if not specs:
        raise UsageError(f"{option_name('align')} needs {what}")
    if wanted is None:
        return specs[0]
    for spec in specs:
        if spec.name == wanted:
            return spec
    names = ", ".join(spec.name for spec in specs)
    raise UsageError(f"{option} {wanted}: no such feature space; choose one of {names}")


def _run_stimulus_ids(run: Run, stim_column: str) -> list[str]:
    from bids_vem.inputs.events import read_events

    return [str(s) for s in read_events(run.events, stim_column)["stim_id"].dropna().unique()]


def _encoding_folds(config: RunConfig, group: RunGroup) -> list[list[int]] | None:
    """The runs the encoding predicts together, when alignment folds must follow them.

    With --test-runs one alignment holds out all the test runs; with --cv-groups session one
    alignment per session; else None (--align-folds groups of runs).
    """
    from bids_vem.encoding.evaluation import select_test_runs

    if config.test_runs:
        return [sorted(select_test_runs(group.runs, config.test_runs, group.name))]
    if config.cv_groups == "session":
        sessions = list(dict.fromkeys(run.session for run in group.runs))
        return [[i for i, run in enumerate(group.runs) if run.session == s] for s in sessions]
    return None


def _stimulus_folds(config: RunConfig, group: RunGroup, run_stimuli) -> list[list[str]] | None:
    """The held-out stimuli of each fold when the encoding of ``group`` holds out stimuli
    (``--test-stimuli``, ``--cv-groups stimulus``, or ``auto`` with stimuli repeated across
    runs): the alignment of a fold must not see them. Else None."""
    from bids_vem.encoding.model import test_stimulus_mask
    from bids_vem.encoding.stimulus_folds import deal_stimuli, n_stimulus_folds

    if config.test_runs or config.cv_groups in ("run", "session"):
        return None
    every = sorted({s for _, ids in run_stimuli for s in ids})
    if config.test_stimuli:
        mask = test_stimulus_mask(config.test_stimuli, every, group.runs, config.stim_column)
        return [[s for s, held in zip(every, mask, strict=True) if held]]
    counts: dict[str, int] = {}
    for _, ids in run_stimuli:
        for s in set(ids):
            counts[s] = counts.get(s, 0) + 1
    if config.cv_groups == "auto" and max(counts.values(), default=0) < 2:
        return None
    n_folds = n_stimulus_folds(len(group.runs), len(every), config.design == "trialwise")
    return deal_stimuli(every, n_folds) if n_folds >= 2 else None


def _plan_alignment(
    config: RunConfig,
    models: list[tuple[FeatureSpaceSpec, tuple[FeatureSpaceSpec, ...]]],
    run_groups: tuple[RunGroup, ...],
    stimuli: StimulusTable,
) -> AlignmentPlan:
    """Check what --align needs and plan the folds of every run group (module docstring)."""
    from bids_vem.alignment.stage import read_alignment_corpus

    specs = [spec for spec, _ in models]
    base = _pick(
        [s for s in specs if s.modality == "image" and s.family == "openclip"],
        config.align_base,
        f"{option_name('align_base')}",
        f"an open_clip image feature space ({option_name('image_encoders')} openclip:...)",
    )
    target = _pick(
        [s for s in specs if s.modality == "text"],
        config.align_target,
        f"{option_name('align_target')}",
        f"a text feature space of the captions ({option_name('text_encoders')} ...)",
    )
    taken = {fs.name for _, expanded in models for fs in expanded}
    if config.align_name in taken:
        raise UsageError(
            f"{option_name('align_name')} {config.align_name}: a feature space of that name exists already"
        )
    kinds = {stim.kind for stim in stimuli}
    if config.align_corpus is not None:
        corpus = read_alignment_corpus(config.align_corpus)
        logger.info(
            "alignment: %s aligned to %s on %d corpus images from %s",
            base.name,
            target.name,
            len(corpus.images),
            corpus.root,
        )
        return AlignmentPlan(config.align_name, base, target, corpus.root, {})
    if kinds != {"image"}:
        raise DataError(
            f"{option_name('align')} trains on the stimulus images and their captions, but the stimuli are "
            f"{', '.join(sorted(kinds))}; give an image-caption corpus with {option_name('align_corpus')}"
        )
    folds = {}
    for group in run_groups:
        run_stimuli = [(run.name, _run_stimulus_ids(run, config.stim_column)) for run in group.runs]
        try:
            folds[group.name] = tuple(
                plan_alignment_folds(
                    run_stimuli,
                    config.align_folds,
                    groups=_encoding_folds(config, group),
                    stimulus_groups=_stimulus_folds(config, group, run_stimuli),
                )
            )
        except DataError as err:
            raise DataError(f"{group.name}: {err.message}") from err
        logger.info(
            "%s: %s aligned to %s caption embeddings in %d fold(s) of held-out runs + a final "
            "alignment on all %d stimuli",
            group.name,
            base.name,
            target.name,
            len(folds[group.name]) - 1,
            len(folds[group.name][-1].train_ids),
        )
    return AlignmentPlan(config.align_name, base, target, None, folds)


def _check_evaluation(config: RunConfig, group: RunGroup) -> None:
    """--test-runs and --cv-groups must fit every run group (fail before any work)."""
    from bids_vem.encoding.evaluation import select_test_runs

    if config.cv_groups == "session":
        missing = [run.name for run in group.runs if run.session is None]
        if missing:
            raise UsageError(
                f"{option_name('cv_groups')} session: {group.name} has run(s) without a session: "
                f"{', '.join(missing)}"
            )
    test = select_test_runs(group.runs, config.test_runs, group.name) if config.test_runs else []
    train = [run for i, run in enumerate(group.runs) if i not in test]
    if config.cv_groups == "session":
        folds = {run.session for run in (train if test else group.runs)}
        if len(folds) < 2:
            which = "training runs" if test else "runs"
            raise UsageError(
                f"{option_name('cv_groups')} session: the {which} of {group.name} span {len(folds)} session; "
                "leave-one-session-out needs at least 2"
            )
    if test:
        logger.info(
            "%s: test runs %s; penalties by leave-one-%s-out CV on the other %d run(s)%s",
            group.name,
            ", ".join(group.runs[i].name for i in test),
            config.cv_groups,
            len(train),
            " (repeated test runs averaged)" if config.average_test_repeats else "",
        )


def _check_trialwise(
    config: RunConfig, run_groups: tuple[RunGroup, ...], stimuli: StimulusTable, work_dir: Path
) -> dict[str, tuple[tuple[Path, Path], ...]] | None:
    """--design trialwise needs trials of images; --betas one betas image (and its table) per
    run group, per run (THINGS-fMRI) or per session (GLMsingle, NSD)."""
    from bids_vem.encoding.trialwise import betas_table_path
    from bids_vem.inputs.glmsingle import session_betas_tables

    if config.design != "trialwise":
        return None
    surfaces = any(bold_kind(r.bold) != "volume" for group in run_groups for r in group.runs)
    if surfaces and config.betas is not None:
        raise UsageError(
            f"{option_name('betas')} reads single-trial betas of volumes; on surfaces "
            f"({option_name('space')} {run_groups[0].space}) the trials are estimated from the "
            f"runs (leave out {option_name('betas')})"
        )
    kinds = {stim.kind for stim in stimuli}
    if not kinds <= {"image"}:
        raise DataError(
            f"{option_name('design')} trialwise estimates one response per trial of an image; the stimuli are "
            f"{', '.join(sorted(kinds))}: use {option_name('design')} continuous"
        )
    if config.betas is None:
        return None
    if not config.betas.is_dir():
        raise InputMissingError(f"{option_name('betas')} {config.betas}: no such folder")
    found = {}
    for group in run_groups:
        session = f"_ses-{group.session}" if group.session else ""
        pattern = f"sub-{group.subject}{session}_*task-{group.task}_*betas.nii*"
        matches = sorted(
            p for p in config.betas.glob(f"**/{pattern}") if p.name.endswith((".nii", ".nii.gz"))
        )
        if group.space:
            in_space = [p for p in matches if f"_space-{group.space}_" in p.name]
            matches = in_space or matches
        if not matches:
            # one image per run, named without a task (THINGS-fMRI's betas_vol)
            matches = _betas_per_run(config.betas, group)
        if not matches:
            # one GLMsingle folder or NSD betas_sessionNN per session, trials from the events
            pairs = session_betas_tables(
                config.betas, group.runs, config.stim_column, work_dir, group.space
            )
            if pairs:
                found[group.name] = pairs
                logger.info(
                    "%s: single-trial betas of %d session(s) from %s",
                    group.name,
                    len(pairs),
                    ", ".join(str(image.relative_to(config.betas)) for image, _ in pairs[:3]),
                )
                continue
        if not matches or (len(matches) > 1 and len(matches) != len(group.runs)):
            what = "no file" if not matches else f"{len(matches)} files"
            raise InputMissingError(
                f"{option_name('betas')} {config.betas}: {what} match {pattern} for {group.name}; give one "
                "betas image (and its .tsv) per participant and task, one per run, or a GLMsingle "
                "folder per session"
            )
        for match in matches:
            table = betas_table_path(match)
            if not table.is_file():
                raise InputMissingError(
                    f"{option_name('betas')}: {match} has no table {table.name} beside it"
                )
        found[group.name] = tuple((match, betas_table_path(match)) for match in matches)
        logger.info(
            "%s: single-trial betas from %s", group.name, ", ".join(m.name for m in matches[:3])
        )
    return found


def _betas_per_run(folder: Path, group: RunGroup) -> list[Path]:
    """One betas image per run of the group (``sub-X[_ses-Y][_task-Z]_run-N_betas.nii.gz``,
    run numbers compared as numbers), or [] when some run has none."""
    found = []
    for run in group.runs:
        session = f"_ses-{run.session}" if run.session else ""
        candidates = [
            p
            for p in folder.glob(f"**/sub-{run.subject}{session}_*betas.nii*")
            if (m := re.search(r"_run-(\d+)_", p.name))
            and run.run
            and run.run.isdigit()
            and int(m.group(1)) == int(run.run)
            and ("_task-" not in p.name or f"_task-{run.task}_" in p.name)
        ]
        if len(candidates) != 1:
            return []
        found.append(candidates[0])
    return found


def _check_surface_rois(config: RunConfig, runs) -> None:
    """Regions of surface maps are read now, against the surface of the first run, so that a
    region of the wrong kind or size stops the run before any work."""
    if not config.rois or bold_kind(runs[0].bold) == "volume":
        return
    from bids_vem.analysis.comparison import surface_region
    from bids_vem.inputs.surfaces import SurfaceGeometry

    geometry = SurfaceGeometry.of_bold(runs[0].bold, runs[0].bold_right, runs[0].space)
    for name, path in config.rois:
        if not surface_region(f"{option_name('rois')} {name}={path}", path, geometry).any():
            raise DataError(f"{option_name('rois')} {name}={path}: the region is empty")
