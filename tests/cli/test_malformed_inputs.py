"""The catalogue of malformed inputs: each one breaks a valid dataset in one way, and bids_vem
stops before any work with its exit code and one line that names the culprit, leaving
BIDS_DIR untouched. Every case runs with a text feature space and with an image one.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_vem.cli.run import main
from tests import skeletons

MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]


@dataclass(frozen=True)
class Case:
    """One way to break the standard skeleton: what to do, the exit code, the message."""

    name: str
    breaks: Callable  # (dataset, tmp_path) -> extra command-line arguments or None
    code: int
    message: str  # a substring of the one error line (it names the culprit)


def _rewrite_events(ds, rows, columns=("onset", "duration", "stim_file"), run=0):
    path = ds.runs[run].events
    lines = ["\t".join(columns)] + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def _first_events_with(ds, stim):
    rows = [line.split("\t") for line in ds.runs[0].events.read_text().splitlines()[1:]]
    rows[0][2] = stim
    _rewrite_events(ds, rows)


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _replace_image(path: Path, data: np.ndarray, affine=None) -> None:
    old = nib.load(path)
    img = nib.Nifti1Image(data, old.affine if affine is None else affine, old.header)
    img.to_filename(path)


def _symlink_outside(ds, tmp_path):
    (tmp_path / "secret.png").write_bytes((ds.bids_dir / "stimuli" / ds.stim_ids[0]).read_bytes())
    os.symlink(tmp_path / "secret.png", ds.bids_dir / "stimuli" / "linked.png")
    _first_events_with(ds, "linked.png")


def _ambiguous(ds, tmp_path):
    stem = Path(ds.stim_ids[0]).stem
    shutil.copy(ds.bids_dir / "stimuli" / ds.stim_ids[0], ds.bids_dir / "stimuli" / f"{stem}.jpg")
    _first_events_with(ds, stem)


def _two_resolutions(ds, tmp_path):
    bold = ds.runs[0].bold
    shutil.copy(bold, bold.with_name(bold.name.replace("_desc-", "_res-2_desc-")))
    shutil.copy(bold, bold.with_name(bold.name.replace("_desc-", "_res-1_desc-")))


def _no_tr(ds, tmp_path):
    (ds.bids_dir / "task-images_bold.json").write_text("{}")
    for run in ds.runs:
        run.bold.with_name(run.bold.name.replace(".nii.gz", ".json")).write_text("{}")
        img = nib.load(run.bold)
        img.header.set_zooms((*img.header.get_zooms()[:3], 0.0))
        nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header).to_filename(run.bold)


def _bids_dir_is_fmriprep(ds, tmp_path):
    return {"bids_dir": ds.prep}


def _captions_without_one(ds, tmp_path):
    lines = (tmp_path / "captions.tsv").read_text().splitlines()
    (tmp_path / "captions.tsv").write_text("\n".join(lines[:-1]) + "\n")


def _captions_bad_header(ds, tmp_path):
    lines = (tmp_path / "captions.tsv").read_text().splitlines()
    (tmp_path / "captions.tsv").write_text("\n".join(["stim_file\ttext", *lines[1:]]) + "\n")


def _glmsingle(ds, tmp_path, numtrialrun=(6, 6, 6), designinfo=True):
    """A GLMsingle folder for sub-01 (no sessions): results and DESIGNINFO, as GLMsingle saves
    them."""
    folder = tmp_path / "GLM" / "sub-01"
    folder.mkdir(parents=True)
    shape = nib.load(ds.runs[0].bold).shape[:3]
    np.save(
        folder / "TYPED_FITHRF_GLMDENOISE_RR.npy",
        {"betasmd": np.zeros((*shape, 18), np.float32)},
        allow_pickle=True,
    )
    design = {"stimorder": np.arange(sum(numtrialrun)), "numtrialrun": np.array(numtrialrun)}
    np.save(folder / "DESIGNINFO.npy", design, allow_pickle=True)
    if not designinfo:
        _truncate(folder / "DESIGNINFO.npy", 0.5)
    return ["--design", "trialwise", "--betas", str(tmp_path / "GLM")]


def _left_hemisphere_alone(ds, tmp_path):
    """fMRIPrep's surface BOLD with the right hemisphere not fetched."""
    from tests.skeletons import _write_func_gii

    name = "sub-01_task-images_run-1_hemi-L_space-fsaverage5_bold.func.gii"
    _write_func_gii(ds.prep / "sub-01" / "func" / name, np.ones((642, 30)), 2.0)
    return ["--space", "fsaverage5"]


