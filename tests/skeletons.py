"""Skeletons of published datasets: their exact folders, file names and events columns
(``../shared/docs/DATASETS.md``), with tiny random data.

Each builder writes a raw dataset and, where the dataset ships them, fMRIPrep derivatives in
the naming of the fMRIPrep version it was processed with; BOLD series have a bright ellipsoid
"brain" on a dark background (so that a brain mask can be derived from them) and white noise.
Images are real (tiny JPEG/PNG files), so image feature spaces can embed them.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
from PIL import Image

__all__ = ["nod", "bold5000", "generic_object_decoding", "write_bold", "write_image", "captions"]

SHAPE = (9, 10, 8)


def _json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def _tsv(path: Path, columns: list[str], rows: list[tuple]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(columns)] + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_bold(path: Path, n_volumes: int, tr: float, seed: int, shape=SHAPE) -> Path:
    """A 4D series: an ellipsoid of mean 1000 (the brain) in a background of mean 20."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    brain = (grid**2).sum(axis=0) < 0.8
    mean = np.where(brain, 1000.0, 20.0)
    data = (
        mean[..., None]
        + rng.standard_normal((*shape, n_volumes)) * np.where(brain, 10.0, 2.0)[..., None]
    )
    img = nib.Nifti1Image(data.astype(np.float32), np.diag([3.0, 3.0, 3.0, 1.0]))
    img.header.set_zooms((3.0, 3.0, 3.0, tr))
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.to_filename(path)
    return path


def write_image(path: Path, seed: int, fmt: str | None = None, mode: str = "RGB") -> Path:
    """A 24 x 24 random image (saved as ``fmt``, by default the suffix's format)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB").convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path


def _confounds(path: Path, n_volumes: int, seed: int, legacy: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    names = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "framewise_displacement"]
    if legacy:
        names = ["X", "Y", "Z", "RotX", "RotY", "RotZ", "FramewiseDisplacement"]
    values = rng.standard_normal((n_volumes, len(names))) * 0.05
    rows = [
        tuple("n/a" if (i == 0 and j == 6) else f"{v:.5f}" for j, v in enumerate(row))
        for i, row in enumerate(values)
    ]
    return _tsv(path, names, rows)


def _description(root: Path, name: str) -> None:
    _json(root / "dataset_description.json", {"Name": name, "BIDSVersion": "1.8.0"})
    _tsv(root / "participants.tsv", ["participant_id"], [("sub-01",)])


def _prep_run(prep_func: Path, name: str, n_volumes: int, tr: float, seed: int, space: str,
              confounds: str = "timeseries", res: str = "", seed_confounds: int | None = None,
              ) -> SimpleNamespace:  # fmt: skip
    """fMRIPrep's preprocessed BOLD (+ JSON), brain mask (the bright ellipsoid) and confounds."""
    res = f"_res-{res}" if res else ""
    bold = write_bold(
        prep_func / f"{name}_space-{space}{res}_desc-preproc_bold.nii.gz", n_volumes, tr, seed
    )
    _json(prep_func / f"{name}_space-{space}{res}_desc-preproc_bold.json", {"RepetitionTime": tr})
    inside = np.asarray(nib.load(bold).dataobj)[..., 0] > 500
    mask = prep_func / f"{name}_space-{space}{res}_desc-brain_mask.nii.gz"
    nib.Nifti1Image(inside.astype(np.uint8), np.diag([3.0, 3.0, 3.0, 1.0])).to_filename(mask)
    table = _confounds(
        prep_func / f"{name}_desc-confounds_{confounds}.tsv",
        n_volumes,
        seed if seed_confounds is None else seed_confounds,
    )
    return SimpleNamespace(bold=bold, mask=mask, confounds=table)


def _fmriprep_description(prep: Path, bids_version: str = "1.8.0", **extra) -> None:
    _json(
        prep / "dataset_description.json",
        {"Name": "fMRIPrep", "BIDSVersion": bids_version, "DatasetType": "derivative", **extra},
    )


def captions(path: Path, stim_ids: list[str]) -> Path:
    """A captions TSV (stim_file, caption) with a different sentence per stimulus."""
    words = ["dog", "car", "tree", "house", "face", "boat", "chair", "bird", "lamp", "shoe"]
    rows = [(s, f"a photo of a {words[i % len(words)]} number {i}") for i, s in enumerate(stim_ids)]
    return _tsv(path, ["stim_file", "caption"], rows)


