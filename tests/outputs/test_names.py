"""File names keep BIDS entity order; labels are checked; pybids reads them back."""

from __future__ import annotations

from pathlib import Path

import pytest
from bids.layout import parse_file_entities
from bidsschematools import schema

from bids_vem.errors import UsageError
from bids_vem.outputs.names import (
    ENTITY_ORDER,
    derivative_name,
    derivative_path,
    parse_derivative_name,
)


def test_entity_order_is_the_bids_schema_order():
    loaded = schema.load_schema()
    expected = tuple(loaded.objects.entities[name].name for name in loaded.rules.entities)
    assert ENTITY_ORDER == expected


def test_name_orders_entities_and_puts_stat_after_desc():
    name = derivative_name(
        {
            "stat": "r",
            "desc": "clip",
            "space": "MNI152NLin2009cAsym",
            "task": "movie",
            "sub": "01",
            "ses": "2",
        },
        "statmap",
        ".nii.gz",
    )
    assert (
        name == "sub-01_ses-2_task-movie_space-MNI152NLin2009cAsym_desc-clip_stat-r_statmap.nii.gz"
    )


def test_long_names_none_and_missing_dot():
    name = derivative_name(
        {"description": "sbert", "subject": "02", "session": None, "run": 3, "acquisition": ""},
        "summary",
        "tsv",
    )
    assert name == "sub-02_run-3_desc-sbert_summary.tsv"


@pytest.mark.parametrize("label", ["clip-vit", "clip_vit", "a b", "ViT/B", ""])
def test_non_alphanumeric_label_names_the_entity(label):
    if label == "":
        # empty labels are dropped, not an error
        assert (
            derivative_name({"sub": "01", "desc": label}, "statmap", ".nii.gz")
            == "sub-01_statmap.nii.gz"
        )
        return
    with pytest.raises(UsageError, match="'desc'") as info:
        derivative_name({"sub": "01", "desc": label}, "statmap", ".nii.gz")
    assert info.value.exit_code == 64
    assert "\n" not in str(info.value)


def test_unknown_key_suffix_and_extension_are_rejected():
    with pytest.raises(UsageError, match="unknown BIDS entity 'model'"):
        derivative_name({"model": "x"}, "statmap", ".nii.gz")
    with pytest.raises(UsageError, match="suffix"):
        derivative_name({"sub": "01"}, "stat_map", ".nii.gz")
    with pytest.raises(UsageError, match="extension"):
        derivative_name({"sub": "01"}, "statmap", ".nii gz")


def test_paths_for_participants_sessions_and_group(tmp_path):
    entities = {"sub": "01", "ses": "A", "task": "x", "desc": "clip", "stat": "r"}
    assert derivative_path(tmp_path, entities, "statmap", ".nii.gz") == (
        tmp_path
        / "sub-01"
        / "ses-A"
        / "func"
        / "sub-01_ses-A_task-x_desc-clip_stat-r_statmap.nii.gz"
    )
    group = derivative_path(tmp_path / "group", {"task": "x", "stat": "t"}, "statmap", ".nii.gz")
    assert group == tmp_path / "group" / "task-x_stat-t_statmap.nii.gz"


def test_parse_round_trip_and_pybids_agree():
    entities = {
        "sub": "01",
        "ses": "2",
        "task": "movie",
        "space": "MNI152NLin2009cAsym",
        "desc": "clip",
        "stat": "r2",
    }
    name = derivative_name(entities, "statmap", ".nii.gz")
    assert parse_derivative_name(Path("/x") / name) == (entities, "statmap", ".nii.gz")
    parsed = parse_file_entities("/out/sub-01/ses-2/func/" + name)
    assert parsed["subject"] == "01"
    assert parsed["session"] == "2"
    assert parsed["task"] == "movie"
    assert parsed["space"] == "MNI152NLin2009cAsym"
    assert parsed["desc"] == "clip"
    assert parsed["extension"] == ".nii.gz"
    with pytest.raises(ValueError):
        parse_derivative_name("sub-01_task_statmap.nii.gz")
