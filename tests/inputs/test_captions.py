"""read_captions and coco_captions_to_tsv."""

from __future__ import annotations

import json
import logging

import pytest

from bids_vem.errors import DataError, InputMissingError
from bids_vem.inputs.captions import coco_captions_to_tsv, read_captions


def _tsv(tmp_path, text, name="captions.tsv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_several_captions_per_stimulus_in_file_order(tmp_path):
    path = _tsv(
        tmp_path,
        "stim_file\tcaption\tmodel\n"
        'img/b.png\tA dog on a "red" sofa.\thuman\n'
        "./img/a.png\tA cat.\thuman\n"
        "img/b.png\t  A dog   resting.  \thuman\n",
    )
    captions = read_captions(path)
    assert list(captions) == ["img/a.png", "img/b.png"]
    assert captions["img/b.png"] == ['A dog on a "red" sofa.', "A dog resting."]
    assert captions["img/a.png"] == ["A cat."]


def test_stim_id_column_and_selection_order(tmp_path, caplog):
    path = _tsv(tmp_path, "stim_id\tcaption\na.png\tone\nb.png\ttwo\nc.png\tthree\nb.png\tdeux\n")
    with caplog.at_level(logging.INFO, logger="bids_vem.inputs.captions"):
        captions = read_captions(path, stim_ids=["c.png", "b.png"])
    assert captions == {"c.png": ["three"], "b.png": ["two", "deux"]}
    assert "ignoring captions of 1 stimuli" in caplog.text


def test_missing_captions_counted_in_one_error(tmp_path):
    path = _tsv(tmp_path, "stim_file\tcaption\na.png\tone\n")
    wanted = ["a.png"] + [f"s{i:02d}.png" for i in range(30)]
    with pytest.raises(InputMissingError) as info:
        read_captions(path, stim_ids=wanted)
    message = str(info.value)
    assert info.value.exit_code == 66
    assert message.startswith(f"{path}: 30 of 31 stimuli have no caption: s00.png")
    assert "s19.png" in message and "s20.png" not in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("file\ttext\na.png\tone\n", "needs the columns stim_file (or stim_id) and caption"),
        ("stim_file\tcaption\na.png\t\n", "empty caption for 'a.png' on data row 1"),
        ("stim_file\tcaption\na.png\tok\nb.png\tn/a\n", "empty caption for 'b.png' on data row 2"),
        ("stim_file\tcaption\n\tok\n", "empty stim_file on data row 1"),
        ("stim_file\tcaption\n", "no captions"),
    ],
)
def test_bad_captions_files(tmp_path, text, fragment):
    path = _tsv(tmp_path, text)
    with pytest.raises(DataError) as info:
        read_captions(path)
    assert info.value.exit_code == 65
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_missing_captions_file(tmp_path):
    with pytest.raises(InputMissingError, match="no such file"):
        read_captions(tmp_path / "none.tsv")


def test_coco_json_to_tsv_round_trip(tmp_path):
    coco = {
        "images": [{"id": 7, "file_name": "0007.jpg"}, {"id": 3, "file_name": "0003.jpg"}],
        "annotations": [
            {"id": 2, "image_id": 7, "caption": "A tab\there and\na newline."},
            {"id": 1, "image_id": 7, "caption": "First."},
            {"id": 5, "image_id": 3, "caption": "Other image."},
        ],
    }
    src = tmp_path / "captions_val.json"
    src.write_text(json.dumps(coco))
    out = coco_captions_to_tsv(src, tmp_path / "out" / "captions.tsv", prefix="coco/")
    assert out.read_text().splitlines() == [
        "stim_file\tcaption",
        "coco/0003.jpg\tOther image.",
        "coco/0007.jpg\tFirst.",
        "coco/0007.jpg\tA tab here and a newline.",
    ]
    assert read_captions(out, stim_ids=["coco/0007.jpg"]) == {
        "coco/0007.jpg": ["First.", "A tab here and a newline."]
    }