def nod(root: Path, *, n_runs: int = 3, n_volumes: int = 40, per_run: int = 8) -> SimpleNamespace:
    """NOD (ds004496): ``ses-imagenet01`` (``stim_file`` in synset subfolders, each image once)
    and ``ses-coco`` (stimulus column ``condition``, blank and catch rows ``n/a``; the COCO
    images are not shipped: they are in ``coco_dir``, outside the dataset). Raw ``run-01``,
    derivatives ``run-1``, ``space-T1w`` only, no brain masks, no ``dataset_description.json``
    in ``derivatives/fmriprep``; a ``derivatives/ciftify`` that is not BIDS."""
    tr = 2.0
    _description(root, "NOD")
    _json(root / "task-imagenet_bold.json", {"RepetitionTime": tr, "TaskName": "imagenet"})
    _json(root / "task-coco_bold.json", {"RepetitionTime": tr, "TaskName": "coco"})
    prep = root / "derivatives" / "fmriprep"
    coco_dir = root.parent / f"{root.name}_coco_images"
    stim_ids: dict[str, list[str]] = {"imagenet": [], "coco": []}
    seed = 0
    for session, task in (("imagenet01", "imagenet"), ("coco", "coco")):
        func = root / "sub-01" / f"ses-{session}" / "func"
        for run in range(1, n_runs + 1):
            raw = f"sub-01_ses-{session}_task-{task}_run-{run:02d}"
            write_bold(func / f"{raw}_bold.nii.gz", n_volumes, tr, seed, shape=(2, 2, 2))
            rows = []
            for i in range(per_run):
                seed += 1
                onset = 4.0 + i * 8.0
                if task == "imagenet":
                    synset = f"n0{3131574 + i % 3}"
                    stim = f"imagenet/{synset}/{synset}_{run}{i:03d}.JPEG"
                    write_image(root / "stimuli" / stim, seed, fmt="JPEG")
                    rows.append((onset, 1.0, 1, "n/a", "n/a", stim))
                    stim_ids["imagenet"].append(stim)
                elif i % 4 == 3:  # blank (1000) and catch (2000) trials name no stimulus
                    rows.append((onset, 0.5, 1000.0 if i % 8 == 3 else 2000.0, "n/a", "n/a", "n/a"))
                else:
                    stim = f"coco/{run:06d}{i:06d}.jpg"
                    write_image(coco_dir / stim, seed, fmt="JPEG")
                    rows.append((onset, 0.5, 1.0, "n/a", "n/a", stim))
                    stim_ids["coco"].append(stim)
            column = "stim_file" if task == "imagenet" else "condition"
            _tsv(
                func / f"{raw}_events.tsv",
                ["onset", "duration", "trial_type", "response", "response_time", column],
                rows,
            )
            prep_func = prep / "sub-01" / f"ses-{session}" / "func"
            name = f"sub-01_ses-{session}_task-{task}_run-{run}"
            write_bold(
                prep_func / f"{name}_space-T1w_desc-preproc_bold.nii.gz", n_volumes, tr, 100 + seed
            )
            _json(prep_func / f"{name}_space-T1w_desc-preproc_bold.json", {"RepetitionTime": tr})
            _confounds(prep_func / f"{name}_desc-confounds_timeseries.tsv", n_volumes, seed)
    _tsv(root / "stimuli" / "coco" / "coco_images.csv", ["image"], [("see COCO",)])
    ciftify = root / "derivatives" / "ciftify" / "sub-01" / "MNINonLinear" / "Results"
    (ciftify / "ses-coco_task-coco_run-1").mkdir(parents=True)
    (
        ciftify / "ses-coco_task-coco_run-1" / "ses-coco_task-coco_run-1_Atlas.dtseries.nii"
    ).write_bytes(b"")
    return SimpleNamespace(bids_dir=root, coco_dir=coco_dir, stim_ids=stim_ids, tr=tr)


