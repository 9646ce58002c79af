"""Glue of the output steps: turn step results into derivative files and reports.

Called by the always-run nipype interfaces; each function only hands data to the
writers of :mod:`bids_vem.outputs` and :mod:`bids_vem.reports`.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bids_vem import __version__
from bids_vem.encoding.bold import mask_description
from bids_vem.encoding.model import EncodingResult
from bids_vem.features.extract import write_feature_derivatives
from bids_vem.features.feature_set import load_feature_set
from bids_vem.inputs.stimuli import StimulusTable
from bids_vem.inputs.surfaces import SurfaceGeometry, bold_kind
from bids_vem.outputs.atomic import atomic_path, temporary_prefix, write_text_atomic
from bids_vem.outputs.dataset import (
    container_from_environment,
    write_bidsignore,
    write_citation,
    write_dataset_description,
    write_descriptions,
    write_readme,
)
from bids_vem.outputs.group import find_statmaps
from bids_vem.outputs.names import derivative_name, derivative_path
from bids_vem.outputs.statmaps import (
    SUMMARY_COLUMNS,
    bids_uri,
    encoding_summary_row,
    summary_tsv_path,
    write_encoding_maps,
    write_statmap,
    write_summary_tsv,
)
from bids_vem.outputs.surfaces import SurfaceMask
from bids_vem.reports.participant import write_participant_report
from bids_vem.workflows.contracts import FeatureSpaceEntry, FitRecord, OutputPlan, RunGroup

__all__ = [
    "write_dataset_outputs",
    "write_participant_outputs",
    "write_weights_derivative",
    "citation_params",
]

logger = logging.getLogger(__name__)


def citation_params(plan: OutputPlan) -> dict[str, Any]:
    """The parameters the methods text describes."""
    parameters = plan.parameters
    trs = sorted({run.tr for group in plan.run_groups for run in group.runs})
    unit = parameters.get("CVFolds", "run")
    test_runs = parameters.get("TestRuns") or []
    stimulus_folds = (
        "folds of unique stimuli (the samples a held-out stimulus shaped left out of training; "
        "nested: each stimulus predicted by a model that never saw it)"
    )
    if parameters.get("TestStimuli"):
        cv = (
            f"explicit test stimuli ({parameters['TestStimuli']}) held out from all fitting, "
            "penalties by stimulus-disjoint cross-validation on the other stimuli"
        )
    elif unit == "stimulus":
        cv = stimulus_folds
    elif unit == "auto" and not test_runs:
        cv = (
            f"{stimulus_folds} where a stimulus is shown in more than one run, else "
            "leave-one-run-out (nested)"
        )
    elif not test_runs:
        cv = f"leave-one-{unit}-out (nested: each {unit} predicted by a model that never saw it)"
    else:
        unit = "run" if unit == "auto" else unit
        cv = (
            f"leave-one-{unit}-out cross-validation on the training runs, with test runs "
            f"{', '.join(test_runs)} held out from all fitting"
        )
        if parameters.get("AverageTestRepeats"):
            cv += " (repeated test runs averaged before scoring)"
    return {
        "delays": parameters.get("Delays", []),
        "trial_responses": parameters.get("TrialResponses"),
        "alphas": parameters["Alphas"],
        "cv": cv,
        "score": "correlation",
        "tr": trs[0] if len(trs) == 1 else None,
        "confounds": parameters["Confounds"],
        "joint": [list(spaces) for spaces in plan.joints],
        "decode": list(plan.decode),
        "decode_corpus": plan.decode_corpus,
        "decode_permutations": plan.decode_permutations,
        "rsa": plan.rsa,
        "rsa_radius": plan.rsa_radius,
        "transfers": [
            {
                "source_task": t.source_task,
                "target_task": t.target_task,
                "source_space": t.source_space,
                "target_space": t.target_space,
                "kind": t.kind,
            }
            for t in plan.transfers
        ],  # fmt: skip
        "transfer_permutations": plan.transfer_permutations,
        "high_pass": parameters.get("HighPass"),
        "confound_regression": parameters.get("ConfoundRegression"),
        "word_rate": parameters.get("WordRate"),
        "permutations": parameters.get("Permutations"),
        "alignment": None if plan.alignment is None else asdict(plan.alignment),
    }


def write_dataset_outputs(
    output_dir: Path,
    bids_dir: Path,
    *,
    plan: OutputPlan,
    feature_set_files: list[Path],
    captions_tsv: Path | None = None,
    stimulus_table: Path | None = None,
) -> list[Path]:
    """dataset_description.json, .bidsignore, README, descriptions.tsv, features/ and logs/CITATION.md."""
    files = [
        write_dataset_description(
            output_dir,
            source_datasets=[bids_dir],
            version=__version__,
            container=container_from_environment(),
            dataset_links=dataset_links(plan),
        ),
        write_bidsignore(output_dir),
        write_readme(output_dir),
    ]
    if captions_tsv is not None:  # generated captions and their sidecar, as derivatives
        for source in (captions_tsv, captions_tsv.with_suffix(".json")):
            target = output_dir / "stimuli" / source.name
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
            files.append(target)
    sources = _stimulus_sources(stimulus_table, dataset_links(plan))
    descriptions = {}
    feature_spaces = []
    for path in feature_set_files:
        feature_set = load_feature_set(path)
        files += write_feature_derivatives(feature_set, output_dir, sources=sources)
        descriptions[feature_set.name] = (
            f"Encoding model on the {feature_set.modality} feature space {feature_set.name} ({feature_set.spec}), "
            f"{feature_set.n_features} features"
        )
        feature_spaces.append(
            {
                "name": feature_set.name,
                "spec": feature_set.spec,
                "modality": feature_set.modality,
                "n_features": feature_set.n_features,
                "family": feature_set.metadata.get("family"),
                "weights_sha256": feature_set.metadata.get("weights_sha256"),
            }
        )
    files.append(write_descriptions(output_dir, descriptions))
    files.append(
        write_citation(
            output_dir,
            feature_spaces=feature_spaces,
            n_runs=sum(len(group.runs) for group in plan.run_groups),
            params=citation_params(plan),
            version=__version__,
            runs_by_subject=_runs_by_subject(plan),
        )
    )
    return files


def _runs_by_subject(plan: OutputPlan) -> dict[str, int]:
    """BOLD runs used per participant (over sessions and tasks)."""
    counts: dict[str, int] = {}
    for group in plan.run_groups:
        counts[group.subject] = counts.get(group.subject, 0) + len(group.runs)
    return counts


def dataset_links(plan: OutputPlan) -> dict[str, Path]:
    """BIDS URI names of the datasets we read: ``raw`` and each derivative by folder name."""
    links = {"raw": plan.bids_dir}
    for path in plan.derivatives:
        links.setdefault(path.name, path)
    return links


def _stimulus_sources(table: Path | None, links: dict[str, Path]) -> dict[str, str] | None:
    """Each stimulus's file as a BIDS URI (``bids:raw:stimuli/...``); a label (Haxby's
    categories) by the events file that names it; stimuli outside the datasets read
    (``--stimuli-dir``) have none."""
    if table is None:
        return None
    sources = {}
    for stimulus in StimulusTable.from_tsv(Path(table)):
        uri = _uri(stimulus.path, links)
        if uri is not None:
            sources[stimulus.stim_id] = uri
    return sources


def _uri(path: str | Path, links: dict[str, Path]) -> str | None:
    """``bids:<dataset>:<relative path>`` of an input file; None outside the datasets read
    (events derived in the work directory for stories: ``Transcripts`` names their source)."""
    path = Path(path)
    # most specific dataset first: derivatives live inside the raw dataset
    for name, root in sorted(links.items(), key=lambda item: -len(str(item[1]))):
        try:
            return bids_uri(name, path.relative_to(root))
        except ValueError:
            continue
    return None


def _sources(
    group: RunGroup, feature_space: str, links: dict[str, Path], plan: OutputPlan
) -> list[str]:
    # no brain mask: derived from the BOLD (BrainMask says so)
    found = [
        _uri(p, links)
        for run in group.runs
        for p in (run.bold, run.bold_right, run.mask, run.events)
        if p
    ]
    sources = [uri for uri in found if uri is not None]
    alignment = plan.alignment
    if alignment is not None and feature_space == alignment.name:
        folder = aligned_model_folder(group, alignment.name)
        sources.append(bids_uri("", f"models/{folder}/open_clip_model.safetensors"))
    else:
        sources.append(bids_uri("", f"features/desc-{feature_space}_features.npy"))
    return sources


def aligned_model_folder(group: RunGroup, name: str) -> str:
    """``sub-XX[_ses-YY]_task-ZZ_desc-<name>_model``: a run group's model folder in models/."""
    entities = {"sub": group.subject, "ses": group.session, "task": group.task}
    return derivative_name(entities | {"desc": name}, "model", ".json").removesuffix(".json")


