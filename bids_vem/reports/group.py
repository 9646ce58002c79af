"""The group report ``OUTPUT_DIR/group/group.html``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bids_vem.outputs.atomic import write_text_atomic
from bids_vem.outputs.group import GROUP_DIR
from bids_vem.reports.html import esc, figure, page, relative_link, table
from bids_vem.reports.participant import about_html, errors_html, methods_html

__all__ = ["write_group_report", "column_title", "link_participant_reports"]

#: summary columns as the report heads them (the TSV keeps the keys)
COLUMN_TITLES = {
    "feature_space": "feature space",
    "n_subjects": "participants",
    "n_voxels": "voxels",
    "mean_r": "mean r",
    "max_mean_r": "max mean r",
    "mean_r_diff": "mean r difference",
    "mean_top1": "mean top-1",
    "mean_top5": "mean top-5",
    "chance_top1": "chance top-1",
    "chance_top5": "chance top-5",
    "mean_rank": "mean rank",
    "chance_mean_rank": "chance mean rank",
    "t_top1_above_chance": "t (top-1 > chance)",
    "p_top1_above_chance": "p (top-1 > chance)",
}

#: where the participant reports hold the link to the group report (filled by the group level)
GROUP_LINK_MARK = "<!-- group report -->"


def column_title(key: str) -> str:
    """A summary column's readable heading (``n_voxels_q_below_0.05`` -> ``voxels q < 0.05``)."""
    if key in COLUMN_TITLES:
        return COLUMN_TITLES[key]
    text = key.replace("n_voxels_", "voxels ").replace("_q_below_", " q < ").replace("_", " ")
    return text.replace("a better", "A better").replace("b better", "B better")


def link_participant_reports(output_dir: Path, subjects: Sequence[str]) -> list[Path]:
    """Put a link to the group report into each participant report (where its navigation
    leaves room for one); returns the reports linked."""
    linked = []
    for subject in subjects:
        report = Path(output_dir) / f"sub-{subject}.html"
        if not report.is_file():
            continue
        text = report.read_text(encoding="utf-8")
        if GROUP_LINK_MARK not in text:
            continue
        link = f'<a href="{GROUP_DIR}/group.html">group report</a>'
        write_text_atomic(report, text.replace(GROUP_LINK_MARK, link + GROUP_LINK_MARK, 1)
                          if link not in text else text)  # fmt: skip
        linked.append(report)
    return linked


def write_group_report(
    output_dir: Path | str,
    rows: Sequence[Mapping[str, Any]],
    figures: Sequence[tuple[str, Path | str]] | Mapping[str, Path | str] = (),
    *,
    rsa: Sequence[Mapping[str, Any]] = (),
    errors: Sequence[str] = (),
    methods: str | None = None,
    command_line: str | None = None,
    version: str | None = None,
) -> Path:
    """Write ``OUTPUT_DIR/group/group.html``; returns its path.

    Parameters
    ----------
    output_dir : path
        The derivative dataset root.
    rows : sequence of mappings
        Summary rows (as in ``group/summary.tsv``); columns are the union of their keys.
    figures : sequence of (caption, path) or mapping caption -> path
        Images already written (e.g. under ``group/figures/``), linked relatively.
    rsa : sequence of mappings
        Group RSA tables (``task``, ``space``, ``rows``, ``tsv``) with noise ceilings.
    errors, methods, command_line, version
        As in :func:`bids_vem.reports.participant.write_participant_report`.
    """
    output_dir = Path(output_dir)
    group_dir = output_dir / GROUP_DIR
    items = list(figures.items()) if isinstance(figures, Mapping) else list(figures)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    numeric = [
        all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows) for c in columns
    ]
    subjects = sorted({str(r["subject"]) for r in rows if r.get("subject") is not None})
    summary = table(
        ["", ""],
        [
            # per-participant rows name a subject; group-map rows count them
            (
                "participants",
                len(subjects)
                or max((int(r.get("n_subjects") or 0) for r in rows), default=0)
                or "n/a",
            ),
            ("rows", len(rows)),
            ("figures", len(items)),
            ("errors", len(errors)),
        ],
    )
    results = (
        table(
            [column_title(c) for c in columns], ([r.get(c) for c in columns] for r in rows), numeric
        )
        if rows
        else "<p>No results.</p>"
    )
    reports = sorted(output_dir.glob("sub-*.html"))
    participants = (
        "<ul>"
        + "".join(
            f'<li><a href="{esc(relative_link(path, group_dir))}">{esc(path.stem)}</a></li>'
            for path in reports
        )
        + "</ul>"
        if reports
        else "<p>No participant report in this folder.</p>"
    )
    results += "".join(figure(relative_link(path, group_dir), caption) for caption, path in items)
    rsa_body = ""
    for entry in rsa:
        rsa_body += f"<h3>task {esc(entry['task'])}, space {esc(entry['space'])}</h3>" + table(
            ["region", "feature space", "method", "participants", "mean", "sem", "t", "p",
             "noise ceiling (lower)", "noise ceiling (upper)"],
            ([r["region"], r["feature_space"], r["method"], r["n_subjects"], r["mean"], r["sem"],
              r["t"], r["p"], r["noise_ceiling_lower"], r["noise_ceiling_upper"]]
             for r in entry["rows"]),
            numeric=[False, False, False] + [True] * 7,
        ) + f'<p><a href="{esc(relative_link(entry["tsv"], group_dir))}">table (TSV)</a></p>'  # fmt: skip
    sections = [
        ("summary", "Summary", summary),
        ("results", "Group results", results),
        ("participants", "Participant reports", participants),
        *(
            [
                (
                    "rsa",
                    "Representational similarity",
                    "<p>Each model's rank correlation with "
                    "the participants' brain RDMs; the noise ceiling bounds what any model can reach "
                    "given the participants' agreement (Nili et al. 2014).</p>" + rsa_body,
                )
            ]
            if rsa
            else []
        ),  # fmt: skip
        ("errors", "Errors", errors_html(list(errors))),
        ("methods", "Methods", methods_html(output_dir, methods, group_dir)),
        ("about", "About", about_html(version, command_line)),
    ]
    return write_text_atomic(group_dir / "group.html", page("bids_vem group report", sections))
