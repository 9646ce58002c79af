"""The participant-level nipype workflow."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from nipype.interfaces.utility import Merge, Select
from nipype.pipeline import engine as pe

from bids_vem.analysis.variance_partitioning import joint_name
from bids_vem.config import RunConfig, option_name
from bids_vem.encoding.device import resolve_device
from bids_vem.outputs.atomic import write_text_atomic
from bids_vem.workflows.contracts import AlignmentEntry, FeatureSpaceEntry, OutputPlan, RunGroup
from bids_vem.workflows.interfaces import (
    AlignImageEncoder,
    CaptionImages,
    DecodeCaptions,
    EmbedCorpus,
    ExtractFeatures,
    FitEncoding,
    FitFeatureMaps,
    FitJoint,
    PrepareBold,
    RepresentationalSimilarity,
    TransferEncoding,
    WriteDatasetOutputs,
    WriteParticipantOutputs,
)
from bids_vem.workflows.plan import STORY_KINDS, ParticipantPlan

__all__ = ["init_participant_wf", "output_plan", "workflow_name"]


def _fingerprint(path: Path | None) -> list | None:
    """(size, mtime) of an input file: the cache key of big files we do not hash by content."""
    if path is None:
        return None
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]


def _runs_json(group: RunGroup, path: Path) -> Path:
    items = [
        {
            "run": run.to_dict(),
            "fingerprint": {
                k: _fingerprint(getattr(run, k)) for k in ("bold", "mask", "events", "confounds")
            },
        }
        for run in group.runs
    ]
    write_text_atomic(path, json.dumps(items, indent=1, sort_keys=True))
    return path


def _scored_runs(config: RunConfig) -> str:
    if not config.test_runs:
        return "held-out runs"
    if config.average_test_repeats:
        return "test runs (repeated test runs averaged first)"
    return "test runs"


def _step(interface, name: str, config: RunConfig, **node_kwargs) -> pe.Node:
    """A computing node with the execution settings every step takes (device, seed, threads)."""
    node = pe.Node(interface, name=name, **node_kwargs)
    node.inputs.device = config.device
    node.inputs.random_seed = config.random_seed
    node.inputs.omp_nthreads = config.omp_nthreads
    node.n_procs = config.omp_nthreads
    return node


def _relative_to_dataset(folder: Path, bids_dir: Path) -> str:
    """A folder as a BIDS URI when it is inside BIDS_DIR, else its name (no machine paths)."""
    try:
        return f"bids:raw:{Path(folder).resolve().relative_to(Path(bids_dir).resolve()).as_posix()}"
    except ValueError:
        return Path(folder).name


def _betas_description(config: RunConfig, plan: ParticipantPlan) -> str:
    """Which betas files were read and what named their volumes (tables given, or the events
    of each session in order)."""
    pairs = [pair for pairs in (plan.betas or {}).values() for pair in pairs]
    files = [image.relative_to(config.betas).as_posix() for image, _ in pairs]
    derived = sum(not table.is_relative_to(config.betas) for _, table in pairs)
    named = (
        "each volume's stimulus from the table beside it"
        if not derived
        else "volumes named by the stimulus events of each session's runs in order (runs by "
        "number, events by onset), checked against GLMsingle's DESIGNINFO where present"
    )
    return (
        f"single-trial betas from {_relative_to_dataset(config.betas, config.bids_dir)} "
        f"({option_name('betas')}): {', '.join(files[:4])}{', ...' if len(files) > 4 else ''}; "
        f"{named}; z-scored per session, repeats of a stimulus averaged within each run"
    )


def _tells_stories(config: RunConfig, plan: ParticipantPlan) -> bool:
    """Whether a continuous design fits text spaces to stories (words resampled to TRs)."""
    return (
        config.design != "trialwise"
        and any(stim.kind in STORY_KINDS for stim in plan.stimuli)
        and any(fs.modality == "text" for fs in plan.feature_spaces)
    )


def _parameters(config: RunConfig, plan: ParticipantPlan) -> dict:
    """Model and CV parameters written in every stat-map sidecar."""
    parameters = {
        "StimulusColumn": config.stim_column,
        "Design": config.design,
        "Delays": list(config.delays),
        "Alphas": list(config.alphas),
        "Confounds": list(config.confounds),
        "TestRuns": list(config.test_runs),
        "AverageTestRepeats": config.average_test_repeats,
        "TestStimuli": config.test_stimuli,
        "CVFolds": config.cv_groups,
        "Scoring": (
            f"Pearson r between measured and predicted BOLD over all {_scored_runs(config)}, "
            "each one's measured and predicted time series z-scored (the length-weighted "
            "mean of their r)"
        ),
        "RandomSeed": config.random_seed,
        "HighPass": config.high_pass if config.design != "trialwise" else None,
        "ConfoundRegression": (
            config.confound_regression if config.design != "trialwise" else None
        ),
        # stories only: the Lanczos sum of word features follows the word rate
        "WordRate": config.word_rate if _tells_stories(config, plan) else None,
        "Permutations": config.permutations,
    }
    if config.transcripts is not None:
        parameters["Transcripts"] = _relative_to_dataset(config.transcripts, config.bids_dir)
        parameters["PooledTasks"] = config.pool_tasks
    if config.stimuli_dir is not None:
        parameters["StimuliDir"] = _relative_to_dataset(config.stimuli_dir, config.bids_dir)
    if config.design == "trialwise":
        parameters["Delays"] = []
        parameters["TrialResponses"] = (
            _betas_description(config, plan)
            if plan.betas
            else f"least-squares-separate single-trial betas (nilearn {config.hrf_model} HRF, "
            "cosine drift 0.01 Hz, confounds; volumes placed at the slice-timing reference "
            "of their TR, SliceTimeReference), z-scored per session, repeats of a stimulus "
            "averaged within each run (session with --cv-groups session), and across them "
            "for a held-out stimulus"
        )
        parameters["Scoring"] = (
            "Pearson r between measured and predicted trial responses over all held-out responses"
        )
        if not plan.betas:
            parameters["SliceTimeReference"] = _slice_time_references(plan)
    return parameters


def _slice_time_references(plan: ParticipantPlan) -> float | dict[str, float]:
    """Where in its TR each run's volumes were sampled (fraction of the TR): the LSS frame
    times' reference, from the BOLD sidecars; one number when every run agrees."""
    from bids_vem.inputs.runs import slice_time_reference

    references = {
        run.name: slice_time_reference(run) for group in plan.run_groups for run in group.runs
    }
    values = set(references.values())
    return values.pop() if len(values) == 1 else references