def _copy_model(summary: dict, output_dir: Path, group: RunGroup, name: str) -> Path:
    """Copy the final aligned model and the run group's fold metrics into OUTPUT_DIR/models."""
    target = output_dir / "models" / aligned_model_folder(group, name)
    # a hidden staging folder named like atomic_path's temporaries (removed if we are killed)
    staging = target.with_name(temporary_prefix(target) + "model")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(summary["model_dir"], staging)
    folds = [{k: v for k, v in fold.items() if k != "model"} for fold in summary["folds"]]
    (staging / "folds.json").write_text(json.dumps(folds, indent=1))
    if target.exists():  # a folder cannot replace another in one rename: move it aside first
        old = target.with_name(temporary_prefix(target) + "old")
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)
    return target


def write_participant_outputs(
    output_dir: Path,
    subject: str,
    *,
    plan: OutputPlan,
    fits: list[FitRecord],
    alignment_summaries: list[Path] = (),
    joints: list[FitRecord] = (),
    decodings: list[FitRecord] = (),
    rsas: list[FitRecord] = (),
    transfers: list[FitRecord] = (),
) -> tuple[Path, list[Path]]:
    """Stat maps, the summary table and the HTML report of one participant.

    ``fits`` name their run group and feature space (in any order); every run group of the
    participant must have one per feature space. ``alignment_summaries`` (with ``--align``)
    give each run group's aligned model and fold metrics, named by run group. A fit's weights
    (``--save-weights``) are copied to ``models/`` (:func:`write_weights_derivative`).
    ``joints`` (``--joint``) name their run group and joint model
    (:func:`~bids_vem.workflows.analysis_outputs.write_joint_outputs`), ``decodings``
    (``--decode``) their run group and text space
    (:func:`~bids_vem.workflows.analysis_outputs.write_decoding_outputs`), ``rsas``
    (``--rsa``) their run group (:func:`~bids_vem.workflows.analysis_outputs.write_rsa_outputs`),
    ``transfers`` (``--transfer``) their target run group and transfer name
    (:func:`~bids_vem.workflows.analysis_outputs.write_transfer_outputs`).
    """
    from bids_vem.workflows.analysis_outputs import (
        write_decoding_outputs,
        write_joint_outputs,
        write_rsa_outputs,
        write_transfer_outputs,
    )

    groups = plan.groups_of(subject)
    by_key = {fit.key: fit for fit in fits}
    missing = [
        f"{group.name}/{fs.name}"
        for group in groups
        for fs in plan.spaces_of(group)
        if (group.name, fs.name) not in by_key
    ]
    if missing:
        raise RuntimeError(f"sub-{subject}: no encoding result for {', '.join(missing)}")
    summaries = {}
    for path in alignment_summaries:
        summary = json.loads(Path(path).read_text())
        summaries[summary["run_group"]] = summary
    links = dataset_links(plan)
    statmaps: list[Path] = []
    rows, results, comparisons, layer_profiles, joint_outputs = [], [], [], [], []
    decoding_outputs, rsa_outputs, transfer_outputs = [], [], []
    results_by_group: dict[str, dict] = {}
    n_features: dict[str, int] = {}
    errors = [f"skipped: {s}" for s in plan.skipped_runs if s.subject == subject]
    for group in groups:
        group_results = {}
        # the surface the group's maps lie on: read once (a GIFTI is parsed whole)
        geometry = _surface_geometry(group)
        for fs in plan.spaces_of(group):
            fit = by_key[(group.name, fs.name)]
            result = EncodingResult.load(fit.result)
            # design columns = features x delays: no need to read the feature matrix again
            n_features[fs.name] = result.n_features // max(1, len(result.delays))
            mask_img = _output_mask(result, geometry)
            paths, row = _write_fit(
                output_dir, subject, group, fs, result, fit, plan, links, mask_img
            )
            statmaps += list(paths.values())
            rows.append(row)
            group_results[fs.name] = {
                "task": group.task,
                "session": group.session,
                "space": group.space,
                "feature_space": fs.name,
                "summary": row,
                "paths": paths,
                "r": result.r,
                "q": getattr(result, "q", None),
                "mask": result.mask,
                "affine": result.affine,
                "mask_img": mask_img,
                "modality": fs.modality,
                "blocks": (result.block_moments, result.block_folds),
            }
            results.append(group_results[fs.name])
        results_by_group[group.name] = group_results
        regions = _regions(plan, group_results)
        _write_parcels(output_dir, group, plan, group_results)
        layer_profiles += _write_layer_profiles(
            output_dir, subject, group, plan, group_results, regions
        )
        for record in joints:
            if record.run_group == group.name:
                joint = write_joint_outputs(
                    output_dir, subject, group, plan, record, group_results, regions
                )
                statmaps += list(joint["maps"].values())
                joint_outputs.append(joint)
        for record in decodings:
            if record.run_group == group.name:
                decoding_outputs.append(write_decoding_outputs(output_dir, group, plan, record))
        for record in rsas:
            if record.run_group == group.name:
                rsa = write_rsa_outputs(output_dir, subject, group, plan, record, geometry)
                statmaps += list(rsa["maps"].values())
                rsa_outputs.append(rsa)
        into = [record for record in transfers if record.run_group == group.name]
        if into:
            transfer = write_transfer_outputs(
                output_dir, subject, group, plan, into, group_results, geometry
            )
            statmaps += list(transfer["maps"].values())
            transfer_outputs.append(transfer)
        comparison = _compare(output_dir, subject, group, plan, group_results, regions)
        if len(group_results) >= 2:
            comparison["best"] = _write_best_space(output_dir, subject, group, group_results)
            statmaps.append(comparison["best"]["map"])
        if plan.alignment is not None and group.name in summaries:
            model = _copy_model(summaries[group.name], output_dir, group, plan.alignment.name)
            comparison["alignment"] = json.loads((model / "folds.json").read_text())
            comparison["model"] = model
            comparison["curves"] = _training_curves(
                output_dir, subject, group, model, plan.alignment.name
            )
            statmaps += comparison.pop("maps", [])
        if comparison["rows"]:
            comparisons.append(comparison)
    write_summary_tsv(summary_tsv_path(output_dir, subject), rows)
    _warn_about_earlier_maps(
        output_dir,
        subject,
        {fs.name for fs in plan.feature_spaces}
        | {r.feature_space for r in joints}
        | {r.feature_space for r in transfers}
        | {"featurespaces"},  # the best-space map
    )
    report = write_participant_report(
        output_dir,
        subject,
        runs=[run.to_dict() | {"name": run.name} for group in groups for run in group.runs],
        feature_spaces=[
            asdict(fs) | {"n_features": n_features.get(fs.name)} for fs in plan.feature_spaces
        ],
        results=results,
        errors=errors,
        comparisons=comparisons,
        layer_profiles=layer_profiles,
        joints=joint_outputs,
        decodings=decoding_outputs,
        rsas=rsa_outputs,
        transfers=transfer_outputs,
        stimuli=stimulus_strip(output_dir, subject, plan),
        qc=quality_control(subject, plan, results_by_group),
        command_line=" ".join(["bids_vem", *sys.argv[1:]]) if sys.argv else None,
        version=__version__,
    )
    return report, statmaps


