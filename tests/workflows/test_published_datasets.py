"""End to end on skeletons of published datasets, as they are published (tests/skeletons.py).

Logs are read with ``capfd``: steps that nipype runs in worker processes log to the inherited
file descriptor, which ``capsys`` does not see."""

from __future__ import annotations

import json

import pytest

from bids_vem.cli.run import main
from bids_vem.outputs.validator import validate_derivatives
from tests import skeletons

pytestmark = pytest.mark.slow

MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
#: the layouts are under test, not the penalty grid
SHORT_GRID = ["--alphas", "1", "100", "10000"]


def _argv(dataset, out, work, captions, image_model_spec, *extra):
    return [
        str(dataset.bids_dir), str(out), "participant", "-w", str(work), "--nprocs", "2",
        "--skip-bids-validation", "--space", "T1w", "--captions", str(captions),
        "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2",
        "--image-encoder", image_model_spec, "--confounds", *MOTION, "--permutations", "50",
        *SHORT_GRID, *extra,
    ]  # fmt: skip


def _sidecar(out, subject, session, task, feature_space):
    folder = out / f"sub-{subject}" / (f"ses-{session}" if session else "") / "func"
    prefix = f"sub-{subject}" + (f"_ses-{session}" if session else "") + f"_task-{task}"
    path = folder / f"{prefix}_space-T1w_desc-{feature_space}_stat-r_statmap.json"
    assert path.with_name(path.name.replace(".json", ".nii.gz")).is_file()
    return json.loads(path.read_text())


def test_nod_both_tasks(demo_dataset, tmp_path, capfd):
    """NOD (ds004496): raw run-01 vs derivative run-1, no masks, no derivative description,
    a ciftify folder beside; the COCO runs name stimuli in `condition` with n/a blank and
    catch rows, and their images live outside the dataset (--stimuli-dir)."""
    nod = skeletons.nod(tmp_path / "ds004496")
    stim_ids = nod.stim_ids["imagenet"] + nod.stim_ids["coco"]
    captions = skeletons.captions(tmp_path / "captions.tsv", stim_ids)
    out, work = tmp_path / "out", tmp_path / "work"
    argv = _argv(nod, out, work, captions, demo_dataset.image_model_spec)
    assert main([*argv, "--stimuli-dir", str(nod.coco_dir)]) == 0
    log = capfd.readouterr().err
    assert "fmriprep has no dataset_description.json" in log
    assert "3 events file(s) have no 'stim_file' column" in log and "from 'condition'" in log
    assert "6 of 48 events name no stimulus (n/a" in log
    for task, session in (("imagenet", "imagenet01"), ("coco", "coco")):
        for fs in ("minilm", "randomclip"):
            sidecar = _sidecar(out, "01", session, task, fs)
            assert len(sidecar["Runs"]) == 3  # raw run-01 matched derivative run-1
            assert "derived from the BOLD" in sidecar["BrainMask"]
    assert validate_derivatives(out) == []
    # a rerun with the text space only keeps the image space's maps, and says so
    text_only = [a for a in argv if a not in ("--image-encoder", demo_dataset.image_model_spec)]
    assert main([*text_only, "--stimuli-dir", str(nod.coco_dir)]) == 0
    err = capfd.readouterr().err
    assert "keeping the maps of feature space(s) randomclip from an earlier run" in err


def test_bold5000_with_stimuli_kept_elsewhere(demo_dataset, tmp_path, capfd):
    """BOLD5000 (ds001499): bare image names in stim_file, found by name in the separate
    stimulus release's subfolders; fMRIPrep 1.x names; today's confound names read from the
    old confounds columns (X, RotX...)."""
    ds = skeletons.bold5000(tmp_path / "ds001499")
    captions = skeletons.captions(tmp_path / "captions.tsv", ds.stim_ids)
    out, work = tmp_path / "out", tmp_path / "work"
    argv = _argv(ds, out, work, captions, demo_dataset.image_model_spec)
    # without --stimuli-dir: the missing images are named, and the option suggested
    assert main(argv) == 66
    assert "stimuli kept elsewhere: --stimuli-dir" in capfd.readouterr().err
    assert main([*argv, "--stimuli-dir", str(ds.stimuli_dir)]) == 0
    log = capfd.readouterr().err
    assert "24 stimuli found by file name in a subfolder" in log
    # stimuli outside the datasets read are not cited as files of BIDS_DIR
    features = json.loads((out / "features" / "desc-randomclip_features.json").read_text())
    assert features["Sources"] == []
    assert "fMRIPrep < 1.2 naming" in log
    for fs in ("minilm", "randomclip"):
        sidecar = _sidecar(out, "CSI1", "01", "5000scenes", fs)
        assert "fMRIPrep brain masks" in sidecar["BrainMask"]
        assert sidecar["Confounds"] == MOTION
    assert validate_derivatives(out) == []


