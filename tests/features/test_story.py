"""Story stimuli: timed words from events or transcripts, contexts, Lanczos per-TR features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bids_vem.encoding.design import video_timecourse
from bids_vem.encoding.resample import lanczos_resample
from bids_vem.errors import DataError, InputMissingError
from bids_vem.features.story import (
    read_word_timings,
    story_features,
    story_words,
    word_contexts,
)


def write_story(folder: Path, name: str, words: list[str], onsets: list[float]) -> Path:
    """A transcript ``name.txt`` with its word timings ``name.tsv`` beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.txt").write_text(" ".join(words) + "\n", encoding="utf-8")
    rows = ["onset\tduration\tword"] + [
        f"{o}\t0.3\t{w}" for o, w in zip(onsets, words, strict=True)
    ]
    (folder / f"{name}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder / f"{name}.txt"


def test_contexts_are_cut_at_the_edges_of_the_story():
    words = [f"w{i}" for i in range(10)]
    contexts = word_contexts(words, n_context=3)
    assert contexts[0] == "w0 w1 w2 w3"
    assert contexts[1] == "w0 w1 w2 w3 w4"
    assert contexts[5] == "w2 w3 w4 w5 w6 w7 w8"
    assert contexts[9] == "w6 w7 w8 w9"
    causal = word_contexts(words, n_context=3, causal=True)
    assert causal[0] == "w0" and causal[2] == "w0 w1 w2" and causal[9] == "w6 w7 w8 w9"
    assert word_contexts(words, n_context=0) == words
    assert len(word_contexts([f"w{i}" for i in range(100)])[50].split()) == 41  # default 20


def test_words_from_a_word_column_skip_empty_rows_and_sort_by_onset():
    events = pd.DataFrame(
        {
            "onset": [2.0, 0.5, 1.0, 3.0],
            "duration": [0.2, 0.2, 0.2, 0.2],
            "stim_id": [None] * 4,
            "word": ["dog", "the", "n/a", "barked"],
        }
    )
    words, onsets = story_words(events)
    assert words == ["the", "dog", "barked"]
    np.testing.assert_array_equal(onsets, [0.5, 2.0, 3.0])


def test_words_of_a_text_cell_are_spread_over_its_duration():
    events = pd.DataFrame(
        {"onset": [10.0, 20.0], "duration": [2.0, 0.0], "text": ["once upon a time", "end"]}
    )
    words, onsets = story_words(events, source_name="sub-01_events.tsv")
    assert words == ["once", "upon", "a", "time", "end"]
    np.testing.assert_allclose(onsets, [10.0, 10.5, 11.0, 11.5, 20.0])


def test_transcripts_named_by_events_are_placed_at_the_event_onset(tmp_path):
    stimuli = tmp_path / "stimuli"
    write_story(stimuli / "stories", "dog", ["a", "dog", "ran", "home"], [0.0, 0.4, 0.8, 5.0])
    events = pd.DataFrame(
        {
            "onset": [0.0, 12.0],
            "duration": [3.0, 0.0],  # the first telling stops at 3 s: "home" is not heard
            "stim_id": ["stories/dog.txt", "stories/dog.txt"],
        }
    )
    words, onsets = story_words(events, stimuli_dir=stimuli)
    assert words == ["a", "dog", "ran", "a", "dog", "ran", "home"]
    np.testing.assert_allclose(onsets, [0.0, 0.4, 0.8, 12.0, 12.4, 12.8, 17.0])

    words, onsets = story_words(stimuli / "stories" / "dog.txt")
    assert words == ["a", "dog", "ran", "home"]
    np.testing.assert_allclose(onsets, [0.0, 0.4, 0.8, 5.0])


def test_word_timings_keep_words_that_look_like_missing_values(tmp_path):
    (tmp_path / "s.tsv").write_text("onset\tword\n0.5\tNA\n0.1\tnull\n0.9\tn/a\n")
    words, onsets, durations = read_word_timings(tmp_path / "s.txt")
    assert words == ["null", "NA"]
    np.testing.assert_allclose(onsets, [0.1, 0.5])
    assert np.isnan(durations).all()


def test_missing_or_bad_timings_are_user_errors_naming_the_file(tmp_path):
    (tmp_path / "lonely.txt").write_text("no timings here\n")
    with pytest.raises(InputMissingError) as info:
        story_words(tmp_path / "lonely.txt")
    message = str(info.value)
    assert info.value.exit_code == 66 and "lonely.txt" in message and "lonely.tsv" in message
    assert "\n" not in message

    (tmp_path / "bad.tsv").write_text("onset\tword\n0.1\thello\nsoon\tworld\n")
    with pytest.raises(DataError, match=r"bad\.tsv: column 'onset' must be numeric.*'soon'"):
        story_words(tmp_path / "bad.txt")

    (tmp_path / "cols.tsv").write_text("time\tword\n0.1\thello\n")
    with pytest.raises(DataError, match=r"cols\.tsv: word timings lack the column\(s\) onset"):
        read_word_timings(tmp_path / "cols.tsv")

    events = pd.DataFrame({"onset": [0.0], "duration": [1.0], "stim_id": ["a.png"]})
    with pytest.raises(DataError, match=r"run-2_events\.tsv: events carry no words") as info:
        story_words(events, source_name="run-2_events.tsv")
    assert info.value.exit_code == 65


def test_story_features_encode_each_distinct_context_once():
    calls: list[list[str]] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.array([[len(t), t.count(" ")] for t in texts], dtype=float)

    words = ["a", "a", "a", "b"]
    features = story_features(words, encode, n_context=0, batch_size=1)
    assert calls == [["a"], ["b"]]
    np.testing.assert_array_equal(features, [[1, 0], [1, 0], [1, 0], [1, 0]])
    assert features.dtype == np.float32


def test_story_features_with_a_real_sentence_encoder(minilm_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_path), device="cpu")
    words = "the old man walked his dog along the river every morning before dawn".split()
    one = story_features(words, model.encode, n_context=3, batch_size=1)
    many = story_features(words, model.encode, n_context=3, batch_size=16)
    assert one.shape == (len(words), 384)
    np.testing.assert_allclose(one, many, atol=1e-5)
    np.testing.assert_allclose(
        one[5], model.encode(["man walked his dog along the river"])[0], atol=1e-5
    )


