"""Generate the demo: a small BIDS dataset with fMRIPrep-style derivatives and its ground truth.

Layout under ``root``::

    ds/                                 raw BIDS dataset (images and captions under stimuli/)
    ds/derivatives/bids_vem_demo-fmriprep/  preproc BOLD, brain masks, confounds (fMRIPrep names)
    models/randomclip-vit-tiny/         a tiny random-weight open_clip model (local-dir form)
    ground_truth/                       true features, weights, voxel classes and noise

The same seed gives the same bytes in every file.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bids_vem.demo.bold import SimulatedRun, simulate_run
from bids_vem.demo.caption_embedding import embed_captions, minilm_path
from bids_vem.demo.dataset_files import (
    FMRIPREP_DIRNAME,
    SPACE,
    write_captions_tsv,
    write_dataset_metadata,
    write_run_files,
    write_shared_truth,
    write_subject_truth,
)
from bids_vem.demo.events import schedule_runs
from bids_vem.demo.files import write_png
from bids_vem.demo.image_model import write_random_openclip
from bids_vem.demo.stimuli import (
    ImageAttributes,
    draw_attributes,
    draw_image,
    image_statistics,
    write_captions,
)
from bids_vem.demo.truth import (
    VOXEL_CLASSES,
    StimulusFeatures,
    draw_subject_truth,
    semantic_features,
    standardise,
)
from bids_vem.demo.volume import brain_mask, voxel_coordinates
from bids_vem.errors import OutputError, UsageError

__all__ = [
    "DemoParameters",
    "DemoPaths",
    "make_demo_dataset",
    "FMRIPREP_DIRNAME",
    "CONFOUND_COLUMNS",
    "SPACE",
]

IMAGE_MODEL_DIRNAME = "randomclip-vit-tiny"
#: the confounds whose regression helps on the demo (the simulation mixes them into the BOLD)
CONFOUND_COLUMNS = (
    "trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z", "csf", "white_matter",
)  # fmt: skip
# independent random streams, so that adding subjects changes nothing in the first ones
_STREAM_STIMULI, _STREAM_CAPTIONS, _STREAM_SUBJECT = 1, 2, 3


@dataclass(frozen=True)
class DemoParameters:
    """Settings of the simulation.

    With the defaults, a ridge model on the all-MiniLM-L6-v2 caption embeddings (FIR delays
    1-4 TRs, leave-one-run-out, motion + csf + white_matter regressed out) reaches a held-out
    correlation of about 0.45 (median) in semantic voxels and about 0 elsewhere; without the
    confound regression, about 0.3.

    Attributes
    ----------
    task : str
        BIDS task label.
    tr : float
        Repetition time (s).
    image_duration : float
        Seconds each image is shown.
    n_trials_per_run : int
    voxel_size : float
        Edge (mm) of the MNI grid: 8 mm gives about 3,600 brain voxels.
    n_semantic_components : int
        PCA components of the caption embeddings that drive semantic voxels.
    n_captions : int
        Differently worded captions per image (1-3).
    image_size : int
        Width and height of the PNG images.
    semantic_amplitude, lowlevel_amplitude : float
        Response amplitude (percent signal change) at the centre of the regions.
    noise_level : float
        Typical standard deviation (percent) of the AR(1) noise.
    noise_ar : float
        AR(1) coefficient of the noise.
    motion_scale, physiology_scale, drift_scale : float
        Size of motion artefacts, physiological signals and slow drifts.
    region_jitter : float
        Standard deviation (mm) of each subject's shift of the regions.
    baseline : float
        Typical mean intensity.
    hrf_model : str
        nilearn HRF model used to simulate.
    """

    task: str = "shapes"
    tr: float = 2.0
    image_duration: float = 3.0
    n_trials_per_run: int = 48
    voxel_size: float = 8.0
    n_semantic_components: int = 16
    n_captions: int = 3
    image_size: int = 128
    semantic_amplitude: float = 1.6
    lowlevel_amplitude: float = 1.6
    noise_level: float = 1.0
    noise_ar: float = 0.35
    motion_scale: float = 2.0
    physiology_scale: float = 1.0
    drift_scale: float = 0.6
    region_jitter: float = 3.0
    baseline: float = 1000.0
    hrf_model: str = "spm"


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo's parts are.

    Attributes
    ----------
    root : Path
    bids_dir : Path
        The raw BIDS dataset (``root/ds``).
    fmriprep_dir : Path
        Its fMRIPrep-style derivatives.
    captions_tsv : Path
        Human-style captions (``stim_file``, ``caption``), several per image.
    image_model_dir : Path
        The random-weight open_clip model (local-dir form).
    ground_truth_dir : Path
    text_model_path : Path
        The all-MiniLM-L6-v2 sentence-transformers folder used for the semantic features.
    task : str
    subjects : tuple of str
        Participant labels without ``sub-``.
    runs : tuple of str
        Run labels.
    """

    root: Path
    bids_dir: Path
    fmriprep_dir: Path
    captions_tsv: Path
    image_model_dir: Path
    ground_truth_dir: Path
    text_model_path: Path
    task: str = "shapes"
    subjects: tuple[str, ...] = field(default_factory=tuple)
    runs: tuple[str, ...] = field(default_factory=tuple)

    @property
    def text_model_spec(self) -> str:
        """bids_vem feature-space spec of the text model (``minilm=sentence:<path>``)."""
        return f"minilm=sentence:{self.text_model_path}"

    @property
    def image_model_spec(self) -> str:
        """bids_vem feature-space spec of the image model (``randomclip=openclip:<dir>``)."""
        return f"randomclip=openclip:{self.image_model_dir}"

    def bids_vem_command(self, output_dir: Path, analysis_level: str = "participant") -> list[str]:
        """The ``bids_vem`` command line that analyses the demo into ``output_dir``."""
        command = ["bids_vem", str(self.bids_dir), str(output_dir), analysis_level]
        if analysis_level == "participant":
            command += [
                "--captions", str(self.captions_tsv),
                "--text-encoder", self.text_model_spec,
                "--image-encoder", self.image_model_spec,
            ]  # fmt: skip
            for column in CONFOUND_COLUMNS:
                command += ["--confounds", column]
        return command