def output_plan(config: RunConfig, plan: ParticipantPlan) -> OutputPlan:
    """What the output steps need to know of the run (written to ``specs/plan.json``)."""
    alignment = plan.alignment
    # the layers of a #layers= spec: each layer's feature space knows its spec's name
    layer_of = {
        fs.name: spec.name
        for spec, expanded in plan.models
        if spec.layers is not None
        for fs in expanded
    }
    return OutputPlan(
        bids_dir=config.bids_dir,
        space=config.space,
        parameters=_parameters(config, plan),
        feature_spaces=tuple(
            FeatureSpaceEntry(
                fs.name,
                fs.text,
                fs.modality,
                fs.family,
                layer_of=layer_of.get(fs.name),
                layer=fs.layer if fs.name in layer_of else None,
            )  # fmt: skip
            for fs in plan.feature_spaces
        )
        + ((alignment.feature_space_entry(),) if alignment is not None else ()),
        run_groups=plan.run_groups,
        alignment=None
        if alignment is None
        else AlignmentEntry(
            name=alignment.name,
            base=alignment.base.name,
            target=alignment.target.name,
            corpus=None if alignment.corpus is None else str(alignment.corpus),
            settings=config.alignment.train_settings() | {"seed": config.random_seed},
            folds={group: [f.name for f in folds] for group, folds in alignment.folds.items()},
        ),
        rois=plan.rois,
        atlases=plan.atlases,
        skipped_runs=plan.skipped_runs,
        n_stimuli=len(plan.stimuli),
        captions=config.captions,
        derivatives=plan.derivatives,
        joints=config.analyses.joint_sets,
        decode=config.decode,
        decode_corpus=plan.decode_corpus_size,
        decode_permutations=config.decode_permutations,
        rsa=config.rsa,
        rsa_radius=config.rsa_radius if config.rsa else 0.0,
        group_spaces=dict(plan.group_spaces or {}),
        transfers=plan.transfers,
        transfer_permutations=config.transfer_permutations,
        stimulus_table=plan.stimulus_table_tsv,
        captions_json=plan.captions_tsv,
    )