def test_generic_object_decoding_names_without_extension(demo_dataset, tmp_path, capfd):
    """Generic Object Decoding (ds001246): `stimulus_name` without extension, rest rows n/a."""
    ds = skeletons.generic_object_decoding(tmp_path / "ds001246")
    captions = skeletons.captions(tmp_path / "captions.tsv", ds.stim_ids)
    out, work = tmp_path / "out", tmp_path / "work"
    assert main(_argv(ds, out, work, captions, demo_dataset.image_model_spec)) == 0
    log = capfd.readouterr().err
    assert "from 'stimulus_name'" in log and "3 of 21 events name no stimulus" in log
    assert "18 stimuli found by file name in a subfolder or without their extension" in log
    # one image feature row per stimulus, named as the events name it (no extension)
    rows = (out / "features" / "desc-randomclip_features.tsv").read_text().splitlines()
    assert sorted(line.split("\t")[1] for line in rows[1:]) == sorted(ds.stim_ids)
    # the features cite the files read, extension included
    sources = json.loads((out / "features" / "desc-randomclip_features.json").read_text())[
        "Sources"
    ]
    assert sources[0] == f"bids:raw:stimuli/{sorted(ds.stim_ids)[0]}.JPEG" and len(sources) == 18
    assert validate_derivatives(out) == []


def test_things_single_trial_betas_per_run(demo_dataset, tmp_path, capfd):
    """THINGS-fMRI: one betas image per run with a conditions table (image_filename, catch
    trials included), no task entity; images outside the dataset; the file names of the
    tables mapped to the events' file_path."""
    ds = skeletons.things(tmp_path / "ds004192")
    captions = skeletons.captions(tmp_path / "captions.tsv", ds.stim_ids)
    out, work = tmp_path / "out", tmp_path / "work"
    argv = _argv(ds, out, work, captions, demo_dataset.image_model_spec)
    extra = [
        "--stimuli-dir",
        str(ds.stimuli_dir),
        "--design",
        "trialwise",
        "--betas",
        str(ds.betas_dir),
    ]
    assert main([*argv, *extra]) == 0
    log = capfd.readouterr().err
    assert "single-trial betas from sub-01_ses-things01_run-01_betas.nii.gz" in log
    assert "4 of 32 betas volumes show a stimulus no event names (catch trials?)" in log
    assert "from 'file_path'" in log
    for fs in ("minilm", "randomclip"):
        sidecar = _sidecar(out, "01", "things01", "things", fs)
        assert sidecar["Runs"]  # the folds of the trial-wise model
    assert validate_derivatives(out) == []


def test_nsd_session_betas_without_tables(demo_dataset, tmp_path, capfd):
    """NSD: one betas image per session (betas_sessionNN.nii.gz, int16, no table) matched to
    the BIDS sessions ses-nsdNN by number; the volumes are the session's trials in order."""
    ds = skeletons.nsd(tmp_path / "nsd")
    captions = skeletons.captions(tmp_path / "captions.tsv", ds.stim_ids)
    out, work = tmp_path / "out", tmp_path / "work"
    argv = _argv(ds, out, work, captions, demo_dataset.image_model_spec)
    assert main([*argv, "--betas", str(ds.betas_dir)]) == 0
    log = capfd.readouterr().err
    assert "single-trial betas of 2 session(s) from ppdata/subj01/func1pt8mm" in log
    assert "betas_session01.nii.gz: its 16 volumes are the stimulus trials of 2 run(s)" in log
    for fs in ("minilm", "randomclip"):
        sidecar = _sidecar(out, "01", None, "nsdcore", fs)
        assert sidecar["TrialResponses"].startswith(
            "single-trial betas from nsddata_betas (--betas): ppdata/subj01/func1pt8mm/"
            "betas_fithrf_GLMdenoise_RR/betas_session01.nii.gz, "
        )
        assert "named by the stimulus events of each session's runs" in sidecar["TrialResponses"]
    # written into the run's own workflow folder (one per participant selection)
    (table,) = work.glob("bids_vem*_wf/betas/sub-01_ses-nsd02_task-nsdcore_betas_session02.tsv")
    assert table.read_text().count("nsd/shared") == 16
    assert validate_derivatives(out) == []


def _story_argv(ds, out, work, *extra):
    return [
        str(ds.bids_dir), str(out), "participant", "-w", str(work), "--nprocs", "2",
        "--skip-bids-validation", "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2",
        "--confounds", *MOTION, "--permutations", "50", "--transcripts", str(ds.transcripts),
        "--pool-tasks", *SHORT_GRID, *extra,
    ]  # fmt: skip