def bold5000(
    root: Path, *, n_runs: int = 3, n_volumes: int = 40, per_run: int = 8
) -> SimpleNamespace:
    """BOLD5000 (ds001499): ``stim_file`` holds bare file names, the images live in a separate
    release (``Presented_Stimuli/{COCO,ImageNet,Scene}``, given by ``--stimuli-dir``);
    fMRIPrep 1.x names (``_bold_space-T1w_preproc``, ``_brainmask``, ``_bold_confounds.tsv``
    with the old column names) and no ``dataset_description.json`` in the derivatives."""
    tr = 2.0
    _description(root, "BOLD5000")
    stimuli = root.parent / f"{root.name}_Presented_Stimuli"
    prep = root / "derivatives" / "fmriprep"
    columns = ["onset", "duration", "Subj", "Sess", "Run", "Trial", "ImgName", "ImgType",
               "StimOn(s)", "StimOff(s)", "Response", "RT", "stim_file"]  # fmt: skip
    kinds = [("COCO", "COCO_train2014_{:012d}.jpg", "coco"), ("ImageNet", "n01930112_{}.JPEG", "imagenet"),
             ("Scene", "scene{:04d}.jpg", "scenes")]  # fmt: skip
    stim_ids = []
    seed = 0
    func = root / "sub-CSI1" / "ses-01" / "func"
    for run in range(1, n_runs + 1):
        raw = f"sub-CSI1_ses-01_task-5000scenes_run-{run:02d}"
        write_bold(func / f"{raw}_bold.nii.gz", n_volumes, tr, seed, shape=(2, 2, 2))
        _json(func / f"{raw}_bold.json", {"RepetitionTime": tr})
        rows = []
        for i in range(per_run):
            seed += 1
            folder, pattern, kind = kinds[i % 3]
            name = pattern.format(run * 100 + i)
            write_image(stimuli / folder / name, seed, fmt="JPEG")
            onset = 4.0 + i * 8.0
            rows.append((onset, 1.0, 1, 1, run, i + 1, name, kind, onset, onset + 1, 1, 0.8, name))
            stim_ids.append(name)
        _tsv(func / f"{raw}_events.tsv", columns, rows)
        prep_func = prep / "sub-CSI1" / "ses-01" / "func"
        write_bold(prep_func / f"{raw}_bold_space-T1w_preproc.nii.gz", n_volumes, tr, 100 + seed)
        mask = (
            np.asarray(nib.load(prep_func / f"{raw}_bold_space-T1w_preproc.nii.gz").dataobj)[..., 0]
            > 500
        )
        nib.Nifti1Image(mask.astype(np.uint8), np.diag([3.0, 3.0, 3.0, 1.0])).to_filename(
            prep_func / f"{raw}_bold_space-T1w_brainmask.nii.gz"
        )
        _confounds(prep_func / f"{raw}_bold_confounds.tsv", n_volumes, seed, legacy=True)
    _tsv(root / "participants.tsv", ["participant_id"], [("sub-CSI1",)])
    return SimpleNamespace(bids_dir=root, stimuli_dir=stimuli, stim_ids=stim_ids, tr=tr)


def generic_object_decoding(root: Path, *, n_runs: int = 3, n_volumes: int = 40, per_run: int = 6):
    """Generic Object Decoding (ds001246): ``stimulus_name`` without extension, rest rows
    ``n/a``; images in ``stimuli/`` (the user copies them in) as ``<name>.JPEG``."""
    tr = 3.0
    _description(root, "GOD")
    _json(root / "task-perception_bold.json", {"RepetitionTime": tr})
    prep = root / "derivatives" / "fmriprep"
    _fmriprep_description(prep)
    stim_ids, seed = [], 0
    for run in range(1, n_runs + 1):
        func = root / "sub-01" / "ses-perceptionTraining01" / "func"
        raw = f"sub-01_ses-perceptionTraining01_task-perception_run-{run:02d}"
        write_bold(func / f"{raw}_bold.nii.gz", n_volumes, tr, seed, shape=(2, 2, 2))
        rows = [(0.0, 4.0, 0, "n/a", "n/a")]
        for i in range(per_run):
            seed += 1
            name = f"n0{2766534 + i}_{run}{i:04d}"
            write_image(root / "stimuli" / f"{name}.JPEG", seed, fmt="JPEG")
            rows.append((4.0 + i * 9.0, 9.0, 1, f"{2766534 + i}.{run}{i:04d}", name))
            stim_ids.append(name)
        _tsv(
            func / f"{raw}_events.tsv",
            ["onset", "duration", "event_type", "stimulus_id", "stimulus_name"],
            rows,
        )
        prep_func = prep / "sub-01" / "ses-perceptionTraining01" / "func"
        name = raw.replace("run-0", "run-")
        _prep_run(prep_func, name, n_volumes, tr, 100 + seed, "T1w", seed_confounds=seed)
    return SimpleNamespace(bids_dir=root, stim_ids=stim_ids, tr=tr)


def standard(
    root: Path, *, n_runs: int = 3, n_volumes: int = 30, per_run: int = 6
) -> SimpleNamespace:
    """A dataset as BIDS and fMRIPrep >= 21 write it (``stim_file`` PNGs under ``stimuli/``,
    ``space-MNI152NLin2009cAsym`` BOLD, brain masks and confounds): the base that the
    catalogue of malformed inputs breaks one way at a time."""
    tr = 2.0
    space = "MNI152NLin2009cAsym"
    _description(root, "standard")
    _json(root / "task-images_bold.json", {"RepetitionTime": tr, "TaskName": "images"})
    prep = root / "derivatives" / "fmriprep"
    _fmriprep_description(prep, GeneratedBy=[{"Name": "fMRIPrep", "Version": "23.2.0"}])
    stim_ids, seed, runs = [], 0, []
    for run in range(1, n_runs + 1):
        name = f"sub-01_task-images_run-{run}"
        func = root / "sub-01" / "func"
        write_bold(func / f"{name}_bold.nii.gz", n_volumes, tr, seed, shape=(2, 2, 2))
        rows = []
        for i in range(per_run):
            seed += 1
            stim = f"img{run}{i:02d}.png"
            write_image(root / "stimuli" / stim, seed)
            rows.append((2.0 + i * 8.0, 2.0, stim))
            stim_ids.append(stim)
        events = _tsv(func / f"{name}_events.tsv", ["onset", "duration", "stim_file"], rows)
        files = _prep_run(
            prep / "sub-01" / "func", name, n_volumes, tr, 100 + seed, space, seed_confounds=seed
        )
        runs.append(SimpleNamespace(events=events, **vars(files)))
    return SimpleNamespace(bids_dir=root, stim_ids=stim_ids, tr=tr, runs=runs, prep=prep)