def workflow_name(participant_labels: tuple[str, ...] | list[str]) -> str:
    """The workflow's folder in the work directory: ``bids_vem_wf`` for every participant,
    ``bids_vem_sub01_wf`` (several: their labels, or a hash when long) for a selection.

    Runs of different participants started at once into one work directory (an HPC array
    job, one participant per task) then never share a folder: nipype's node folders and the
    plan's files (stimulus table, specs) are per selection, while the feature and alignment
    caches, keyed by content, stay shared.
    """
    if not participant_labels:
        return "bids_vem_wf"
    joined = "_".join(f"sub{label}" for label in sorted(participant_labels))
    if len(joined) > 48:
        joined = "subs" + hashlib.sha1(joined.encode()).hexdigest()[:12]
    return f"bids_vem_{joined}_wf"


def init_participant_wf(
    config: RunConfig, plan: ParticipantPlan, *, name: str = "bids_vem_wf"
) -> pe.Workflow:
    """Build the participant-level workflow.

    One ``features_<space>`` node per feature space (shared by all participants), one
    ``encode_<group>_<space>`` node per run group and feature space, then per participant a
    node that writes the stat maps and the report, and one node for the dataset files.

    Parameters
    ----------
    config : RunConfig
    plan : ParticipantPlan
        From :func:`bids_vem.workflows.plan.plan_participant_level`.
    name : str
        Workflow name (its folder in the work directory).

    Returns
    -------
    nipype.pipeline.engine.Workflow
        Not yet run; its ``base_dir`` is the work directory.
    """
    work_dir = config.resolved_work_dir
    wf = pe.Workflow(name=name, base_dir=str(work_dir))
    wf.config["execution"] = {
        "hash_method": "content",
        "crashdump_dir": str(config.output_dir / "logs" / "crash"),
        "crashfile_format": "txt",
        "stop_on_first_crash": config.stop_on_first_crash,
        "remove_unnecessary_outputs": False,
        "use_relative_paths": False,
    }
    # per workflow: concurrent runs of other participants write their own
    specs_dir = work_dir / name / "specs"
    specs_dir.mkdir(parents=True, exist_ok=True)
    plan_json = write_text_atomic(specs_dir / "plan.json", output_plan(config, plan).to_json())

    caption_node = _caption_node(wf, config, plan)
    model_nodes, feature_sources, caption_sources = _feature_nodes(wf, config, plan, caption_node)
    corpus_sources = _corpus_nodes(wf, config, plan)
    map_nodes = _feature_map_nodes(wf, config, plan)
    dataset_node = pe.Node(WriteDatasetOutputs(), name="dataset_outputs")
    dataset_node.inputs.output_dir = str(config.output_dir)
    dataset_node.inputs.bids_dir = str(config.bids_dir)
    dataset_node.inputs.plan = str(plan_json)
    dataset_node.inputs.stimulus_table = str(plan.stimulus_table_tsv)
    merge_features = _plumbing(_merge(len(model_nodes)), name="merge_features")
    for i, node in enumerate(model_nodes, start=1):
        wf.connect(node, "feature_sets", merge_features, f"in{i}")
    wf.connect(merge_features, "out", dataset_node, "feature_sets")
    if caption_node is not None:
        wf.connect(caption_node, "captions_tsv", dataset_node, "captions_tsv")

    for subject in plan.subjects:
        encode_nodes, aligned_models = [], []
        analyses: dict[str, list] = {"joints": [], "decodings": [], "rsas": [], "transfers": []}
        prepared: dict[str, tuple] = {}
        for group in plan.run_groups:
            if group.subject == subject:
                fits, align, extra = _group_nodes(
                    wf, config, plan, group, specs_dir, feature_sources, caption_sources,
                    corpus_sources, prepared,
                )  # fmt: skip
                encode_nodes += fits
                aligned_models += [align] if align is not None else []
                for key, nodes in extra.items():
                    analyses[key] += nodes
        analyses["transfers"] = _transfer_nodes(
            wf, config, plan, subject, prepared, feature_sources, map_nodes
        )
        outputs = pe.Node(WriteParticipantOutputs(), name=f"outputs_sub{subject}")
        outputs.inputs.output_dir = str(config.output_dir)
        outputs.inputs.subject = subject
        outputs.inputs.plan = str(plan_json)
        _gather(wf, encode_nodes, "fit", outputs, "fits", f"merge_fits_sub{subject}")
        if aligned_models:
            _gather(
                wf, aligned_models, "summary", outputs, "aligned_models",
                f"merge_models_sub{subject}",
            )  # fmt: skip
        for key, nodes in analyses.items():
            if nodes:
                _gather(wf, nodes, "fit", outputs, key, f"merge_{key}_sub{subject}")
        # outputs wait for the dataset files (dataset_description before any map)
        wf.connect(dataset_node, "files", outputs, "after")
    return wf


