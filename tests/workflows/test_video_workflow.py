"""Video stimuli end to end: frames sampled, embedded, averaged per TR, fitted.

The demo's images are turned into still videos (each image held for its 3-s presentation):
the video path must then give nearly the maps of the image path, whose design holds each
image's features over the same interval.
"""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bids_vem.cli.run import main

av = pytest.importorskip("av")
pytestmark = pytest.mark.slow

FPS = 4  # frames written per second; sampled at --frame-rate 2


def write_still_video(image_path, video_path, seconds: float) -> None:
    pixels = np.asarray(Image.open(image_path).convert("RGB"))
    with av.open(str(video_path), "w") as container:
        stream = container.add_stream("ffv1", rate=FPS)  # lossless: frames equal the image
        stream.width, stream.height, stream.pix_fmt = pixels.shape[1], pixels.shape[0], "bgr0"
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        for _ in range(int(seconds * FPS)):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def video_dataset(demo_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("video_ds")
    bids = root / "ds"
    shutil.copytree(demo_dataset.bids_dir, bids, ignore=shutil.ignore_patterns("derivatives"))
    for events_path in sorted(bids.glob("sub-01/func/*_events.tsv")):
        events = pd.read_csv(events_path, sep="\t")
        for stim_file, duration in zip(events["stim_file"], events["duration"], strict=True):
            video = (
                bids / "stimuli" / stim_file.replace("images/", "videos/").replace(".png", ".mkv")
            )
            if not video.exists():
                video.parent.mkdir(parents=True, exist_ok=True)
                write_still_video(bids / "stimuli" / stim_file, video, duration)
        events["stim_file"] = [
            s.replace("images/", "videos/").replace(".png", ".mkv") for s in events["stim_file"]
        ]
        events.to_csv(events_path, sep="\t", index=False, na_rep="n/a")
    return bids


def r_map(out):
    name = "sub-01_task-shapes_space-MNI152NLin2009cAsym_desc-randomclip_stat-r_statmap.nii.gz"
    return np.asarray(nib.load(str(out / "sub-01" / "func" / name)).dataobj)


def test_still_videos_give_the_maps_of_their_images(demo_dataset, video_dataset, tmp_path):
    common = [
        "participant", "--participant-label", "01", "--skip-bids-validation",
        "-d", str(demo_dataset.fmriprep_dir), "--image-encoder", demo_dataset.image_model_spec,
        # the same folds for both: stimulus folds deal the images and the videos (other
        # names) differently
        "--cv-groups", "run", "--permutations", "0",
    ]  # fmt: skip
    out_images, out_videos = tmp_path / "images", tmp_path / "videos"
    assert (
        main([str(demo_dataset.bids_dir), str(out_images), *common, "-w", str(tmp_path / "w1")])
        == 0
    )
    argv = [
        str(video_dataset),
        str(out_videos),
        *common,
        "-w",
        str(tmp_path / "w2"),
        "--frame-rate",
        "2",
    ]
    assert main(argv) == 0
    index = pd.read_csv(out_videos / "features" / "desc-randomclip_features.tsv", sep="\t")
    assert list(index.columns) == ["row", "stim_id", "time"]
    # 3-s videos sampled at 2 frames/s: frames at 0, 0.5, ... 2.5 s
    first = index[index["stim_id"] == index["stim_id"].iloc[0]]
    np.testing.assert_allclose(first["time"], np.arange(6) * 0.5)
    r_images, r_videos = r_map(out_images), r_map(out_videos)
    brain = r_images != 0
    assert np.corrcoef(r_images[brain], r_videos[brain])[0, 1] > 0.9