def things(
    root: Path, *, n_runs: int = 4, n_volumes: int = 40, per_run: int = 6
) -> SimpleNamespace:
    """THINGS-fMRI (ds004192): events with ``file_path`` (``dog/dog_12s.jpg``) and
    ``trial_type`` exp/test/catch; no stimuli in the dataset (``objects`` beside it, for
    ``--stimuli-dir``); fMRIPrep 20.2 derivatives in T1w; single-trial betas from figshare as
    ``betas_vol/sub-01/ses-things01/sub-01_ses-things01_run-01_betas.nii.gz`` with
    ``_conditions.tsv`` (an unnamed index column + ``image_filename``; catch trials included)."""
    tr = 1.5
    _description(root, "THINGS-fMRI")
    _json(root / "task-things_bold.json", {"RepetitionTime": tr, "TaskName": "things"})
    objects = root.parent / f"{root.name}_objects"
    betas_dir = root.parent / f"{root.name}_betas_vol"
    prep = root / "derivatives" / "fmriprep"
    _fmriprep_description(prep, "1.4.0")
    columns = ["onset", "duration", "trial_type", "category_nr", "exemplar_nr", "test_image_nr",
               "things_category_nr", "things_exemplar_nr", "response_time", "file_path"]  # fmt: skip
    categories = ["dog", "cat", "car", "tree", "boat", "lamp"]
    stim_ids, seed = [], 0
    write_image(objects / "test" / "test_01.jpg", 999, fmt="JPEG")
    for run in range(1, n_runs + 1):
        raw = f"sub-01_ses-things01_task-things_run-{run:02d}"
        func = root / "sub-01" / "ses-things01" / "func"
        write_bold(func / f"{raw}_bold.nii.gz", n_volumes, tr, seed, shape=(2, 2, 2))
        rows, conditions = [], []
        for i in range(per_run + 2):
            seed += 1
            onset = 3.0 + i * 6.0
            if i == per_run:  # the test image, shown in every run
                rows.append(
                    (onset, 0.5, "test", "n/a", "n/a", 1, "n/a", "n/a", 0.6, "test/test_01.jpg")
                )
                conditions.append("test_01.jpg")
                stim_ids.append("test/test_01.jpg")
                continue
            if i == per_run + 1:  # a catch trial: its image is not a stimulus of the model
                rows.append((onset, 0.5, "catch", "n/a", "n/a", "n/a", "n/a", "n/a", 0.4, "n/a"))
                conditions.append(f"catch_{run:02d}.jpg")
                continue
            name = categories[i % len(categories)]
            stim = f"{name}/{name}_{run:02d}{i}s.jpg"
            write_image(objects / stim, seed, fmt="JPEG")
            rows.append((onset, 0.5, "exp", i, run, "n/a", i, run, 0.5, stim))
            conditions.append(stim.rsplit("/", 1)[-1])
            stim_ids.append(stim)
        _tsv(func / f"{raw}_events.tsv", columns, rows)
        name = f"sub-01_ses-things01_task-things_run-{run}"
        prep_func = prep / "sub-01" / "ses-things01" / "func"
        _prep_run(prep_func, name, n_volumes, tr, 100 + seed, "T1w", seed_confounds=seed)
        betas = (
            betas_dir
            / "sub-01"
            / "ses-things01"
            / f"sub-01_ses-things01_run-{run:02d}_betas.nii.gz"
        )
        write_bold(betas, len(conditions), tr, 500 + seed)
        (betas.parent / betas.name.replace("_betas.nii.gz", "_conditions.tsv")).write_text(
            "\timage_filename\n" + "".join(f"{k}\t{c}\n" for k, c in enumerate(conditions))
        )
    return SimpleNamespace(
        bids_dir=root,
        stimuli_dir=objects,
        betas_dir=betas_dir,
        stim_ids=sorted(set(stim_ids)),
        tr=tr,
    )