def _gather(wf, nodes: list, output: str, target: pe.Node, input_: str, name: str) -> None:
    """Connect one output of every node in ``nodes`` to a list input of ``target``."""
    merge = _plumbing(_merge(len(nodes)), name=name)
    for i, node in enumerate(nodes, start=1):
        wf.connect(node, output, merge, f"in{i}")
    wf.connect(merge, "out", target, input_)


def _caption_node(wf: pe.Workflow, config: RunConfig, plan: ParticipantPlan) -> pe.Node | None:
    """The captioning step, when a captioner has stimuli to caption."""
    if plan.captioner is None or not plan.to_caption:
        return None
    node = _step(CaptionImages(), f"caption_{plan.captioner.name}", config)
    node.inputs.name = plan.captioner.name
    node.inputs.spec = plan.captioner.text
    node.inputs.model_path = str(plan.captioner.path)
    node.inputs.stimulus_table = str(plan.stimulus_table_tsv)
    node.inputs.stim_ids = list(plan.to_caption)
    node.inputs.captioning = config.captioning.to_json()
    wf.add_nodes([node])
    return node


def _feature_nodes(
    wf: pe.Workflow, config: RunConfig, plan: ParticipantPlan, caption_node: pe.Node | None
) -> tuple[list[pe.Node], dict, dict]:
    """One feature step per model spec (every layer from one load), shared by all participants.

    Returns the steps, each feature space's source (node, output) of its FeatureSet file, and
    each text space's captions (a (node, output) or the human caption files).
    """
    human_captions = [str(plan.captions_tsv)] if plan.captions_tsv is not None else []
    cache_dir = str(config.resolved_work_dir / "feature_cache") if config.feature_cache else ""
    model_nodes, feature_sources, caption_sources = [], {}, {}
    for spec, expanded in plan.models:
        node = _step(ExtractFeatures(), f"features_{spec.name}", config)
        node.inputs.spec = spec.text
        node.inputs.modality = spec.modality
        node.inputs.stimulus_table = str(plan.stimulus_table_tsv)
        if spec.modality == "text" and caption_node is None:
            node.inputs.captions = human_captions
            caption_sources[spec.name] = human_captions
        elif spec.modality == "text":
            # human captions win for the stimuli they cover, unless --recaption
            merge = _plumbing(_merge(2), name=f"captions_for_{spec.name}")
            merge.inputs.in1 = [] if config.recaption else human_captions
            wf.connect(caption_node, "captions", merge, "in2")
            wf.connect(merge, "out", node, "captions")
            caption_sources[spec.name] = (merge, "out")
        node.inputs.features = config.features.to_json()
        node.inputs.model_dirs = [str(p) for p in config.model_dirs]
        node.inputs.allow_downloads = config.allow_downloads
        node.inputs.cache_dir = cache_dir
        # images are decoded by the step's other threads while the model runs (at most 4)
        node.inputs.num_workers = min(4, config.omp_nthreads - 1)
        if node not in wf._graph:  # not yet added by a connection
            wf.add_nodes([node])
        model_nodes.append(node)
        for index, fs in enumerate(expanded):
            # one model load gives every layer; each layer is its own feature space downstream
            select = _plumbing(Select(index=[index]), name=f"select_{fs.name}")
            wf.connect(node, "feature_sets", select, "inlist")
            feature_sources[fs.name] = (select, "out")
        if plan.spec_stimuli and spec.name in plan.spec_stimuli:
            node.inputs.stim_ids = list(plan.spec_stimuli[spec.name])
    return model_nodes, feature_sources, caption_sources


