"""The participant report ``OUTPUT_DIR/sub-XX.html`` with figures in ``sub-XX/figures/``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bids_vem.errors import DataError
from bids_vem.outputs.atomic import write_text_atomic
from bids_vem.outputs.names import derivative_name
from bids_vem.reports.analyses import decoding_html, joint_html, rsa_html, transfer_html
from bids_vem.reports.comparison import comparison_html
from bids_vem.reports.figures import (
    plot_glass_r_map,
    plot_r_histogram,
    plot_r_map,
    shared_cut_coords,
    write_map_viewer,
)
from bids_vem.reports.html import esc, figure, markdown_methods, page, relative_link, table

__all__ = [
    "RESULT_COLUMNS",
    "write_participant_report",
    "write_failure_report",
    "about_html",
    "errors_html",
    "methods_html",
]

logger = logging.getLogger(__name__)

#: the FDR level the maps are thresholded at
SIGNIFICANCE = 0.05

#: (summary key, column title, numeric) of the encoding-results table
RESULT_COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("n_voxels", "voxels", True),
    ("mean_r", "mean r", True),
    ("median_r", "median r", True),
    ("max_r", "max r", True),
    ("percent_r_above_threshold", "% voxels r > threshold", True),
    ("n_voxels_q_below_0.05", "voxels FDR q < 0.05", True),
    ("n_voxels_fwe_p_below_0.05", "voxels FWE p < 0.05", True),
    ("median_nc", "median noise ceiling", True),
    ("mean_r2", "mean R²", True),
    ("percent_alpha_at_min", "% alpha at grid min", True),
    ("percent_alpha_at_max", "% alpha at grid max", True),
    ("cross_validation", "cross-validation", False),
)


def _as_dict(item: Any) -> dict:
    if isinstance(item, Mapping):
        return dict(item)
    to_dict = getattr(item, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    raise TypeError(f"expected a mapping, got {type(item).__name__}")


def errors_html(errors: Sequence[str]) -> str:
    """The Errors section body: a list of escaped messages or a no-error line."""
    if not errors:
        return '<p class="ok">No errors were reported.</p>'
    items = "".join(f"<li>{esc(e)}</li>" for e in errors)
    return f'<p class="error">{len(errors)} error(s):</p><ul class="error">{items}</ul>'


def methods_html(output_dir: Path, methods: str | None, page_dir: Path | None = None) -> str:
    """The Methods section body: ``methods`` or ``logs/CITATION.md`` as HTML, citations
    numbered and linked to the bibliography; links to the Markdown and BibTeX files relative
    to ``page_dir`` (default: ``output_dir``, where the participant reports are)."""
    if methods is None:
        citation = output_dir / "logs" / "CITATION.md"
        methods = citation.read_text(encoding="utf-8") if citation.exists() else None
    if not methods:
        return "<p>No methods text was written (see logs/CITATION.md after a complete run).</p>"
    here = Path(page_dir or output_dir)
    links = ", ".join(
        f'<a href="{esc(relative_link(Path(output_dir) / "logs" / name, here))}">logs/{name}</a>'
        for name in ("CITATION.md", "CITATION.bib")
    )
    return markdown_methods(methods) + f"<p>The same text as Markdown, with BibTeX: {links}.</p>"


def about_html(version: str | None, command_line: str | None) -> str:
    """The About section body: version, command line and date (UTC)."""
    if version is None:
        from bids_vem import __version__ as version
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    rows = [("bids_vem version", version), ("command line", command_line or "n/a"), ("date", date)]
    return table(["", ""], rows)


def _group_key(result: Mapping[str, Any]) -> tuple:
    return result.get("task"), result.get("session"), result.get("space")


def _shared_cuts(results: Sequence[Mapping[str, Any]]) -> dict[tuple, tuple | None]:
    """One place to cut every feature space's map of a run group (through the peak of the
    best r of any space), so that the spaces can be compared by eye."""
    by_group: dict[tuple, list[Path]] = {}
    for result in results:
        r_path = (result.get("paths") or {}).get("r")
        if r_path is not None:
            by_group.setdefault(_group_key(result), []).append(Path(r_path))
    cuts = {}
    for key, paths in by_group.items():
        try:
            cuts[key] = shared_cut_coords(paths)
        except Exception as exc:  # a figure must not cost the report
            logger.warning("no shared cuts for %s: %s", key, exc)
            cuts[key] = None
    return cuts


def _significance_threshold(result: Mapping[str, Any], r_threshold: float) -> tuple[float, str]:
    """The r above which a map is drawn, and the caption that says what it means: the
    smallest r with FDR q < 0.05 when the permutation maps exist, else ``r_threshold``."""
    r, q = result.get("r"), result.get("q")
    if r is None or q is None:
        return r_threshold, (
            f"r > {r_threshold:g}, not a significance threshold (no permutation test: "
            "--permutations 0)"
        )
    r, q = np.asarray(r, dtype=np.float64), np.asarray(q, dtype=np.float64)
    significant = (q < SIGNIFICANCE) & (r > 0)
    if not significant.any():
        return r_threshold, (
            f"no voxel reached q < {SIGNIFICANCE:g} (FDR); shown: r > {r_threshold:g}, "
            "not significant"
        )
    threshold = float(r[significant].min())
    return threshold, (
        f"r ≥ {threshold:.3f}, the {int(significant.sum())} voxels with q < {SIGNIFICANCE:g} "
        "(permutation p, Benjamini-Hochberg FDR over the mask)"
    )


def _volume_views(
    r_path: Path, entities: dict, figures_dir: Path, output_dir: Path, label: str, threshold: float
) -> str:
    """A glass brain and an interactive viewer (offline) of a volume map; nothing for
    surface maps, whose figure already shows every view."""
    from bids_vem.outputs.surfaces import is_surface_map

    if is_surface_map(r_path):
        return ""
    glass = plot_glass_r_map(
        r_path, figures_dir / derivative_name(entities, "glass", ".png"),
        title=f"r, {entities.get('desc')}", threshold=threshold,
    )  # fmt: skip
    viewer = write_map_viewer(
        r_path, figures_dir / derivative_name(entities, "viewer", ".html"),
        title=f"r, {entities.get('desc')}", threshold=threshold,
    )  # fmt: skip
    link = esc(relative_link(viewer, output_dir))
    return figure(relative_link(glass, output_dir), f"Glass brain ({label})") + (
        f"<details><summary>Interactive viewer ({esc(label)})</summary>"
        f'<iframe src="{link}" title="interactive viewer" loading="lazy" width="680" '
        f'height="320"></iframe><p><a href="{link}">open the viewer on its own</a></p></details>'
    )


def _r_values(result: Mapping[str, Any], r_path: Path) -> np.ndarray:
    if result.get("r") is not None:
        return np.asarray(result["r"], dtype=np.float64)
    from bids_vem.outputs.surfaces import is_surface_map, read_surface_map

    if is_surface_map(r_path):
        data = read_surface_map(r_path)[0].astype(np.float64)
    else:
        data = np.asarray(nib.load(str(r_path)).dataobj, dtype=np.float64)
    return data[data != 0]  # the map is 0 outside the mask


def write_participant_report(
    output_dir: Path | str,
    subject: str,
    *,
    runs: Sequence[Mapping[str, Any]],
    feature_spaces: Sequence[Mapping[str, Any]],
    results: Sequence[Mapping[str, Any]],
    errors: Sequence[str] = (),
    comparisons: Sequence[Mapping[str, Any]] = (),
    layer_profiles: Sequence[Mapping[str, Any]] = (),
    joints: Sequence[Mapping[str, Any]] = (),
    decodings: Sequence[Mapping[str, Any]] = (),
    rsas: Sequence[Mapping[str, Any]] = (),
    transfers: Sequence[Mapping[str, Any]] = (),
    methods: str | None = None,
    command_line: str | None = None,
    version: str | None = None,
    r_threshold: float = 0.1,
) -> Path:
    """Write ``OUTPUT_DIR/sub-<subject>.html`` and its figures; returns the HTML path.

    Parameters
    ----------
    output_dir : path
        The derivative dataset root.
    subject : str
        Participant label without ``sub-``.
    runs : sequence of mappings
        Per run: ``name``, ``bold``, ``tr`` (or ``TR``), ``n_volumes``, ``events``
        (:meth:`bids_vem.inputs.runs.Run.to_dict` works).
    feature_spaces : sequence of mappings
        Per feature space: ``name``, ``spec``, ``modality``, ``n_features``.
    results : sequence of mappings
        Per fit: ``task``, ``space``, ``feature_space``, ``summary`` (keys of
        :data:`RESULT_COLUMNS`), ``paths`` (stat name to map path; ``r`` gives the figures),
        optionally ``session`` and ``r`` (values, shape (n_voxels,), for the histogram).
    errors : sequence of str
        Messages of what failed for this participant (the report is written anyway).
    comparisons : sequence of mappings, optional
        Feature spaces side by side per run group (:mod:`bids_vem.reports.comparison`).
    layer_profiles : sequence of mappings, optional
        Per ``#layers=`` spec and run group: ``name``, ``group``, ``figure``, ``tsv``, ``rows``
        (:func:`bids_vem.analysis.layers.layer_profile_rows`).
    joints : sequence of mappings, optional
        Per banded ridge (``--joint``) and run group: what
        :func:`bids_vem.workflows.analysis_outputs.write_joint_outputs` returns.
    decodings : sequence of mappings, optional
        Per caption decoding (``--decode``) and run group: what
        :func:`bids_vem.workflows.analysis_outputs.write_decoding_outputs` returns.
    rsas : sequence of mappings, optional
        Per run group with ``--rsa``: what
        :func:`bids_vem.workflows.analysis_outputs.write_rsa_outputs` returns.
    transfers : sequence of mappings, optional
        Per target run group with ``--transfer``: what
        :func:`bids_vem.workflows.analysis_outputs.write_transfer_outputs` returns.
    methods : str, optional
        Methods text; default: ``logs/CITATION.md`` if present.
    command_line, version : str, optional
        Shown in About.
    r_threshold : float
        Threshold of the r maps and histograms.

    Notes
    -----
    A figure that cannot be drawn adds a line to Errors instead of failing the report.
    Every string from the inputs is HTML-escaped.
    """
    output_dir = Path(output_dir)
    html_path = output_dir / f"sub-{subject}.html"
    figures_dir = output_dir / f"sub-{subject}" / "figures"
    errors = list(errors)
    runs = [_as_dict(r) for r in runs]
    feature_spaces = [_as_dict(f) for f in feature_spaces]
    results = [_as_dict(r) for r in results]

    # Encoding results: one table, then the figures of each fit, every feature space of a run
    # group cut at the same place
    result_rows = []
    figure_blocks = []
    cuts = _shared_cuts(results)
    for result in results:
        summary = dict(result.get("summary") or {})
        label = f"task {result.get('task')}, space {result.get('space')}, feature space {result.get('feature_space')}"
        result_rows.append(
            [result.get("task"), result.get("space"), result.get("feature_space")]
            + [summary.get(key) for key, _, _ in RESULT_COLUMNS]
        )
        r_path = (result.get("paths") or {}).get("r")
        if r_path is None:
            continue
        entities = {
            "sub": subject,
            "ses": result.get("session"),
            "task": result.get("task"),
            "space": result.get("space"),
            "desc": result.get("feature_space"),
        }
        threshold, shown = _significance_threshold(result, r_threshold)
        extra_figures = ""
        try:
            map_png = plot_r_map(
                r_path,
                figures_dir / derivative_name(entities, "rmap", ".png"),
                title=f"r, {result.get('feature_space')}",
                threshold=threshold,
                cut_coords=cuts.get(_group_key(result)),
                positive_only=True,
            )
            hist_png = plot_r_histogram(
                _r_values(result, Path(r_path)),
                figures_dir / derivative_name(entities, "rhist", ".png"),
                title=f"r, {result.get('feature_space')}",
                threshold=threshold,
            )
            extra_figures = _volume_views(
                Path(r_path), entities, figures_dir, output_dir, label, threshold
            )
        except DataError as exc:  # no figure for this kind of map (fsnative surfaces)
            logger.warning("no figure for %s: %s", Path(r_path).name, exc)
            errors.append(f"no figure for {Path(r_path).name}: {exc}")
            continue
        except Exception as exc:  # a figure must not cost the whole report
            logger.exception("figure for %s failed", r_path)
            errors.append(f"figure for {r_path} failed: {exc}")
            continue
        figure_blocks.append(
            f"<h3>{esc(label)}</h3>"
            + figure(relative_link(map_png, output_dir), f"Held-out r ({label}): {shown}")
            + extra_figures
            + figure(
                relative_link(hist_png, output_dir), f"Distribution of r over voxels ({label})"
            )
        )

    tasks = sorted(
        {str(r.get("task")) for r in runs if r.get("task")} | {str(r.get("task")) for r in results}
    )
    best = [
        r
        for r in results
        if isinstance((r.get("summary") or {}).get("mean_r"), (int, float, np.floating))
    ]
    summary_rows = [
        ("participant", f"sub-{subject}"),
        ("runs", len(runs)),
        ("tasks", ", ".join(tasks) or "n/a"),
        ("feature spaces", ", ".join(str(f.get("name")) for f in feature_spaces) or "n/a"),
        ("encoding fits", len(results)),
        ("errors", len(errors)),
    ]
    if best:
        top = max(best, key=lambda r: float(r["summary"]["mean_r"]))
        summary_rows.append(
            (
                "highest mean r",
                f"{top.get('feature_space')} ({float(top['summary']['mean_r']):.3f}, task {top.get('task')})",
            )
        )

    inputs_body = (
        table(
            ["run", "TR (s)", "volumes", "BOLD", "events"],
            (
                [
                    r.get("name"),
                    r.get("tr", r.get("TR")),
                    r.get("n_volumes"),
                    r.get("bold"),
                    r.get("events"),
                ]
                for r in runs
            ),
            numeric=[False, True, True, False, False],
        )
        if runs
        else "<p>No runs were found.</p>"
    )
    spaces_body = (
        table(
            ["feature space", "model spec", "modality", "features"],
            (
                [f.get("name"), f.get("spec"), f.get("modality"), f.get("n_features")]
                for f in feature_spaces
            ),
            numeric=[False, False, False, True],
        )
        if feature_spaces
        else "<p>No feature spaces.</p>"
    )
    if results:
        results_body = (
            f"<p>Threshold for the percentages and figures: r &gt; {r_threshold:g}.</p>"
            + table(
                ["task", "space", "feature space"] + [title for _, title, _ in RESULT_COLUMNS],
                result_rows,
                numeric=[False, False, False] + [num for _, _, num in RESULT_COLUMNS],
            )
            + "".join(figure_blocks)
        )
    else:
        results_body = "<p>No encoding results.</p>"

    sections = [
        ("summary", "Summary", table(["", ""], summary_rows)),
        ("inputs", "Inputs", inputs_body),
        ("feature-spaces", "Feature spaces", spaces_body),
        ("results", "Encoding results", results_body),
        *(
            [
                (
                    "comparison",
                    "Aligned vs unaligned"
                    if any(c.get("alignment") for c in comparisons)
                    else "Feature spaces compared",
                    comparison_html(comparisons, output_dir),
                )
            ]
            if comparisons
            else []
        ),
        *(
            [("layers", "Layer profiles", _layers_html(layer_profiles, output_dir))]
            if layer_profiles
            else []
        ),
        *([("joint", "Variance partitioning", joint_html(joints, output_dir))] if joints else []),
        *(
            [("decoding", "Caption decoding", decoding_html(decodings, output_dir))]
            if decodings
            else []
        ),
        *([("rsa", "Representational similarity", rsa_html(rsas, output_dir))] if rsas else []),
        *(
            [("transfer", "Cross-modal transfer", transfer_html(transfers, output_dir))]
            if transfers
            else []
        ),
        ("errors", "Errors", errors_html(errors)),
        ("methods", "Methods", methods_html(output_dir, methods)),
        ("about", "About", about_html(version, command_line)),
    ]
    from bids_vem.reports.group import GROUP_LINK_MARK

    # the group level writes its link at the mark (the group report comes later, if at all)
    group_report = output_dir / "group" / "group.html"
    nav_extra = (
        '<a href="group/group.html">group report</a>' if group_report.is_file() else ""
    ) + GROUP_LINK_MARK
    return write_text_atomic(
        html_path, page(f"bids_vem report: sub-{subject}", sections, nav_extra)
    )


def _layers_html(profiles: Sequence[Mapping[str, Any]], output_dir: Path) -> str:
    """Each layer profile: its plot and its table (with a link to the TSV)."""
    blocks = []
    for profile in profiles:
        rows = list(profile["rows"])
        rois = [k for k in rows[0] if k.startswith("mean_r_roi-")] if rows else []
        headers = ["layer", "mean r", "median r", "% voxels best"] + [
            f"mean r in {k.removeprefix('mean_r_roi-')}" for k in rois
        ]
        body = table(
            headers,
            (
                [row["layer"], row["mean_r"], row["median_r"], row["percent_best"]]
                + [row[k] for k in rois]
                for row in rows
            ),
            numeric=[True] * len(headers),
        )
        label = f"{profile['name']}, {profile['group']}"
        blocks.append(
            f"<h3>{esc(label)}</h3>"
            + figure(
                relative_link(Path(profile["figure"]), output_dir), f"Mean r by layer ({label})"
            )
            + body
            + f'<p><a href="{esc(relative_link(Path(profile["tsv"]), output_dir))}">table (TSV)</a></p>'
        )
    return "".join(blocks)


def write_failure_report(
    output_dir: Path,
    subject: str,
    *,
    error: str,
    crash_files: Sequence[Path] = (),
    finished: Sequence[str] = (),
    command_line: str | None = None,
    version: str | None = None,
) -> Path:
    """``OUTPUT_DIR/sub-<subject>.html`` for a participant whose run failed, as fMRIPrep
    writes one: the error, links to the crash files with the end of each, and the steps
    that finished (a rerun with the same work directory reuses them).

    Parameters
    ----------
    output_dir : path
    subject : str
        Participant label without ``sub-``.
    error : str
        The one-line error the command line printed.
    crash_files : sequence of path
        nipype crash files of this participant's failed steps (and of shared steps).
    finished : sequence of str
        Names of this participant's steps that completed.
    """
    output_dir = Path(output_dir)
    crashes = []
    for crash in crash_files:
        lines = [ln for ln in Path(crash).read_text(errors="replace").splitlines() if ln.strip()]
        crashes.append(
            f'<h3><a href="{esc(relative_link(Path(crash), output_dir))}">{esc(Path(crash).name)}'
            f"</a></h3><pre>{esc(chr(10).join(lines[-12:]))}</pre>"
        )
    summary = table(
        ["", ""],
        [("participant", f"sub-{subject}"), ("status", "failed"), ("error", error),
         ("crash files", len(crashes)), ("steps that finished", len(finished))],
    )  # fmt: skip
    done = (
        "<p>These steps finished; a rerun with the same work directory reuses them:</p><ul>"
        + "".join(f"<li><code>{esc(name)}</code></li>" for name in finished)
        + "</ul>"
        if finished
        else "<p>No step of this participant finished.</p>"
    )
    sections = [
        (
            "summary",
            "Summary",
            f'<p class="error">The run of sub-{esc(subject)} failed.</p>' + summary,
        ),
        ("errors", "Errors", f'<p class="error">{esc(error)}</p>' + "".join(crashes)),
        ("finished", "What finished", done),
        ("about", "About", about_html(version, command_line)),
    ]
    html_path = output_dir / f"sub-{subject}.html"
    return write_text_atomic(html_path, page(f"bids_vem report: sub-{subject} (failed)", sections))