def _check_root(root: Path, overwrite: bool) -> None:
    owned = ("ds", "models", "ground_truth")
    if root.exists() and not root.is_dir():
        raise OutputError(f"demo root {root} exists and is not a folder")
    if root.is_dir():
        present = [name for name in owned if (root / name).exists()]
        if present and not overwrite:
            raise OutputError(
                f"demo root {root} already holds {', '.join(present)}: "
                "choose an empty folder or pass overwrite=True (--overwrite)"
            )
        for name in present:
            shutil.rmtree(root / name)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the demo root {root}: {err.strerror}") from err


def _stimulus_features(
    captions: list[list[str]], lowlevel_raw: np.ndarray, stim_files: list[str], n_components: int
) -> StimulusFeatures:
    embeddings = embed_captions(captions)
    # a few float32 ulps can differ between BLAS builds and thread counts; rounding keeps
    # the simulated data identical wherever it is generated
    embeddings = np.round(embeddings.astype(np.float32).astype(np.float64), 5)
    semantic, components, mean, scale = semantic_features(embeddings, n_components)
    return StimulusFeatures(
        stim_files=tuple(stim_files),
        caption_embeddings=embeddings,
        semantic=semantic,
        pca_components=components,
        pca_mean=mean,
        pca_scale=scale,
        lowlevel_raw=lowlevel_raw,
        lowlevel=standardise(lowlevel_raw),
    )


def _draw_stimuli(
    stimuli_dir: Path, n_stimuli: int, seed: int, params: DemoParameters
) -> tuple[list[ImageAttributes], list[str], list[list[str]], np.ndarray]:
    """Draw, write and caption the images; returns attributes, stim files, captions, statistics."""
    attributes = draw_attributes(n_stimuli, np.random.default_rng([seed, _STREAM_STIMULI]))
    caption_rng = np.random.default_rng([seed, _STREAM_CAPTIONS])
    stim_files, captions, statistics = [], [], []
    for index, attrs in enumerate(attributes, start=1):
        stim_file = f"images/stim{index:04d}.png"
        image = draw_image(attrs, params.image_size)
        write_png(stimuli_dir / stim_file, image)
        stim_files.append(stim_file)
        captions.append(write_captions(attrs, caption_rng, params.n_captions))
        statistics.append(image_statistics(image))
    return attributes, stim_files, captions, np.asarray(statistics)


def _check_counts(n_subjects: int, n_runs: int, n_stimuli: int, params: DemoParameters) -> None:
    for name, value, low, high in (
        ("n_subjects", n_subjects, 1, 99),
        ("n_runs", n_runs, 1, 99),
        ("n_stimuli", n_stimuli, 2, 9999),
        ("n_trials_per_run", params.n_trials_per_run, 1, 10_000),
    ):
        if int(value) != value or not low <= value <= high:
            raise UsageError(f"demo: {name} must be an integer from {low} to {high}, got {value!r}")
    if not params.task.isalnum():
        raise UsageError(f"demo: the task label must be letters and digits, got {params.task!r}")