def _group_nodes(
    wf: pe.Workflow,
    config: RunConfig,
    plan: ParticipantPlan,
    group: RunGroup,
    specs_dir: Path,
    feature_sources: dict,
    caption_sources: dict,
    corpus_sources: dict,
    prepared: dict[str, tuple],
) -> tuple[list[pe.Node], pe.Node | None, dict[str, list[pe.Node]]]:
    """A run group's steps: its cleaned BOLD, one fit per feature space, the alignment, and
    the analyses: one banded ridge per ``--joint``, one decoding per ``--decode`` (with the
    corpus embedded once for all groups, ``corpus_sources``), the RSA with ``--rsa``.
    ``prepared[group.name]`` gets the group's runs JSON and BOLD step (for ``--transfer``)."""
    runs_json = _runs_json(group, specs_dir / f"{group.name}_space-{group.space}_runs.json")
    bold = None
    if config.design == "continuous":
        # the group's cleaned BOLD, written once to the work dir for all feature spaces
        # (a trial-wise design models the raw BOLD run by run instead)
        bold = pe.Node(PrepareBold(), name=f"bold_{group.name.replace('-', '')}")
        bold.inputs.runs = str(runs_json)
        bold.inputs.confounds = list(config.confounds)
        bold.inputs.high_pass = config.high_pass if config.design == "continuous" else 0.0
        bold.inputs.omp_nthreads = config.omp_nthreads
        bold.n_procs = config.omp_nthreads
    prepared[group.name] = (runs_json, bold)
    betas = (plan.betas or {}).get(group.name)
    names = [fs.name for fs in plan.spaces_of(group)]
    align = None
    if plan.alignment is not None:
        align = _align_node(wf, config, plan, group, specs_dir, caption_sources)
        names.append(plan.alignment.name)
    fits = []
    for name in names:
        node = _encode_node(config, runs_json, group, name, betas)
        if bold is not None:
            wf.connect(bold, "store", node, "bold_store")
        if name in feature_sources:
            wf.connect(*feature_sources[name], node, "feature_set")
        else:  # the aligned space: each fold's features predict that fold's runs
            for output in (
                "feature_set",
                "fold_feature_sets",
                "fold_held_out_runs",
                "fold_held_out_stimuli",
            ):
                wf.connect(align, output, node, output)
        fits.append(node)
    joints = []
    for spaces in config.analyses.joint_sets:
        if not set(spaces) <= set(names):
            continue  # these spaces do not all embed this task's stimuli (checked in the plan)
        node = _joint_node(config, runs_json, group, spaces, betas)
        if bold is not None:
            wf.connect(bold, "store", node, "bold_store")
        merge = _plumbing(_merge(len(spaces)), name=f"{node.name}_features")
        for i, name in enumerate(spaces, start=1):
            wf.connect(*feature_sources[name], merge, f"in{i}")
        wf.connect(merge, "out", node, "feature_sets")
        joints.append(node)
    decodings = []
    for name in config.decode:
        node = _decode_node(config, runs_json, group, name, betas)
        wf.connect(*feature_sources[name], node, "feature_set")
        if name in corpus_sources:
            wf.connect(corpus_sources[name], "feature_set", node, "corpus_features")
        source = caption_sources.get(name, [])
        if isinstance(source, tuple):
            wf.connect(*source, node, "captions")
        else:
            node.inputs.captions = list(source)
        decodings.append(node)
    rsas = []
    if config.rsa:
        node = _group_step(
            RepresentationalSimilarity(), f"rsa_{group.name.replace('-', '')}", config,
            runs_json, group, betas,
        )  # fmt: skip
        node.inputs.rois = [(name, str(path)) for name, path in config.rois]
        node.inputs.radius = config.rsa_radius
        node.inputs.space = group.space
        node.inputs.n_permutations = config.permutations
        spaces = [fs.name for fs in plan.spaces_of(group)]
        merge = _plumbing(_merge(len(spaces)), name=f"{node.name}_features")
        for i, name in enumerate(spaces, start=1):
            wf.connect(*feature_sources[name], merge, f"in{i}")
        wf.connect(merge, "out", node, "feature_sets")
        rsas.append(node)
    return fits, align, {"joints": joints, "decodings": decodings, "rsas": rsas}


def _decode_node(
    config: RunConfig,
    runs_json: Path,
    group: RunGroup,
    name: str,
    betas: tuple[tuple[Path, Path], ...] | None,
) -> pe.Node:
    """The caption decoding of one run group in one text feature space (``--decode``)."""
    node = _group_step(
        DecodeCaptions(), f"decode_{group.name.replace('-', '')}_{name}", config, runs_json,
        group, betas,
    )  # fmt: skip
    if config.decode_corpus is not None:
        node.inputs.corpus = str(config.decode_corpus)
    node.inputs.n_permutations = config.decode_permutations
    return node


