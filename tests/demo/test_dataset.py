"""The generated demo: BIDS validity, fMRIPrep naming, and a ground truth that holds."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_vem.demo.simulate import CONFOUND_COLUMNS, SPACE

VALIDATOR = Path(sys.executable).parent / "bids-validator-deno"


def _validate(path: Path) -> tuple[int, list[dict]]:
    """Run the schema validator; returns its exit code and its error-level issues."""
    validator = str(VALIDATOR) if VALIDATOR.exists() else shutil.which("bids-validator-deno")
    if validator is None:
        pytest.skip("bids-validator-deno is not installed")
    result = subprocess.run(
        [validator, str(path), "--format", "json"], capture_output=True, text=True, timeout=300
    )
    report = json.loads(result.stdout)
    errors = [i for i in report["issues"]["issues"] if i["severity"] == "error"]
    return result.returncode, errors


def _events(demo, subject: str, run: str) -> pd.DataFrame:
    path = (
        demo.bids_dir
        / f"sub-{subject}"
        / "func"
        / f"sub-{subject}_task-shapes_run-{run}_events.tsv"
    )
    return pd.read_csv(path, sep="\t")


def _deriv(demo, subject: str, run: str, suffix: str) -> Path:
    return (
        demo.fmriprep_dir
        / f"sub-{subject}"
        / "func"
        / f"sub-{subject}_task-shapes_run-{run}_{suffix}"
    )


def _preproc(demo, subject: str, run: str) -> tuple[np.ndarray, np.ndarray]:
    """In-mask BOLD (n_volumes, n_voxels) and the mask of one run."""
    mask = (
        np.asarray(
            nib.load(_deriv(demo, subject, run, f"space-{SPACE}_desc-brain_mask.nii.gz")).dataobj
        )
        > 0
    )
    bold = nib.load(_deriv(demo, subject, run, f"space-{SPACE}_desc-preproc_bold.nii.gz"))
    return np.asarray(bold.dataobj)[mask].T.astype(np.float64), mask


def _reference_regressors(events: pd.DataFrame, features: np.ndarray, stim_files, n_volumes, tr):
    """HRF regressors built here from events.tsv with nilearn, independently of the demo code."""
    from nilearn.glm.first_level import compute_regressor

    index = {s: i for i, s in enumerate(stim_files)}
    rows = np.array([index[s] for s in events["stim_file"]])
    frame_times = np.arange(n_volumes) * tr
    columns = []
    for j in range(features.shape[1]):
        condition = np.vstack([events["onset"], events["duration"], features[rows, j]])
        columns.append(compute_regressor(condition, "spm", frame_times)[0][:, 0])
    unit = compute_regressor(
        np.array([[0.0], [3.0], [1.0]]), "spm", np.arange(0, 40, 0.1), oversampling=10
    )[0]
    return np.column_stack(columns) / unit.max()


def _nuisance_design(demo, subject: str, run: str, n_volumes: int, tr: float) -> np.ndarray:
    confounds = pd.read_csv(
        _deriv(demo, subject, run, "desc-confounds_timeseries.tsv"), sep="\t", na_values="n/a"
    )
    t = np.arange(n_volumes)
    n_cosines = int(2 * n_volumes * tr / 128)
    cosines = [np.cos(np.pi * k * (2 * t + 1) / (2 * n_volumes)) for k in range(1, n_cosines + 1)]
    return np.column_stack(
        [np.ones(n_volumes), confounds[list(CONFOUND_COLUMNS)].to_numpy(), *cosines]
    )


def _residualise(data: np.ndarray, design: np.ndarray) -> np.ndarray:
    return data - design @ np.linalg.lstsq(design, data, rcond=None)[0]


def _columnwise_r(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = (a - a.mean(0)) / a.std(0)
    b = (b - b.mean(0)) / b.std(0)
    return (a * b).mean(0)


# -- BIDS validity and naming


def test_raw_dataset_passes_the_bids_validator(demo):
    code, errors = _validate(demo.bids_dir)
    assert errors == [] and code == 0


def test_derivative_dataset_passes_the_bids_validator(demo):
    code, errors = _validate(demo.fmriprep_dir)
    assert errors == [] and code == 0
    description = json.loads((demo.fmriprep_dir / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    # BIDS: the first GeneratedBy name is part of the derivative folder's name
    assert description["GeneratedBy"][0]["Name"] in demo.fmriprep_dir.name
    assert "fMRIPrep" not in description["GeneratedBy"][0]["Name"]


def test_derivatives_follow_fmriprep_naming(demo):
    pattern = re.compile(
        r"sub-(?P<sub>\d\d)_task-shapes_run-(?P<run>\d)_("
        rf"space-{SPACE}_desc-preproc_bold\.(nii\.gz|json)|"
        rf"space-{SPACE}_desc-brain_mask\.(nii\.gz|json)|"
        r"desc-confounds_timeseries\.(tsv|json))"
    )
    files = sorted(p for p in demo.fmriprep_dir.rglob("sub-*") if p.is_file())
    assert len(files) == 2 * 4 * 6
    for path in files:
        match = pattern.fullmatch(path.name)
        assert match, path.name
        assert path.parent == demo.fmriprep_dir / f"sub-{match['sub']}" / "func"


def test_pybids_finds_every_run_with_its_derivatives(demo):
    from bids import BIDSLayout

    layout = BIDSLayout(demo.bids_dir, derivatives=demo.fmriprep_dir, validate=False)
    assert layout.get_subjects() == ["01", "02"]
    raw = layout.get(suffix="bold", extension=".nii.gz", scope="raw")
    preproc = layout.get(
        space=SPACE, desc="preproc", suffix="bold", extension=".nii.gz", scope="derivatives"
    )
    masks = layout.get(
        space=SPACE, desc="brain", suffix="mask", extension=".nii.gz", scope="derivatives"
    )
    assert len(raw) == len(preproc) == len(masks) == 8
    assert all(layout.get_metadata(f.path)["RepetitionTime"] == 2.0 for f in raw + preproc)
    assert layout.get_metadata(raw[0].path)["TaskName"] == "shapes"


def test_events_stimuli_and_captions_fit_together(demo):
    captions = pd.read_csv(demo.captions_tsv, sep="\t")
    per_image = captions.groupby("stim_file")["caption"].nunique()
    assert len(per_image) == 96 and (per_image == 3).all()
    shown = set()
    for subject in demo.subjects:
        for run in demo.runs:
            events = _events(demo, subject, run)
            assert list(events.columns) == ["onset", "duration", "trial_type", "stim_file"]
            assert (events["duration"] == 3.0).all() and events["onset"].is_monotonic_increasing
            shown |= set(events["stim_file"])
    assert shown == set(per_image.index)
    assert all((demo.bids_dir / "stimuli" / f).is_file() for f in shown)


def test_bold_headers_and_confounds_look_like_fmriprep(demo):
    raw = nib.load(demo.bids_dir / "sub-01" / "func" / "sub-01_task-shapes_run-1_bold.nii.gz")
    preproc = nib.load(_deriv(demo, "01", "1", f"space-{SPACE}_desc-preproc_bold.nii.gz"))
    assert raw.get_data_dtype() == np.int16 and preproc.get_data_dtype() == np.float32
    assert raw.header.get_zooms() == preproc.header.get_zooms() == (8.0, 8.0, 8.0, 2.0)
    assert preproc.header.get_xyzt_units() == ("mm", "sec")
    data, mask = _preproc(demo, "01", "1")
    assert data.shape[0] == preproc.shape[3] and 3000 < mask.sum() < 5000
    assert 800 < np.median(data) < 1200
    assert raw.get_fdata().nbytes / 1e6 < 100 and (raw.dataobj.get_unscaled().nbytes / 1e6) < 10

    table = (_deriv(demo, "01", "1", "desc-confounds_timeseries.tsv")).read_text().splitlines()
    header = table[0].split("\t")
    assert set(CONFOUND_COLUMNS) | {"global_signal", "framewise_displacement"} <= set(header)
    assert table[1].split("\t")[header.index("framewise_displacement")] == "n/a"
    confounds = pd.read_csv(
        _deriv(demo, "01", "1", "desc-confounds_timeseries.tsv"), sep="\t", na_values="n/a"
    )
    np.testing.assert_allclose(confounds["global_signal"], data.mean(axis=1), rtol=1e-5)
    motion = confounds[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].to_numpy()
    fd = np.abs(np.diff(motion, axis=0)) @ np.array([1, 1, 1, 50, 50, 50])
    np.testing.assert_allclose(confounds["framewise_displacement"][1:], fd, rtol=1e-3, atol=1e-5)


# -- ground truth


def test_noise_free_signal_is_the_true_features_times_the_true_weights(demo):
    """Least squares of the saved noise-free signal on regressors rebuilt from events.tsv
    and the saved features gives back the saved weights."""
    features = np.load(demo.ground_truth_dir / "features.npz")
    truth = np.load(demo.ground_truth_dir / "sub-02_truth.npz")
    stim_files = list(features["stim_files"])
    n_semantic = features["semantic"].shape[1]
    designs, signals = [], []
    for run in demo.runs:
        signal = truth[f"run-{run}_noise_free"].astype(np.float64)
        x = _reference_regressors(
            _events(demo, "02", run),
            np.hstack([features["semantic"], features["lowlevel"]]),
            stim_files,
            signal.shape[0],
            2.0,
        )
        designs.append(x)
        signals.append(signal)
    weights = np.linalg.lstsq(np.vstack(designs), np.vstack(signals), rcond=None)[0].T
    voxels = truth["signal_voxels"]
    expected = np.hstack([truth["semantic_weights"], truth["lowlevel_weights"]])[voxels]
    assert np.abs(weights - expected).max() < 0.02 * np.abs(expected).max()
    # semantic voxels load on semantic features only, low-level voxels on low-level ones
    classes = truth["voxel_class"][voxels]
    assert np.abs(weights[classes == 3, :n_semantic]).max() < 1e-2
    assert np.abs(weights[classes == 2, n_semantic:]).max() < 1e-2


def test_ground_truth_maps_match_the_arrays(demo):
    truth = np.load(demo.ground_truth_dir / "sub-01_truth.npz")
    prefix = demo.ground_truth_dir / f"sub-01_space-{SPACE}"
    _, mask = _preproc(demo, "01", "1")
    classes = np.asarray(nib.load(f"{prefix}_desc-voxelclass_dseg.nii.gz").dataobj)
    np.testing.assert_array_equal(classes[mask], truth["voxel_class"])
    assert (classes[~mask] == 0).all()
    norm = np.asarray(nib.load(f"{prefix}_desc-semantic_weightnorm.nii.gz").dataobj)[mask]
    np.testing.assert_allclose(norm, np.linalg.norm(truth["semantic_weights"], axis=1), rtol=1e-6)
    noise = np.asarray(nib.load(f"{prefix}_desc-noise_std.nii.gz").dataobj)[mask]
    np.testing.assert_allclose(noise, truth["noise_std"], rtol=1e-6)
    counts = np.bincount(truth["voxel_class"], minlength=4)
    assert counts[2] > 60 and counts[3] > 30 and counts[1] > 3000
    labels = pd.read_csv(demo.ground_truth_dir / "desc-voxelclass_dseg.tsv", sep="\t")
    assert dict(zip(labels["index"], labels["name"], strict=True)) == {
        1: "none",
        2: "semantic",
        3: "lowlevel",
    }
    # semantic voxels lie in occipito-temporal cortex, low-level ones at the occipital pole
    coords = nib.affines.apply_affine(
        nib.load(f"{prefix}_desc-voxelclass_dseg.nii.gz").affine, np.argwhere(mask)
    )
    semantic, lowlevel = coords[truth["voxel_class"] == 2], coords[truth["voxel_class"] == 3]
    assert np.abs(semantic[:, 0]).min() > 15 and semantic[:, 1].max() < -30
    assert np.abs(lowlevel[:, 0]).max() < 30 and lowlevel[:, 1].max() < -60


def test_semantic_voxels_follow_the_semantic_predictor_and_confound_regression_helps(demo):
    features = np.load(demo.ground_truth_dir / "features.npz")
    truth = np.load(demo.ground_truth_dir / "sub-01_truth.npz")
    semantic = truth["voxel_class"] == 2
    none = truth["voxel_class"] == 1
    r_clean, r_raw, r_none = [], [], []
    for run in demo.runs:
        data, _ = _preproc(demo, "01", run)
        n_volumes = data.shape[0]
        x = _reference_regressors(
            _events(demo, "01", run),
            features["semantic"],
            list(features["stim_files"]),
            n_volumes,
            2.0,
        )
        predictor = x @ truth["semantic_weights"][semantic].T
        nuisance = _nuisance_design(demo, "01", run, n_volumes, 2.0)
        drift_only = nuisance[:, [0, *range(1 + len(CONFOUND_COLUMNS), nuisance.shape[1])]]
        r_clean.append(_columnwise_r(_residualise(data[:, semantic], nuisance), predictor))
        r_raw.append(_columnwise_r(_residualise(data[:, semantic], drift_only), predictor))
        # any semantic voxel's predictor against the voxels with no signal
        r_none.append(
            _columnwise_r(
                _residualise(data[:, none], nuisance), np.repeat(predictor[:, :1], none.sum(), 1)
            )
        )
    r_clean, r_raw, r_none = (np.mean(r, axis=0) for r in (r_clean, r_raw, r_none))
    print(
        f"\nsemantic voxels vs true predictor: median r {np.median(r_clean):.2f} "
        f"(without confound regression {np.median(r_raw):.2f}); no-signal voxels {np.median(r_none):.3f}"
    )
    assert np.median(r_clean) > 0.45
    assert np.median(r_clean) > np.median(r_raw) + 0.05
    assert abs(np.median(r_none)) < 0.05


def test_ridge_on_minilm_caption_embeddings_recovers_the_semantic_voxels(demo):
    """The science the demo is for: a leave-one-run-out ridge model on the real
    all-MiniLM-L6-v2 embeddings of captions.tsv predicts semantic voxels, not the others."""
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import RidgeCV

    captions = pd.read_csv(demo.captions_tsv, sep="\t")
    model = SentenceTransformer(str(demo.text_model_path), device="cpu")
    vectors = model.encode(captions["caption"].tolist(), convert_to_numpy=True)
    table = pd.DataFrame(vectors).groupby(captions["stim_file"].to_numpy()).mean()
    truth = np.load(demo.ground_truth_dir / "sub-01_truth.npz")
    classes = truth["voxel_class"]
    # every semantic voxel and a sample of the others keeps the test fast
    rng = np.random.default_rng(0)
    voxels = np.concatenate(
        [np.flatnonzero(classes == 2), rng.choice(np.flatnonzero(classes == 1), 300, replace=False)]
    )
    designs, targets = [], []
    for run in demo.runs:
        data, _ = _preproc(demo, "01", run)
        n_volumes = data.shape[0]
        y = _residualise(data[:, voxels], _nuisance_design(demo, "01", run, n_volumes, 2.0))
        targets.append((y - y.mean(0)) / y.std(0))
        # features on the TR grid (fraction of each TR an image is shown), FIR delays of 1-4 TRs
        stimulus = np.zeros((n_volumes, vectors.shape[1]))
        for onset, duration, stim_file in _events(demo, "01", run)[
            ["onset", "duration", "stim_file"]
        ].itertuples(index=False):
            for k in range(int(onset // 2), int(np.ceil((onset + duration) / 2))):
                overlap = min(onset + duration, 2 * k + 2) - max(onset, 2 * k)
                stimulus[k] += overlap / 2 * table.loc[stim_file].to_numpy()
        stimulus = (stimulus - stimulus.mean(0)) / stimulus.std(0)
        designs.append(
            np.hstack(
                [
                    np.roll(stimulus, d, axis=0) * (np.arange(n_volumes) >= d)[:, None]
                    for d in (1, 2, 3, 4)
                ]
            )
        )
    scores = []
    for test in range(len(designs)):
        train = [i for i in range(len(designs)) if i != test]
        ridge = RidgeCV(alphas=np.logspace(0, 5, 11), alpha_per_target=True)
        ridge.fit(np.vstack([designs[i] for i in train]), np.vstack([targets[i] for i in train]))
        scores.append(_columnwise_r(ridge.predict(designs[test]), targets[test]))
    r = np.mean(scores, axis=0)
    n_semantic = int((classes == 2).sum())
    print(
        f"\nheld-out r: semantic median {np.median(r[:n_semantic]):.2f}, others {np.median(r[n_semantic:]):.3f}"
    )
    assert 0.3 < np.median(r[:n_semantic]) < 0.7
    assert abs(np.median(r[n_semantic:])) < 0.03


def test_image_model_loads_with_open_clip_local_dir(demo):
    import open_clip
    import torch
    from PIL import Image
    from safetensors.torch import load_file

    model, _, preprocess = open_clip.create_model_and_transforms(
        f"local-dir:{demo.image_model_dir}"
    )
    saved = load_file(demo.image_model_dir / "open_clip_model.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    with torch.no_grad():
        image = preprocess(
            Image.open(demo.bids_dir / "stimuli" / "images" / "stim0001.png")
        ).unsqueeze(0)
        embedding = model.encode_image(image)
    assert embedding.shape == (1, 64) and torch.isfinite(embedding).all()
    assert "RANDOM" in (demo.image_model_dir / "README.md").read_text()
    assert demo.image_model_spec == f"randomclip=openclip:{demo.image_model_dir}"