def nsd(
    root: Path, *, n_sessions: int = 2, n_runs: int = 2, n_volumes: int = 40
) -> SimpleNamespace:
    """The Natural Scenes Dataset as a BIDS conversion meets NSD's own betas: sessions
    ``ses-nsd01``.., ``task-nsdcore`` runs whose events name shared and special images in
    ``stim_file`` (each shown in several sessions, blank trials ``n/a``), fMRIPrep outputs in
    T1w; betas as NSD publishes them, one int16 image per session with no table,
    ``nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionNN.nii.gz``
    (the session's trials in order), on the grid of the BOLD."""
    tr = 1.6
    _description(root, "NSD")
    _json(root / "task-nsdcore_bold.json", {"RepetitionTime": tr, "TaskName": "nsdcore"})
    prep = root / "derivatives" / "fmriprep"
    _fmriprep_description(prep, GeneratedBy=[{"Name": "fMRIPrep", "Version": "23.2.0"}])
    betas_dir = root.parent / "nsddata_betas"
    images = [f"nsd/shared{k:04d}_nsd{7 * k + 3:05d}.png" for k in range(1, 9)]
    for k, stim in enumerate(images):
        write_image(root / "stimuli" / stim, 700 + k)
    rng, seed = np.random.default_rng(0), 0
    for ses in range(1, n_sessions + 1):
        n_trials = 0
        for run in range(1, n_runs + 1):
            name = f"sub-01_ses-nsd{ses:02d}_task-nsdcore_run-{run:02d}"
            func = root / "sub-01" / f"ses-nsd{ses:02d}" / "func"
            seed += 1
            write_bold(func / f"{name}_bold.nii.gz", n_volumes, tr, seed)
            order = rng.permutation(len(images))
            rows = [(4.0 * i + 2.0, 3.0, images[j]) for i, j in enumerate(order)]
            rows.insert(3, (4.0 * len(images) + 2.0, 3.0, "n/a"))  # a blank trial
            _tsv(func / f"{name}_events.tsv", ["onset", "duration", "stim_file"], rows)
            _prep_run(prep / "sub-01" / f"ses-nsd{ses:02d}" / "func", name, n_volumes, tr,
                      100 + seed, "T1w", seed_confounds=seed)  # fmt: skip
            n_trials += len(images)
        volumes = rng.normal(0, 300, (*SHAPE, n_trials)).astype(np.int16)  # % signal x 300
        path = (
            betas_dir / "ppdata" / "subj01" / "func1pt8mm" / "betas_fithrf_GLMdenoise_RR"
            / f"betas_session{ses:02d}.nii.gz"
        )  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.Nifti1Image(volumes, np.diag([3.0, 3.0, 3.0, 1.0])).to_filename(path)
    return SimpleNamespace(bids_dir=root, betas_dir=betas_dir, stim_ids=images, tr=tr)


_WORDS = (
    "the",
    "dog",
    "ran",
    "to",
    "a",
    "house",
    "and",
    "saw",
    "old",
    "man",
    "who",
    "said",
    "hello",
)


def _story_words(seed: int, n_words: int, start: float = 1.0) -> list[tuple[float, float, str]]:
    rng = np.random.default_rng(seed)
    rows, t = [], start
    for _ in range(n_words):
        duration = float(rng.uniform(0.2, 0.5))
        rows.append((round(t, 3), round(t + duration, 3), str(rng.choice(_WORDS))))
        t += duration + float(rng.uniform(0.05, 0.4))
    return rows


def _textgrid(path: Path, words: list[tuple[float, float, str]]) -> Path:
    from praatio import textgrid
    from praatio.data_classes.interval_tier import IntervalTier

    end = words[-1][1] + 1.0
    entries, t = [], 0.0
    for start, stop, word in words:
        if start > t:
            entries.append((t, start, "sp"))  # silences, as the aligner writes them
        entries.append((start, stop, word))
        t = stop
    phones = [(a, b, "AH") for a, b, w in words]
    grid = textgrid.Textgrid()
    grid.addTier(IntervalTier("phone", phones, 0, end))
    grid.addTier(IntervalTier("word", entries, 0, end))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(str(path), format="long_textgrid", includeBlankSpaces=True)
    return path