def test_per_tr_story_features_peak_in_the_tr_of_the_word(tmp_path):
    # a generated story: a word every 0.4 s for 60 s; "dog" is said once at 33.2 s
    tr, n_volumes = 2.0, 38
    onsets = np.round(np.arange(0.0, 60.0, 0.4), 6)
    words = ["word"] * len(onsets)
    dog = int(np.flatnonzero(np.isclose(onsets, 33.2))[0])
    words[dog] = "dog"
    stimuli = tmp_path / "stimuli"
    write_story(stimuli, "story", words, list(onsets))
    events = pd.DataFrame({"onset": [8.0], "duration": [0.0], "stim_id": ["story.txt"]})
    run_words, run_onsets = story_words(events, stimuli_dir=stimuli)
    # a one-hot word feature: an impulse at 8 + 33.2 = 41.2 s, in TR 20 ([40, 42) s)
    is_dog = np.array([[w == "dog", 1.0] for w in run_words], dtype=float)
    # the pipeline's resampling of a story's word features (the words timed from its onset)
    words_of = {"story.txt": (is_dog, run_onsets - 8.0)}
    per_tr = video_timecourse(events, words_of, n_volumes, tr, resample="lanczos")
    assert per_tr.shape == (n_volumes, 2)
    assert int(np.argmax(per_tr[:, 0])) == 20
    np.testing.assert_allclose(
        per_tr, lanczos_resample(run_onsets, is_dog, n_volumes, tr), atol=1e-12
    )
    # the kernel reaches 3 TRs (6 s): TR centres 37 s (TR 18) to 47 s (TR 23) see the word
    assert np.all(per_tr[:18, 0] == 0) and np.all(per_tr[24:, 0] == 0)
    assert np.all(per_tr[18:24, 0] != 0)
    # the constant feature: zero before the story starts, flat in the middle, gone after it ends
    assert per_tr[0, 1] == 0  # first word at 8 s, more than 6 s after TR 0's centre (1 s)
    middle = per_tr[8:30, 1]
    assert np.ptp(middle) < 0.05 * middle.mean()
    assert per_tr[-1, 1] == 0  # last word at 67.6 s, over 6 s before TR 37's centre (75 s)

    with pytest.raises(DataError, match="timestamps"):
        video_timecourse(
            events,
            {"story.txt": (is_dog[:-1], run_onsets - 8.0)},
            n_volumes,
            tr,
            resample="lanczos",
        )


def test_textgrid_and_gentle_word_timings(tmp_path):
    """Lebel's TextGrids (word tier, silences sp) and Narratives' Gentle alignments: the words
    at their times; silences, noises and words not found in the audio dropped."""
    import json

    from bids_vem.features.story import is_spoken_word, read_word_timings
    from tests.skeletons import _textgrid

    words = [(0.5, 0.9, "the"), (1.0, 1.4, "{LG}"), (1.6, 2.0, "dog")]
    grid = _textgrid(tmp_path / "avatar.TextGrid", words)
    found, onsets, durations = read_word_timings(grid)
    assert found == ["the", "dog"]
    np.testing.assert_allclose(onsets, [0.5, 1.6])
    np.testing.assert_allclose(durations, [0.4, 0.4])
    gentle = tmp_path / "pieman" / "align.json"
    gentle.parent.mkdir()
    gentle.write_text(json.dumps({"words": [
        {"word": "b", "case": "success", "start": 2.0, "end": 2.5},
        {"word": "a", "case": "success", "start": 1.0, "end": 1.2},
        {"word": "um", "case": "not-found-in-audio"},
    ]}))  # fmt: skip
    found, onsets, _ = read_word_timings(gentle)
    assert found == ["a", "b"] and onsets.tolist() == [1.0, 2.0]
    assert not any(map(is_spoken_word, ["sp", "", " sil ", "{BR}", "<unk>", "[noise]"]))
    assert all(map(is_spoken_word, ["dog", "I", "NA", "it's"]))
    (tmp_path / "bad.TextGrid").write_text("not a textgrid")
    with pytest.raises(DataError, match="bad.TextGrid: not a readable Praat TextGrid"):
        read_word_timings(tmp_path / "bad.TextGrid")


def test_a_runs_story_is_found_by_task_or_by_the_audio_it_names(tmp_path):
    from bids_vem.inputs.transcripts import find_transcript, transcript_for_stimulus

    (tmp_path / "avatar.TextGrid").write_text("x")
    (tmp_path / "pie").mkdir()
    (tmp_path / "pie" / "align.json").write_text("{}")
    (tmp_path / "pieman").mkdir()
    (tmp_path / "pieman" / "align.json").write_text("{}")
    assert find_transcript(tmp_path, "avatar") == tmp_path / "avatar.TextGrid"
    assert find_transcript(tmp_path, "legacy") is None
    # the longest story name the audio's name starts with (at a _ or -)
    assert (
        transcript_for_stimulus(tmp_path, "pieman_audio.wav") == tmp_path / "pieman" / "align.json"
    )
    assert transcript_for_stimulus(tmp_path, "audio/pie-2.wav") == tmp_path / "pie" / "align.json"
    assert transcript_for_stimulus(tmp_path, "tunnel.wav") is None