def _left_and_right_hemispheres(ds, space="fsaverage5"):
    """fMRIPrep's surface BOLD of every run, both hemispheres."""
    from tests.skeletons import _write_func_gii

    for run in ds.runs:
        n = nib.load(run.bold).shape[3]
        for hemi in ("L", "R"):
            name = run.bold.name.split("_space-")[0] + f"_hemi-{hemi}_space-{space}_bold.func.gii"
            _write_func_gii(run.bold.parent / name, np.random.default_rng(0).random((642, n)), 2.0)
    return ["--space", space]


def _session_betas_one_too_many(ds, tmp_path):
    folder = tmp_path / "betas" / "sub-01"
    folder.mkdir(parents=True)
    np.save(folder / "TYPEB_FITHRF.npy", np.zeros((*nib.load(ds.runs[0].bold).shape[:3], 19)))
    return ["--design", "trialwise", "--betas", str(tmp_path / "betas")]


CASES = [
    Case("events without onset",
         lambda ds, t: _rewrite_events(ds, [(1, "a.png")], ("duration", "stim_file")),
         65, "lacks the required column(s) onset"),
    Case("onset not a number",
         lambda ds, t: _rewrite_events(ds, [("two", 1, ds.stim_ids[0])]),
         65, "column 'onset' must be numeric (seconds), found 'two'"),
    Case("negative duration",
         lambda ds, t: _rewrite_events(ds, [(2, -1, ds.stim_ids[0])]),
         65, "negative duration -1.0 on data row 1"),
    Case("stimulus without duration",
         lambda ds, t: _rewrite_events(ds, [(2, "n/a", ds.stim_ids[0])]),
         65, "duration is n/a on data row 1"),
    Case("onsets in milliseconds",
         lambda ds, t: [_rewrite_events(ds, [(2000 * (i + 1), 1, s) for i, s in enumerate(ds.stim_ids[:6])], run=r) for r in range(3)],
         65, "events start after the run's 60 s"),
    Case("events not a TSV",
         lambda ds, t: ds.runs[0].events.write_bytes(b"onset\tduration\tstim_file\n\xff\xfe\x00\n"),
         66, "sub-01_task-images_run-1_events.tsv: cannot be read"),
    Case("stimulus file missing",
         lambda ds, t: (ds.bids_dir / "stimuli" / ds.stim_ids[0]).unlink(),
         66, "1 stimulus files named in stim_file are missing"),
    Case("stimulus path leaves stimuli/",
         lambda ds, t: _first_events_with(ds, "../secret.png"),
         65, "stimulus '../secret.png' in column 'stim_file' leaves the stimuli folder"),
    Case("stimulus of no known kind",
         lambda ds, t: ((ds.bids_dir / "stimuli" / "x.xyz").write_bytes(b"x"), _first_events_with(ds, "x.xyz")),
         65, "stimulus 'x.xyz' has an extension of no known kind"),
    Case("stimulus linked outside", _symlink_outside,
         65, "stimulus 'linked.png' is a link to"),
    Case("stimulus name matches two files", _ambiguous,
         65, "matches 2 files"),
    Case("stimuli folder absent",
         lambda ds, t: shutil.rmtree(ds.bids_dir / "stimuli"),
         66, "(there is no"),
    Case("--stimuli-dir absent",
         lambda ds, t: ["--stimuli-dir", str(t / "nowhere")],
         66, "--stimuli-dir "),
    Case("explicit stimulus column absent",
         lambda ds, t: ["--stim-column", "picture"],
         66, "has no stimulus column 'picture'"),
    Case("no event names a stimulus",
         lambda ds, t: [_rewrite_events(ds, [(2, 1, "n/a")], run=r) for r in range(3)],
         66, "names no stimulus in 'stim_file'"),
    Case("BOLD truncated",
         lambda ds, t: _truncate(ds.runs[1].bold, 0.6),
         66, "sub-01_task-images_run-2_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz: the file is truncated"),
    Case("BOLD empty (annexed, not fetched)",
         lambda ds, t: ds.runs[2].bold.write_bytes(b""),
         66, "run-3_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz: empty file (0 bytes)"),
    Case("BOLD not a NIfTI",
         lambda ds, t: ds.runs[0].bold.write_bytes(gzip.compress(b"not an image")),
         65, "run-1_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz: not a readable NIfTI image"),
    Case("BOLD 3-D",
         lambda ds, t: _replace_image(ds.runs[0].bold, np.zeros((9, 10, 8), np.float32)),
         65, "a BOLD series must be 4D, this image has shape (9, 10, 8)"),
    Case("too few volumes for the delays",
         lambda ds, t: (_replace_image(ds.runs[0].bold, np.asarray(nib.load(ds.runs[0].bold).dataobj)[..., :5]),
                        _rewrite_events(ds, [(2, 1, ds.stim_ids[0])]),
                        ds.runs[0].confounds.write_text("\n".join(ds.runs[0].confounds.read_text().splitlines()[:6]) + "\n")),
         65, "5 volumes of 2 s; FIR delays up to 8 s need more than 6"),
    Case("no RepetitionTime anywhere", _no_tr,
         65, "no RepetitionTime in its JSON sidecar, the raw BOLD metadata or the NIfTI header"),
    Case("two BOLD files for one run", _two_resolutions,
         64, "two preprocessed BOLD files for sub-01_task-images_run-1"),
    Case("confound column absent",
         lambda ds, t: ["--confounds", *MOTION, "csf"],
         65, "no confound column(s) csf"),
    Case("confounds one row short",
         lambda ds, t: ds.runs[1].confounds.write_text("\n".join(ds.runs[1].confounds.read_text().splitlines()[:-1]) + "\n"),
         65, "29 rows of confounds for 30 volumes"),
    Case("confounds file missing",
         lambda ds, t: ds.runs[2].confounds.unlink(),
         66, "sub-01_task-images_run-3: confounds trans_x"),
    Case("brain mask empty",
         lambda ds, t: _replace_image(ds.runs[0].mask, np.zeros((9, 10, 8), np.uint8)),
         65, "run-1_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz: brain mask is empty"),
    Case("unknown participant",
         lambda ds, t: ["--participant-label", "07"],
         64, "07 not found in"),
    Case("task that does not exist",
         lambda ds, t: ["--task", "movies"],
         18, "task=['movies']"),
    Case("space that does not exist",
         lambda ds, t: ["--space", "fsLR"],
         66, "spaces found: MNI152NLin2009cAsym"),
    Case("BIDS_DIR is the fMRIPrep folder", _bids_dir_is_fmriprep,
         64, "is a derivative dataset (made by fMRIPrep)"),
    Case("captions missing a stimulus", _captions_without_one,
         66, "captions"),
    Case("captions without a caption column", _captions_bad_header,
         65, "captions.tsv"),
    Case("GLMsingle trials per run differ from the events",
         lambda ds, t: _glmsingle(ds, t, numtrialrun=(6, 6, 5)),
         65, "DESIGNINFO.npy: GLMsingle's trials per run (6, 6, 5) differ from the stimulus events of these runs (6, 6, 6)"),
    Case("GLMsingle DESIGNINFO truncated",
         lambda ds, t: _glmsingle(ds, t, designinfo=False),
         66, "DESIGNINFO.npy: cannot read this .npy file"),
    Case("session betas with a volume too many", _session_betas_one_too_many,
         65, "TYPEB_FITHRF.npy: 19 volumes but the events of its session name 18 stimulus trials"),
    Case("left hemisphere without its right", _left_hemisphere_alone,
         66, "hemi-L_space-fsaverage5_bold.func.gii: no right hemisphere (hemi-R) beside this left one"),
    Case("a surface atlas on volume maps",
         lambda ds, t: ["--atlas", "schaefer100"],
         64, "--atlas schaefer100: the atlases are on fsLR 32k; use --space fsLR"),
    Case("a joint model of a feature space not fitted",
         lambda ds, t: ["--joint", "minilm,nosuch"],
         64, "--joint minilm,nosuch: no feature space"),
    Case("caption decoding of a space that is not text",
         lambda ds, t: ["--decode", "nosuch"],
         64, "--decode nosuch: not a text feature space of this run"),
    Case("decoding corpus without a caption",
         lambda ds, t: (t / "corpus.tsv").write_text("text\nsomething\n") and ["--decode", "minilm", "--decode-corpus", str(t / "corpus.tsv")],
         65, "corpus.tsv: no 'caption' column"),
    Case("RSA searchlight on a surface without a mesh",
         lambda ds, t: _left_and_right_hemispheres(ds, "fsaverage6") + ["--rsa"],
         64, "--rsa: a surface searchlight needs a template mesh offline"),
    Case("transfer to a task that does not exist",
         lambda ds, t: ["--transfer", "images:movie"],
         64, "--transfer images:movie: no runs of task movie (tasks: images)"),
    Case("transfer corpus without captions",
         lambda ds, t: (t / "corpus").mkdir() or ["--transfer", "images:movie", "--transfer-corpus", str(t / "corpus")],
         66, "corpus: no captions.tsv (columns stim_file, caption)"),
    Case("image truncated",
         lambda ds, t: _truncate(ds.bids_dir / "stimuli" / ds.stim_ids[3], 0.5),
         65, "stimulus image"),
    Case("image empty",
         lambda ds, t: (ds.bids_dir / "stimuli" / ds.stim_ids[4]).write_bytes(b""),
         65, "cannot be read as an image (empty file (0 bytes))"),
]  # fmt: skip

