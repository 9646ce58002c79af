"""The group report: table of rows, relative figure links, escaping."""

from __future__ import annotations

from bids_vem.reports.figures import plot_r_map
from bids_vem.reports.group import write_group_report


def test_group_report(tmp_path, r_map):
    figure = plot_r_map(
        r_map,
        tmp_path / "group" / "figures" / "task-scenes_desc-clip_meanr.png",
        title="mean r",
        threshold=0.1,
    )
    rows = [
        {"subject": "01", "feature_space": "clip", "mean_r": 0.12345},
        {"subject": "02", "feature_space": "<b>clip</b>", "mean_r": None},
    ]
    path = write_group_report(
        tmp_path, rows, [("mean r, clip", figure)], errors=["sub-03 has no maps"]
    )
    assert path == tmp_path / "group" / "group.html"
    text = path.read_text()
    assert 'src="figures/task-scenes_desc-clip_meanr.png"' in text
    assert (path.parent / "figures" / "task-scenes_desc-clip_meanr.png").is_file()
    assert "0.123" in text and "n/a" in text
    assert "&lt;b&gt;clip&lt;/b&gt;" in text and "<b>clip" not in text
    assert "sub-03 has no maps" in text
    for anchor in ("summary", "results", "errors", "methods", "about"):
        assert f'<section id="{anchor}">' in text
