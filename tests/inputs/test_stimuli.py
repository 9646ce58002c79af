"""build_stimulus_table and StimulusTable: resolution under stimuli/, hashing, errors."""

from __future__ import annotations

import hashlib
import os
import re

import pandas as pd
import pytest

from bids_vem.errors import DataError, InputMissingError
from bids_vem.inputs.stimuli import (
    Stimulus,
    StimulusTable,
    build_stimulus_table,
    file_sha256,
    stimulus_kind,
)


def _events(path, stims):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{2 * i}\t1\t{s}" for i, s in enumerate(stims)]
    path.write_text("onset\tduration\tstim_file\n" + "\n".join(rows) + "\n")
    return path


def _stimuli(root, files):
    for name, content in files.items():
        path = root / "stimuli" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "bids"
    _stimuli(
        root,
        {"img/b.png": b"bbb", "img/a.jpg": b"aaa", "clip.mp4": b"vvv", "story.txt": b"once"},
    )
    ev1 = _events(
        root / "sub-01/func/sub-01_task-x_run-1_events.tsv", ["img/b.png", "n/a", "clip.mp4"]
    )
    ev2 = _events(
        root / "sub-01/func/sub-01_task-x_run-2_events.tsv",
        ["./img/a.jpg", "img/b.png", "story.txt"],
    )
    return root, [ev1, ev2]


def test_unique_sorted_hashed_and_typed(dataset):
    root, events = dataset
    table = build_stimulus_table(root, events)
    assert table.stim_ids == ("clip.mp4", "img/a.jpg", "img/b.png", "story.txt")
    assert len(table) == 4
    assert [s.kind for s in table] == ["video", "image", "image", "text"]
    for stim in table:
        assert stim.path == (root / "stimuli" / stim.stim_id).absolute()
        assert stim.sha256 == hashlib.sha256(stim.path.read_bytes()).hexdigest()
    assert table.by_kind("image").stim_ids == ("img/a.jpg", "img/b.png")
    assert len(table.by_kind("audio")) == 0
    assert table["img/b.png"].sha256 == hashlib.sha256(b"bbb").hexdigest()
    assert "story.txt" in table and "nope.png" not in table
    with pytest.raises(ValueError, match="unknown stimulus kind"):
        table.by_kind("smell")


def test_content_hash_follows_names_and_contents_not_location(dataset, tmp_path):
    root, events = dataset
    first = build_stimulus_table(root, events)
    expected = hashlib.sha256(
        "".join(
            f"{s.stim_id}\t{hashlib.sha256(s.path.read_bytes()).hexdigest()}\n" for s in first
        ).encode()
    ).hexdigest()
    assert first.content_hash == expected
    # same files elsewhere: same hash
    moved = tmp_path / "elsewhere"
    os.rename(root, moved)
    relocated = build_stimulus_table(moved, [moved / e.relative_to(root) for e in events])
    assert relocated.content_hash == first.content_hash
    # one changed byte: another hash
    (moved / "stimuli/story.txt").write_bytes(b"twice")
    assert (
        build_stimulus_table(moved, [moved / e.relative_to(root) for e in events]).content_hash
        != first.content_hash
    )


def test_tsv_round_trip(dataset, tmp_path):
    root, events = dataset
    table = build_stimulus_table(root, events)
    out = table.to_tsv(tmp_path / "out" / "stimuli.tsv")
    frame = pd.read_csv(out, sep="\t")
    assert list(frame.columns) == ["stim_id", "path", "kind", "sha256"]
    assert StimulusTable.from_tsv(out) == table
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_from_tsv_refuses_other_tables(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("stim_id\tkind\na.png\timage\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: not a stimulus table")):
        StimulusTable.from_tsv(path)