def _corpus_nodes(wf: pe.Workflow, config: RunConfig, plan: ParticipantPlan) -> dict:
    """The decoding corpus embedded once per ``--decode`` space, shared by all run groups."""
    if config.decode_corpus is None:
        return {}
    nodes = {}
    for name in config.decode:
        spec = next(fs for fs in plan.feature_spaces if fs.name == name)
        node = _step(EmbedCorpus(), f"corpus_{name}", config)
        node.inputs.corpus = str(config.decode_corpus)
        node.inputs.spec = spec.text
        node.inputs.name = name
        node.inputs.model_dirs = [str(p) for p in config.model_dirs]
        node.inputs.cache_dir = (
            str(config.resolved_work_dir / "feature_cache") if config.feature_cache else ""
        )
        node.inputs.allow_downloads = config.allow_downloads
        wf.add_nodes([node])
        nodes[name] = node
    return nodes


def _feature_map_nodes(wf: pe.Workflow, config: RunConfig, plan: ParticipantPlan) -> dict:
    """The linear maps between separate text and image encoders on --transfer-corpus, one
    step per (text space, image space), shared by all participants."""
    specs = {fs.name: fs for fs in plan.feature_spaces}
    nodes = {}
    for text, image in plan.feature_maps:
        node = _step(FitFeatureMaps(), f"feature_map_{text}_{image}", config)
        node.inputs.corpus = str(config.transfer_corpus)
        node.inputs.text_spec = specs[text].text
        node.inputs.image_spec = specs[image].text
        node.inputs.model_dirs = [str(p) for p in config.model_dirs]
        node.inputs.cache_dir = (
            str(config.resolved_work_dir / "feature_cache") if config.feature_cache else ""
        )
        node.inputs.allow_downloads = config.allow_downloads
        wf.add_nodes([node])
        nodes[(text, image)] = node
    return nodes


def _transfer_nodes(
    wf: pe.Workflow,
    config: RunConfig,
    plan: ParticipantPlan,
    subject: str,
    prepared: dict[str, tuple],
    feature_sources: dict,
    map_nodes: dict,
) -> list[pe.Node]:
    """One step per --transfer direction and feature-space pair of this participant: the
    source task's runs and the target task's, in one space."""
    modality = {fs.name: fs.modality for fs in plan.feature_spaces}
    groups = [g for g in plan.run_groups if g.subject == subject]
    nodes = []
    for entry in plan.transfers:
        for source in (g for g in groups if g.task == entry.source_task):
            for target in (
                g for g in groups if g.task == entry.target_task and g.space == source.space
            ):
                (source_runs, source_bold), (target_runs, target_bold) = (
                    prepared[source.name], prepared[target.name],
                )  # fmt: skip
                node = _step(
                    TransferEncoding(), f"transfer_{target.name.replace('-', '')}_{entry.name}",
                    config,
                )  # fmt: skip
                node.inputs.source_runs = str(source_runs)
                node.inputs.target_runs = str(target_runs)
                node.inputs.kind = entry.kind
                node.inputs.name = entry.name
                node.inputs.run_group = target.name
                node.inputs.stim_column = config.stim_column
                node.inputs.evaluation = config.evaluation.to_json()
                node.inputs.n_permutations = config.transfer_permutations
                wf.connect(source_bold, "store", node, "source_bold")
                wf.connect(target_bold, "store", node, "target_bold")
                wf.connect(*feature_sources[entry.source_space], node, "source_features")
                wf.connect(*feature_sources[entry.target_space], node, "target_features")
                if entry.kind == "mapped":
                    target_is_text = modality[entry.target_space] == "text"
                    pair = (
                        (entry.target_space, entry.source_space)
                        if target_is_text
                        else (entry.source_space, entry.target_space)
                    )
                    output = "text_to_image" if target_is_text else "image_to_text"
                    wf.connect(map_nodes[pair], output, node, "feature_map")
                nodes.append(node)
    return nodes


def _group_step(
    interface,
    name: str,
    config: RunConfig,
    runs_json: Path,
    group: RunGroup,
    betas: tuple[tuple[Path, Path], ...] | None,
    **node_kwargs,
) -> pe.Node:
    """A step over one run group's runs (or its user betas), with the evaluation settings."""
    node = _step(interface, name, config, **node_kwargs)
    node.inputs.run_group = group.name
    node.inputs.runs = str(runs_json)
    node.inputs.stim_column = config.stim_column
    node.inputs.evaluation = config.evaluation.to_json()
    if betas:
        node.inputs.betas = [str(image) for image, _ in betas]
        node.inputs.betas_tables = [str(table) for _, table in betas]
    return node


