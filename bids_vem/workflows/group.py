"""The group level: one-sample t-test of the participants' r maps, BH-FDR, maps and report.

The group level reads only OUTPUT_DIR and is light (a few maps per participant), so it
runs in-process rather than as a nipype graph.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from bids_vem import __version__
from bids_vem.analysis.group import find_participant_r_maps, stack_maps
from bids_vem.config import RunConfig
from bids_vem.encoding.stats import fisher_z, group_ttest
from bids_vem.errors import DataError
from bids_vem.outputs.group import find_statmaps, write_group_maps, write_group_summary
from bids_vem.outputs.names import derivative_name
from bids_vem.outputs.statmaps import bids_uri
from bids_vem.reports.figures import plot_r_map
from bids_vem.reports.group import link_participant_reports, write_group_report

__all__ = ["run_group_level"]

logger = logging.getLogger(__name__)

#: false discovery rate of the group maps (Doerig et al. 2025: q = 0.05)
FDR_Q = 0.05


def _paired_group_tests(output_dir: Path, found) -> list[dict]:
    """Every pair of feature spaces of one task and space, tested across the participants
    who have both: paired t-test of Fisher-z differences, two-sided, BH FDR (maps
    ``desc-<a>vs<b>_stat-<meandiff|t|p|q>``; the aligned space vs its base is the group
    test of ``rgain``)."""
    from itertools import combinations

    from bids_vem.analysis.paired import paired_group_test

    by_map: dict[tuple[str, str], list] = {}
    for maps in found:
        by_map.setdefault((maps.task, maps.space), []).append(maps)
    rows = []
    for (task, space), spaces in sorted(by_map.items()):
        for a, b in combinations(sorted(spaces, key=lambda m: m.feature_space), 2):
            subjects = sorted(set(a.paths) & set(b.paths))
            if len(subjects) < 2:
                continue
            paths = [a.paths[s] for s in subjects] + [b.paths[s] for s in subjects]
            values, mask_img = stack_maps(paths)
            test = paired_group_test(values[: len(subjects)], values[len(subjects) :])
            name = f"{a.feature_space}vs{b.feature_space}"
            write_group_maps(
                output_dir,
                {stat: test[stat] for stat in ("meandiff", "t", "p", "q")},
                mask_img,
                task=task,
                space=space,
                feature_space=name,
                n_subjects=len(subjects),
                sources=[bids_uri("", p.relative_to(output_dir)) for p in paths],
                parameters={
                    "Test": f"paired t-test across participants of Fisher-z(r) of "
                    f"{a.feature_space} minus {b.feature_space}, two-sided",
                    "Correction": "Benjamini-Hochberg FDR over the voxels of the group mask",
                    "Participants": [f"sub-{s}" for s in subjects],
                },
            )
            significant = test["q"] < FDR_Q
            rows.append(
                {
                    "task": task,
                    "space": space,
                    "feature_space": name,
                    "n_subjects": len(subjects),
                    "n_voxels": int(values.shape[1]),
                    "mean_r_diff": float(np.nanmean(test["meandiff"])),
                    f"n_voxels_a_better_q_below_{FDR_Q}": int(
                        np.sum(significant & (test["t"] > 0))
                    ),
                    f"n_voxels_b_better_q_below_{FDR_Q}": int(
                        np.sum(significant & (test["t"] < 0))
                    ),
                }
            )
            logger.info(
                "task-%s %s vs %s: %d participants, %d voxel(s) better and %d worse at FDR "
                "q < %.2f (paired t-test of Fisher-z differences)",
                task, a.feature_space, b.feature_space, len(subjects),
                rows[-1][f"n_voxels_a_better_q_below_{FDR_Q}"],
                rows[-1][f"n_voxels_b_better_q_below_{FDR_Q}"], FDR_Q,
            )  # fmt: skip
    return rows


def _selected(config: RunConfig, entities: dict) -> bool:
    """Whether a participant file is among the participants and tasks asked for."""
    return (not config.participant_label or entities.get("sub") in config.participant_label) and (
        not config.task or entities.get("task") in config.task
    )


def _participant_files(output_dir: Path, config: RunConfig, pattern: str):
    """``(entities, path)`` of the participants' ``func`` files matching ``pattern``, in the
    participants and tasks asked for."""
    from bids_vem.outputs.names import parse_derivative_name

    for folder in ("sub-*/func", "sub-*/ses-*/func"):
        for path in sorted(output_dir.glob(f"{folder}/{pattern}")):
            entities, _, _ = parse_derivative_name(path)
            if _selected(config, entities):
                yield entities, path


#: participant maps of the analyses tested across participants: stat -> (what the values are,
#: whether they are Fisher-z transformed first)
_ANALYSIS_MAPS = {
    "uniquer2": ("the unique-variance R^2 (negative estimates kept)", False),
    "sharedr2": ("the shared-variance R^2 (negative estimates kept)", False),
    "rsarho": ("Fisher-z of the searchlight RSA rho", True),
}


def _group_analysis_maps(output_dir: Path, config: RunConfig, errors: list[str]) -> list[dict]:
    """Unique and shared variance (``--joint``) and searchlight RSA (``--rsa``) tested across
    participants: per (task, space, model, label), a one-sided one-sample t-test with BH FDR,
    ``group/task-<t>_space-<s>[_label-<l>]_desc-<model>_stat-<mean<stat>|t|p|q>_statmap``.
    Returns the summary rows."""
    from collections import defaultdict

    from bids_vem.encoding.stats import one_sample_ttest

    rows = []
    for stat, (what, fisher) in _ANALYSIS_MAPS.items():
        groups: dict[tuple, dict[str, Path]] = defaultdict(dict)
        for entities, path in find_statmaps(output_dir, stat=stat):
            if not _selected(config, entities):
                continue
            key = (entities.get("task"), entities.get("space"), entities.get("desc"),
                   entities.get("label"))  # fmt: skip
            groups[key][entities["sub"]] = path
        for (task, space, joint, label), paths in sorted(groups.items()):
            if len(paths) < 2:
                errors.append(f"task-{task} {joint} {stat} {label or ''}: one participant")
                continue
            ordered = [paths[s] for s in sorted(paths)]
            values, mask_img = stack_maps(ordered)
            test = one_sample_ttest(fisher_z(values) if fisher else values, alternative="greater")
            mean = np.nanmean(values, axis=0)
            write_group_maps(
                output_dir, {f"mean{stat}": mean, "t": test["t"], "p": test["p"], "q": test["q"]},
                mask_img, task=task, space=space, feature_space=joint, label=label,
                n_subjects=len(ordered),
                sources=[bids_uri("", p.relative_to(output_dir)) for p in ordered],
                parameters={
                    "Test": f"one-sample t-test across participants of {what}, one-sided "
                    "(greater than 0)",
                    "Correction": "Benjamini-Hochberg FDR over the voxels of the group mask",
                    "Participants": [f"sub-{s}" for s in sorted(paths)],
                },
            )  # fmt: skip
            rows.append({
                "task": task, "space": space,
                "feature_space": " ".join(str(x) for x in (joint, stat, label) if x),
                "n_subjects": len(ordered), "n_voxels": int(values.shape[1]),
                f"mean_{stat}": float(np.nanmean(mean)),
                f"n_voxels_q_below_{FDR_Q}": int(np.sum(test["q"] < FDR_Q)),
            })  # fmt: skip
    return rows


def _group_decoding(output_dir: Path, config: RunConfig) -> list[dict]:
    """Caption decoding (``--decode``) across participants: per (task, space, text space),
    mean top-1, top-5 and mean rank with their chance levels, and a one-sided one-sample
    t-test of top-1 accuracy minus its chance level. Returns the summary rows."""
    import json
    from collections import defaultdict

    from scipy.stats import ttest_1samp

    found: dict[tuple, list[dict]] = defaultdict(list)
    for entities, path in _participant_files(output_dir, config, "*_decoding.json"):
        key = (entities.get("task"), entities.get("space"), entities.get("desc"))
        found[key].append(json.loads(path.read_text()))
    rows = []
    for (task, space, name), sidecars in sorted(found.items()):
        if len(sidecars) < 2:
            continue
        above = np.array([s["TopOneAccuracy"] - s["TopOneChance"] for s in sidecars])
        test = ttest_1samp(above, 0.0, alternative="greater")
        rows.append({
            "task": task, "space": space, "feature_space": f"{name} decoding",
            "n_subjects": len(sidecars),
            "mean_top1": float(np.mean([s["TopOneAccuracy"] for s in sidecars])),
            "chance_top1": float(np.mean([s["TopOneChance"] for s in sidecars])),
            "mean_top5": float(np.mean([s["TopFiveAccuracy"] for s in sidecars])),
            "chance_top5": float(np.mean([s["TopFiveChance"] for s in sidecars])),
            "mean_rank": float(np.mean([s["MeanRank"] for s in sidecars])),
            "chance_mean_rank": float(np.mean([s["MeanRankChance"] for s in sidecars])),
            "t_top1_above_chance": float(test.statistic),
            "p_top1_above_chance": float(test.pvalue),
        })  # fmt: skip
        logger.info(
            "task-%s %s decoding: %d participants, top-1 %.3f (chance %.3f), t %.2f, p %.3g",
            task, name, len(sidecars), rows[-1]["mean_top1"], rows[-1]["chance_top1"],
            test.statistic, test.pvalue,
        )  # fmt: skip
    return rows


def _group_rsa(output_dir: Path, config: RunConfig, errors: list[str]) -> list[dict]:
    """Per (task, space) with participant RDMs (``--rsa``): each region's model correlations
    across participants with noise ceilings, ``group/task-<t>_space-<s>_rsa.tsv``. Returns
    the tables for the report."""
    import csv
    from collections import defaultdict

    from bids_vem.analysis.rsa import GROUP_RSA_COLUMNS, group_rsa_rows, read_rdm
    from bids_vem.features.feature_set import read_feature_derivative
    from bids_vem.outputs.names import derivative_path
    from bids_vem.outputs.statmaps import write_summary_tsv

    found: dict[tuple, dict[str, Path]] = defaultdict(dict)
    spaces: dict[tuple, set[str]] = defaultdict(set)
    table_spaces: dict[Path, set[str]] = {}  # each run group's rsa.tsv read once
    for entities, path in _participant_files(output_dir, config, "*_rdm.tsv"):
        key = (entities.get("task"), entities.get("space"), entities.get("label"))
        session = f"_ses-{entities['ses']}" if entities.get("ses") else ""
        found[key][entities["sub"] + session] = path
        table = path.with_name(path.name.replace(f"_label-{entities['label']}_rdm", "_rsa"))
        if table not in table_spaces:
            table_spaces[table] = set()
            if table.is_file():
                with table.open() as handle:
                    rows = csv.DictReader(handle, delimiter="\t")
                    table_spaces[table] = {r["feature_space"] for r in rows}
        spaces[key] |= table_spaces[table]
    tables: dict[tuple, list[dict]] = defaultdict(list)
    features: dict[str, object] = {}
    for (task, space, region), paths in sorted(found.items()):
        if len(paths) < 2:
            errors.append(f"RSA task-{task} space-{space} {region}: one participant; noise "
                          "ceilings need 2 or more")  # fmt: skip
            continue
        for name in spaces[(task, space, region)] - set(features):  # each read once
            features[name] = read_feature_derivative(output_dir, name)
        models = {name: features[name] for name in sorted(spaces[(task, space, region)])}
        rdms = {who: read_rdm(path) for who, path in paths.items()}
        tables[(task, space)] += group_rsa_rows(rdms, models, region)
    out = []
    for (task, space), rows in tables.items():
        path = derivative_path(
            output_dir / "group", {"task": task, "space": space}, "rsa", ".tsv", datatype=None
        )
        write_summary_tsv(path, rows, GROUP_RSA_COLUMNS)
        logger.info("group RSA task-%s space-%s: %s", task, space, path)
        out.append({"task": task, "space": space, "rows": rows, "tsv": path})
    return out


def _group_figures(out: dict, stats: dict, figure: Path, label: str, name: str, n: int):
    """Mean r and t across participants, both drawn where q < FDR_Q (and said so), cut at
    the same place; returns (caption, path) pairs."""
    from bids_vem.reports.figures import shared_cut_coords

    mean_r, t, q = (np.asarray(stats[k], dtype=np.float64) for k in ("mean_r", "t", "q"))
    significant = (q < FDR_Q) & (t > 0)
    if significant.any():
        thresholds = float(mean_r[significant].min()), float(t[significant].min())
        shown = (
            f"drawn where q < {FDR_Q:g} ({int(significant.sum())} voxels; one-sided t-test, FDR)"
        )
    else:
        thresholds = 0.1, 3.0
        shown = f"no voxel reached q < {FDR_Q:g}; drawn: mean r > 0.1 and t > 3, not significant"
    cuts = shared_cut_coords([out["meanr"]])
    t_figure = figure.with_name(figure.name.replace("_meanr.png", "_t.png"))
    plot_r_map(out["meanr"], figure, title=f"mean r, {name} ({n} participants)",
               threshold=thresholds[0], positive_only=True, cut_coords=cuts)  # fmt: skip
    plot_r_map(out["t"], t_figure, title=f"t, {name} ({n} participants)",
               threshold=thresholds[1], positive_only=True, cut_coords=cuts)  # fmt: skip
    return [
        (f"Mean held-out r across participants: {label}; {shown}", figure),
        (f"t across participants: {label}; {shown}", t_figure),
    ]


def run_group_level(config: RunConfig) -> Path:
    """Test encoding accuracy across participants for every (task, space, feature space).

    Returns
    -------
    Path
        The group report (``OUTPUT_DIR/group/group.html``).

    Raises
    ------
    NoMatchError
        No participant-level r maps in OUTPUT_DIR (exit 18).
    DataError
        Fewer than two participants for every map, or maps on different grids (exit 65).
    """
    output_dir = config.output_dir
    rows, figures, errors = [], [], []
    tested = 0
    found = find_participant_r_maps(output_dir, config.participant_label, config.task)
    for maps in found:
        label = f"task-{maps.task} space-{maps.space} {maps.feature_space}"
        if len(maps.paths) < 2:
            errors.append(
                f"{label}: only sub-{maps.subjects[0]} has an r map; a group test needs 2 or more"
            )
            logger.warning("%s", errors[-1])
            continue
        paths = [maps.paths[s] for s in maps.subjects]
        values, mask_img = stack_maps(paths)
        stats = group_ttest(values, alternative="greater")
        out = write_group_maps(
            output_dir,
            {"meanr": stats["mean_r"], "t": stats["t"], "p": stats["p"], "q": stats["q"]},
            mask_img,
            task=maps.task,
            space=maps.space,
            feature_space=maps.feature_space,
            n_subjects=len(paths),
            sources=[bids_uri("", p.relative_to(output_dir)) for p in paths],
            parameters={
                "Test": "one-sample t-test of Fisher-z(r) across participants, one-sided (r > 0)",
                "Correction": "Benjamini-Hochberg FDR over the voxels of the group mask",
                "Participants": [f"sub-{s}" for s in maps.subjects],
            },
        )
        n_significant = int(np.sum(stats["q"] < FDR_Q))
        rows.append(
            {
                "task": maps.task,
                "space": maps.space,
                "feature_space": maps.feature_space,
                "n_subjects": len(paths),
                "n_voxels": int(values.shape[1]),
                "mean_r": float(np.mean(stats["mean_r"])),
                "max_mean_r": float(np.max(stats["mean_r"])),
                f"n_voxels_q_below_{FDR_Q}": n_significant,
            }
        )
        logger.info(
            "%s: %d participants, %d voxels, mean r %.3f; %d voxel(s) significant at FDR q < %.2f",
            label,
            len(paths),
            values.shape[1],
            rows[-1]["mean_r"],
            n_significant,
            FDR_Q,
        )
        figure = (
            output_dir
            / "group"
            / "figures"
            / derivative_name({"task": maps.task, "desc": maps.feature_space}, "meanr", ".png")
        )
        try:
            figures += _group_figures(out, stats, figure, label, maps.feature_space, len(paths))
        except Exception as err:  # noqa: BLE001 - a figure must not sink the group results
            errors.append(f"figure of {label} failed: {err}")
        tested += 1
    if not tested:
        raise DataError(
            f"group level: no map has 2 or more participants in {output_dir}; " + "; ".join(errors)
        )
    rows += _paired_group_tests(output_dir, found)
    rows += _group_analysis_maps(output_dir, config, errors)
    rows += _group_decoding(output_dir, config)
    write_group_summary(output_dir, rows)
    rsa_tables = _group_rsa(output_dir, config, errors)
    link_participant_reports(output_dir, sorted({s for maps in found for s in maps.subjects}))
    return write_group_report(
        output_dir,
        rows,
        figures,
        rsa=rsa_tables,
        errors=errors,
        command_line=" ".join(["bids_vem", *sys.argv[1:]]),
        version=__version__,
    )