def test_table_needs_sorted_unique_stimuli(tmp_path):
    a = Stimulus("a.png", tmp_path / "a.png", "image", "0")
    b = Stimulus("b.png", tmp_path / "b.png", "image", "1")
    with pytest.raises(ValueError):
        StimulusTable((b, a))
    with pytest.raises(ValueError):
        StimulusTable((a, a))


def test_all_missing_stimuli_in_one_error(tmp_path):
    root = tmp_path / "bids"
    names = [f"img/{i:03d}.png" for i in range(25)]
    _stimuli(root, {"img/003.png": b"x"})
    events = _events(root / "sub-01/func/sub-01_task-x_events.tsv", names)
    with pytest.raises(InputMissingError) as info:
        build_stimulus_table(root, [events])
    message = str(info.value)
    assert info.value.exit_code == 66
    assert message.startswith(
        f"24 stimulus files named in stim_file are missing under {root / 'stimuli'}"
    )
    listed = re.findall(r"img/\d{3}\.png", message)
    assert listed == [n for n in names if n != "img/003.png"][:20]
    assert "first 20" in message


def test_no_stimuli_folder_is_said(tmp_path):
    root = tmp_path / "bids"
    events = _events(root / "sub-01/func/sub-01_task-x_events.tsv", ["a.png"])
    with pytest.raises(InputMissingError, match="there is no .* folder"):
        build_stimulus_table(root, [events])


@pytest.mark.parametrize("bad", ["../secret.png", "img/../../secret.png", "/etc/secret.png"])
def test_paths_leaving_stimuli_are_refused(tmp_path, bad):
    root = tmp_path / "bids"
    _stimuli(root, {"ok.png": b"x"})
    (tmp_path / "secret.png").write_bytes(b"s")
    events = _events(root / "sub-01/func/sub-01_task-x_events.tsv", ["ok.png", bad])
    with pytest.raises(DataError) as info:
        build_stimulus_table(root, [events])
    assert info.value.exit_code == 65
    assert str(events) in str(info.value)
    assert "leaves the stimuli folder" in str(info.value)


def test_symlink_out_of_stimuli_is_refused(tmp_path):
    root = tmp_path / "bids"
    _stimuli(root, {"ok.png": b"x"})
    (tmp_path / "secret.png").write_bytes(b"s")
    (root / "stimuli" / "link.png").symlink_to(tmp_path / "secret.png")
    events = _events(root / "sub-01/func/sub-01_task-x_events.tsv", ["link.png"])
    with pytest.raises(DataError, match=r"'link.png' is a link to .*secret.png, outside"):
        build_stimulus_table(root, [events])


def test_annexed_symlinks_are_read(tmp_path):
    """DataLad datasets store stimuli as links into .git/annex/objects."""
    root = tmp_path / "bids"
    annexed = root / ".git/annex/objects/Xy/Zw/MD5E-s3--abc.png/MD5E-s3--abc.png"
    annexed.parent.mkdir(parents=True)
    annexed.write_bytes(b"img")
    (root / "stimuli").mkdir()
    (root / "stimuli" / "a.png").symlink_to(os.path.relpath(annexed, root / "stimuli"))
    (root / "stimuli" / "dangling.png").symlink_to("../.git/annex/objects/nothing.png")
    events = _events(root / "sub-01/func/sub-01_task-x_events.tsv", ["a.png"])
    table = build_stimulus_table(root, [events])
    assert table["a.png"].sha256 == hashlib.sha256(b"img").hexdigest()
    # an annexed file whose content was not fetched is missing
    events = _events(root / "sub-01/func/sub-01_task-y_events.tsv", ["dangling.png"])
    with pytest.raises(InputMissingError, match="dangling.png"):
        build_stimulus_table(root, [events])


def test_unknown_extension_names_stimulus_and_events(tmp_path):
    root = tmp_path / "bids"
    _stimuli(root, {"model.obj": b"x"})
    events = _events(root / "sub-01/func/sub-01_task-x_events.tsv", ["model.obj"])
    with pytest.raises(DataError) as info:
        build_stimulus_table(root, [events])
    assert "'model.obj'" in str(info.value) and str(events) in str(info.value)


