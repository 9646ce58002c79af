"""Glue of the analyses' outputs (``--joint``): maps, tables and report sections of one run
group, from the steps' results."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from bids_vem.analysis.variance_partitioning import (
    NEGATIVE_ESTIMATES,
    PARTITION_COLUMNS,
    atom_label,
    partition_rows,
)
from bids_vem.encoding.banded import JointResult
from bids_vem.outputs.names import derivative_name, derivative_path
from bids_vem.outputs.statmaps import bids_uri, write_statmap, write_summary_tsv
from bids_vem.reports.figures import plot_partition, plot_r_map
from bids_vem.workflows.contracts import FitRecord, OutputPlan, RunGroup

__all__ = [
    "write_joint_outputs",
    "write_decoding_outputs",
    "write_rsa_outputs",
    "write_transfer_outputs",
    "transfer_rows",
]

logger = logging.getLogger(__name__)

_R2_TEXT = (
    "1 - SSE / SST over the held-out samples of every outer fold pooled, the data centred "
    "over them (the convention under which the split terms sum to the joint R^2)"
)


def write_joint_outputs(
    output_dir: Path,
    subject: str,
    group: RunGroup,
    plan: OutputPlan,
    record: FitRecord,
    group_results: dict[str, dict],
    regions: dict[str, np.ndarray],
) -> dict:
    """The maps, partition table and figures of one banded ridge (``--joint``); returns what
    the report shows.

    Maps (``desc-<joint>``, ``<joint>`` = the spaces joined by ``And``): ``stat-r2`` and
    ``stat-r`` of the joint model; per space (``label-<space>``) ``stat-splitr2``,
    ``stat-alpha`` and ``stat-uniquer2``; per combination (``label-<aAndb>``)
    ``stat-sharedr2``.
    """
    result = JointResult.load(record.result)
    spaces = list(result.spaces)
    name = record.feature_space
    first = group_results[spaces[0]]
    mask_img = first["mask_img"]
    if not np.array_equal(np.asarray(first["mask"]), np.asarray(result.mask)):
        raise RuntimeError(
            f"{group.name} {name}: the joint model's voxels differ from {spaces[0]}'s"
        )
    entities = group.entities | {"desc": name}
    sources = [
        bids_uri("", str(group_results[s]["paths"]["r"].relative_to(output_dir))) for s in spaces
    ]
    parameters = dict(plan.parameters) | {
        "JointModel": spaces,
        "Solver": "banded ridge, himalaya BandedRidgeCV random search over band weights and "
        "penalties (one penalty per feature space per voxel); single spaces by ridge",
        "BandWeightSamples": int(result.n_iterations),
        "CrossValidation": result.cross_validation,
        "CrossValidationFolds": int(result.n_folds),
        "TestStimuliInTraining": list(result.test_stimuli_in_training),
        "NuisanceRegression": result.nuisance or None,
        "Scoring": f"R^2: {_R2_TEXT}",
        "NegativeEstimates": NEGATIVE_ESTIMATES,
    }
    maps: dict[str, Path] = {}

    def write(values: np.ndarray, stat: str, label: str | None, description: str) -> Path:
        path = write_statmap(
            output_dir, values, mask_img,
            entities=entities | ({"label": label} if label else {}), stat=stat,
            description=description, sources=sources, parameters=parameters,
        )  # fmt: skip
        maps[f"{stat}:{label}" if label else stat] = path
        return path

    joined = " + ".join(spaces)
    write(result.r2, "r2", None, f"Held-out R^2 of the banded ridge model over {joined}.")
    write(result.r, "r", None, f"Held-out Pearson r of the banded ridge model over {joined}.")
    for i, space in enumerate(spaces):
        write(result.split_r2[i], "splitr2", space,
              f"The part of the joint model's R^2 ({joined}) carried by {space}'s prediction "
              "(product measure: the parts sum to the joint R^2).")  # fmt: skip
        write(result.alpha[i], "alpha", space,
              f"Penalty of {space}'s band in the joint model (geometric mean over the outer "
              "folds).")  # fmt: skip
    atoms, values = result.atoms()
    for atom, value in zip(atoms, values, strict=True):
        label = atom_label(atom, spaces)
        if len(atom) == 1:
            write(value, "uniquer2", label,
                  f"Variance explained uniquely by {label}: R^2({joined}) minus R^2 of the "
                  "model without it.")  # fmt: skip
        else:
            shared = " and ".join(spaces[i] for i in atom)
            write(value, "sharedr2", label,
                  f"Variance explained by exactly {shared} together (set-theoretic "
                  "partitioning of the subset models' R^2), not by either alone.")  # fmt: skip
    rows = partition_rows(result, regions)
    tsv = write_summary_tsv(
        derivative_path(output_dir, entities, "partition", ".tsv"), rows, PARTITION_COLUMNS
    )
    figures_dir = output_dir / f"sub-{subject}" / "figures"
    figure = plot_partition(
        rows, figures_dir / derivative_name(entities, "partition", ".png"),
        title=f"Variance partitioning, {joined}",
    )  # fmt: skip
    unique_figures = []
    for atom in atoms:
        label = atom_label(atom, spaces)
        key = f"uniquer2:{label}" if len(atom) == 1 else f"sharedr2:{label}"
        try:
            unique_figures.append(
                (
                    plot_r_map(
                        maps[key],
                        figures_dir
                        / derivative_name(entities | {"label": label}, key.split(":")[0], ".png"),
                        title=f"{key.split(':')[0]}, {label}",
                        threshold=0.01,
                    ),
                    f"{'Unique' if len(atom) == 1 else 'Shared'} variance, {label} (R^2 > 0.01)",
                )
            )
        except Exception as exc:  # a figure must not cost the outputs
            logger.warning("no figure for %s: %s", maps[key].name, exc)
    logger.info(
        "%s %s: joint R^2 %.3f (mean); unique %s",
        group.name, name, float(np.mean(result.r2)),
        ", ".join(f"{spaces[a[0]]} {float(np.mean(v)):.3f}" for a, v in zip(atoms, values, strict=True) if len(a) == 1),
    )  # fmt: skip
    return {"name": name, "group": group.name, "spaces": spaces, "rows": rows, "tsv": tsv,
            "figure": figure, "maps": maps, "map_figures": unique_figures,
            "cross_validation": result.cross_validation}  # fmt: skip


_DECODING_COLUMNS = {
    "stim_id": "The stimulus whose caption embedding was decoded from its response.",
    "caption": "Its caption (the first, when it has several; the embedding averages them all).",
    "rank": "Rank of its own caption among the candidates (1: identified).",
    "top1": "True when its own caption ranked first.",
    "top5": "True when its own caption ranked in the first five.",
    "best_match": "The candidate ranked first: a stimulus of the same fold, or corpus:<row> of "
    "--decode-corpus.",
    "best_caption": "The caption of that candidate.",
}


def write_decoding_outputs(
    output_dir: Path, group: RunGroup, plan: OutputPlan, record: FitRecord
) -> dict:
    """``..._desc-<space>_decoding.tsv`` (one row per stimulus) with a sidecar holding the
    summary figures; returns what the report shows."""
    import json

    from bids_vem.analysis.decoding import DecodingResult
    from bids_vem.outputs.jsonfile import write_json_atomic

    result = DecodingResult.load(record.result)
    captions = result.captions
    rows = [
        {
            "stim_id": stim,
            "caption": captions.get(stim),
            "rank": rank,
            "top1": rank == 1,
            "top5": rank <= 5,
            "best_match": best,
            "best_caption": captions.get(best),
        }
        for stim, rank, best in zip(result.stim_ids, result.rank, result.best, strict=True)
    ]
    entities = group.entities | {"desc": result.feature_space}
    tsv = write_summary_tsv(
        derivative_path(output_dir, entities, "decoding", ".tsv"), rows, _DECODING_COLUMNS
    )
    sidecar_path = tsv.with_suffix("").with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    summary = {
        "Description": f"Caption decoding: the {result.feature_space} embedding of each "
        "stimulus's captions predicted from its response pattern by a model that never saw "
        "the stimulus, and its own caption ranked among the candidates.",
        "Method": "linear kernel ridge from the voxels (z-scored over the training stimuli) "
        "to the caption embedding, one penalty chosen by an inner stimulus-disjoint CV; "
        f"{result.n_folds} folds of unique stimuli; each decoded embedding ranks, by Pearson "
        "correlation, its fold's held-out captions"
        + (f" and {result.n_corpus} corpus captions" if result.n_corpus else ""),
        "ResponsePatterns": "single-trial responses z-scored per session, averaged over the "
        "repeats of each stimulus; " + str(plan.parameters.get("TrialResponses") or
                                           "least-squares-separate single-trial betas"),
        "Stimuli": len(result.stim_ids),
        "Voxels": result.n_voxels,
        "Candidates": result.n_candidates,
        "CorpusCaptions": result.n_corpus,
        "TopOneAccuracy": result.top1,
        "TopOneChance": result.chance_top1,
        "TopFiveAccuracy": result.top5,
        "TopFiveChance": result.chance_top5,
        "MeanRank": result.mean_rank,
        "MeanRankChance": result.chance_mean_rank,
        "Permutations": result.n_permutations,
        "PermutationScheme": "responses paired with shuffled captions, the whole "
        "cross-validation repeated (penalty choice included); ranks among the held-out "
        "captions only",
        "PermutationP": {
            "TopOne": result.p_top1,
            "TopFive": result.p_top5,
            "MeanRank": result.p_mean_rank,
        },
        "Penalties": result.alphas,
    }  # fmt: skip
    write_json_atomic(sidecar_path, summary | sidecar)
    logger.info(
        "%s %s decoding: top-1 %.3f (chance %.3f), top-5 %.3f (chance %.3f), mean rank %.1f "
        "(chance %.1f)%s",
        group.name, result.feature_space, result.top1, result.chance_top1, result.top5,
        result.chance_top5, result.mean_rank, result.chance_mean_rank,
        "" if result.p_mean_rank is None else f", permutation p {result.p_mean_rank:.3g}",
    )  # fmt: skip
    order = sorted(rows, key=lambda row: (row["rank"], row["stim_id"]))
    return {
        "group": group.name,
        "result": result,
        "tsv": tsv,
        "best": order[:5],
        "worst": order[-5:][::-1],
    }


def write_rsa_outputs(
    output_dir: Path,
    subject: str,
    group: RunGroup,
    plan: OutputPlan,
    record: FitRecord,
    geometry=None,
) -> dict:
    """RSA of one run group: ``..._label-<region>_rdm.tsv`` (brain RDM, square, stimuli in
    rows and columns), ``..._rsa.tsv`` (rank correlations with every feature space) and the
    searchlight maps ``desc-<space>_stat-rsarho`` (on ``geometry``, the run group's surface,
    when it has one); returns what the report shows."""
    import json

    import nibabel as nib

    from bids_vem.analysis.rsa import RSA_COLUMNS, RSAResult, square
    from bids_vem.outputs.atomic import write_text_atomic
    from bids_vem.outputs.jsonfile import write_json_atomic

    result = RSAResult.load(record.result)
    n = len(result.stim_ids)
    rdms = []
    for region, rdm, n_voxels in zip(
        result.regions, result.brain_rdms, result.n_voxels, strict=True
    ):
        path = derivative_path(output_dir, group.entities | {"label": region}, "rdm", ".tsv")
        matrix = square(rdm, n)
        lines = ["stim_id\t" + "\t".join(result.stim_ids)]
        lines += [
            stim + "\t" + "\t".join(f"{v:.6g}" for v in row)
            for stim, row in zip(result.stim_ids, matrix, strict=True)
        ]
        write_text_atomic(path, "\n".join(lines) + "\n")
        write_json_atomic(
            path.with_suffix("").with_suffix(".json"),
            {
                "Description": f"Brain representational dissimilarity matrix of region {region}: "
                "one row and column per stimulus (sorted), from single-trial response patterns.",
                "Measure": result.measure,
                "Stimuli": n,
                "Voxels": n_voxels,
                "TrialResponses": plan.parameters.get("TrialResponses")
                or "least-squares-separate single-trial betas, z-scored per session",
            },
        )
        rdms.append(path)
    entities = group.entities
    tsv = write_summary_tsv(
        derivative_path(output_dir, entities, "rsa", ".tsv"), result.rows, RSA_COLUMNS
    )
    sidecar_path = tsv.with_suffix("").with_suffix(".json")
    write_json_atomic(
        sidecar_path,
        {
            "Description": "Rank correlation of each region's brain RDM with each feature "
            "space's RDM (correlation distance between the stimuli's features).",
            "Permutations": result.n_permutations,
        }
        | json.loads(sidecar_path.read_text()),
    )
    maps, figures = {}, []
    if result.searchlight is not None:
        from bids_vem.outputs.surfaces import SurfaceMask

        mask_img = (
            nib.Nifti1Image(result.mask.astype(np.uint8), result.affine)
            if geometry is None
            else SurfaceMask(geometry, np.asarray(result.mask).reshape(-1))
        )
        figures_dir = output_dir / f"sub-{subject}" / "figures"
        for fs, values in zip(result.feature_spaces, result.searchlight, strict=True):
            path = write_statmap(
                output_dir, values, mask_img, entities=entities | {"desc": fs}, stat="rsarho",
                description=f"Searchlight RSA: Spearman's rho between the brain RDM of a "
                f"{result.radius:g} mm sphere around each voxel and {fs}'s RDM "
                f"({result.measure}); NaN where the sphere holds fewer than 3 voxels.",
                sources=[bids_uri("", str(rdms[0].relative_to(output_dir)))],
                parameters={"SearchlightRadius": result.radius, "Measure": result.measure},
            )  # fmt: skip
            maps[fs] = path
            try:
                png = plot_r_map(
                    path, figures_dir / derivative_name(entities | {"desc": fs}, "rsarho", ".png"),
                    title=f"searchlight rho, {fs}", threshold=0.1,
                )  # fmt: skip
                figures.append((png, f"Searchlight RSA, {fs} (rho > 0.1)"))
            except Exception as exc:  # a figure must not cost the outputs
                logger.warning("no figure for %s: %s", path.name, exc)
    for row in result.rows:
        logger.info(
            "%s RSA %s x %s: rho %.3f (p %s), tau-a %.3f", group.name, row["region"],
            row["feature_space"], row["spearman"], row["p_spearman"], row["tau_a"],
        )  # fmt: skip
    return {"group": group.name, "result": result, "tsv": tsv, "rdms": rdms, "maps": maps,
            "figures": figures}  # fmt: skip


#: the columns of ``..._transfer.tsv`` and what they mean (its sidecar)
TRANSFER_COLUMNS = {
    "transfer": "Source space -> target space (kind).",
    "source_task": "The task whose runs the model was fitted on.",
    "target_task": "The task whose runs it predicted.",
    "source_space": "Feature space of the source task's stimuli (the model's design).",
    "target_space": "Feature space of the target task's stimuli fed to the model.",
    "kind": "same: one feature space embeds both tasks' stimuli; shared: the text and image "
    "towers of one model; mapped: separate encoders, the target features carried into the "
    "source space by a ridge map fitted on --transfer-corpus (the unimodal control).",
    "region": "mask (every voxel of both tasks' masks) or a --roi.",
    "n_voxels": "Voxels (surface points) in the region.",
    "mean_r": "Mean transfer r (Pearson r between measured and predicted target BOLD).",
    "median_r": "Median transfer r.",
    "percent_significant": "Percent of the region's voxels with q < 0.05 (block-permutation "
    "p, Benjamini-Hochberg over the mask); n/a without permutations.",
    "within_mean_r": "Mean r of the target space's own model of the target task (held-out "
    "runs), on the same voxels: the ceiling transfer is read against.",
    "source_mean_r": "Mean cross-validated r of the transferred model within its own task.",
}

_KIND_TEXT = {
    "same": "one feature space embeds both tasks' stimuli",
    "shared": "the text and image towers of one model, whose outputs share a space",
    "mapped": "separate encoders: the target features carried into the source space by a "
    "ridge map fitted on the --transfer-corpus images and captions (the unimodal control)",
}


def transfer_rows(
    result, label: str, within_r: np.ndarray | None, regions: dict[str, np.ndarray]
) -> list[dict]:
    """Per region (the mask, each ROI): transfer r, significance, and the target space's
    within-task r on the same voxels."""
    q = result.q
    rows = []
    for region, inside in {"mask": np.ones(len(result.r), bool), **regions}.items():
        r = result.r[inside]
        rows.append({
            "transfer": label, "source_task": result.source_task,
            "target_task": result.target_task, "source_space": result.source_space,
            "target_space": result.target_space, "kind": result.kind, "region": region,
            "n_voxels": int(inside.sum()),
            "mean_r": float(np.mean(r)) if len(r) else np.nan,
            "median_r": float(np.median(r)) if len(r) else np.nan,
            "percent_significant": (
                "n/a" if q is None or not len(r) else round(100 * float(np.mean(q[inside] < 0.05)), 2)
            ),
            "within_mean_r": (
                float(np.nanmean(within_r[inside])) if within_r is not None and len(r) else np.nan
            ),
            "source_mean_r": float(np.mean(result.source_r[inside])) if len(r) else np.nan,
        })  # fmt: skip
    return rows


def write_transfer_outputs(
    output_dir: Path,
    subject: str,
    group: RunGroup,
    plan: OutputPlan,
    records: list[FitRecord],
    group_results: dict[str, dict],
    geometry,
) -> dict:
    """The maps of every ``--transfer`` into one run group's task, their table and figures;
    returns what the report shows.

    Maps ``desc-<transfer>`` (:attr:`~bids_vem.workflows.contracts.TransferEntry.name`) on the
    voxels of both tasks' masks: ``stat-r`` (transfer r), ``stat-p`` (block permutation,
    one-sided) and ``stat-q`` (Benjamini-Hochberg over the mask). Table
    ``..._transfer.tsv`` (:data:`TRANSFER_COLUMNS`), one row per transfer and region.
    """
    from bids_vem.analysis.comparison import roi_points, roi_voxels
    from bids_vem.analysis.transfer import TransferResult
    from bids_vem.outputs.surfaces import SurfaceMask
    from bids_vem.reports.figures import plot_transfer
    from bids_vem.workflows.participant_outputs import _output_mask

    entries = {entry.name: entry for entry in plan.transfers}
    figures_dir = output_dir / f"sub-{subject}" / "figures"
    rows, maps, map_figures = [], {}, []
    for record in records:
        result = TransferResult.load(record.result)
        entry = entries[record.feature_space]
        mask_img = _output_mask(result, geometry)
        entities = group.entities | {"desc": entry.name}
        parameters = {
            k: v for k, v in plan.parameters.items()
            if k not in ("TestRuns", "AverageTestRepeats", "TestStimuli", "CVFolds", "Scoring")
        } | {
            "SourceTask": result.source_task,
            "SourceRuns": list(result.source_runs),
            "TargetRuns": list(result.target_runs),
            "SourceFeatureSpace": result.source_space,
            "TargetFeatureSpace": result.target_space,
            "TransferKind": f"{result.kind}: {_KIND_TEXT[result.kind]}",
            "FeatureMap": result.feature_map or None,
            "Fit": "ridge on every source run, one penalty per voxel by leave-one-run-out "
            "cross-validation within the source task; the target runs never enter the fit",
            "Scoring": "Pearson r between measured and predicted BOLD over all target runs, "
            "each run's measured and predicted series z-scored",
            "Permutations": result.n_permutations,
            "Null": f"each target run's prediction shuffled in blocks of {result.block_trs} TRs "
            "(one-sided p = (1 + #null >= r) / (1 + permutations))",
        }  # fmt: skip
        label = f"{entry.source_space}->{entry.target_space} ({entry.kind})"
        what = (
            f"the model of task {result.source_task} in {result.source_space} predicting task "
            f"{result.target_task} from {result.target_space}"
        )
        stats = {"r": (result.r, f"Transfer r: {what}.")}
        if result.p is not None:
            stats["p"] = (result.p, f"One-sided block-permutation p of the transfer r ({what}).")
            stats["q"] = (result.q, f"Benjamini-Hochberg FDR of stat-p over the mask ({what}).")
        for stat, (values, description) in stats.items():
            maps[f"{entry.name}:{stat}"] = write_statmap(
                output_dir, values, mask_img, entities=entities, stat=stat,
                description=description, sources=[], parameters=parameters,
            )  # fmt: skip
        within = group_results.get(entry.target_space)
        within_r = None
        if within is not None:  # the target space's own model, on the transfer's voxels
            full = np.full(np.shape(within["mask"]), np.nan)
            full[np.asarray(within["mask"], bool)] = within["r"]
            within_r = full[np.asarray(result.mask, bool)]
        if not plan.rois:
            regions = {}
        elif isinstance(mask_img, SurfaceMask):
            regions = roi_points(list(plan.rois), mask_img)
        else:
            regions = roi_voxels(list(plan.rois), result.mask, result.affine)
        rows += transfer_rows(result, label, within_r, regions)
        try:
            map_figures.append((
                plot_r_map(
                    maps[f"{entry.name}:r"],
                    figures_dir / derivative_name(entities, "r", ".png"),
                    title=f"transfer r, {entry.source_task} -> {entry.target_task}, {label}",
                ),
                f"Transfer r, {result.source_task} -> {result.target_task}, {label} (r > 0.1)",
            ))  # fmt: skip
        except Exception as exc:  # a figure must not cost the outputs
            logger.warning("no figure for %s: %s", maps[f"{entry.name}:r"].name, exc)
        logger.info(
            "%s: transfer %s -> %s, %s: mean r %.3f (within-task %s %.3f)",
            group.name, result.source_task, result.target_task, label, float(np.mean(result.r)),
            result.target_space, float(np.nanmean(within_r)) if within_r is not None else np.nan,
        )  # fmt: skip
    tsv = write_summary_tsv(
        derivative_path(output_dir, group.entities, "transfer", ".tsv"), rows,
        TRANSFER_COLUMNS,
    )  # fmt: skip
    figure = plot_transfer(
        rows, figures_dir / derivative_name(group.entities, "transfer", ".png"),
        title=f"Transfer into task {group.task}",
    )  # fmt: skip
    return {"group": group.name, "task": group.task, "rows": rows, "tsv": tsv,
            "figure": figure, "maps": maps, "map_figures": map_figures}  # fmt: skip