def test_lebel_stories_pooled_with_a_repeated_test_story(tmp_path, capfd):
    """Lebel et al. (ds003020): story runs without events, one task per story, TextGrids in
    derivative/TextGrids; the stories pooled into one model, the repeated test story held out
    and its repeats averaged."""
    ds = skeletons.lebel(tmp_path / "ds003020")
    out, work = tmp_path / "out", tmp_path / "work"
    argv = _story_argv(
        ds, out, work, "--test-runs", "task-wheretheressmoke", "--average-test-repeats"
    )
    assert main(argv) == 0
    log = capfd.readouterr().err
    assert "story avatar.TextGrid from task-avatar" in log
    sidecar = json.loads(
        (out / "sub-UTS01" / "func" / "sub-UTS01_task-pooled_space-MNI152NLin2009cAsym"
         "_desc-minilm_stat-r_statmap.json").read_text()
    )  # fmt: skip
    assert len(sidecar["Runs"]) == 7 and sidecar["PooledTasks"] is True
    assert sidecar["TestRuns"] == [r for r in sidecar["Runs"] if "wheretheressmoke" in r]
    assert sidecar["Evaluation"] == "test-runs-averaged"
    assert sidecar["RepeatedTestRuns"] == [sidecar["TestRuns"]]
    assert sidecar["Transcripts"] == "bids:raw:derivative/TextGrids"
    features = json.loads((out / "features" / "desc-minilm_features.json").read_text())
    assert (
        features["Context"] == "causal" and "words of context before it" in features["Description"]
    )
    # the words, not the silences between them: 80 per story
    rows = (out / "features" / "desc-minilm_features.tsv").read_text().splitlines()[1:]
    assert len(rows) == 5 * 80
    assert validate_derivatives(out) == []


def test_narratives_gentle_transcripts_of_the_audio(tmp_path, capfd):
    """Narratives (ds002345): events name the audio (music, then the story), the Gentle
    alignment of each story is found by the audio's name; fMRIPrep 20.0 names."""
    ds = skeletons.narratives(tmp_path / "ds002345")
    out, work = tmp_path / "out", tmp_path / "work"
    assert main(_story_argv(ds, out, work)) == 0
    log = capfd.readouterr().err
    assert "story pieman/align.json from sub-001_task-pieman_run-1_events.tsv" in log
    rows = (out / "features" / "desc-minilm_features.tsv").read_text().splitlines()[1:]
    assert len(rows) == 3 * 60  # words found in the audio only
    assert validate_derivatives(out) == []


def test_bold_moments_videos_with_the_test_task_as_test_set(demo_dataset, tmp_path, capfd):
    """BOLD Moments (ds005165): mp4 clips, oddball rows n/a, derivatives one folder deeper
    (derivatives/versionB/fmriprep), captions from a JSON file (several per clip, keyed by
    clip number); the train and test tasks pooled, the test task held out."""
    pytest.importorskip("av")
    ds = skeletons.bold_moments(tmp_path / "ds005165")
    out, work = tmp_path / "out", tmp_path / "work"
    argv = _argv(ds, out, work, ds.captions, demo_dataset.image_model_spec)
    extra = ["--pool-tasks", "--test-runs", "task-test", "--frame-rate", "2"]
    assert main([*argv, *extra]) == 0
    log = capfd.readouterr().err
    assert "5 of 25 events name no stimulus" in log
    assert "captions: 48 human captions for 16 stimuli" in log
    for fs in ("minilm", "randomclip"):
        sidecar = _sidecar(out, "01", "1", "pooled", fs)
        assert sidecar["TestRuns"] == [r for r in sidecar["Runs"] if "task-test" in r]
        assert len(sidecar["TestRuns"]) == 2
    assert validate_derivatives(out) == []


def test_haxby_categories_without_stimulus_files(demo_dataset, tmp_path, capfd):
    """Haxby (ds000105): only trial_type names what each block shows. The categories are
    labels: a text feature space embeds them, an image one is refused in one line; every
    category is in every run, so the folds hold out categories."""
    ds = skeletons.haxby(tmp_path / "ds000105")
    out, work = tmp_path / "out", tmp_path / "work"
    argv = [
        str(ds.bids_dir), str(out), "participant", "-w", str(work), "--nprocs", "2",
        "--skip-bids-validation", "--stim-column", "trial_type", "--confounds", *MOTION,
        "--permutations", "50",
    ]  # fmt: skip
    assert main([*argv, "--image-encoder", demo_dataset.image_model_spec]) == 65
    err = capfd.readouterr().err
    assert "image feature spaces embed images or videos" in err and "label" in err
    assert main([*argv, "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2"]) == 0
    log = capfd.readouterr().err
    assert (
        "its 8 values (bottle, cat, chair, face, house, scissors, scrambledpix, shoe) are labels"
        in log
    )
    sidecar = json.loads(
        (out / "sub-1" / "func" / "sub-1_task-objectviewing_space-MNI152NLin2009cAsym"
         "_desc-minilm_stat-r_statmap.json").read_text()
    )  # fmt: skip
    assert sidecar["CrossValidation"].startswith("stimulus-disjoint")
    # labels are cited by the events that name them, not as files that do not exist
    sources = json.loads((out / "features" / "desc-minilm_features.json").read_text())["Sources"]
    assert sources and all(
        s.startswith("bids:raw:sub-1/func/") and s.endswith("_events.tsv") for s in sources
    )
    assert validate_derivatives(out) == []