def _warn_about_earlier_maps(output_dir: Path, subject: str, feature_spaces: set[str]) -> None:
    """Maps of feature spaces this run did not ask for (an earlier run into the same
    OUTPUT_DIR) are kept, never silently: they would enter the group level."""
    earlier = sorted(
        {
            entities.get("desc", "")
            for entities, _ in find_statmaps(output_dir, stat="r")
            if entities.get("sub") == subject and entities.get("desc") not in feature_spaces
        }
    )
    if earlier:
        logger.warning(
            "sub-%s: keeping the maps of feature space(s) %s from an earlier run into %s, "
            "which this run did not fit; the group level pools them too (delete them to leave "
            "them out)",
            subject,
            ", ".join(earlier),
            output_dir,
        )


def _write_fit(
    output_dir: Path,
    subject: str,
    group: RunGroup,
    fs: FeatureSpaceEntry,
    result: EncodingResult,
    fit: FitRecord,
    plan: OutputPlan,
    links: dict[str, Path],
    mask_img: nib.Nifti1Image | SurfaceMask,
) -> tuple[dict[str, Path], dict]:
    """The maps (and weights) of one fit; returns the map paths and the summary row."""
    parameters = dict(plan.parameters) | {
        "FeatureSpace": fs.name,
        "ModelSpec": fs.spec,
        "Modality": fs.modality,
        "Runs": list(result.runs),
        "NestedCV": bool(result.nested),
        "Evaluation": result.evaluation,
        "TestRuns": list(result.test_runs),
        "RepeatedTestRuns": [list(repeat) for repeat in result.repeats],
        "CrossValidation": result.cross_validation,
        "Scoring": _scoring(result, plan.parameters.get("Scoring")),
        "CrossValidationFolds": int(result.n_folds),
        "TestStimuliInTraining": list(result.test_stimuli_in_training),
        "Permutations": int(result.n_permutations),
        "PermutationScheme": result.permutation or None,
        "NuisanceRegression": result.nuisance or None,
        "BrainMask": mask_description(group.runs),
    }
    entities = {"sub": subject, "ses": group.session, "task": group.task, "space": group.space}
    names = {"subject": subject, "session": group.session, "task": group.task}
    names |= {"space": group.space, "feature_space": fs.name}
    paths = write_encoding_maps(
        output_dir,
        result,
        mask_img,
        **names,
        sources=_sources(group, fs.name, links, plan),
        parameters=parameters,
    )
    if fit.weights is not None:
        write_weights_derivative(
            output_dir,
            fit.weights,
            result,
            entities=entities | {"desc": fs.name},
            mask_uri=bids_uri("", str(paths["r"].relative_to(output_dir))),
            parameters=parameters,
        )
    row = encoding_summary_row(result, **names, alphas=list(result.alphas))
    significant = result.significant()
    logger.info(
        "sub-%s task-%s %s: mean r %.3f, max r %.3f over %d voxels%s; %d voxel(s) chose a "
        "penalty at an edge of the grid (%d low, %d high)",
        subject,
        group.task,
        fs.name,
        float(np.mean(result.r)),
        float(np.max(result.r)),
        result.n_voxels,
        "" if significant is None else f", {int(significant.sum())} significant (FDR q < 0.05)",
        int(result.n_alpha_low + result.n_alpha_high),
        result.n_alpha_low,
        result.n_alpha_high,
    )
    return paths, row


