"""Report sections of the analyses beyond one model per feature space (``--joint``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bids_vem.reports.html import esc, figure, relative_link, table

__all__ = ["joint_html"]


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