#: faults of pixels: text spaces never read them (their captions are given)
IMAGE_ONLY = {"image truncated", "image empty"}
#: faults of what only a text space uses (a decoding corpus is embedded by one)
TEXT_ONLY = {"decoding corpus without a caption"}


def _snapshot(folder: Path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def test_the_catalogue_has_at_least_30_cases():
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("modality", ["text", "image"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_input_stops_early_with_one_line(case, modality, demo_dataset, tmp_path, capfd):
    if case.name in IMAGE_ONLY and modality == "text":
        pytest.skip("text feature spaces do not read the pixels")
    if case.name in TEXT_ONLY and modality == "image":
        pytest.skip("only text feature spaces decode captions")
    ds = skeletons.standard(tmp_path / "ds")
    skeletons.captions(tmp_path / "captions.tsv", ds.stim_ids)
    extra = case.breaks(ds, tmp_path)
    bids_dir = ds.bids_dir
    if isinstance(extra, dict):
        bids_dir, extra = extra["bids_dir"], None
    extra = extra if isinstance(extra, list) and all(isinstance(a, str) for a in extra) else []
    space = (
        ["--text-encoder", "minilm=sentence:all-MiniLM-L6-v2"]
        if modality == "text"
        else ["--image-encoder", demo_dataset.image_model_spec]
    )
    before = _snapshot(ds.bids_dir)
    argv = [
        str(bids_dir), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
        "--skip-bids-validation", "--captions", str(tmp_path / "captions.tsv"),
        "--confounds", *MOTION, *space, *extra,
    ]  # fmt: skip
    code = main(argv)
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert code == case.code, err
    assert len(errors) == 1, err
    assert case.message in errors[0], errors[0]
    assert "Traceback" not in err
    assert _snapshot(ds.bids_dir) == before  # BIDS_DIR untouched
