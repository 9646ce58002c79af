"""Glue of the output steps: turn step results into derivative files and reports.

Called by the always-run nipype interfaces; each function only hands data to the
writers of :mod:`bids_vem.outputs` and :mod:`bids_vem.reports`.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bids_vem import __version__
from bids_vem.encoding.model import EncodingResult
from bids_vem.features.extract import write_feature_derivatives
from bids_vem.features.feature_set import load_feature_set
from bids_vem.outputs.atomic import atomic_path
from bids_vem.outputs.dataset import (
    container_from_environment,
    write_bidsignore,
    write_citation,
    write_dataset_description,
    write_descriptions,
    write_readme,
)
from bids_vem.outputs.statmaps import (
    bids_uri,
    encoding_summary_row,
    summary_tsv_path,
    write_encoding_maps,
    write_summary_tsv,
)
from bids_vem.reports.participant import write_participant_report

__all__ = ["write_dataset_outputs", "write_participant_outputs", "citation_params"]

log = logging.getLogger("bids_vem.outputs")


def citation_params(plan: dict) -> dict[str, Any]:
    """The parameters the methods text describes."""
    parameters = plan["parameters"]
    trs = sorted({run["tr"] for group in plan["run_groups"] for run in group["runs"]})
    return {
        "delays": parameters["Delays"],
        "alphas": parameters["Alphas"],
        "cv": "leave-one-run-out (nested: each run predicted by a model that never saw it)",
        "score": "correlation",
        "tr": trs[0] if len(trs) == 1 else None,
        "confounds": parameters["Confounds"],
    }


def write_dataset_outputs(
    output_dir: Path,
    bids_dir: Path,
    *,
    plan: dict,
    feature_set_files: list[Path],
    captions_tsv: Path | None = None,
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
    descriptions = {}
    feature_spaces = []
    for path in feature_set_files:
        feature_set = load_feature_set(path)
        files += write_feature_derivatives(feature_set, output_dir)
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
            }
        )
    files.append(write_descriptions(output_dir, descriptions))
    files.append(
        write_citation(
            output_dir,
            feature_spaces=feature_spaces,
            n_runs=sum(len(group["runs"]) for group in plan["run_groups"]),
            params=citation_params(plan),
            version=__version__,
            n_subjects=len({group["subject"] for group in plan["run_groups"]}),
        )
    )
    return files


def dataset_links(plan: dict) -> dict[str, Path]:
    """BIDS URI names of the datasets we read: ``raw`` and each derivative by folder name."""
    links = {"raw": Path(plan["bids_dir"])}
    for path in plan.get("derivatives", []):
        links.setdefault(Path(path).name, Path(path))
    return links


def _uri(path: str | Path, links: dict[str, Path]) -> str:
    """``bids:<dataset>:<relative path>`` of an input file, else a file URI."""
    path = Path(path)
    # most specific dataset first: derivatives live inside the raw dataset
    for name, root in sorted(links.items(), key=lambda item: -len(str(item[1]))):
        try:
            return bids_uri(name, path.relative_to(root))
        except ValueError:
            continue
    return path.as_uri()


def _sources(group: dict, feature_space: str, links: dict[str, Path]) -> list[str]:
    sources = [_uri(run[key], links) for run in group["runs"] for key in ("bold", "mask", "events")]
    sources.append(bids_uri("", f"features/desc-{feature_space}_features.npy"))
    return sources


def write_participant_outputs(
    output_dir: Path,
    subject: str,
    *,
    plan: dict,
    result_files: list[Path],
) -> tuple[Path, list[Path]]:
    """Stat maps, the summary table and the HTML report of one participant.

    ``result_files`` are in the order of the workflow: for each run group of the
    participant, for each feature space.
    """
    groups = [g for g in plan["run_groups"] if g["subject"] == subject]
    feature_spaces = plan["feature_spaces"]
    expected = len(groups) * len(feature_spaces)
    if len(result_files) != expected:
        raise RuntimeError(f"sub-{subject}: {len(result_files)} results for {expected} fits")
    n_features: dict[str, int] = {}

    links = dataset_links(plan)
    statmaps: list[Path] = []
    rows, results = [], []
    errors = [
        f"skipped: {sentence}"
        for sentence in plan.get("skipped_runs", [])
        # sentences start with the run name: "sub-01_task-x_run-1: no events.tsv ..."
        if sentence.startswith(f"sub-{subject}_")
    ]
    files = iter(result_files)
    for group in groups:
        for fs in feature_spaces:
            result = EncodingResult.load(next(files))
            # design columns = features x delays: no need to read the feature matrix again
            n_features[fs["name"]] = result.n_features // max(1, len(result.delays))
            mask_img = nib.Nifti1Image(result.mask.astype(np.uint8), result.affine)
            parameters = dict(plan["parameters"]) | {
                "FeatureSpace": fs["name"],
                "ModelSpec": fs["spec"],
                "Modality": fs["modality"],
                "Runs": list(result.runs),
                "NestedCV": bool(result.nested),
            }
            paths = write_encoding_maps(
                output_dir,
                result,
                mask_img,
                subject=subject,
                session=group["session"],
                task=group["task"],
                space=group["space"],
                feature_space=fs["name"],
                sources=_sources(group, fs["name"], links),
                parameters=parameters,
            )
            statmaps += list(paths.values())
            row = encoding_summary_row(
                result,
                subject=subject,
                session=group["session"],
                task=group["task"],
                space=group["space"],
                feature_space=fs["name"],
                alphas=list(result.alphas),
            )
            rows.append(row)
            results.append(
                {
                    "task": group["task"],
                    "session": group["session"],
                    "space": group["space"],
                    "feature_space": fs["name"],
                    "summary": row,
                    "paths": paths,
                    "r": result.r,
                }
            )
            n_edge = int(result.n_alpha_low + result.n_alpha_high)
            log.info(
                "sub-%s task-%s %s: mean r %.3f, max r %.3f over %d voxels; %d voxel(s) chose a penalty "
                "at an edge of the grid (%d low, %d high)",
                subject,
                group["task"],
                fs["name"],
                float(np.mean(result.r)),
                float(np.max(result.r)),
                result.n_voxels,
                n_edge,
                result.n_alpha_low,
                result.n_alpha_high,
            )
    write_summary_tsv(summary_tsv_path(output_dir, subject), rows)
    runs = [run for group in groups for run in group["runs"]]
    report = write_participant_report(
        output_dir,
        subject,
        runs=runs,
        feature_spaces=[fs | {"n_features": n_features.get(fs["name"])} for fs in feature_spaces],
        results=results,
        errors=errors,
        command_line=" ".join(["bids_vem", *sys.argv[1:]]) if sys.argv else None,
        version=__version__,
    )
    return report, statmaps
