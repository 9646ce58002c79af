"""Report sections of the analyses beyond one model per feature space (``--joint``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bids_vem.reports.html import esc, figure, relative_link, table

__all__ = ["joint_html", "decoding_html", "rsa_html"]


def joint_html(joints: Sequence[Mapping[str, Any]], output_dir: Path) -> str:
    """Each banded ridge: how it was evaluated, the partition table, its bar chart and the
    unique and shared variance maps."""
    blocks = [
        "<p>Banded ridge: one model over several feature spaces with one penalty per space per "
        "voxel. The joint R<sup>2</sup> is split among the spaces (product measure), and the "
        "variance unique to each space and shared by each combination comes from a model of "
        "every subset of the spaces on the same nested folds. Negative estimates are kept "
        "(no evidence for that component).</p>"
    ]
    for joint in joints:
        rows = list(joint["rows"])
        body = table(
            ["component", "feature space(s)", "region", "voxels", "mean R²", "median R²",
             "% voxels > 0"],
            ([r["component"], r["label"], r["region"], r["n_voxels"], r["mean_r2"],
              r["median_r2"], r["percent_positive"]] for r in rows),
            numeric=[False, False, False, True, True, True, True],
        )  # fmt: skip
        label = f"{' + '.join(joint['spaces'])}, {joint['group']}"
        maps = "".join(
            figure(relative_link(Path(png), output_dir), caption)
            for png, caption in joint.get("map_figures", [])
        )
        blocks.append(
            f"<h3>{esc(label)}</h3><p>{esc(joint['cross_validation'])}.</p>"
            + figure(
                relative_link(Path(joint["figure"]), output_dir), f"Mean R² by component ({label})"
            )
            + body
            + f'<p><a href="{esc(relative_link(Path(joint["tsv"]), output_dir))}">table (TSV)</a></p>'
            + maps
        )
    return "".join(blocks)


def decoding_html(decodings: Sequence[Mapping[str, Any]], output_dir: Path) -> str:
    """Each caption decoding: its figures against chance, and the best and worst decoded
    stimuli with their captions and the caption their decoded embedding matched best."""
    blocks = [
        "<p>The caption embedding of each stimulus was predicted from its response pattern by "
        "a model that never saw the stimulus; its own caption was then ranked among its fold's "
        "held-out captions (and the corpus, when given). p: the whole cross-validation repeated "
        "with shuffled pairings.</p>"
    ]
    for entry in decodings:
        result = entry["result"]
        label = f"{result.feature_space}, {entry['group']}"
        summary = table(
            ["figure", "observed", "chance", "permutation p"],
            [
                ["top-1 accuracy", result.top1, result.chance_top1, result.p_top1],
                ["top-5 accuracy", result.top5, result.chance_top5, result.p_top5],
                ["mean rank", result.mean_rank, result.chance_mean_rank, result.p_mean_rank],
            ],
            numeric=[False, True, True, True],
        )

        def stimuli(rows: Sequence[Mapping[str, Any]]) -> str:
            return table(
                ["stimulus", "caption", "rank", "best match", "its caption"],
                ([r["stim_id"], r["caption"], r["rank"], r["best_match"], r["best_caption"]]
                 for r in rows),
                numeric=[False, False, True, False, False],
            )  # fmt: skip

        blocks.append(
            f"<h3>{esc(label)}</h3><p>{len(result.stim_ids)} stimuli, {result.n_voxels} voxels, "
            f"{result.n_folds} folds, up to {result.n_candidates} candidates per stimulus"
            + (f" ({result.n_corpus} from the corpus)" if result.n_corpus else "")
            + ".</p>"
            + summary
            + "<h4>Best decoded</h4>"
            + stimuli(entry["best"])
            + "<h4>Worst decoded</h4>"
            + stimuli(entry["worst"])
            + f'<p><a href="{esc(relative_link(Path(entry["tsv"]), output_dir))}">every '
            "stimulus (TSV)</a></p>"
        )
    return "".join(blocks)


def rsa_html(rsas: Sequence[Mapping[str, Any]], output_dir: Path) -> str:
    """Each run group's RSA: the rank correlations per region and model, links to the RDMs,
    and the searchlight maps."""
    blocks = [
        "<p>Brain RDMs from single-trial response patterns, compared with each feature "
        "space's RDM by Spearman's rho and Kendall's tau-a; p: the model's stimuli relabelled. "
        "Noise ceilings need several participants: see the group report.</p>"
    ]
    for entry in rsas:
        result = entry["result"]
        body = table(
            ["region", "feature space", "voxels", "rho", "p (rho)", "tau-a", "p (tau-a)"],
            ([r["region"], r["feature_space"], r["n_voxels"], r["spearman"], r["p_spearman"],
              r["tau_a"], r["p_tau_a"]] for r in result.rows),
            numeric=[False, False, True, True, True, True, True],
        )  # fmt: skip
        links = " ".join(
            f'<a href="{esc(relative_link(Path(p), output_dir))}">{esc(region)}</a>'
            for region, p in zip(result.regions, entry["rdms"], strict=True)
        )
        maps = "".join(
            figure(relative_link(Path(png), output_dir), caption)
            for png, caption in entry["figures"]
        )
        blocks.append(
            f"<h3>{esc(entry['group'])}</h3><p>{len(result.stim_ids)} stimuli; brain RDMs by "
            f"{esc(result.measure)}.</p>" + body + f"<p>RDMs (TSV): {links}</p>" + maps
        )
    return "".join(blocks)


def transfer_html(transfers: Sequence[Mapping[str, Any]], output_dir: Path) -> str:
    """Each task transferred into: the transfer r per region beside the target space's own
    within-task r, the bar chart and the transfer r maps."""
    blocks = [
        "<p>An encoding model fitted on every run of the source task predicts the runs of "
        "the target task from the target stimuli's features: <i>same</i> (one feature space "
        "embeds both), <i>shared</i> (the text and image towers of one model) or "
        "<i>mapped</i> (separate encoders through a map fitted on an image-caption corpus: "
        "the unimodal control). r: measured vs predicted target BOLD; significance: each "
        "target run's prediction shuffled in blocks of TRs, FDR over the mask. Within-task r: "
        "the target space's own model of the target task, on the same voxels.</p>"
    ]
    for entry in transfers:
        rows = list(entry["rows"])
        body = table(
            ["transfer", "from task", "region", "voxels", "mean r", "median r", "% q < 0.05",
             "within-task r", "source model r"],
            ([r["transfer"], r["source_task"], r["region"], r["n_voxels"], r["mean_r"],
              r["median_r"], r["percent_significant"], r["within_mean_r"], r["source_mean_r"]]
             for r in rows),
            numeric=[False, False, False, True, True, True, True, True, True],
        )  # fmt: skip
        maps = "".join(
            figure(relative_link(Path(png), output_dir), caption)
            for png, caption in entry.get("map_figures", [])
        )
        blocks.append(
            f"<h3>into task {esc(entry['task'])} ({esc(entry['group'])})</h3>"
            + figure(
                relative_link(Path(entry["figure"]), output_dir),
                f"Mean transfer r (dark) and within-task r (light) by region, task {entry['task']}",
            )
            + body
            + f'<p><a href="{esc(relative_link(Path(entry["tsv"]), output_dir))}">table (TSV)</a></p>'
            + maps
        )
    return "".join(blocks)