def test_other_stimulus_column(tmp_path):
    root = tmp_path / "bids"
    _stimuli(root, {"a.png": b"x"})
    events = root / "ev_events.tsv"
    events.write_text("onset\tduration\tfile_path\n0\t1\ta.png\n")
    assert build_stimulus_table(root, [events], stim_column="file_path").stim_ids == ("a.png",)
    # the default column is absent: THINGS' file_path is found and used
    assert build_stimulus_table(root, [events]).stim_ids == ("a.png",)
    # a column named explicitly has no fallback
    with pytest.raises(DataError, match="no stimulus column 'stimulus' \\(set it with"):
        build_stimulus_table(root, [events], stim_column="stimulus")


def test_kinds_and_large_file_hash(tmp_path):
    assert stimulus_kind("x/IMG.JPEG") == "image"
    assert stimulus_kind("a.webm") == "video"
    assert stimulus_kind("a.flac") == "audio"
    assert stimulus_kind("a.txt") == "text"
    assert stimulus_kind("a.csv") is None
    big = tmp_path / "big.bin"
    data = os.urandom(3 * (1 << 20) + 17)  # several 1 MiB blocks and a tail
    big.write_bytes(data)
    assert file_sha256(big) == hashlib.sha256(data).hexdigest()


@pytest.mark.fixtures
def test_fixture_ds000117_stimuli_resolve(shared_fixtures):
    root = shared_fixtures / "bids-examples" / "ds000117"
    events = sorted(root.glob("sub-*/ses-mri/func/*_events.tsv"))
    assert events
    expected = set()
    for path in events:
        values = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)["stim_file"]
        expected |= {v for v in values if v != "n/a"}
    table = build_stimulus_table(root, events)
    assert len(table) == len(expected) > 100
    assert set(table.stim_ids) == expected
    assert {s.kind for s in table} == {"image"}
    assert all(s.path.is_file() for s in table)


@pytest.mark.fixtures
def test_fixture_bold5000_missing_stimuli(shared_fixtures):
    root = shared_fixtures / "bold5000-ds001499-skeleton"
    events = sorted(root.glob("sub-CSI1/ses-*/func/*task-5000scenes*_events.tsv"))
    expected = set()
    for path in events:
        values = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)["stim_file"]
        expected |= {v.strip() for v in values if v.strip() not in ("", "n/a")}
    with pytest.raises(InputMissingError) as info:
        build_stimulus_table(root, events)
    message = str(info.value)
    assert info.value.exit_code == 66
    assert message.startswith(f"{len(expected)} stimulus files")
    # the skeleton's 20 runs name 733 images (4,916 is the whole BOLD5000 set)
    assert len(expected) > 500
    listed = [name for name in expected if name in message]
    assert 0 < len(listed) <= 20


def test_names_without_extension_and_bare_names_resolve_when_unique(tmp_path):
    """GOD's stimulus_name (no extension) and BOLD5000's bare names in subfolders."""
    root = tmp_path / "bids"
    _stimuli(root, {"n01_1.JPEG": b"a", "sub/n02_2.png": b"b", "COCO/x 1é.jpg": b"c"})
    events = _events(root / "sub-01/func/sub-01_task-x_events.tsv", ["n01_1", "n02_2", "x 1é.jpg"])
    table = build_stimulus_table(root, [events])
    # keyed by the names the events give; kind and content from the file found
    assert table.stim_ids == ("n01_1", "n02_2", "x 1é.jpg")
    assert table["n01_1"].kind == "image" and table["n01_1"].path.name == "n01_1.JPEG"
    assert table["x 1é.jpg"].sha256 == hashlib.sha256(b"c").hexdigest()
    # two files with one stem: refused, both named
    _stimuli(root, {"other/n01_1.png": b"d"})
    with pytest.raises(DataError, match=r"'n01_1' matches 2 files .*n01_1.JPEG.*n01_1.png"):
        build_stimulus_table(root, [events])


