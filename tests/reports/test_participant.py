"""The participant report: sections, relative figure links, escaping, errors, a real render."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from bids_vem.outputs.statmaps import encoding_summary_row
from bids_vem.reports.participant import write_participant_report
from tests.helpers import broken_links, render_in_chromium, write_example_citation

SECTIONS = ["summary", "inputs", "feature-spaces", "results", "errors", "methods", "about"]
EVIL = '<script>alert("x")</script>'


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _parse(path: Path) -> list[tuple[str, dict]]:
    collector = _Collector()
    collector.feed(path.read_text(encoding="utf-8"))
    return collector.tags


@pytest.fixture
def report(tmp_path, r_map, encoding_result) -> Path:
    out = tmp_path
    write_example_citation(out)
    row = encoding_summary_row(
        encoding_result,
        subject="01",
        session=None,
        task="scenes",
        space="MNI152NLin2009cAsym",
        feature_space="clip",
        alphas=[1.0, 1e3],
    )
    return write_participant_report(
        out,
        "01",
        runs=[
            {
                "name": "sub-01_task-scenes_run-1",
                "bold": "/data/sub-01_run-1_bold.nii.gz",
                "tr": 2.0,
                "n_volumes": 194,
                "events": "e1.tsv",
            },
            {
                "name": "sub-01_task-scenes_run-2",
                "bold": "/data/sub-01_run-2_bold.nii.gz",
                "TR": 2.0,
                "n_volumes": 194,
                "events": "e2.tsv",
            },
        ],
        feature_spaces=[
            {"name": "clip", "spec": f"openclip:{EVIL}", "modality": "image", "n_features": 512}
        ],
        results=[
            {
                "task": "scenes",
                "space": "MNI152NLin2009cAsym",
                "feature_space": "clip",
                "summary": row,
                "paths": {"r": r_map},
            }
        ],
        errors=[f"sbert failed: {EVIL}"],
        command_line="bids_vem /data /out participant --participant-label 01",
        version="0.1.0",
    )


def test_sections_and_content(report):
    assert report.name == "sub-01.html"
    tags = _parse(report)
    ids = [attrs.get("id") for tag, attrs in tags if tag == "section"]
    assert ids == SECTIONS
    text = report.read_text()
    for expected in (
        "sub-01_task-scenes_run-2",
        "194",
        "openclip:",
        "512",
        "bids_vem 0.1.0",
        "--participant-label 01",
        "Voxelwise encoding models were fitted",
    ):
        assert expected in text, expected
    # the methods' citations are numbered links into the bibliography, which resolves them
    cited = set(re.findall(r'<a href="#ref-([a-z0-9]+)">\d+</a>', text))
    listed = set(re.findall(r'<li id="ref-([a-z0-9]+)">', text))
    assert cited and cited == listed
    assert "[@" not in text


def test_figures_exist_and_are_linked_relatively(report):
    sources = [attrs["src"] for tag, attrs in _parse(report) if tag == "img"]
    assert len(sources) == 3  # cuts, glass brain, histogram
    for src in sources:
        assert not src.startswith(("/", "http", "file:"))
        assert src.startswith("sub-01/figures/")
        figure = report.parent / src
        assert figure.is_file()
        assert imread(figure)[..., :3].std() > 0.05
    (viewer,) = [attrs["src"] for tag, attrs in _parse(report) if tag == "iframe"]
    assert viewer.startswith("sub-01/figures/") and viewer.endswith("_viewer.html")
    page = (report.parent / viewer).read_text()
    # works offline: its scripts are inlined, nothing is fetched
    assert "brainsprite" in page and not re.search(r'src="(https?:)?//', page)
    assert "not a significance threshold" in report.read_text()  # no permutation maps here


def test_the_threshold_is_the_fdr_one_when_permutations_ran():
    from bids_vem.reports.participant import _significance_threshold

    r = np.array([0.05, 0.2, 0.3, 0.4, -0.5])
    q = np.array([0.5, 0.2, 0.04, 0.01, 0.001])  # a negative r is never "significant" here
    threshold, caption = _significance_threshold({"r": r, "q": q}, 0.1)
    assert threshold == 0.3 and "the 2 voxels with q < 0.05" in caption
    threshold, caption = _significance_threshold({"r": r, "q": np.ones(5)}, 0.1)
    assert threshold == 0.1 and "no voxel reached q < 0.05" in caption


def test_strings_are_escaped(report):
    tags = _parse(report)
    assert "script" not in [tag for tag, _ in tags]
    text = report.read_text()
    assert EVIL not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    # self-contained: nothing is loaded from the network (the methods text names the code URL)
    assert not re.search(r'(src|href)="https?://', text)


def test_summary_numbers_in_the_table(report, encoding_result):
    text = report.read_text()
    assert f"{np.mean(encoding_result.r):.3f}" in text
    assert f"{np.max(encoding_result.r):.3f}" in text


def test_a_failed_figure_is_an_error_not_a_crash(tmp_path):
    path = write_participant_report(
        tmp_path,
        "02",
        runs=[],
        feature_spaces=[],
        results=[
            {
                "task": "x",
                "space": "T1w",
                "feature_space": "clip",
                "summary": {},
                "paths": {"r": tmp_path / "missing.nii.gz"},
            }
        ],
        errors=[],
    )
    text = path.read_text()
    assert "1 error(s)" in text
    assert "missing.nii.gz" in text
    assert "No runs were found." in text


def test_chromium_renders_the_report(report, tmp_path):
    """In a real headless Chromium with no network: no console errors, every image and link
    resolves, figures are not blank, the CSS applies, the interactive viewer renders."""
    pixels, console = render_in_chromium(report, tmp_path)
    assert console == []
    assert broken_links(report) == []
    assert pixels.std() > 0.05
    # the header bar (#1f3a5f) is drawn: CSS was applied
    header = pixels[5:40, 5:400].reshape(-1, 3)
    assert np.any(np.all(np.abs(header - np.array([0x1F, 0x3A, 0x5F]) / 255) < 0.05, axis=1))
    (viewer,) = [attrs["src"] for tag, attrs in _parse(report) if tag == "iframe"]
    shot, console = render_in_chromium(report.parent / viewer, tmp_path, size="800,500")
    assert console == []
    # the slices are drawn (the page without them is white with one slider)
    assert shot.std() > 0.1 and (shot < 0.5).mean() > 0.02