def _write_layer_profiles(
    output_dir: Path,
    subject: str,
    group: RunGroup,
    plan: OutputPlan,
    group_results: dict[str, dict],
    regions: dict[str, np.ndarray],
) -> list[dict]:
    """Per ``#layers=`` spec: the best layer of each voxel (``desc-<name>_stat-bestlayer``),
    mean r per layer over the mask and each ROI (``..._desc-<name>_layers.tsv``) and its plot.
    Returns what the report shows."""
    from bids_vem.analysis.layers import LAYER_COLUMNS, best_layer, layer_profile_rows
    from bids_vem.reports.figures import plot_layer_profile

    by_spec: dict[str, list[FeatureSpaceEntry]] = {}
    for fs in plan.feature_spaces:
        if fs.layer_of and isinstance(fs.layer, int) and fs.name in group_results:
            by_spec.setdefault(fs.layer_of, []).append(fs)
    out = []
    for name, spaces in by_spec.items():
        if len(spaces) < 2:
            continue
        layers = [int(fs.layer) for fs in spaces]
        first = group_results[spaces[0].name]
        r = np.stack([group_results[fs.name]["r"] for fs in spaces])
        mask_img = first["mask_img"]
        entities = group.entities | {"desc": name}
        sources = [
            bids_uri("", str(group_results[fs.name]["paths"]["r"].relative_to(output_dir)))
            for fs in spaces
        ]
        best = write_statmap(
            output_dir,
            best_layer(r, layers),
            mask_img,
            entities=entities,
            stat="bestlayer",
            description=(
                f"Layer of {name} whose encoding model has the largest held-out r in each voxel "
                f"(layers {', '.join(map(str, layers))})."
            ),
            sources=sources,
            parameters={"Layers": layers},
        )
        rows = layer_profile_rows(name, layers, r, regions)
        descriptions = LAYER_COLUMNS | {
            f"mean_r_roi-{roi}": f"Mean held-out r in region {roi} ({path})"
            for roi, path in plan.rois
        }
        tsv = write_summary_tsv(
            derivative_path(output_dir, entities, "layers", ".tsv"), rows, descriptions
        )
        figure = plot_layer_profile(
            rows,
            output_dir / f"sub-{subject}" / "figures" / derivative_name(entities, "layers", ".png"),
            title=f"{name}: r by layer",
        )
        out.append({"name": name, "group": group.name, "map": best, "tsv": tsv, "figure": figure,
                    "rows": rows})  # fmt: skip
    return out


