"""Video stimuli: frames sampled by timestamp with PyAV, features per frame, averaged per TR."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bids_vem.encoding.design import video_timecourse
from bids_vem.errors import DataError, InputMissingError
from bids_vem.features.video import iter_frames, sample_frames, video_features

av = pytest.importorskip("av")

#: one colour per second of the generated clips
COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)], dtype=np.uint8)
#: container -> (codec, pixel format); ffv1 in bgr0 is lossless, the others are lossy
CODECS = {
    ".mkv": ("ffv1", "bgr0"),
    ".mp4": ("libx264", "yuv420p"),
    ".avi": ("mpeg4", "yuv420p"),
    ".webm": ("libvpx", "yuv420p"),
}


def _frame(colour: np.ndarray) -> object:
    pixels = np.broadcast_to(colour, (24, 32, 3)).copy()
    return av.VideoFrame.from_ndarray(pixels, format="rgb24")


def write_colour_video(path: Path, fps: int = 30, seconds: int = 4) -> Path:
    """A ``seconds``-long clip at ``fps`` whose colour changes every second (COLOURS)."""
    codec, pixel_format = CODECS[path.suffix]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = 32, 24, pixel_format
        for i in range(fps * seconds):
            for packet in stream.encode(_frame(COLOURS[i // fps])):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _mean_colour(images: list) -> np.ndarray:
    """A stand-in image encoder: the mean RGB of each frame."""
    return np.stack(
        [np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(0) for image in images]
    )


@pytest.mark.parametrize("suffix", sorted(CODECS))
def test_15_fps_sampling_of_a_30_fps_clip(tmp_path, suffix):
    path = write_colour_video(tmp_path / f"clip{suffix}")
    frames, timestamps = sample_frames(path, frame_rate=15.0)
    assert len(frames) == 60
    np.testing.assert_allclose(timestamps, np.arange(60) / 15.0, atol=1e-12)
    colours = _mean_colour(frames)
    lossless = suffix == ".mkv"
    expected = COLOURS[(timestamps // 1.0).astype(int)].astype(float)
    np.testing.assert_allclose(colours, expected, atol=0 if lossless else 6)
    assert frames[0].mode == "RGB" and frames[0].size == (32, 24)


def test_per_tr_average_of_frame_features_has_the_mean_colour(tmp_path):
    path = write_colour_video(tmp_path / "clip.mkv")
    features, timestamps = video_features(path, _mean_colour, frame_rate=15.0, batch_size=7)
    assert features.shape == (60, 3) and features.dtype == np.float32
    events = pd.DataFrame({"onset": [0.0], "duration": [4.0], "stim_id": ["clip.mkv"]})
    per_tr = video_timecourse(events, {"clip.mkv": (features, timestamps)}, n_volumes=2, tr=2.0)
    # TR 0 shows red then green for a second each, TR 1 blue then yellow
    expected = np.array([COLOURS[:2].mean(0), COLOURS[2:].mean(0)])
    np.testing.assert_allclose(per_tr, expected, atol=1e-4)


def test_batch_size_does_not_change_features_of_a_real_image_encoder(tmp_path, tiny_clip):
    import open_clip
    import torch

    preprocess = open_clip.image_transform(32, is_train=False)

    def encode(images: list) -> np.ndarray:
        with torch.inference_mode():
            pixels = torch.stack([preprocess(image) for image in images])
            return tiny_clip.model.encode_image(pixels, normalize=True).numpy()

    path = write_colour_video(tmp_path / "clip.mp4", fps=10, seconds=2)
    one, times_one = video_features(path, encode, frame_rate=5.0, batch_size=1)
    many, times_many = video_features(path, encode, frame_rate=5.0, batch_size=4)
    assert one.shape == (10, 32)
    np.testing.assert_array_equal(times_one, times_many)
    np.testing.assert_allclose(one, many, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(one, axis=1), 1.0, atol=1e-5)


def test_variable_frame_rate_is_sampled_by_timestamp(tmp_path):
    # four frames shown from 0, 0.5, 0.52 and 1.7 s: sampling by index would see 4 frames
    path = tmp_path / "vfr.mkv"
    shown_at_ms = [0, 500, 520, 1700]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1")
        stream.width, stream.height, stream.pix_fmt = 32, 24, "bgr0"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for colour, ms in zip(COLOURS, shown_at_ms, strict=True):
            frame = _frame(colour)
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)

    samples = list(iter_frames(path, frame_rate=10.0))
    times = np.array([t for t, _ in samples])
    np.testing.assert_allclose(times, np.arange(len(samples)) / 10.0, atol=1e-12)
    shown = [int(np.argmin(np.abs(COLOURS - np.asarray(im)[0, 0]).sum(1))) for _, im in samples]
    # 0-0.4 s: first frame; 0.5 s: second (0.52 s not reached yet); 0.6-1.6 s: third; then fourth
    assert shown[:17] == [0] * 5 + [1] + [2] * 11
    assert shown[17:] and set(shown[17:]) == {3}


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not a video at all" * 100, "truncated"],
    ids=["empty", "garbage", "truncated"],
)
def test_corrupt_video_is_a_data_error_naming_it(tmp_path, content):
    path = tmp_path / "broken clip.mp4"
    if content == "truncated":
        write_colour_video(tmp_path / "good.mp4")
        content = (tmp_path / "good.mp4").read_bytes()[:600]
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        video_features(path, _mean_colour)
    assert info.value.exit_code == 65
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_video_cut_in_the_middle_is_a_data_error(tmp_path):
    # a half-written Matroska file decodes its first half without any FFmpeg error
    whole = write_colour_video(tmp_path / "whole.mkv").read_bytes()
    path = tmp_path / "half.mkv"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"half\.mkv: frames end at .* declares 4\.00 s"):
        sample_frames(path)


def test_missing_video_is_input_missing(tmp_path):
    with pytest.raises(InputMissingError) as info:
        sample_frames(tmp_path / "absent.mp4")
    assert info.value.exit_code == 66 and "absent.mp4" in str(info.value)