def lebel(root: Path, *, n_volumes: int = 40, n_words: int = 80) -> SimpleNamespace:
    """Lebel et al. 2023 (ds003020): one task per story, no events.tsv for story runs, word
    timings as Praat TextGrids in ``derivative/TextGrids`` (folder singular; tiers phone and
    word, silences ``sp``); the test story ``wheretheressmoke`` repeated across sessions."""
    tr = 2.0
    space = "MNI152NLin2009cAsym"
    _description(root, "Lebel2023")
    _tsv(root / "participants.tsv", ["participant_id"], [("sub-UTS01",)])
    prep = root / "derivatives" / "fmriprep"
    _fmriprep_description(prep)
    grids = root / "derivative" / "TextGrids"
    runs = [("2", "alternateithicatom", None), ("2", "avatar", None), ("3", "legacy", None),
            ("3", "odetostepfather", None), ("2", "wheretheressmoke", "1"),
            ("3", "wheretheressmoke", "2"), ("4", "wheretheressmoke", "3")]  # fmt: skip
    for seed, (session, story, run) in enumerate(runs):
        name = f"sub-UTS01_ses-{session}_task-{story}" + (f"_run-{run}" if run else "")
        func = root / "sub-UTS01" / f"ses-{session}" / "func"
        write_bold(func / f"{name}_bold.nii.gz", n_volumes, tr, seed, shape=(2, 2, 2))
        _json(func / f"{name}_bold.json", {"RepetitionTime": tr, "TaskName": story})
        (root / "stimuli").mkdir(exist_ok=True)
        (root / "stimuli" / f"{story}.wav").write_bytes(b"RIFF")
        if not (grids / f"{story}.TextGrid").exists():
            _textgrid(grids / f"{story}.TextGrid", _story_words(sum(map(ord, story)), n_words))
        _prep_run(
            prep / "sub-UTS01" / f"ses-{session}" / "func", name, n_volumes, tr, 100 + seed, space
        )
    return SimpleNamespace(bids_dir=root, transcripts=grids, tr=tr)


def narratives(root: Path, *, n_volumes: int = 40, n_words: int = 60) -> SimpleNamespace:
    """Narratives (ds002345): one run per story, events naming the story's audio (a music row,
    then the story row), Gentle alignments in ``stimuli/gentle/<story>/align.json``;
    fMRIPrep 20.0 names (``res-native``, ``desc-confounds_regressors.tsv``)."""
    tr = 1.5
    space = "MNI152NLin2009cAsym"
    _description(root, "Narratives")
    _tsv(root / "participants.tsv", ["participant_id"], [("sub-001",)])
    prep = root / "derivatives" / "fmriprep"
    _fmriprep_description(prep, "1.4.0")
    for seed, story in enumerate(("pieman", "tunnel", "lucy")):
        name = f"sub-001_task-{story}_run-1"
        func = root / "sub-001" / "func"
        write_bold(func / f"{name}_bold.nii.gz", n_volumes, tr, seed, shape=(2, 2, 2))
        _json(func / f"{name}_bold.json", {"RepetitionTime": tr, "TaskName": story})
        audio = f"{story}_audio.wav"
        _tsv(func / f"{name}_events.tsv", ["onset", "duration", "trial_type", "stim_file"],
             [(0.0, 6.0, "music", audio), (8.0, 50.0, "story", audio)])  # fmt: skip
        (root / "stimuli").mkdir(exist_ok=True)
        (root / "stimuli" / audio).write_bytes(b"RIFF")
        words = _story_words(seed, n_words, start=0.5)
        alignment = {"transcript": " ".join(w for _, _, w in words), "words": [
            {"alignedWord": w, "case": "success", "start": a, "end": b, "word": w} for a, b, w in words
        ] + [{"case": "not-found-in-audio", "word": "um"}]}  # fmt: skip
        _json(root / "stimuli" / "gentle" / story / "align.json", alignment)
        _prep_run(
            prep / "sub-001" / "func",
            name,
            n_volumes,
            tr,
            100 + seed,
            space,
            "regressors",
            "native",
        )
    return SimpleNamespace(bids_dir=root, transcripts=root / "stimuli" / "gentle", tr=tr)