def _write_parcels(
    output_dir: Path, group: RunGroup, plan: OutputPlan, group_results: dict[str, dict]
) -> list[Path]:
    """``..._atlas-<name>_parcels.tsv`` of a run group: r per parcel of each atlas (--atlas),
    one row per feature space and parcel."""
    from bids_vem.analysis.parcels import ATLAS_COLUMNS, parcel_rows, point_parcels

    written = []
    for name in plan.atlases:
        rows = []
        # the feature spaces of a group share its surface: the atlas is read once
        labels = point_parcels(name, next(iter(group_results.values()))["mask_img"].geometry)
        for fs_name, entry in group_results.items():
            inside = entry["mask_img"].inside
            rows += parcel_rows(name, labels[inside], entry["r"], feature_space=fs_name)
        path = derivative_path(output_dir, group.entities | {"atlas": name}, "parcels", ".tsv")
        written.append(
            write_summary_tsv(
                path, rows, ATLAS_COLUMNS | {"feature_space": SUMMARY_COLUMNS["feature_space"]}
            )
        )
        logger.info("%s: r per parcel of %s in %s", group.name, name, path.name)
    return written


def _surface_geometry(group: RunGroup) -> SurfaceGeometry | None:
    """The surface of a run group's BOLD (GIFTI hemispheres, CIFTI grayordinates); None for
    volumes."""
    run = group.runs[0]
    if bold_kind(run.bold) == "volume":
        return None
    return SurfaceGeometry.of_bold(run.bold, run.bold_right, group.space)


def _write_best_space(
    output_dir: Path, subject: str, group: RunGroup, group_results: dict[str, dict]
) -> dict:
    """The feature space that predicts each voxel best (``desc-featurespaces_stat-bestspace``,
    levels in the sidecar), where its r is significant (q < 0.05) or, without permutation
    maps, positive; and its figure."""
    from bids_vem.analysis.comparison import best_space
    from bids_vem.reports.figures import plot_best_space

    names = list(group_results)
    r = np.stack([group_results[n]["r"] for n in names])
    qs = [group_results[n].get("q") for n in names]
    significant = (
        np.stack([np.asarray(q) < 0.05 for q in qs]) if all(q is not None for q in qs) else None
    )
    labels = best_space(r, significant)
    entities = group.entities | {"desc": "featurespaces"}
    rule = "q < 0.05 (permutation p, FDR)" if significant is not None else "r > 0"
    path = write_statmap(
        output_dir, labels.astype(np.float32), group_results[names[0]]["mask_img"],
        entities=entities, stat="bestspace",
        description=(
            "The feature space whose encoding model has the largest held-out r in each voxel, "
            f"where that r has {rule}; 0: none. Levels name the spaces."
        ),
        sources=[
            bids_uri("", str(group_results[n]["paths"]["r"].relative_to(output_dir))) for n in names
        ],
        parameters={"Levels": {str(i): n for i, n in enumerate(names, start=1)} | {"0": "none"},
                    "Rule": rule},
    )  # fmt: skip
    counts = {n: int(np.sum(labels == i)) for i, n in enumerate(names, start=1)}
    figure = None
    try:
        figure = plot_best_space(
            path, names,
            output_dir / f"sub-{subject}" / "figures" / derivative_name(entities, "bestspace", ".png"),
            title=f"best feature space per voxel, {group.name} ({rule})",
        )  # fmt: skip
    except Exception as exc:  # a figure must not cost the outputs
        logger.warning("no figure for %s: %s", path.name, exc)
    return {"map": path, "figure": figure, "counts": counts, "rule": rule}


