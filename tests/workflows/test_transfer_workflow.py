"""--transfer end to end: a story task and a movie task, transfer both ways in a shared space.

Closed loop: a tiny random CLIP embeds the story words (text tower, words in context) and the
movie frames (image tower) as the pipeline does; the planted voxels respond to that 32-d
output with the *same* weights in both tasks, 2 TRs after the stimulus. The model of one task
must predict the other where planted and nowhere else; the unimodal control (MiniLM for the
stories, mapped to the image tower through a corpus) must not do as well; the maps validate,
the report has its section and the group level pools the transfer maps.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_vem.cli.run import main
from bids_vem.encoding.design import video_timecourse
from bids_vem.features.specs import parse_feature_space
from bids_vem.outputs.validator import validate_derivatives
from tests import helpers
from tests.features.conftest import save_tiny_clip, write_image
from tests.skeletons import write_clip

pytestmark = pytest.mark.slow

TR, N_VOLUMES, N_RUNS = 2.0, 80, 3
SHAPE = (5, 5, 5)
SPACE = "MNI152NLin2009cAsym"
WORDS = (
    "the dog ran across a green field while the old man watched from his porch and a red bird "
    "sang in the tall tree near the river where children played with a ball under the warm sun"
).split()


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _events(rows):
    return pd.DataFrame(rows, columns=["onset", "duration", "stim_id"])


@pytest.fixture(scope="module")
def story_and_movie(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("transfer")
    bids, prep = root / "ds", root / "ds" / "derivatives" / "fmriprep"
    clip = root / "models" / "tinyclip"
    save_tiny_clip(clip, seed=3)
    _write(bids / "dataset_description.json", json.dumps({"Name": "sm", "BIDSVersion": "1.10.0"}))
    _write(prep / "dataset_description.json", json.dumps(
        {"Name": "prep", "BIDSVersion": "1.10.0", "DatasetType": "derivative", "GeneratedBy": [{"Name": "sim"}]}
    ))  # fmt: skip
    runs = {}  # (task, run) -> (events rows, stimulus ids)
    for run in range(1, N_RUNS + 1):
        n_words = int(N_VOLUMES * TR * 2) - 8
        words = list(rng.choice(WORDS, n_words))
        onsets = np.sort(rng.uniform(0, N_VOLUMES * TR - 4, n_words))
        story = f"stories/story{run}.txt"
        _write(bids / "stimuli" / story, " ".join(words) + "\n")
        _write((bids / "stimuli" / story).with_suffix(".tsv"), "onset\tduration\tword\n" + "".join(
            f"{t:.3f}\t0.3\t{w}\n" for t, w in zip(onsets, words, strict=True)
        ))  # fmt: skip
        runs[("story", run)] = [(0.0, N_VOLUMES * TR, story)]
        rows = []
        for k, onset in enumerate(np.arange(1.0, N_VOLUMES * TR - 6, 4.0)):
            name = f"clips/r{run}c{k:02d}.mp4"
            write_clip(bids / "stimuli" / name, seed=1000 * run + k, seconds=3.0, fps=2)
            rows.append((float(onset), 3.0, name))
        runs[("movie", run)] = rows
    # the pipeline's own features of every stimulus, in the shared 32-d space
    stories = sorted({r[2] for (t, _), rows in runs.items() if t == "story" for r in rows})
    clips = sorted({r[2] for (t, _), rows in runs.items() if t == "movie" for r in rows})
    paths = {s: bids / "stimuli" / s for s in stories + clips}
    text = helpers.extract_feature_space(
        parse_feature_space(f"openclip:{clip}", "text"), stories, image_paths=paths
    )
    image = helpers.extract_feature_space(
        parse_feature_space(f"openclip:{clip}", "image"), clips, image_paths=paths
    )
    affine = np.diag([8.0, 8.0, 8.0, 1.0])
    n_voxels = int(np.prod(SHAPE))
    planted = np.zeros(n_voxels, bool)
    planted[rng.choice(n_voxels, 30, replace=False)] = True
    weights = rng.standard_normal((text.n_features, n_voxels)) * planted
    for subject in ("01", "02"):
        for (task, run), rows in runs.items():
            features = text if task == "story" else image
            timecourse = video_timecourse(
                _events(rows), features.frames(), N_VOLUMES, TR,
                resample="lanczos" if task == "story" else "average",
            )  # fmt: skip
            timecourse = (timecourse - timecourse.mean(0)) / (timecourse.std(0) + 1e-9)
            delayed = np.zeros_like(timecourse)  # the response 2 TRs after the stimulus
            delayed[2:] = timecourse[:-2]
            signal = delayed @ weights / np.sqrt(text.n_features)
            bold = 1000 + 3 * signal + rng.standard_normal((N_VOLUMES, n_voxels))
            image_4d = nib.Nifti1Image(bold.T.reshape(*SHAPE, N_VOLUMES).astype(np.float32), affine)
            image_4d.header.set_zooms((8.0, 8.0, 8.0, TR))
            base = f"sub-{subject}/func/sub-{subject}_task-{task}_run-{run}"
            _write(bids / f"{base}_events.tsv", "onset\tduration\tstim_file\n" + "".join(
                f"{o:.3f}\t{d:.3f}\t{s}\n" for o, d, s in rows
            ))  # fmt: skip
            nib.save(image_4d, bids / f"{base}_bold.nii.gz")
            stem = prep / f"{base}_space-{SPACE}"
            stem.parent.mkdir(parents=True, exist_ok=True)
            nib.save(image_4d, f"{stem}_desc-preproc_bold.nii.gz")
            _write(stem.parent / f"{stem.name}_desc-preproc_bold.json",
                   json.dumps({"RepetitionTime": TR}))  # fmt: skip
            nib.save(
                nib.Nifti1Image(np.ones(SHAPE, np.uint8), affine), f"{stem}_desc-brain_mask.nii.gz"
            )
    corpus = root / "corpus"
    lines = ["stim_file\tcaption"]
    for k in range(60):
        write_image(corpus / f"img{k:02d}.png", "RGB", (32, 32), seed=k)
        lines.append(f"img{k:02d}.png\ta {' '.join(rng.choice(WORDS, 6))}")
    _write(corpus / "captions.tsv", "\n".join(lines) + "\n")
    return {"bids": bids, "clip": clip, "corpus": corpus, "planted": planted}


def _load(path):
    return np.asarray(nib.load(path).dataobj).reshape(-1)


def test_story_and_movie_models_transfer_where_planted(story_and_movie, tmp_path, capfd):
    data = story_and_movie
    out = tmp_path / "out"
    clip = data["clip"]
    argv = [
        str(data["bids"]), str(out), "participant", "--skip-bids-validation",
        "-w", str(tmp_path / "work"), "--nprocs", "2",
        "--text-encoder", f"clipt=openclip:{clip}", "minilm=sentence:all-MiniLM-L6-v2",
        "--image-encoder", f"clipi=openclip:{clip}",
        "--transfer", "story:movie", "--transfer-corpus", str(data["corpus"]),
        "--transfer-permutations", "100", "--permutations", "0",
    ]  # fmt: skip
    assert main(argv) == 0
    planted = data["planted"]
    func = out / "sub-01" / "func"
    for target, desc in (("movie", "cliptToClipiFromStory"), ("story", "clipiToCliptFromMovie")):
        prefix = f"sub-01_task-{target}_space-{SPACE}_desc-{desc}"
        r = _load(func / f"{prefix}_stat-r_statmap.nii.gz")
        q = _load(func / f"{prefix}_stat-q_statmap.nii.gz")
        assert np.median(r[planted]) > 0.3, target
        assert abs(np.median(r[~planted])) < 0.1, target
        assert np.mean(q[planted] < 0.05) > 0.8, target
        assert np.mean(q[~planted] < 0.05) < 0.1, target
        sidecar = json.loads((func / f"{prefix}_stat-r_statmap.json").read_text())
        assert sidecar["TransferKind"].startswith("shared")
        assert sidecar["Permutations"] == 100
    # each task fits only the spaces that embed its stimuli
    assert not list(func.glob("*task-movie*desc-minilm_stat-r_statmap*"))
    assert list(func.glob("*task-story*desc-minilm_stat-r_statmap*"))
    # the unimodal control, through the corpus map, transfers less than the shared space
    table = pd.read_csv(func / f"sub-01_task-movie_space-{SPACE}_transfer.tsv", sep="\t")
    mask = table[table.region == "mask"].set_index("kind")
    assert set(mask.index) == {"shared", "mapped"}
    control = _load(func / f"sub-01_task-movie_space-{SPACE}_desc-minilmToClipiFromStory_stat-r_statmap.nii.gz")  # fmt: skip
    shared = _load(func / f"sub-01_task-movie_space-{SPACE}_desc-cliptToClipiFromStory_stat-r_statmap.nii.gz")  # fmt: skip
    assert np.median(control[planted]) < np.median(shared[planted]) - 0.1
    # the within-task reference sits beside the transfer
    assert mask.loc["shared", "within_mean_r"] > 0
    report = (out / "sub-01.html").read_text()
    assert "Cross-modal transfer" in report and "cliptToClipiFromStory" in report
    assert validate_derivatives(out) == []
    capfd.readouterr()
    assert main([str(data["bids"]), str(out), "group", "--skip-bids-validation"]) == 0
    group = out / "group"
    t_maps = list(group.glob("*task-movie*desc-cliptToClipiFromStory*stat-t_statmap.nii.gz"))
    assert t_maps, sorted(p.name for p in group.iterdir())


def test_transfer_needs_a_pair_of_spaces(story_and_movie, tmp_path):
    """Separate encoders without a corpus cannot carry a model across: exit 64, one line."""
    data = story_and_movie
    argv = [
        str(data["bids"]), str(tmp_path / "out"), "participant", "--skip-bids-validation",
        "-w", str(tmp_path / "work"),
        "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2",
        "--image-encoder", f"clipi=openclip:{data['clip']}", "--transfer", "story:movie",
    ]  # fmt: skip
    assert main(argv) == 64


def test_a_task_no_feature_space_embeds_stops_before_any_work(story_and_movie, tmp_path, capfd):
    """Stories and movies, image encoders only: the story task has nothing to fit (exit 65),
    said in one line before any feature is computed."""
    data = story_and_movie
    out = tmp_path / "out"
    argv = [
        str(data["bids"]), str(out), "participant", "--skip-bids-validation",
        "-w", str(tmp_path / "work"), "--image-encoder", f"clipi=openclip:{data['clip']}",
    ]  # fmt: skip
    assert main(argv) == 65
    err = capfd.readouterr().err
    assert "sub-01_task-story: no feature space embeds all its stimuli (text)" in err
    assert not (tmp_path / "work" / "feature_cache").exists()