def write_clip(path: Path, seed: int, seconds: float = 3.0, fps: int = 4) -> Path:
    """A tiny mp4 clip (MPEG-4 part 2) of random frames."""
    import av

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(int(seconds * fps)):
            pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def bold_moments(root: Path, *, n_volumes: int = 40) -> SimpleNamespace:
    """BOLD Moments (ds005165): 3-s clips named in ``stim_file`` (``train/0112.mp4``),
    oddball rows ``n/a``; ``task-train`` and ``task-test`` (the test clips repeated in every
    test run); fMRIPrep 23.2 outputs in ``derivatives/versionB/fmriprep``; captions in
    ``derivatives/stimuli_metadata/annotations.json`` (several descriptions per clip)."""
    tr = 1.75
    space = "T1w"
    _description(root, "BMD")
    _json(root / "task-train_bold.json", {"RepetitionTime": tr, "TaskName": "train"})
    _json(root / "task-test_bold.json", {"RepetitionTime": tr, "TaskName": "test"})
    prep = root / "derivatives" / "versionB" / "fmriprep"
    _fmriprep_description(prep)
    annotations, seed = {}, 0
    runs = [("train", 1), ("train", 2), ("train", 3), ("test", 1), ("test", 2)]
    for task, run in runs:
        name = f"sub-01_ses-1_task-{task}_run-{run}"
        func = root / "sub-01" / "ses-1" / "func"
        write_bold(func / f"{name}_bold.nii.gz", n_volumes, tr, seed, shape=(2, 2, 2))
        rows = []
        for i in range(5):
            seed += 1
            onset = 2.0 + i * 12.0
            if i == 4:  # an oddball trial
                rows.append((onset, 3.0, "n/a", "oddball", 1))
                continue
            clip = f"{task}/{(run if task == 'train' else 0) * 10 + i + 1:04d}.mp4"
            if not (root / "stimuli" / clip).exists():
                write_clip(root / "stimuli" / clip, seed)
            rows.append((onset, 3.0, clip, "stimulus", 0))
            annotations[Path(clip).stem] = [
                f"a clip of a {_WORDS[(seed + k) % len(_WORDS)]}" for k in range(3)
            ]
        _tsv(
            func / f"{name}_events.tsv",
            ["onset", "duration", "stim_file", "trial_type", "value"],
            rows,
        )
        _prep_run(prep / "sub-01" / "ses-1" / "func", name, n_volumes, tr, 100 + seed, space)
    captions = _json(root / "derivatives" / "stimuli_metadata" / "annotations.json", annotations)
    return SimpleNamespace(bids_dir=root, captions=captions, tr=tr)


def haxby(root: Path, *, n_runs: int = 4, n_volumes: int = 40) -> SimpleNamespace:
    """Haxby et al. 2001 (ds000105): block design, events with ``trial_type`` only (the
    category of each block: no stimulus files), every category in every run; TR 2.5 s."""
    tr = 2.5
    space = "MNI152NLin2009cAsym"
    categories = ["bottle", "cat", "chair", "face", "house", "scissors", "scrambledpix", "shoe"]
    _description(root, "Haxby")
    _json(
        root / "task-objectviewing_bold.json", {"RepetitionTime": tr, "TaskName": "objectviewing"}
    )
    prep = root / "derivatives" / "fmriprep"
    _fmriprep_description(prep)
    rng = np.random.default_rng(0)
    for run in range(1, n_runs + 1):
        name = f"sub-1_task-objectviewing_run-{run}"
        func = root / "sub-1" / "func"
        write_bold(func / f"{name}_bold.nii.gz", n_volumes, tr, run, shape=(2, 2, 2))
        order = rng.permutation(categories)
        rows = [(2.5 + i * 12.0, 10.0, c) for i, c in enumerate(order)]
        _tsv(func / f"{name}_events.tsv", ["onset", "duration", "trial_type"], rows)
        _prep_run(prep / "sub-1" / "func", name, n_volumes, tr, 100 + run, space)
    _tsv(root / "participants.tsv", ["participant_id"], [("sub-1",)])
    return SimpleNamespace(bids_dir=root, categories=categories, tr=tr)


#: points of the fsLR skeleton's CIFTI: a subset of the 32k cortices and a few voxels
_CIFTI_CORTEX, _CIFTI_VOXELS = 2000, 60