def _training_curves(
    output_dir: Path, subject: str, group: RunGroup, model: Path, name: str
) -> Path | None:
    """The final alignment's training curves (its metrics.tsv), or None without one."""
    from bids_vem.reports.figures import plot_training_curves

    metrics = model / "metrics.tsv"
    if not metrics.is_file():
        return None
    try:
        return plot_training_curves(
            metrics,
            output_dir / f"sub-{subject}" / "figures"
            / derivative_name(group.entities | {"desc": name}, "training", ".png"),
            title=f"Alignment of {group.name}: the final model, on all stimuli",
        )  # fmt: skip
    except Exception as exc:  # a figure must not cost the outputs
        logger.warning("no training curves for %s: %s", metrics, exc)
        return None


def _output_mask(
    result: EncodingResult, geometry: SurfaceGeometry | None
) -> nib.Nifti1Image | SurfaceMask:
    """Where the fit's maps go: its brain mask on the BOLD's grid, or its points on the
    group's surface."""
    if geometry is None:
        return nib.Nifti1Image(result.mask.astype(np.uint8), result.affine)
    return SurfaceMask(geometry, result.mask.reshape(-1))


def _regions(plan: OutputPlan, group_results: dict[str, dict]) -> dict[str, np.ndarray]:
    """Which voxels (surface points) of the group's mask lie in each ``--roi``: read once for
    the comparison and the layer profiles."""
    from bids_vem.analysis.comparison import roi_points, roi_voxels

    if not plan.rois:
        return {}
    first = next(iter(group_results.values()))
    if isinstance(first["mask_img"], SurfaceMask):
        return roi_points(list(plan.rois), first["mask_img"])
    return roi_voxels(list(plan.rois), first["mask"], first["affine"])


def _scoring(result: EncodingResult, planned: str | None) -> str | None:
    """How r is computed: the plan's sentence for folds of runs, pooled centred samples for
    folds of stimuli."""
    if result.cv_groups != "stimulus":
        return planned
    return (
        "Pearson r between measured and predicted responses over the held-out stimuli's "
        "samples of every fold pooled, each fold's (per run) data and predictions centred but "
        "not scaled; repeats of a held-out stimulus averaged first (trial-wise)"
    )


def write_weights_derivative(
    output_dir: Path,
    weight_file: Path,
    result: EncodingResult,
    *,
    entities: dict,
    mask_uri: str,
    parameters: dict,
) -> Path:
    """Copy a model's weights to ``models/<entities>_weights.npy`` with a JSON sidecar.

    ``.npy`` (float32, (n_design_columns, n_voxels), voxels in the order of the brain mask's
    nonzero voxels, C order of the grid) rather than one NIfTI volume per design column: the
    weights hold only the voxels of the mask (a 4-D NIfTI would be dense over the whole grid,
    several times larger, with thousands of volumes), and they load in one line. ``models/``
    is in ``.bidsignore``.
    """
    name = derivative_name(entities, "weights", ".npy")
    target = Path(output_dir) / "models" / name
    with atomic_path(target) as tmp:
        shutil.copyfile(weight_file, tmp)
    n_columns, n_voxels = np.load(target, mmap_mode="r").shape
    delays = list(result.delays)
    n_features = n_columns // max(1, len(delays)) if delays else n_columns
    sidecar = {
        "Description": (
            f"Ridge weights of the encoding model of {entities['desc']}: float32 array of shape "
            "(n_design_columns, n_voxels). Rows are design columns, delay-major: row "
            "d * NumberOfFeatures + f is feature f at Delays[d] TRs. Columns are the voxels of "
            "the brain mask (MaskMap: the nonzero voxels of the r map's grid, in C order of the "
            "grid). Predicted z-scored BOLD = z-scored design @ weights."
        ),
        "Shape": [int(n_columns), int(n_voxels)],
        "NumberOfFeatures": int(n_features),
        "Delays": delays,
        "MaskMap": mask_uri,
        "FittedOnRuns": [r for r in result.runs if r not in set(result.test_runs)],
        "Penalty": "per voxel, as in the alpha map",
        **{k: v for k, v in parameters.items() if k not in ("Runs",)},
    }
    write_text_atomic(target.with_suffix(".json"), json.dumps(sidecar, indent=1))
    return target