def make_demo_dataset(
    root: Path,
    *,
    n_subjects: int = 2,
    n_runs: int = 4,
    n_stimuli: int = 96,
    seed: int = 0,
    parameters: DemoParameters | None = None,
    overwrite: bool = False,
    verbose: bool = False,
) -> DemoPaths:
    """Generate the demo dataset, its derivatives, an image model and the ground truth.

    Parameters
    ----------
    root : Path
        Folder to write (created); must not hold a previous demo unless ``overwrite``.
    n_subjects, n_runs, n_stimuli : int
        Participants, runs per participant, distinct images.
    seed : int
        Same seed, same bytes. Subjects use their own random streams: the first subjects
        are the same whatever ``n_subjects``.
    parameters : DemoParameters, optional
        Simulation settings (default: :class:`DemoParameters` ()).
    overwrite : bool
        Replace the ``ds``, ``models`` and ``ground_truth`` folders of a previous demo.
    verbose : bool
        Print progress.

    Returns
    -------
    DemoPaths

    Raises
    ------
    bids_vem.errors.UsageError
        A count out of range or a bad task label.
    bids_vem.errors.OutputError
        ``root`` cannot be created or holds a previous demo.
    """
    params = parameters or DemoParameters()
    _check_counts(n_subjects, n_runs, n_stimuli, params)
    started = time.perf_counter()

    def log(message: str) -> None:
        if verbose:
            print(f"[{time.perf_counter() - started:6.1f} s] {message}", flush=True)

    root = Path(root).absolute()
    _check_root(root, overwrite)
    ds = root / "ds"
    fmriprep = ds / "derivatives" / FMRIPREP_DIRNAME
    truth_dir = root / "ground_truth"
    task = params.task

    attributes, stim_files, captions, statistics = _draw_stimuli(
        ds / "stimuli", n_stimuli, seed, params
    )
    captions_tsv = write_captions_tsv(ds / "stimuli" / "captions.tsv", stim_files, captions)
    log(f"drew {n_stimuli} images with {params.n_captions} captions each")
    features = _stimulus_features(captions, statistics, stim_files, params.n_semantic_components)
    log("embedded the captions with all-MiniLM-L6-v2")

    mask_img = brain_mask(params.voxel_size)
    mask_data = np.asarray(mask_img.dataobj)
    coordinates = voxel_coordinates(mask_img)
    subjects = tuple(f"{s:02d}" for s in range(1, n_subjects + 1))
    runs = tuple(str(r) for r in range(1, n_runs + 1))
    summaries = {}
    n_volumes = 0
    for s, subject in enumerate(subjects, start=1):
        rng = np.random.default_rng([seed, _STREAM_SUBJECT, s])
        truth = draw_subject_truth(
            coordinates,
            features,
            rng,
            semantic_amplitude=params.semantic_amplitude,
            lowlevel_amplitude=params.lowlevel_amplitude,
            noise_level=params.noise_level,
            motion_scale=params.motion_scale,
            physiology_scale=params.physiology_scale,
            region_jitter=params.region_jitter,
            baseline=params.baseline,
        )
        schedule = schedule_runs(
            n_stimuli,
            n_runs,
            params.n_trials_per_run,
            rng,
            tr=params.tr,
            duration=params.image_duration,
        )
        simulated: dict[str, SimulatedRun] = {}
        for run, events in zip(runs, schedule, strict=True):
            simulated[run] = simulate_run(
                events,
                features,
                truth,
                rng,
                hrf_model=params.hrf_model,
                noise_ar=params.noise_ar,
                drift_scale=params.drift_scale,
            )
            prefix = f"sub-{subject}_task-{task}_run-{run}"
            write_run_files(
                ds, fmriprep, prefix, simulated[run], stim_files, mask_data, mask_img.affine, task
            )
        write_subject_truth(truth_dir, subject, truth, simulated, mask_data, mask_img.affine)
        n_volumes = schedule[0].n_volumes
        summaries[f"sub-{subject}"] = {
            "n_voxels": {
                name: int((truth.voxel_class == k).sum()) for k, name in VOXEL_CLASSES.items()
            },
            "semantic_shift_mm": [round(float(v), 3) for v in truth.semantic_shift],
            "lowlevel_shift_mm": [round(float(v), 3) for v in truth.lowlevel_shift],
        }
        log(f"simulated sub-{subject}: {n_runs} runs of {n_volumes} volumes")

    write_dataset_metadata(
        ds,
        fmriprep,
        subjects=subjects,
        task=task,
        tr=params.tr,
        seed=seed,
        readme_fields={
            "n_subjects": n_subjects,
            "n_stimuli": n_stimuli,
            "n_runs": n_runs,
            "n_volumes": n_volumes,
            "duration": params.image_duration,
            "n_captions": params.n_captions,
            "voxel_size": params.voxel_size,
        },
    )
    image_model_dir = write_random_openclip(root / "models" / IMAGE_MODEL_DIRNAME, seed=seed)
    write_shared_truth(
        truth_dir,
        features,
        attributes,
        {
            "seed": seed,
            "n_subjects": n_subjects,
            "n_runs": n_runs,
            "n_stimuli": n_stimuli,
            "parameters": asdict(params),
            "subjects": summaries,
        },
    )
    log(f"done in {time.perf_counter() - started:.1f} s")
    return DemoPaths(
        root=root,
        bids_dir=ds,
        fmriprep_dir=fmriprep,
        captions_tsv=captions_tsv,
        image_model_dir=image_model_dir,
        ground_truth_dir=truth_dir,
        text_model_path=minilm_path(),
        task=task,
        subjects=subjects,
        runs=runs,
    )
