"""Design matrices: feature time courses on a fine grid, z-scoring, FIR delays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bids_vem.encoding.design import (
    add_delays,
    build_run_design,
    build_run_design_from_timecourse,
    feature_timecourse,
    video_timecourse,
    zscore,
)
from bids_vem.errors import DataError
from bids_vem.features.feature_set import FeatureSet


def _features(values: dict[str, list[float]]) -> FeatureSet:
    ids = tuple(values)
    return FeatureSet(
        name="toy",
        spec="test:toy",
        modality="image",
        stim_ids=ids,
        values=np.array([values[i] for i in ids], dtype=np.float32),
    )


def _events(rows: list[tuple[float, float, str | None]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["onset", "duration", "stim_id"])


def test_event_of_one_and_a_half_tr_starting_mid_tr():
    # TR 2 s: [1 s, 4 s) covers the second half of TR 0 and all of TR 1
    features = _features({"a.png": [1.0, 2.0], "b.png": [10.0, 0.0]})
    events = _events([(1.0, 3.0, "a.png"), (6.0, 0.0, "b.png"), (2.5, 1.0, None)])
    out = feature_timecourse(events, features, n_volumes=4, tr=2.0, oversampling=10)
    expected = np.array(
        [
            [0.5, 1.0],  # half of TR 0
            [1.0, 2.0],  # all of TR 1
            [0.0, 0.0],
            [1.0, 0.0],  # zero duration: one grid step of 0.2 s = 1/10 of TR 3
        ]
    )
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_onsets_off_the_grid_follow_the_grid_points():
    # grid step 0.2 s; an event over [0.1, 0.5) holds at the points 0.2 and 0.4 only
    features = _features({"a": [1.0]})
    out = feature_timecourse(_events([(0.1, 0.4, "a")]), features, 2, 2.0, oversampling=10)
    np.testing.assert_allclose(out[:, 0], [0.2, 0.0], atol=1e-12)
    # onsets that are grid points up to rounding (0.6 = 3 * 0.2) are on the grid
    out = feature_timecourse(_events([(0.6, 1.4, "a")]), features, 2, 2.0, oversampling=10)
    np.testing.assert_allclose(out[:, 0], [0.7, 0.0], atol=1e-12)


def test_matches_a_brute_force_fine_grid():
    rng = np.random.default_rng(3)
    ids = [f"s{i}" for i in range(6)]
    features = FeatureSet("toy", "t", "image", tuple(ids), rng.standard_normal((6, 3)).astype("f4"))
    tr, oversampling, n_volumes = 1.5, 6, 30
    step = tr / oversampling
    onsets = np.round(rng.uniform(-2, 48, 25) / step) * step + step / 2  # mid grid step
    durations = rng.choice([0.0, 0.7, 1.5, 4.2], 25)
    stim = rng.choice(ids, 25)
    events = _events(list(zip(onsets, durations, stim, strict=True)))
    out = feature_timecourse(events, features, n_volumes, tr, oversampling=oversampling)

    grid = np.zeros((n_volumes * oversampling, 3))
    times = np.arange(len(grid)) * step
    for onset, duration, s in zip(onsets, durations, stim, strict=True):
        held = (times >= onset) & (times < onset + max(duration, step))
        if duration == 0:  # one grid step, starting at the first grid point at or after onset
            held = np.zeros(len(times), bool)
            first = np.searchsorted(times, onset)
            held[first : first + 1] = True
        grid[held] += features.rows([s])[0]
    expected = grid.reshape(n_volumes, oversampling, 3).mean(1)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_overlapping_events_add_and_late_events_are_cut():
    features = _features({"a": [1.0], "b": [2.0]})
    events = _events([(0.0, 2.0, "a"), (1.0, 1.0, "b"), (3.0, 10.0, "a")])
    out = feature_timecourse(events, features, n_volumes=2, tr=2.0)
    np.testing.assert_allclose(out[:, 0], [1.0 + 2.0 * 0.5, 0.5], atol=1e-12)


def test_unknown_stimulus_is_a_data_error_naming_it():
    features = _features({"a.png": [1.0]})
    events = _events([(0.0, 1.0, "a.png"), (2.0, 1.0, "missing.png"), (3.0, 1.0, "gone.jpg")])
    with pytest.raises(DataError) as info:
        feature_timecourse(events, features, 4, 2.0, source="sub-01_events.tsv")
    assert info.value.exit_code == 65
    message = str(info.value)
    assert "sub-01_events.tsv" in message and "missing.png" in message and "gone.jpg" in message
    assert "'toy'" in message and "\n" not in message


def test_zscore_constant_columns_become_zero():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.standard_normal(50), np.full(50, 3.7), np.zeros(50)])
    out = zscore(x)
    np.testing.assert_allclose(out[:, 0], stats.zscore(x[:, 0]), atol=1e-12)
    assert np.all(out[:, 1:] == 0)
    assert zscore(x.astype(np.float32)).dtype == np.float32


def test_add_delays_shifts_down_with_zeros_in_delay_order():
    X = np.arange(1, 11, dtype=float).reshape(5, 2)  # rows [1,2], [3,4], ...
    out = add_delays(X, [0, 1, 3, 7])
    expected = np.array(
        [
            [1, 2, 0, 0, 0, 0, 0, 0],
            [3, 4, 1, 2, 0, 0, 0, 0],
            [5, 6, 3, 4, 0, 0, 0, 0],
            [7, 8, 5, 6, 1, 2, 0, 0],
            [9, 10, 7, 8, 3, 4, 0, 0],
        ],
        dtype=float,
    )
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(add_delays(X, [-1])[:, :], np.vstack([X[1:], [0, 0]]))


def test_build_run_design_is_zscored_time_course_with_delays():
    features = _features({"a": [1.0, 0.0], "b": [0.0, 1.0]})
    events = _events([(0.0, 4.0, "a"), (6.0, 2.0, "b"), (12.0, 3.0, "a")])
    X = build_run_design(events, features, 10, 2.0, delays=[1, 2])
    assert X.dtype == np.float32 and X.shape == (10, 4)
    z = zscore(feature_timecourse(events, features, 10, 2.0))
    np.testing.assert_allclose(X[1:, :2], z[:-1], atol=1e-6)
    np.testing.assert_allclose(X[2:, 2:], z[:-2], atol=1e-6)
    assert np.all(X[0] == 0)


def test_design_from_a_timecourse_equals_the_event_design():
    features = _features({"a": [1.0, 0.0], "b": [0.5, 2.0]})
    events = _events([(0.0, 3.0, "a"), (5.0, 2.0, "b"), (11.0, 4.0, "a")])
    timecourse = feature_timecourse(events, features, 10, 2.0)
    expected = build_run_design(events, features, 10, 2.0, delays=[1, 2, 3])
    out = build_run_design_from_timecourse(timecourse, delays=[1, 2, 3])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(DataError, match=r"story\.txt: per-TR features must be 2-D"):
        build_run_design_from_timecourse(np.zeros(10), [1], source="story.txt")


def test_video_timecourse_places_frames_at_onset_plus_timestamp():
    # two clips of 1-d features whose value is the frame time; TR 1 s
    stamps = np.arange(0, 3, 0.25)
    clips = {
        "a.mp4": (stamps[:, None] + 100.0, stamps),
        "b.mp4": (stamps[:, None] + 200.0, stamps),
    }
    events = pd.DataFrame(
        {
            "onset": [1.0, 6.5, 9.0],
            "duration": [2.0, 0.0, 1.0],  # a.mp4 shown 2 s of 3; b.mp4 whole; a.mp4 again 1 s
            "stim_id": ["a.mp4", "b.mp4", None],
        }
    )
    out = video_timecourse(events, clips, n_volumes=12, tr=1.0)
    expected = np.zeros((12, 1))
    for onset, duration, base in [(1.0, 2.0, 100.0), (6.5, 3.0, 200.0)]:
        times = onset + stamps[stamps < duration]
        values = stamps[stamps < duration] + base
        for k in range(12):
            inside = (times >= k) & (times < k + 1)
            if inside.any():
                expected[k, 0] = values[inside].mean()
    np.testing.assert_allclose(out, expected, atol=1e-12)
    assert np.all(out[[0, 3, 4, 5, 10, 11]] == 0)
    # TR 6 sees b's first two frames (6.5, 6.75 s), TR 9 its last two (9.0, 9.25 s)
    np.testing.assert_allclose(out[[6, 9], 0], [200.125, 202.625])


def test_video_timecourse_errors_name_the_events_file():
    clip = {"a.mp4": (np.zeros((4, 2)), np.arange(4) / 15)}
    events = pd.DataFrame({"onset": [0.0], "duration": [1.0], "stim_id": ["gone.mkv"]})
    with pytest.raises(DataError, match=r"run-1_events\.tsv: 1 video.*gone\.mkv"):
        video_timecourse(events, clip, 5, 2.0, source="run-1_events.tsv")
    with pytest.raises(DataError, match="NaN or infinite"):
        build_run_design_from_timecourse(np.array([[0.0], [np.nan]]), [1], source="x")


def test_video_timecourse_of_a_run_without_video_is_zeros_of_the_feature_width():
    clips = {"a.mp4": (np.ones((4, 3)), np.arange(4) / 15)}
    events = pd.DataFrame({"onset": [0.0], "duration": [1.0], "stim_id": [None]})
    out = video_timecourse(events, clips, n_volumes=5, tr=2.0)
    np.testing.assert_array_equal(out, np.zeros((5, 3)))