def _compare(
    output_dir: Path,
    subject: str,
    group: RunGroup,
    plan: OutputPlan,
    group_results: dict[str, dict],
    regions: dict[str, np.ndarray],
) -> dict:
    """The run group's feature spaces side by side (aligned vs unaligned vs caption text, ROIs).

    Writes ``..._space-<s>_comparison.tsv`` and, with an alignment, the map of r(aligned) minus
    r(unaligned) (``desc-<aligned>_stat-rgain``); returns what the report shows.
    """
    from bids_vem.analysis.comparison import (
        COMPARISON_COLUMNS,
        compare_feature_spaces,
    )

    alignment = plan.alignment
    rois = plan.rois
    out: dict = {"task": group.task, "session": group.session, "space": group.space}
    out["rows"] = []
    pairs = _pairs(group_results, alignment)
    if not alignment and not rois and not pairs:
        return out
    mask_img = next(iter(group_results.values()))["mask_img"]
    roles, reference = {}, None
    if alignment:
        roles = {
            alignment.name: "aligned",
            alignment.base: "unaligned",
            alignment.target: "caption text",
        }
        reference = alignment.base if alignment.base in group_results else None
    rows = compare_feature_spaces(
        {name: r["r"] for name, r in group_results.items()},
        roles=roles,
        reference=reference,
        rois=regions,
    )
    entities = group.entities
    descriptions = dict(COMPARISON_COLUMNS)
    descriptions |= {
        f"mean_r_roi-{name}": f"Mean held-out r in region {name} ({path})" for name, path in rois
    }
    out["tsv"] = write_summary_tsv(
        derivative_path(output_dir, entities, "comparison", ".tsv"), rows, descriptions
    )
    tested = _paired_tests(group_results, pairs)
    if tested:
        out["pairs"] = tested
        out["pairs_tsv"] = write_summary_tsv(
            derivative_path(output_dir, entities | {"desc": "paired"}, "comparison", ".tsv"),
            [row for row, _ in tested],
            PAIRED_COLUMNS,
        )
    out["rows"] = rows
    out["reference"] = reference
    if rois:
        from bids_vem.reports.figures import plot_region_bars

        try:
            out["bars"] = plot_region_bars(
                rows,
                output_dir / f"sub-{subject}" / "figures"
                / derivative_name(entities | {"desc": "featurespaces"}, "regions", ".png"),
                title=f"mean r by region, {group.name}",
            )  # fmt: skip
        except Exception as exc:  # a figure must not cost the outputs
            logger.warning("no region figure for %s: %s", group.name, exc)
    if alignment and reference is not None and alignment.name in group_results:
        gain = group_results[alignment.name]["r"] - group_results[reference]["r"]
        tests = {(row["feature_space_a"], row["feature_space_b"]): t for row, t in tested}
        gain_test = tests.get((alignment.name, reference))
        out["maps"] = (
            []
            if gain_test is None
            else [
                write_statmap(
                    output_dir,
                    gain_test[stat],
                    mask_img,
                    entities=entities | {"desc": alignment.name},
                    stat=f"rgain{stat}",
                    description=(
                        f"{'Two-sided p-value' if stat == 'p' else 'Benjamini-Hochberg q'} of the "
                        f"paired sign-flip test of held-out r, aligned {alignment.name} vs unaligned "
                        f"{reference} (blocks of test samples, fold by fold, folds combined)"
                    ),
                    sources=[
                        bids_uri("", str(group_results[name]["paths"]["r"].relative_to(output_dir)))
                        for name in (alignment.name, reference)
                    ],
                )
                for stat in ("p", "q")
            ]
        )
        out["maps"].insert(
            0,
            write_statmap(
                output_dir,
                gain,
                mask_img,
                entities=entities | {"desc": alignment.name},
                stat="rgain",
                description=(
                    f"Held-out r of the aligned feature space {alignment.name} minus that of "
                    f"the unaligned {reference}"
                ),
                sources=[
                    bids_uri("", str(group_results[name]["paths"]["r"].relative_to(output_dir)))
                    for name in (alignment.name, reference)
                ],
            ),
        )
    return out


#: columns of the paired comparison TSV
PAIRED_COLUMNS = {
    "feature_space_a": "First feature space of the pair.",
    "feature_space_b": "Second feature space of the pair.",
    "why": "Why the pair is compared (aligned vs its base; caption text vs image).",
    "mean_r_diff": "Mean over voxels of r(a) - r(b).",
    "n_voxels_a_better": "Voxels where r(a) > r(b) at FDR q < 0.05 (paired sign-flip test).",
    "n_voxels_b_better": "Voxels where r(b) > r(a) at FDR q < 0.05.",
    "median_p": "Median two-sided p of the paired test over voxels.",
}


def _pairs(group_results: dict[str, dict], alignment) -> list[tuple[str, str, str]]:
    """The pairs of feature spaces compared voxel by voxel: the aligned space vs its base, each
    text space vs each image space."""
    pairs = []
    if alignment and alignment.name in group_results and alignment.base in group_results:
        pairs.append((alignment.name, alignment.base, "aligned vs unaligned"))
    text = [n for n, r in group_results.items() if r["modality"] == "text"]
    image = [n for n, r in group_results.items() if r["modality"] in ("image", "aligned")]
    for a in text:
        for b in image:
            if (a, b) not in [(x, y) for x, y, _ in pairs]:
                pairs.append((a, b, "caption text vs image"))
    return pairs