def _memory_share(config: RunConfig) -> int:
    """MB of --mem for one step: MultiProc runs up to nprocs / omp_nthreads steps at once."""
    if not config.mem_mb:
        return 0
    return max(1, config.mem_mb // max(1, config.nprocs // config.omp_nthreads))


def _joint_node(
    config: RunConfig,
    runs_json: Path,
    group: RunGroup,
    spaces: tuple[str, ...],
    betas: tuple[tuple[Path, Path], ...] | None,
) -> pe.Node:
    """The banded ridge of one run group over the feature spaces of one ``--joint``."""
    share = _memory_share(config)
    name = joint_name(spaces)
    extra = {"mem_gb": share / 1024} if share else {}
    node = _group_step(
        FitJoint(), f"joint_{group.name.replace('-', '')}_{name}", config, runs_json, group,
        betas, **extra,
    )  # fmt: skip
    node.inputs.name = name
    node.inputs.n_iterations = config.joint_iterations
    node.inputs.mem_mb = int(share)
    return node


def _encode_node(
    config: RunConfig,
    runs_json: Path,
    group: RunGroup,
    feature_space: str,
    betas: tuple[tuple[Path, Path], ...] | None = None,
) -> pe.Node:
    """The FitEncoding node of one run group and feature space (feature sets connected by the
    caller)."""
    # MultiProc runs up to nprocs / omp_nthreads steps at once: each fit gets its share of --mem
    share = _memory_share(config)
    extra = {"mem_gb": share / 1024} if share else {}
    name = f"encode_{group.name.replace('-', '')}_{feature_space}"
    node = _group_step(FitEncoding(), name, config, runs_json, group, betas, **extra)
    node.inputs.feature_space = feature_space
    node.inputs.save_weights = config.save_weights
    node.inputs.mem_mb = int(share)
    return node


def _align_node(
    wf: pe.Workflow,
    config: RunConfig,
    plan: ParticipantPlan,
    group: RunGroup,
    specs_dir: Path,
    caption_sources: dict,
) -> pe.Node:
    """The alignment of one run group (its folds hold out its runs' stimuli)."""
    alignment = plan.alignment
    folds_json = write_text_atomic(
        specs_dir / f"{group.name}_space-{group.space}_alignment_folds.json",
        json.dumps([f.to_dict() for f in alignment.folds.get(group.name, ())], indent=1),
    )
    work_dir = config.resolved_work_dir
    node = _step(
        AlignImageEncoder(), f"align_{group.name.replace('-', '')}_{alignment.name}", config
    )
    node.inputs.name = alignment.name
    node.inputs.base_spec = alignment.base.text
    node.inputs.target_spec = alignment.target.text
    node.inputs.stimulus_table = str(plan.stimulus_table_tsv)
    node.inputs.folds = str(folds_json)
    node.inputs.corpus = str(alignment.corpus) if alignment.corpus is not None else ""
    node.inputs.alignment = config.alignment.to_json()
    node.inputs.group = group.name
    node.inputs.model_dirs = [str(p) for p in config.model_dirs]
    node.inputs.cache_root = str(work_dir / "alignment")
    node.inputs.feature_cache_dir = str(work_dir / "feature_cache") if config.feature_cache else ""
    # nipype's MultiProc runs GPU nodes one per GPU slot: alignments queue for the GPU while
    # CPU steps go on
    node.inputs.use_gpu = resolve_device(config.device).type == "cuda"
    node.inputs.allow_downloads = config.allow_downloads
    source = caption_sources.get(alignment.target.name, [])
    if isinstance(source, tuple):
        wf.connect(*source, node, "captions")
    else:
        node.inputs.captions = list(source)
    return node


def _plumbing(interface, name: str) -> pe.Node:
    """A node that only passes values on (Merge, Select): run in the workflow's own process,
    never submitted as a batch job (SLURM would spend a job and a Python start on it)."""
    return pe.Node(interface, name=name, run_without_submitting=True)


def _merge(n_inputs: int) -> Merge:
    return Merge(max(1, n_inputs))