def test_stimuli_dir_outside_the_dataset(tmp_path):
    root = tmp_path / "bids"
    elsewhere = tmp_path / "Presented_Stimuli"
    (elsewhere / "ImageNet").mkdir(parents=True)
    (elsewhere / "ImageNet" / "n01.JPEG").write_bytes(b"x")
    (elsewhere / "a.png").write_bytes(b"outside")
    _stimuli(root, {"a.png": b"inside"})
    events = _events(root / "sub-01/func/sub-01_task-x_events.tsv", ["n01.JPEG", "a.png"])
    with pytest.raises(InputMissingError, match="stimuli kept elsewhere: --stimuli-dir"):
        build_stimulus_table(root, [events])
    table = build_stimulus_table(root, [events], stimuli_dir=elsewhere)
    assert table["n01.JPEG"].path == elsewhere / "ImageNet" / "n01.JPEG"
    assert table["a.png"].path == elsewhere / "a.png"  # --stimuli-dir is searched first
    with pytest.raises(InputMissingError, match="--stimuli-dir .*absent: no such folder"):
        build_stimulus_table(root, [events], stimuli_dir=tmp_path / "absent")


def test_links_are_checked_after_resolving(tmp_path):
    """A link inside the stimulus folder to a file outside is refused, even when found by
    its bare name; a link to a file inside is fine."""
    root = tmp_path / "bids"
    _stimuli(root, {"real/b.png": b"b"})
    (tmp_path / "secret.png").write_bytes(b"s")
    (root / "stimuli" / "deep").mkdir()
    os.symlink(tmp_path / "secret.png", root / "stimuli" / "deep" / "a.png")
    os.symlink(root / "stimuli" / "real" / "b.png", root / "stimuli" / "c.png")
    events = _events(root / "sub-01/func/sub-01_task-x_events.tsv", ["c.png"])
    assert build_stimulus_table(root, [events])["c.png"].sha256 == hashlib.sha256(b"b").hexdigest()
    events = _events(root / "sub-01/func/sub-01_task-x_events.tsv", ["a.png"])
    with pytest.raises(DataError, match="'a.png' is a link to .*secret.png, outside"):
        build_stimulus_table(root, [events])


def test_events_without_a_stimulus_are_counted_not_refused(tmp_path, caplog):
    root = tmp_path / "bids"
    _stimuli(root, {"a.png": b"a"})
    events = _events(root / "sub-01/func/sub-01_task-x_events.tsv", ["a.png", "n/a", "", "n/a"])
    with caplog.at_level("INFO", logger="bids_vem.inputs.stimuli"):
        assert build_stimulus_table(root, [events]).stim_ids == ("a.png",)
    assert "3 of 4 events name no stimulus" in caplog.text


def test_names_that_are_no_file_are_labels_only_when_all_are(tmp_path, caplog):
    """Haxby's trial_type: categories, no files. A single unknown name among files is a
    mistake, not a label."""
    root = tmp_path / "bids"
    events = _events(root / "sub-01/func/sub-01_task-x_events.tsv", ["face", "house", "face"])
    with caplog.at_level("WARNING", logger="bids_vem.inputs.stimuli"):
        table = build_stimulus_table(root, [events])
    assert table.stim_ids == ("face", "house") and {s.kind for s in table} == {"label"}
    assert table["face"].sha256 == hashlib.sha256(b"face").hexdigest()
    assert "its 2 values (face, house) are labels" in caplog.text
    _stimuli(root, {"a.png": b"x"})
    events = _events(root / "sub-01/func/sub-01_task-x_events.tsv", ["a.png", "face"])
    with pytest.raises(DataError, match="stimulus 'face' has an extension of no known kind"):
        build_stimulus_table(root, [events])