def surfaces_from_demo(
    demo,
    root: Path,
    *,
    subjects: tuple[str, ...] = ("01",),
    kind: str = "gifti",
    seed: int = 0,
    patch: bool = False,
) -> SimpleNamespace:
    """fMRIPrep >= 21 surface outputs of the demo's runs, named as BOLD Moments and Pixar
    ship them (``..._hemi-L_space-fsaverage5_bold.func.gii`` pairs, or
    ``..._space-fsLR_den-91k_bold.dtseries.nii``), with a planted signal: the left
    hemisphere's ``planted`` vertices carry the BOLD of the demo's semantic voxels (in order),
    every other point carries the BOLD of voxels without signal, and the medial wall is 0.
    Confounds are the demo's. A swapped hemisphere or a vertex-order bug moves the signal.
    With ``patch`` (fsaverage5), the planted vertices are one contiguous patch of the left
    pial surface (the vertices nearest vertex 1000), as a searchlight needs; else scattered.

    Returns
    -------
    SimpleNamespace
        ``derivatives`` (the folder), ``space``, ``planted`` (per subject: the left-hemisphere
        point index of each semantic voxel), ``amplitude`` (per subject: the simulated
        semantic amplitude of those voxels), ``n_points`` (left, right).
    """
    rng = np.random.default_rng(seed)
    space = "fsaverage5" if kind == "gifti" else "fsLR"
    _fmriprep_description(root, GeneratedBy=[{"Name": "fMRIPrep", "Version": "23.2.0"}])
    n_left = 10242 if kind == "gifti" else _CIFTI_CORTEX
    n_right = n_left
    medial = 200 if kind == "gifti" else 0
    planted_by, amplitude_by = {}, {}
    for subject in subjects:
        truth = demo.ground_truth_dir
        classes = np.asarray(
            nib.load(
                truth / f"sub-{subject}_space-MNI152NLin2009cAsym_desc-voxelclass_dseg.nii.gz"
            ).dataobj
        )
        amplitude = np.asarray(
            nib.load(
                truth / f"sub-{subject}_space-MNI152NLin2009cAsym_desc-semantic_amplitude.nii.gz"
            ).dataobj
        )
        semantic, quiet = np.flatnonzero(classes.ravel() == 2), np.flatnonzero(classes.ravel() == 1)
        usable = n_left - medial
        planted = np.sort(rng.choice(usable, size=semantic.size, replace=False))
        if patch:
            from nilearn.datasets import load_fsaverage

            xyz = np.asarray(load_fsaverage("fsaverage5")["pial"].parts["left"].coordinates)
            distance = np.linalg.norm(xyz[:usable] - xyz[1000], axis=1)
            planted = np.sort(np.argsort(distance)[: semantic.size])
        others_left = np.setdiff1d(np.arange(usable), planted)
        planted_by[subject] = planted
        amplitude_by[subject] = amplitude.ravel()[semantic]
        func_in = demo.fmriprep_dir / f"sub-{subject}" / "func"
        func_out = root / f"sub-{subject}" / "func"
        func_out.mkdir(parents=True, exist_ok=True)
        for run in demo.runs:
            name = f"sub-{subject}_task-{demo.task}_run-{run}"
            bold = nib.load(func_in / f"{name}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz")
            series = np.asarray(bold.dataobj, dtype=np.float32).reshape(-1, bold.shape[3])
            left = np.zeros((n_left, bold.shape[3]), dtype=np.float32)
            left[planted] = series[semantic]
            left[others_left] = series[quiet[np.arange(others_left.size) % quiet.size]]
            right = np.zeros((n_right, bold.shape[3]), dtype=np.float32)
            fill = np.arange(n_right - medial)
            right[fill] = series[quiet[(fill + 7) % quiet.size]]
            confounds = f"{name}_desc-confounds_timeseries.tsv"
            (func_out / confounds).write_bytes((func_in / confounds).read_bytes())
            tr = float(bold.header.get_zooms()[3])
            if kind == "gifti":
                for hemi, data in (("L", left), ("R", right)):
                    _write_func_gii(
                        func_out / f"{name}_hemi-{hemi}_space-{space}_bold.func.gii", data, tr
                    )
            else:
                _write_dtseries(
                    func_out / f"{name}_space-{space}_den-91k_bold.dtseries.nii",
                    left,
                    right,
                    tr,
                    rng,
                )
    return SimpleNamespace(
        derivatives=root, space=space, planted=planted_by, amplitude=amplitude_by,
        n_points=(n_left, n_right),
    )  # fmt: skip


def _write_func_gii(path: Path, data: np.ndarray, tr: float) -> Path:
    """One GIFTI data array per volume, as fMRIPrep writes surface BOLD."""
    arrays = [
        nib.gifti.GiftiDataArray(
            column,
            intent="NIFTI_INTENT_TIME_SERIES",
            datatype="NIFTI_TYPE_FLOAT32",
            meta=nib.gifti.GiftiMetaData({"TimeStep": f"{tr * 1000:g}"}),
        )  # fmt: skip
        for column in np.ascontiguousarray(data.T)
    ]
    nib.save(nib.GiftiImage(darrays=arrays), str(path))
    return path


def _write_dtseries(path: Path, left: np.ndarray, right: np.ndarray, tr: float, rng) -> Path:
    """A CIFTI-2 dense time series: both cortices on fsLR 32k (a subset of vertices, in a
    shuffled but increasing order) then a few thalamus voxels (noise-only BOLD)."""
    n_vertices = 32492
    vertices = np.sort(rng.choice(n_vertices, size=left.shape[0], replace=False))
    models = nib.cifti2.BrainModelAxis.from_surface(vertices, n_vertices, "CortexLeft")
    models = models + nib.cifti2.BrainModelAxis.from_surface(vertices, n_vertices, "CortexRight")
    voxels = np.stack(np.unravel_index(np.arange(_CIFTI_VOXELS), (5, 4, 3)), axis=1)
    models = models + nib.cifti2.BrainModelAxis(
        "thalamus_left", voxel=voxels, affine=np.diag([2.0, 2.0, 2.0, 1.0]), volume_shape=(5, 4, 3)
    )
    subcortical = right[np.arange(_CIFTI_VOXELS) % right.shape[0]]
    data = np.concatenate([left, right, subcortical]).T
    series = nib.cifti2.SeriesAxis(start=0.0, step=tr, size=data.shape[0], unit="SECOND")
    nib.Cifti2Image(data, header=(series, models)).to_filename(str(path))
    return path
