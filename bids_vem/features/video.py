"""Video stimuli: frames sampled at a fixed rate by timestamp, features per frame.

Frames are decoded with PyAV (FFmpeg). Sampling is by presentation time, not by frame index,
so variable-frame-rate videos are sampled correctly: the sample at time ``k / frame_rate`` is the
frame on screen at that time (the last frame whose timestamp is at or before it). Tang et al.
(2023) sampled movies at 15 fps and averaged the frame features within each 2-s TR
(``bids_vem.encoding.design.video_timecourse`` does the averaging).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bids_vem.errors import DataError, InputMissingError

__all__ = ["DEFAULT_FRAME_RATE", "iter_frames", "sample_frames", "video_features"]

logger = logging.getLogger(__name__)

#: frames per second sampled from movies (Tang et al. 2023)
DEFAULT_FRAME_RATE = 15.0

# a frame whose timestamp is this close (s) after a sample time is on screen at it:
# timestamps are integers in the stream's time base, converted to float seconds
_TIME_TOLERANCE = 1e-6


def _open_video(path: Path) -> tuple[Any, Any]:
    import av

    if not path.is_file():
        raise InputMissingError(f"stimulus video {path}: no such file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"stimulus video {path}: cannot be opened as a video ({exc})") from exc
    if not container.streams.video:
        container.close()
        raise DataError(f"stimulus video {path}: the file has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame and slice threads: decoding is the slow part
    return container, stream


def _last_frame_duration(frame: Any, stream: Any) -> float:
    """How long the last frame stays on screen (s): its own duration, else 1 / average rate."""
    if frame.duration and frame.time_base is not None:
        return float(frame.duration * frame.time_base)
    if stream.average_rate:
        return float(1 / stream.average_rate)
    return 0.0


def _declared_duration(container: Any, stream: Any) -> float | None:
    """The video's duration (s) as its header states it, None when unknown or ambiguous."""
    if stream.duration and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    # the container's duration covers all streams: trust it only for a lone video stream
    if container.duration and len(container.streams) == 1:
        return container.duration / 1_000_000  # in AV_TIME_BASE units (microseconds)
    return None


def iter_frames(path: Path, frame_rate: float = DEFAULT_FRAME_RATE) -> Iterator[tuple[float, Any]]:
    """Decode a video and yield the frame on screen every ``1 / frame_rate`` seconds.

    Parameters
    ----------
    path : Path
        Video file (``.mp4``, ``.mkv``, ``.avi``, ``.webm``, ...; any format FFmpeg reads).
    frame_rate : float
        Samples per second.

    Yields
    ------
    (float, PIL.Image)
        Sample time in seconds from the first frame (``k / frame_rate``, k = 0, 1, ...) and the
        RGB frame shown then. Samples cover ``[0, end)`` where ``end`` is the last frame's
        timestamp plus its duration. Frames are decoded one at a time (a long movie never sits
        in memory).

    Raises
    ------
    InputMissingError
        The file does not exist (exit 66).
    DataError
        The file cannot be decoded as a video, has no video stream or no frame, or its frames
        end well before the duration its header declares (a truncated file) (exit 65).
    """
    import av

    path = Path(path)
    if not frame_rate > 0:
        raise ValueError(f"frame_rate must be > 0, got {frame_rate}")
    container, stream = _open_video(path)
    n_samples = 0
    start: float | None = None
    shown: Any = None  # the decoded frame on screen, its PIL image made once when first sampled
    shown_image: Any = None

    def _image() -> Any:
        nonlocal shown_image
        if shown_image is None:
            shown_image = shown.to_image()
        return shown_image

    try:
        with container:
            for frame in container.decode(stream):
                if frame.time is None:
                    continue  # no timestamp: cannot be placed in time
                if start is None:
                    start = float(frame.time)
                time = float(frame.time) - start
                # samples before this frame's time show the previous frame
                while shown is not None and n_samples / frame_rate < time - _TIME_TOLERANCE:
                    yield n_samples / frame_rate, _image()
                    n_samples += 1
                shown, shown_image = frame, None
            if shown is None:
                raise DataError(f"stimulus video {path}: no decodable frame")
            end = float(shown.time) - start + _last_frame_duration(shown, stream)
            declared = _declared_duration(container, stream)
            # FFmpeg stops quietly at the end of a truncated file (an incomplete download)
            if declared is not None and end < declared - max(1.0, 0.05 * declared):
                raise DataError(
                    f"stimulus video {path}: frames end at {end:.2f} s but the file declares "
                    f"{declared:.2f} s; the file is truncated or damaged"
                )
            while n_samples / frame_rate < end - _TIME_TOLERANCE:
                yield n_samples / frame_rate, _image()
                n_samples += 1
    except av.FFmpegError as exc:
        raise DataError(f"stimulus video {path}: decoding failed ({exc})") from exc


def sample_frames(
    path: Path, frame_rate: float = DEFAULT_FRAME_RATE
) -> tuple[list[Any], np.ndarray]:
    """All frames of a video sampled at ``frame_rate``, in memory (for short clips).

    Parameters
    ----------
    path : Path
        Video file.
    frame_rate : float
        Samples per second.

    Returns
    -------
    frames : list of PIL.Image
        RGB frames, one per sample.
    timestamps : ndarray of shape (n_frames,), float64
        Sample times in seconds from the start of the video.

    Raises
    ------
    InputMissingError, DataError
        As :func:`iter_frames`.
    """
    frames, times = [], []
    for time, image in iter_frames(path, frame_rate):
        times.append(time)
        frames.append(image)
    return frames, np.asarray(times, dtype=np.float64)


def video_features(
    path: Path,
    encode_batch: Callable[[list[Any]], np.ndarray],
    frame_rate: float = DEFAULT_FRAME_RATE,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Features of every sampled frame of a video, with any image encoder.

    Parameters
    ----------
    path : Path
        Video file.
    encode_batch : callable
        Takes a list of RGB ``PIL.Image`` and returns their features, shape (n_images, n_features).
    frame_rate : float
        Samples per second.
    batch_size : int
        Frames per call of ``encode_batch``; only one batch of frames is in memory at a time.

    Returns
    -------
    features : ndarray of shape (n_frames, n_features), float32
    timestamps : ndarray of shape (n_frames,), float64
        Sample times in seconds from the start of the video.

    Raises
    ------
    InputMissingError, DataError
        As :func:`iter_frames`; DataError also when the encoder returns the wrong number of rows.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    blocks: list[np.ndarray] = []
    times: list[float] = []
    batch: list[Any] = []

    def _flush() -> None:
        features = np.asarray(encode_batch(batch))
        if features.ndim != 2 or features.shape[0] != len(batch):
            raise DataError(
                f"stimulus video {path}: the image encoder returned shape {features.shape} "
                f"for {len(batch)} frames"
            )
        blocks.append(features.astype(np.float32, copy=False))
        batch.clear()

    for time, image in iter_frames(path, frame_rate):
        times.append(time)
        batch.append(image)
        if len(batch) == batch_size:
            _flush()
    if batch:
        _flush()
    logger.debug("%s: %d frames at %.3g fps", path, len(times), frame_rate)
    return np.concatenate(blocks), np.asarray(times, dtype=np.float64)