def _paired_tests(group_results: dict[str, dict], pairs) -> list[tuple[dict, dict]]:
    """One TSV row and the per-voxel test of each pair whose fits share their test blocks."""
    from bids_vem.analysis.paired import paired_sign_flip

    out = []
    for a, b, why in pairs:
        (blocks_a, folds), (blocks_b, _) = group_results[a]["blocks"], group_results[b]["blocks"]
        if blocks_a is None or blocks_b is None or blocks_a.shape != blocks_b.shape:
            logger.warning("%s vs %s: the fits do not share their test blocks; not compared", a, b)
            continue
        test = paired_sign_flip(blocks_a, blocks_b, folds)
        significant = test["q"] < 0.05
        row = {
            "feature_space_a": a,
            "feature_space_b": b,
            "why": why,
            "mean_r_diff": float(np.mean(test["diff"])),
            "n_voxels_a_better": int(np.sum(significant & (test["diff"] > 0))),
            "n_voxels_b_better": int(np.sum(significant & (test["diff"] < 0))),
            "median_p": float(np.median(test["p"])),
        }
        out.append((row, test))
    return out


#: stimuli shown in the report's strip
STRIP_SIZE = 12


def _generated_captions(output_dir: Path) -> dict[str, tuple[str, str]]:
    """{stim_id: (caption, model)} of the captioner's captions under OUTPUT_DIR/stimuli."""
    import csv

    found: dict[str, tuple[str, str]] = {}
    for tsv in sorted((output_dir / "stimuli").glob("*_captions.tsv")):
        with tsv.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                found.setdefault(
                    row.get("stim_file", ""), (row.get("caption", ""), row.get("model", ""))
                )
    return found


def stimulus_strip(output_dir: Path, subject: str, plan: OutputPlan) -> list[dict]:
    """The first images this participant saw, as thumbnails under ``sub-XX/figures/stimuli``,
    each with its human caption and, marked as such, the captioner's."""
    from PIL import Image

    from bids_vem.errors import BidsVemError
    from bids_vem.inputs.events import read_events
    from bids_vem.inputs.stimuli import StimulusTable

    if plan.stimulus_table is None or not Path(plan.stimulus_table).is_file():
        return []
    table = StimulusTable.from_tsv(Path(plan.stimulus_table))
    kinds = {stim.stim_id: stim for stim in table}
    shown: list[str] = []
    column = plan.parameters.get("StimulusColumn", "stim_file")
    for group in plan.groups_of(subject):
        for run in group.runs:
            if run.events is None or len(shown) >= STRIP_SIZE:
                continue
            try:
                events = read_events(run.events, column)
            except BidsVemError:  # stories told by words in the events name no stimulus file
                continue
            for stim_id in events["stim_id"].dropna().astype(str):
                if stim_id not in shown and getattr(kinds.get(stim_id), "kind", None) == "image":
                    shown.append(stim_id)
    human = {}
    if plan.captions_json is not None and Path(plan.captions_json).is_file():
        human = json.loads(Path(plan.captions_json).read_text())
    generated = _generated_captions(output_dir)
    folder = output_dir / f"sub-{subject}" / "figures" / "stimuli"
    strip = []
    for index, stim_id in enumerate(shown[:STRIP_SIZE]):
        thumbnail = folder / f"stimulus{index:02d}.png"
        try:
            with Image.open(kinds[stim_id].path) as image:
                image = image.convert("RGB")
                image.thumbnail((160, 160))
                folder.mkdir(parents=True, exist_ok=True)
                with atomic_path(thumbnail) as tmp:
                    image.save(tmp, format="PNG")
        except OSError as exc:  # a thumbnail must not cost the outputs
            logger.warning("no thumbnail of %s: %s", stim_id, exc)
            continue
        caption, model = generated.get(stim_id, ("", ""))
        strip.append({
            "stim_id": stim_id, "thumbnail": thumbnail,
            "caption": (human.get(stim_id) or [""])[0], "generated": caption, "model": model,
        })  # fmt: skip
    return strip


def quality_control(subject: str, plan: OutputPlan, group_results_by_group: dict) -> dict:
    """What the report's QC section shows: the BOLD cleaning, the runs skipped and why, and
    per run group its mask (voxels, and an outline on the template for volumes)."""
    parameters = plan.parameters
    skipped = [
        {"run": s.run, "reason": s.reason} for s in plan.skipped_runs if s.subject == subject
    ]
    masks = []
    for name, group_results in group_results_by_group.items():
        first = next(iter(group_results.values()), None)
        if first is not None:
            masks.append({"group": name, "mask_img": first["mask_img"], "space": first["space"],
                          "n_voxels": int(np.sum(first["mask"]))})  # fmt: skip
    return {
        "confounds": list(parameters.get("Confounds") or []),
        "high_pass": parameters.get("HighPass"),
        "design": parameters.get("Design"),
        "skipped": skipped,
        "masks": masks,
    }
