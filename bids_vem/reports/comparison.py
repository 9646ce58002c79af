"""Report section: feature spaces side by side, and how the alignment went (LLM-VEM)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bids_vem.config import option_name
from bids_vem.reports.html import esc, figure, relative_link, table

__all__ = ["comparison_html"]

_ROLE_ORDER = {"aligned": 0, "unaligned": 1, "caption text": 2, "other": 3}


def _label(item: Mapping[str, Any]) -> str:
    ses = f", session {item['session']}" if item.get("session") else ""
    return f"task {item.get('task')}{ses}, space {item.get('space')}"


def _alignment_table(folds: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for fold in folds:
        before, after = fold.get("before") or {}, fold.get("after") or {}
        rows.append(
            [
                fold.get("fold"),
                ", ".join(fold.get("held_out_runs") or []) or "none (exported model)",
                fold.get("n_train_stimuli"),
                fold.get("best_epoch"),
                before.get("val_loss"),
                after.get("val_loss"),
                before.get("val_i2t_r1"),
                after.get("val_i2t_r1"),
                before.get("val_t2i_r1"),
                after.get("val_t2i_r1"),
                after.get("temperature"),
            ]
        )
    return table(
        [
            "alignment",
            "held-out runs (predicted with it)",
            "training images",
            "best epoch",
            "val loss before",
            "val loss after",
            "image→caption R@1 before",
            "after",
            "caption→image R@1 before",
            "after",
            "temperature",
        ],
        rows,
        numeric=[False, False] + [True] * 9,
    )


def comparison_html(comparisons: Sequence[Mapping[str, Any]], output_dir: Path | str) -> str:
    """HTML of the comparison tables (one per run group) and the alignment metrics.

    Parameters
    ----------
    comparisons : sequence of mappings
        Per run group: ``task``, ``session``, ``space``, ``rows`` (from
        :func:`bids_vem.analysis.comparison.compare_feature_spaces`), optionally ``reference``,
        ``tsv``, ``alignment`` (fold metrics) and ``model`` (the exported model folder).
    output_dir : path
        The report's folder (links are relative to it).
    """
    blocks = []
    for item in comparisons:
        rows = sorted(item.get("rows") or [], key=lambda r: _ROLE_ORDER.get(r.get("role"), 9))
        if not rows:
            continue
        rois = [k for k in rows[0] if k.startswith("mean_r_roi-")]
        reference = item.get("reference")
        headers = ["feature space", "role", "mean r (mask)", "median r", "voxels r > 0.1"]
        headers += [f"mean r in {k.removeprefix('mean_r_roi-')}" for k in rois]
        keys = ["mean_r", "median_r", "n_voxels_r_above_threshold", *rois]
        if reference:
            headers += [
                f"voxels better than {reference}",
                "fraction of mask",
                "fraction of predicted voxels",
                f"mean r gain over {reference}",
            ]
            keys += [
                "n_voxels_beat_reference",
                "fraction_beat_reference",
                "fraction_beat_reference_predicted",
                "mean_r_gain",
            ]
        body = [
            [row.get("feature_space"), row.get("role")] + [row.get(k) for k in keys] for row in rows
        ]
        html = f"<h3>{esc(_label(item))}</h3>" + table(
            headers, body, numeric=[False, False] + [True] * len(keys)
        )
        if item.get("pairs"):
            html += "<p>Paired tests, voxel by voxel (sign flips of blocks of test samples, " + (
                "fold by fold; FDR q < 0.05):</p>"
            ) + table(
                ["a", "b", "why", "mean r(a) - r(b)", "voxels a better", "voxels b better",
                 "median p"],
                [
                    [row["feature_space_a"], row["feature_space_b"], row["why"],
                     row["mean_r_diff"], row["n_voxels_a_better"], row["n_voxels_b_better"],
                     row["median_p"]]
                    for row, _ in item["pairs"]
                ],
                numeric=[False, False, False, True, True, True, True],
            )  # fmt: skip
        links = []
        if item.get("pairs_tsv"):
            links.append(
                f'<a href="{esc(relative_link(item["pairs_tsv"], output_dir))}">paired tests (TSV)</a>'
            )
        if item.get("tsv"):
            links.append(
                f'<a href="{esc(relative_link(item["tsv"], output_dir))}">comparison table (TSV)</a>'
            )
        if item.get("model"):
            links.append(
                f'<a href="{esc(relative_link(item["model"], output_dir))}">aligned model '
                "(open_clip local-dir, with its training log)</a>"
            )
        if links:
            html += "<p>" + " · ".join(links) + "</p>"
        if item.get("alignment"):
            html += (
                "<p>Each run is predicted from the features of an alignment that never saw its "
                "images (the fold that held it out); the final alignment, on all images, gives "
                "the penalty map and is the exported model. Retrieval is on the validation slice "
                "of each alignment's training images.</p>" + _alignment_table(item["alignment"])
            )
        if item.get("bars"):
            html += figure(
                relative_link(Path(item["bars"]), output_dir),
                "Mean held-out r of each feature space over the mask and in each region",
            )
        best = item.get("best")
        if best:
            counts = ", ".join(f"{name} {n}" for name, n in best["counts"].items())
            if best.get("figure"):
                html += figure(
                    relative_link(Path(best["figure"]), output_dir),
                    f"The feature space with the largest r in each voxel where it has "
                    f"{best['rule']} (voxels: {counts})",
                )
            else:
                html += f"<p>Best feature space per voxel ({esc(best['rule'])}): {esc(counts)}.</p>"
        if item.get("curves"):
            html += figure(
                relative_link(Path(item["curves"]), output_dir),
                "Training curves of the exported alignment: loss, validation retrieval and "
                "temperature by epoch",
            )
        blocks.append(html)
    if not blocks:
        return f"<p>No comparison (use {option_name('align')} or {option_name('rois')}).</p>"
    return (
        "<p>Held-out r of every feature space over the same voxels. The first table "
        "describes; the paired tests below it compare two feature spaces on the same test "
        "samples, and the group level tests the maps across participants.</p>" + "".join(blocks)
    )
