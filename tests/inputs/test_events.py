"""read_events: BIDS events.tsv with the stimulus of each event."""

from __future__ import annotations

import numpy as np
import pytest

from bids_vem.errors import DataError, InputMissingError
from bids_vem.inputs.events import normalise_stim_id, read_events, read_tsv_columns


def _write(tmp_path, text, name="sub-01_task-a_events.tsv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_times_stimuli_and_keeps_other_columns(tmp_path):
    path = _write(
        tmp_path,
        "onset\tduration\ttrial_type\tstim_file\n"
        "0\t1.5\tface\t./faces//f01.png\n"
        "2.25\t0\tfix\tn/a\n"
        "4\t1\tscene\tNA\n"
        "6\tn/a\tfix\t\n",
    )
    events = read_events(path)
    assert list(events.columns[:3]) == ["onset", "duration", "stim_id"]
    assert {"trial_type", "stim_file"} <= set(events.columns)
    np.testing.assert_allclose(events["onset"], [0, 2.25, 4, 6])
    np.testing.assert_allclose(events["duration"][:3], [1.5, 0, 1])
    assert np.isnan(events["duration"][3])  # n/a duration is fine without a stimulus
    # "NA" is a possible file name, not a missing value; n/a and empty cells are no stimulus
    assert list(events["stim_id"]) == ["faces/f01.png", None, "NA", None]
    assert events["stim_file"][0] == "./faces//f01.png"
    assert events["trial_type"].tolist() == ["face", "fix", "scene", "fix"]


def test_other_stimulus_column(tmp_path):
    path = _write(tmp_path, "onset\tduration\tfile_path\n1\t2\timg\\\\x.jpg\n")
    assert read_events(path, stim_column="file_path")["stim_id"].tolist() == ["img/x.jpg"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a.png", "a.png"),
        ("  a/b.png ", "a/b.png"),
        ("./a/./b.png", "a/b.png"),
        ("a\\b.png", "a/b.png"),
        ("../x.png", "../x.png"),  # kept: the stimulus table refuses it by name
        ("a/../../x.png", "a/../../x.png"),
        ("/etc/x.png", "/etc/x.png"),
        ("n/a", None),
        ("", None),
        (None, None),
        (float("nan"), None),
    ],
)
def test_normalise_stim_id(value, expected):
    assert normalise_stim_id(value) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("duration\tstim_file\n1\ta.png\n", "lacks the required column(s) onset"),
        ("onset\tstim_file\n1\ta.png\n", "lacks the required column(s) duration"),
        ("onset\tduration\tstim\n1\t1\ta.png\n", "no stimulus column 'stim_file'"),
        ("onset\tduration\tstim_file\nsoon\t1\ta.png\n", "'onset' must be numeric"),
        ("onset\tduration\tstim_file\n1\tlong\ta.png\n", "'duration' must be numeric"),
        ("onset\tduration\tstim_file\n1\t-1\ta.png\n", "negative duration"),
        ("onset\tduration\tstim_file\nn/a\t1\ta.png\n", "onset is n/a"),
        ("onset\tduration\tstim_file\n1\tn/a\ta.png\n", "duration is n/a"),
        ("", "empty file"),
    ],
)
def test_bad_events_are_data_errors_naming_the_file(tmp_path, text, fragment):
    path = _write(tmp_path, text)
    with pytest.raises(DataError) as info:
        read_events(path)
    assert info.value.exit_code == 65
    assert str(path) in str(info.value)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_stim_column_lists_the_columns(tmp_path):
    path = _write(tmp_path, "onset\tduration\ttrial_type\n1\t1\tface\n")
    with pytest.raises(DataError, match="its columns are onset, duration, trial_type"):
        read_events(path)


def test_missing_file_is_input_missing(tmp_path):
    with pytest.raises(InputMissingError) as info:
        read_events(tmp_path / "nope_events.tsv")
    assert info.value.exit_code == 66
    assert "nope_events.tsv" in str(info.value)


def test_read_tsv_columns_strips_bom(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_bytes("\ufeffonset\tduration\r\n1\t2\r\n".encode())
    assert read_tsv_columns(path) == ["onset", "duration"]


@pytest.mark.fixtures
def test_fixture_ds000117_events(shared_fixtures):
    path = next(
        (shared_fixtures / "bids-examples" / "ds000117").glob(
            "sub-01/ses-mri/func/*run-01_events.tsv"
        )
    )
    events = read_events(path)
    assert len(events) > 50
    assert events["stim_id"].iloc[0] == "func/f013.bmp"
    assert (events["duration"] > 0).all()
    assert events["onset"].is_monotonic_increasing