@pytest.mark.parametrize(
    ("content", "error"),
    [("{not json", DataError), (json.dumps({"images": []}), DataError), (None, InputMissingError)],
)
def test_coco_bad_input(tmp_path, content, error):
    src = tmp_path / "captions.json"
    if content is not None:
        src.write_text(content)
    with pytest.raises(error) as info:
        coco_captions_to_tsv(src, tmp_path / "out.tsv")
    assert str(src) in str(info.value)
    assert not (tmp_path / "out.tsv").exists()


@pytest.mark.fixtures
def test_fixture_coco_mini_val_captions(shared_fixtures, tmp_path):
    coco = shared_fixtures / "coco-mini"
    out = coco_captions_to_tsv(
        coco / "annotations" / "captions_val2017.json", tmp_path / "captions.tsv", prefix="val2017/"
    )
    data = json.loads((coco / "annotations" / "captions_val2017.json").read_text())
    captioned = sorted({f"val2017/{im['file_name']}" for im in data["images"]})
    captions = read_captions(out, stim_ids=captioned)
    assert len(captions) == len(captioned) == 79
    counts = [len(c) for c in captions.values()]
    assert sum(counts) == len(data["annotations"]) == 395
    assert min(counts) >= 5 and max(counts) <= 7
    # the captions name real image files of the fixture
    assert all((coco / stim).is_file() for stim in captions)


def test_json_captions_keyed_by_clip(tmp_path):
    """BOLD Moments' annotations: clip -> several descriptions (or an object holding them),
    keyed by the clip's number, its file name or its path."""
    import json

    path = tmp_path / "annotations.json"
    path.write_text(json.dumps({
        "0001": ["a dog runs", "a dog\tin a park"],
        "0002.mp4": "a car",
        "test/0003.mp4": {"text_descriptions": ["a boat", "a ship"]},
    }))  # fmt: skip
    wanted = ["train/0001.mp4", "train/0002.mp4", "test/0003.mp4"]
    captions = read_captions(path, wanted)
    assert captions == {
        "train/0001.mp4": ["a dog runs", "a dog in a park"],
        "train/0002.mp4": ["a car"],
        "test/0003.mp4": ["a boat", "a ship"],
    }
    with pytest.raises(InputMissingError, match="1 of 4 stimuli have no caption: train/0004.mp4"):
        read_captions(path, [*wanted, "train/0004.mp4"])
    path.write_text(json.dumps({"0001": [1, 2]}))
    with pytest.raises(DataError, match="the captions of '0001' are not a text"):
        read_captions(path)
    path.write_text("[1, 2]")
    with pytest.raises(DataError, match="expected a JSON object"):
        read_captions(path)


def test_decoding_corpus_reads_coco_json_tsv_and_text(tmp_path):
    import json

    from bids_vem.inputs.captions import read_caption_corpus

    coco = tmp_path / "captions_val2017.json"
    coco.write_text(json.dumps({"images": [], "annotations": [
        {"image_id": 1, "id": 1, "caption": "A dog on a\tsofa."},
        {"image_id": 1, "id": 2, "caption": "A dog on a\tsofa."},
        {"image_id": 2, "id": 3, "caption": "  "},
        {"image_id": 2, "id": 4, "caption": "Two kites."},
    ]}))  # fmt: skip
    assert read_caption_corpus(coco) == ["A dog on a sofa.", "Two kites."]
    table = tmp_path / "corpus.tsv"
    table.write_text("id\tcaption\n1\ta red car\n2\tn/a\n3\ta blue car\n")
    assert read_caption_corpus(table) == ["a red car", "a blue car"]
    text = tmp_path / "corpus.txt"
    text.write_text("one\n\ntwo\none\n")
    assert read_caption_corpus(text) == ["one", "two"]
    with pytest.raises(DataError, match="no 'caption' column"):
        (tmp_path / "bad.tsv").write_text("text\nx\n")
        read_caption_corpus(tmp_path / "bad.tsv")
    with pytest.raises(DataError, match="an 'annotations' list"):
        (tmp_path / "bad.json").write_text("{}")
        read_caption_corpus(tmp_path / "bad.json")
    with pytest.raises(InputMissingError, match="no such caption corpus"):
        read_caption_corpus(tmp_path / "absent.txt")
