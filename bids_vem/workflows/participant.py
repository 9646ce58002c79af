"""The participant-level nipype workflow."""

from __future__ import annotations

import json
from pathlib import Path

from nipype.interfaces.utility import Merge, Select
from nipype.pipeline import engine as pe

from bids_vem.config import RunConfig
from bids_vem.outputs.atomic import write_text_atomic
from bids_vem.workflows.interfaces import (
    CaptionImages,
    ExtractFeatures,
    FitEncoding,
    WriteDatasetOutputs,
    WriteParticipantOutputs,
)
from bids_vem.workflows.plan import ParticipantPlan, RunGroup

__all__ = ["init_participant_wf", "plan_to_dict"]


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


def plan_to_dict(config: RunConfig, plan: ParticipantPlan) -> dict:
    """What the output steps need to know, as JSON-ready data."""
    return {
        "bids_dir": str(config.bids_dir),
        "space": config.space,
        "parameters": {
            "StimulusColumn": config.stim_column,
            "Delays": list(config.delays),
            "Alphas": list(config.alphas),
            "Confounds": list(config.confounds),
            "CrossValidation": "nested leave-one-run-out (penalty per voxel by inner leave-one-run-out CV)",
            "Scoring": (
                "Pearson r between measured and predicted BOLD over all held-out runs, each run's "
                "measured and predicted time series z-scored (the run-length-weighted mean of per-run r)"
            ),
            "RandomSeed": config.random_seed,
        },
        "feature_spaces": [
            {"name": fs.name, "spec": fs.text, "modality": fs.modality, "family": fs.family}
            for fs in plan.feature_spaces
        ],
        "run_groups": [
            {
                "subject": group.subject,
                "session": group.session,
                "task": group.task,
                "space": group.space,
                "runs": [run.to_dict() | {"name": run.name} for run in group.runs],
            }
            for group in plan.run_groups
        ],
        "skipped_runs": list(plan.skipped_runs),
        "n_stimuli": len(plan.stimuli),
        "captions": None if config.captions is None else str(config.captions),
        "derivatives": [str(p) for p in plan.derivatives],
    }


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
    specs_dir = work_dir / "specs"
    specs_dir.mkdir(parents=True, exist_ok=True)
    plan_json = write_text_atomic(
        specs_dir / "plan.json", json.dumps(plan_to_dict(config, plan), indent=1)
    )
    cache_dir = str(work_dir / "feature_cache") if config.feature_cache else ""

    caption_node = None
    if plan.captioner is not None and plan.to_caption:
        caption_node = pe.Node(CaptionImages(), name=f"caption_{plan.captioner.name}")
        caption_node.inputs.name = plan.captioner.name
        caption_node.inputs.spec = plan.captioner.text
        caption_node.inputs.model_path = str(plan.captioner.path)
        caption_node.inputs.stimulus_table = str(plan.stimulus_table_tsv)
        caption_node.inputs.stim_ids = list(plan.to_caption)
        caption_node.inputs.prompt = config.caption_prompt
        caption_node.inputs.max_new_tokens = config.caption_max_tokens
        caption_node.inputs.captions_per_image = config.captions_per_image
        caption_node.inputs.device = config.device
        caption_node.inputs.random_seed = config.random_seed
        caption_node.inputs.omp_nthreads = config.omp_nthreads
        caption_node.n_procs = config.omp_nthreads
        wf.add_nodes([caption_node])
    human_captions = [str(plan.captions_tsv)] if plan.captions_tsv is not None else []

    model_nodes = []
    feature_sources = {}  # feature-space name -> (node, output) giving its FeatureSet file
    for spec, expanded in plan.models:
        node = pe.Node(ExtractFeatures(), name=f"features_{spec.name}")
        node.inputs.spec = spec.text
        node.inputs.modality = spec.modality
        node.inputs.stimulus_table = str(plan.stimulus_table_tsv)
        if spec.modality == "text" and caption_node is None:
            node.inputs.captions = human_captions
        elif spec.modality == "text":
            # human captions win for the stimuli they cover, unless --recaption
            merge = pe.Node(_merge(2), name=f"captions_for_{spec.name}")
            merge.inputs.in1 = [] if config.recaption else human_captions
            wf.connect(caption_node, "captions", merge, "in2")
            wf.connect(merge, "out", node, "captions")
        node.inputs.model_dirs = [str(p) for p in config.model_dirs]
        node.inputs.cache_dir = cache_dir
        node.inputs.device = config.device
        node.inputs.allow_downloads = config.allow_downloads
        node.inputs.frame_rate = config.frame_rate
        node.inputs.context_words = config.context_words
        # images are decoded by the step's other threads while the model runs (at most 4)
        node.inputs.num_workers = min(4, config.omp_nthreads - 1)
        node.inputs.omp_nthreads = config.omp_nthreads
        node.inputs.random_seed = config.random_seed
        node.n_procs = config.omp_nthreads
        if node not in wf._graph:  # not yet added by a connection
            wf.add_nodes([node])
        model_nodes.append(node)
        for index, fs in enumerate(expanded):
            # one model load gives every layer; each layer is its own feature space downstream
            select = pe.Node(Select(index=[index]), name=f"select_{fs.name}")
            wf.connect(node, "feature_sets", select, "inlist")
            feature_sources[fs.name] = (select, "out")

    dataset_node = pe.Node(WriteDatasetOutputs(), name="dataset_outputs")
    dataset_node.inputs.output_dir = str(config.output_dir)
    dataset_node.inputs.bids_dir = str(config.bids_dir)
    dataset_node.inputs.plan = str(plan_json)
    merge_features = pe.Node(_merge(len(model_nodes)), name="merge_features")
    for i, node in enumerate(model_nodes, start=1):
        wf.connect(node, "feature_sets", merge_features, f"in{i}")
    wf.connect(merge_features, "out", dataset_node, "feature_sets")
    if caption_node is not None:
        wf.connect(caption_node, "captions_tsv", dataset_node, "captions_tsv")

    for subject in plan.subjects:
        groups = [g for g in plan.run_groups if g.subject == subject]
        encode_nodes = []
        for group in groups:
            runs_json = _runs_json(group, specs_dir / f"{group.name}_space-{group.space}_runs.json")
            for fs in plan.feature_spaces:
                node = pe.Node(
                    FitEncoding(), name=f"encode_{group.name.replace('-', '')}_{fs.name}"
                )
                node.inputs.runs = str(runs_json)
                node.inputs.stim_column = config.stim_column
                node.inputs.delays = list(config.delays)
                node.inputs.alphas = list(config.alphas)
                node.inputs.confounds = list(config.confounds)
                node.inputs.device = config.device
                node.inputs.omp_nthreads = config.omp_nthreads
                node.inputs.random_seed = config.random_seed
                node.n_procs = config.omp_nthreads
                wf.connect(*feature_sources[fs.name], node, "feature_set")
                encode_nodes.append(node)
        outputs = pe.Node(WriteParticipantOutputs(), name=f"outputs_sub{subject}")
        outputs.inputs.output_dir = str(config.output_dir)
        outputs.inputs.subject = subject
        outputs.inputs.plan = str(plan_json)
        merge_results = pe.Node(_merge(len(encode_nodes)), name=f"merge_results_sub{subject}")
        for i, node in enumerate(encode_nodes, start=1):
            wf.connect(node, "result", merge_results, f"in{i}")
        wf.connect(merge_results, "out", outputs, "results")
        # outputs wait for the dataset files (dataset_description before any map)
        wf.connect(dataset_node, "files", outputs, "after")
    return wf


def _merge(n_inputs: int) -> Merge:
    return Merge(max(1, n_inputs))
