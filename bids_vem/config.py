# Longer than 500 lines: every option of the app is declared here, one field each (the point of the module).
"""RunConfig: every setting of a bids_vem run, declared once, in sections.

Each field of a section below is the whole declaration of one option: its default, help
text, command-line flags, choices and checks (:func:`bids_vem.settings.setting`). The click
command, the ``--config-file`` loader, the Boutiques descriptor and the JSON that workflow
steps receive are all generated from these fields; validation happens once, here. To add
an option, add a field to the section it belongs to (``docs/developing.md``).

One immutable :class:`RunConfig` is built by the CLI (or by a test with
:meth:`RunConfig.create`) and passed down; nothing in bids_vem reads global settings. It is
saved beside the outputs as TOML (``logs/config-<run id>.toml``) and read back with
``--config-file``. Field names are unique across sections, so every setting is also
readable flat, as ``config.delays`` (a property generated for each field).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bids_vem import option_values as values
from bids_vem._utils import LABEL
from bids_vem.errors import UsageError
from bids_vem.settings import Section, Setting, declared, setting

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "DEFAULT_ALPHAS",
    "DEFAULT_SPACE",
    "SECTIONS",
    "AlignmentSettings",
    "AnalysisSettings",
    "CaptioningSettings",
    "EvaluationSettings",
    "ExecutionSettings",
    "FeatureSettings",
    "InputSettings",
    "ModelSettings",
    "OutputSettings",
    "RunConfig",
    "check_setting",
    "load_config_file",
    "setting_choices",
    "setting_default",
    "option_name",
]

DEFAULT_SPACE = "MNI152NLin2009cAsym"
#: 10^-2 .. 10^12 in half decades: wide enough that few voxels select an edge value
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 12, 29))


def _floats(values_: tuple, option: str) -> tuple[float, ...]:
    return tuple(float(v) for v in values_) or DEFAULT_ALPHAS


def _work_dir(value: Path | None, option: str) -> Path:
    return Path.cwd() / "work" if value is None else Path(value).expanduser().absolute()


@dataclass(frozen=True)
class InputSettings(Section):
    """What data: participants, sessions, tasks, the BOLD space, events and captions."""

    NAME = "inputs"

    participant_label: tuple[str, ...] = setting(
        (),
        help="Participant label(s), with or without 'sub-', or @FILE with one label per line. "
        "Default: all.",
        flags=("--participant-label", "--participant_label"),
        kind="list",
        from_cli=values.labels("sub"),
    )
    session_label: tuple[str, ...] = setting(
        (),
        help="Session label(s) to analyse. Default: all sessions, pooled.",
        flags=("--session-label", "--session_label", "--session-id"),
        kind="list",
        list_aliases=("--session_id",),
        from_cli=values.labels("ses"),
    )
    task: tuple[str, ...] = setting(
        (),
        help="Task label(s). Default: every task with stimuli.",
        flags=("--task", "--task-id"),
        kind="list",
        list_aliases=("--task_id",),
        from_cli=values.labels("task"),
    )
    space: str = setting(
        DEFAULT_SPACE,
        help="Output space of the preprocessed BOLD (fMRIPrep's space- entity, refined as "
        "MNI152NLin2009cAsym:res-2). Surfaces: fsaverage, fsaverage5, fsaverage6, fsnative "
        "(GIFTI hemisphere pairs) or fsLR (CIFTI grayordinates); maps are written as GIFTI or "
        "CIFTI.",
        flags=("--space",),
    )
    derivatives: tuple[tuple[str, Path], ...] = setting(
        (),
        help="Preprocessed derivatives (fMRIPrep). Default: every dataset under "
        "BIDS_DIR/derivatives.",
        flags=("-d", "--derivatives"),
        kind="list",
        metavar="[NAME=]PATH",
        inline_single=True,
        from_cli=values.derivatives,
    )
    bids_filters: dict = setting(
        {},
        help='JSON of entity filters per query, as fMRIPrep: {"bold": {"session": "1"}}.',
        flags=("--bids-filter-file", "--bids_filter_file"),
        type="file",
        cli_default=None,
        from_cli=values.filter_file,
    )
    stim_column: str = setting(
        "stim_file",
        help="events.tsv column naming the stimulus file, relative to BIDS_DIR/stimuli. When "
        "stim_file is absent: condition, file_path, stimulus, stimulus_name or ImgName.",
        flags=("--stim-column", "--stim_column"),
    )
    transcripts: Path | None = setting(
        None,
        help="Word timings of stories: <story>.TextGrid (Praat, word tier), <story>/align.json "
        "(Gentle) or <story>.tsv (onset, duration, word). A run's story is its task label "
        "(runs without events.tsv: Lebel et al.) or its events' stimulus name (Narratives).",
        flags=("--transcripts",),
        type="dir",
    )
    pool_tasks: bool = setting(
        False,
        help="Fit one model across the selected tasks (one story per task), each run a "
        "cross-validation unit; the maps are named task-pooled.",
        flags=("--pool-tasks",),
        kind="flag",
    )
    stimuli_dir: Path | None = setting(
        None,
        help="Stimuli kept outside BIDS_DIR (BOLD5000, THINGS, BOLD Moments), searched before "
        "BIDS_DIR/stimuli: by relative path, then by unique file name in its subfolders.",
        flags=("--stimuli-dir",),
        type="dir",
    )
    captions: Path | None = setting(
        None,
        help="Human captions: a TSV with columns stim_file and caption (several rows per "
        "stimulus are averaged), or a JSON object of stimulus -> captions (BOLD Moments).",
        flags=("--captions",),
        type="file",
    )

    def run_query(self) -> dict[str, Any]:
        """Keyword arguments of :func:`bids_vem.inputs.layout.collect_runs_report`."""
        names = ("participant_label", "session_label", "task", "space", "bids_filters")
        return {name: getattr(self, name) for name in (*names, "stim_column", "transcripts")}


@dataclass(frozen=True)
class ModelSettings(Section):
    """Which models: the feature spaces, the captioner, and where their weights are."""

    NAME = "models"

    text_encoders: tuple[str, ...] = setting(
        (),
        help="Text feature space from the captions, e.g. sentence:/models/all-MiniLM-L6-v2 "
        "(repeatable).",
        flags=("--text-encoder", "--text_encoder"),
        kind="list",
        metavar="[NAME=]SPEC",
        from_cli=values.absolute_specs,
    )
    image_encoders: tuple[str, ...] = setting(
        (),
        help="Image feature space, e.g. openclip:ViT-B-32@/models/vit-b-32.safetensors "
        "(repeatable).",
        flags=("--image-encoder", "--image_encoder"),
        kind="list",
        metavar="[NAME=]SPEC",
        from_cli=values.absolute_specs,
    )
    captioner: str | None = setting(
        None,
        help="Vision-language model that captions the images, e.g. hf:/models/blip-large "
        "(human captions from --captions win unless --recaption).",
        flags=("--captioner",),
        metavar="[NAME=]SPEC",
        from_cli=values.absolute_specs,
    )
    allow_downloads: bool = setting(
        False,
        help="Let missing model weights be downloaded from the Hugging Face hub "
        "(default: offline).",
        flags=("--allow-downloads",),
        kind="flag",
    )


@dataclass(frozen=True)
class CaptioningSettings(Section):
    """How the captioner captions the images (a step's input: decides its captions)."""

    NAME = "captioning"

    caption_prompt: str | None = setting(
        None,
        help="Instruction for chat VLMs. Default: a request for a detailed description of the "
        "scene.",
        flags=("--caption-prompt", "--caption_prompt"),
        metavar="TEXT",
    )
    captions_per_image: int = setting(
        1,
        help="Captions generated per image (averaged in embedding space).",
        flags=("--captions-per-image", "--captions_per_image"),
        type="int",
        minimum=1,
    )
    caption_max_tokens: int = setting(
        60,
        help="Longest generated caption, in tokens.",
        flags=("--caption-max-tokens",),
        type="int",
        minimum=1,
    )
    recaption: bool = setting(
        False,
        help="Caption every image with --captioner, even those with human captions.",
        flags=("--recaption",),
        kind="flag",
    )


@dataclass(frozen=True)
class FeatureSettings(Section):
    """How stimuli become features (a step's input: decides the numbers)."""

    NAME = "features"

    frame_rate: float = setting(
        15.0,
        help="Frames per second sampled from video stimuli.",
        flags=("--frame-rate", "--frame_rate"),
        type="float",
        minimum=0,
        min_open=True,
    )
    context_words: int = setting(
        20,
        help="Words of context of a story word when it is embedded (before it, or on each "
        "side with --context symmetric).",
        flags=("--context-words", "--context_words"),
        type="int",
        minimum=0,
    )
    context: str = setting(
        "causal",
        help="Which words give a story word its context: the words before it (causal, as a "
        "listener hears them; Huth lab practice) or those on each side (symmetric, Tang et "
        "al. 2023; future words then enter the predictors).",
        flags=("--context",),
        choices=("causal", "symmetric"),
    )


@dataclass(frozen=True)
class EvaluationSettings(Section):
    """The encoding model and how it is scored (a step's input: decides the maps)."""

    NAME = "evaluation"

    delays: tuple[int, ...] = setting(
        (1, 2, 3, 4),
        help="FIR delays in TRs.",
        flags=("--delays",),
        kind="list",
        type="int",
        checks=(
            (
                lambda d: bool(d) and all(int(x) >= 0 for x in d),
                "must be non-negative integers (TRs)",
            ),
        ),
    )
    alphas: tuple[float, ...] = setting(
        DEFAULT_ALPHAS,
        help="Ridge penalties. Default: 29 values from 1e-2 to 1e12 (half decades).",
        flags=("--alphas",),
        kind="list",
        type="float",
        cli_default=(),
        show_default=False,
        from_cli=_floats,
        checks=(
            (
                lambda a: bool(a) and all(np.isfinite(v) and v > 0 for v in a),
                "must be positive and finite",
            ),
        ),
    )
    confounds: tuple[str, ...] = setting(
        (),
        help="Confound columns of fMRIPrep's confounds TSV to regress out "
        "(e.g. trans_x ... rot_z).",
        flags=("--confounds",),
        kind="list",
    )
    test_runs: tuple[str, ...] = setting(
        (),
        help="Test runs: run labels (2, run-2), BIDS run names, ses-LABEL for a whole "
        "session or task-LABEL for a whole task (with --pool-tasks: a repeated test story). Penalties are chosen by leave-one-run-out CV on the other runs and scores "
        "computed on these only. Default: nested leave-one-run-out over all runs.",
        flags=("--test-runs", "--test_runs"),
        kind="list",
        metavar="LABEL",
    )
    average_test_repeats: bool = setting(
        False,
        help="Average the test runs that show the same stimuli at the same onsets (repeated "
        "validation runs) before scoring.",
        flags=("--average-test-repeats",),
        kind="flag",
    )
    cv_groups: str = setting(
        "auto",
        help="What a cross-validation fold holds out: runs, sessions, or unique stimuli (the "
        "samples a held-out stimulus shaped are dropped from training). auto: stimuli when a "
        "stimulus is shown in more than one run, else runs.",
        flags=("--cv-groups",),
        choices=("auto", "run", "session", "stimulus"),
    )
    test_stimuli: str | None = setting(
        None,
        help="Explicit test stimuli: a text file of stimulus names (one per line, as the "
        "events name them), or COLUMN=VALUE selecting the events whose column has that value "
        "(THINGS: trial_type=test). Penalties by stimulus-disjoint CV on the other stimuli.",
        flags=("--test-stimuli",),
        metavar="FILE|COLUMN=VALUE",
    )
    permutations: int = setting(
        1000,
        help="Permutations of the null of each voxel's held-out r (stat-p, FDR stat-q and "
        "family-wise stat-pfwe maps): predictions circularly shifted against the data "
        "(time courses) or permuted among test stimuli (trial-wise). 0: none.",
        flags=("--permutations",),
        type="int",
        minimum=0,
    )
    high_pass: float = setting(
        0.01,
        help="Cosine high-pass cutoff in Hz applied to the BOLD of continuous designs "
        "(nilearn signal.clean); 0: linear detrending only.",
        flags=("--high-pass",),
        type="float",
        minimum=0,
    )
    confound_regression: str = setting(
        "bold-and-design",
        help="Where the confounds, trend and high-pass drifts are regressed out of continuous "
        "designs. bold-and-design: from the BOLD and, projected, from the design too (the "
        "weights of one model with those regressors unpenalised: a confound that tracks the "
        "stimulus, such as stimulus-locked motion, does not bias them); bold: from the BOLD "
        "only.",
        flags=("--confound-regression",),
        choices=("bold-and-design", "bold"),
    )
    word_rate: str = setting(
        "regress",
        help="Stories: Lanczos resampling sums the features of the words in each TR, so their "
        "magnitude follows the word rate. regress: the word rate (words per TR, resampled "
        "alike, at the FIR delays) is projected out of the BOLD and the design; none: kept.",
        flags=("--word-rate",),
        choices=("regress", "none"),
    )
    delays_seconds: tuple[float, ...] = setting(
        (),
        help="FIR delays in seconds (rounded to TRs of each run group), instead of --delays.",
        flags=("--delays-seconds",),
        kind="list",
        type="float",
        checks=((lambda d: all(float(x) >= 0 for x in d), "must be non-negative seconds"),),
    )
    design: str | None = setting(
        None,
        help="continuous: features on the TR grid with FIR delays (movies, stories, blocks); "
        "trialwise: one response per trial by least-squares-separate, features regressed on "
        "them (event-related designs, NSD). Default: continuous, trialwise with --betas.",
        flags=("--design",),
        choices=("continuous", "trialwise"),
        show_default=False,
    )
    hrf_model: str = setting(
        "glover",
        help="HRF of the single-trial model (--design trialwise; nilearn).",
        flags=("--hrf-model",),
        choices=("glover", "spm"),
    )
    betas: Path | None = setting(
        None,
        help="Folder of single-trial betas to use instead of estimating them: per participant "
        "and task a sub-<label>[_ses-<label>]_task-<label>[...]_betas.nii.gz with a .tsv beside "
        "it naming each volume's stimulus (stim_file; optional session, run); or one image per "
        "run (THINGS-fMRI, with _conditions.tsv); or one per session: GLMsingle's output folders "
        "(TYPED_FITHRF_GLMDENOISE_RR.npy or .mat, with DESIGNINFO) or NSD's "
        "betas_sessionNN.nii.gz, whose volumes are the session's stimulus trials in order.",
        flags=("--betas",),
        type="dir",
    )

    def __post_init__(self) -> None:
        if self.design is None:  # the default follows --betas
            object.__setattr__(self, "design", "trialwise" if self.betas else "continuous")
        super().__post_init__()
        if self.average_test_repeats and not self.test_runs:
            raise UsageError(
                f"{option_name('average_test_repeats')} needs {option_name('test_runs')} "
                "(the repeated test runs)"
            )
        if self.design == "continuous" and self.betas is not None:
            raise UsageError(
                f"{option_name('betas')} gives single-trial responses: use "
                f"{option_name('design')} trialwise"
            )
        if self.test_stimuli and self.test_runs:
            raise UsageError(
                f"{option_name('test_stimuli')} and {option_name('test_runs')} exclude each other"
            )
        if self.design == "trialwise" and self.test_runs:
            raise UsageError(
                f"{option_name('test_runs')} is not available with {option_name('design')} "
                f"trialwise: the trial-wise model is cross-validated by run or session "
                f"({option_name('cv_groups')})"
            )

    @property
    def evaluation_mode(self) -> str:
        """``loro``, ``test-runs`` or ``test-runs-averaged`` (``EncodingResult.evaluation``)."""
        if not self.test_runs:
            return "loro"
        return "test-runs-averaged" if self.average_test_repeats else "test-runs"


@dataclass(frozen=True)
class OutputSettings(Section):
    """What is written besides the stat maps."""

    NAME = "outputs"

    save_weights: bool = setting(
        False,
        help="Write each encoding model's weights to OUTPUT_DIR/models (.npy, features x voxels).",
        flags=("--save-weights",),
        kind="flag",
    )
    rois: tuple[tuple[str, Path], ...] = setting(
        (),
        help="Region-of-interest mask (NIfTI in the BOLD space, or resampled to it): mean r "
        "per feature space in each region goes into the summaries and the report (repeatable).",
        flags=("--roi",),
        kind="list",
        metavar="[NAME=]MASK",
        from_cli=values.rois,
    )
    atlases: tuple[str, ...] = setting(
        (),
        help="Cortical parcellation(s) on fsLR 32k shipped with brainspace (Schaefer 2018, Vos "
        "de Wael 2020, Mesulam 1998): r summarised parcel by parcel for --space fsLR maps, in "
        "..._atlas-<name>_parcels.tsv (repeatable).",
        flags=("--atlas",),
        kind="list",
        choices=(
            "schaefer100",
            "schaefer200",
            "schaefer300",
            "schaefer400",
            "schaefer1000",
            "vosdewael100",
            "vosdewael200",
            "vosdewael300",
            "vosdewael400",
            "mesulam",
        ),  # fmt: skip
    )


def _joint_sets(value: tuple[str, ...]) -> bool:
    sets = [[n.strip() for n in item.split(",")] for item in value]
    return all(2 <= len(names) <= 4 and len(set(names)) == len(names) for names in sets) and all(
        LABEL.fullmatch(n) for names in sets for n in names
    )


def _task_pairs(value: tuple[str, ...]) -> bool:
    pairs = [[t.strip() for t in item.split(":")] for item in value]
    return all(
        len(tasks) == 2 and tasks[0] != tasks[1] and all(LABEL.fullmatch(t) for t in tasks)
        for tasks in pairs
    )


@dataclass(frozen=True)
class AnalysisSettings(Section):
    """The papers' analyses beyond one encoding model per feature space."""

    NAME = "analyses"

    joint: tuple[str, ...] = setting(
        (),
        help="Banded ridge over several feature spaces (one penalty per space per voxel; "
        "himalaya) with variance partitioning: the joint model's R^2 split among the spaces, "
        "and the variance unique to each and shared, from a model of every subset on the same "
        "nested folds (repeatable; 2 to 4 feature-space names, comma-separated).",
        flags=("--joint",),
        kind="list",
        metavar="NAME,NAME[,...]",
        checks=((_joint_sets, "must be 2 to 4 distinct feature-space names, comma-separated"),),
    )
    joint_iterations: int = setting(
        32,
        help="Band-weight samples of the banded ridge's random search (--joint).",
        flags=("--joint-iterations",),
        type="int",
        minimum=1,
    )

    decode: tuple[str, ...] = setting(
        (),
        help="Caption decoding (Doerig et al. 2025): ridge from each stimulus's response "
        "pattern to its caption embedding in this text feature space, in folds of stimuli; each "
        "decoded embedding ranks its own caption among its fold's held-out captions (and "
        "--decode-corpus): top-1, top-5 and mean rank against chance, with a permutation test. "
        "Single-trial responses as --design trialwise makes them (repeatable).",
        flags=("--decode",),
        kind="list",
        metavar="NAME",
    )
    decode_permutations: int = setting(
        100,
        help="Permutations of the --decode null: each pairs the responses with shuffled "
        "captions and repeats the whole cross-validation, penalty choice included. 0: none.",
        flags=("--decode-permutations",),
        type="int",
        minimum=0,
    )
    decode_corpus: Path | None = setting(
        None,
        help="More candidate captions for --decode, embedded by the same text encoder: a COCO "
        "captions JSON, a TSV with a caption column, or a text file of one caption per line.",
        flags=("--decode-corpus",),
        type="file",
    )

    rsa: bool = setting(
        False,
        help="Representational similarity analysis: brain RDMs of the mask and each --roi from "
        "single-trial response patterns (cross-validated Euclidean distances when every "
        "stimulus is shown twice or more), compared with every feature space's RDM by "
        "Spearman's rho and Kendall's tau-a with permutation tests; noise ceilings across "
        "participants at the group level.",
        flags=("--rsa",),
        kind="flag",
    )
    rsa_radius: float = setting(
        6.0,
        help="Searchlight sphere radius in mm for --rsa (Spearman's rho of each sphere's RDM "
        "with each feature space's, stat-rsarho maps); 0: no searchlight.",
        flags=("--rsa-radius",),
        type="float",
        minimum=0,
    )

    transfer: tuple[str, ...] = setting(
        (),
        help="Cross-modal transfer (Tang et al. 2023): encoding models trained on one task's "
        "runs predict another task's runs, both directions, for every pair of a feature space "
        "of each task's stimuli in one shared space (the text and image towers of one model: "
        "bridgetower, openclip; layer to layer) and, with --transfer-corpus, every pair of "
        "separate text and image encoders through linear maps (the unimodal control); "
        "per-voxel transfer r with block-permutation p and FDR q (repeatable).",
        flags=("--transfer",),
        kind="list",
        metavar="SOURCE_TASK:TARGET_TASK",
        checks=((_task_pairs, "must be two different task labels, SOURCE_TASK:TARGET_TASK"),),
    )
    transfer_corpus: Path | None = setting(
        None,
        help="Image-caption corpus for --transfer's unimodal control (a folder with "
        "captions.tsv, or COCO annotations/captions_*.json beside the images, as "
        "--align-corpus): ridge maps between each separate text and image encoder are fitted "
        "on its images and captions (Flickr30K in Tang et al.).",
        flags=("--transfer-corpus",),
        type="dir",
    )
    transfer_permutations: int = setting(
        200,
        help="Permutations of --transfer's null: the prediction of each target run shuffled in "
        "blocks of 10 TRs (keeping autocorrelation). 0: none.",
        flags=("--transfer-permutations",),
        type="int",
        minimum=0,
    )

    @property
    def transfer_pairs(self) -> tuple[tuple[str, str], ...]:
        """Each ``--transfer`` value as (source task, target task)."""
        return tuple(tuple(t.strip() for t in item.split(":")) for item in self.transfer)

    @property
    def joint_sets(self) -> tuple[tuple[str, ...], ...]:
        """Each ``--joint`` value as its feature-space names."""
        return tuple(tuple(n.strip() for n in item.split(",")) for item in self.joint)


@dataclass(frozen=True)
class AlignmentSettings(Section):
    """LLM-VEM: the image encoder aligned to caption embeddings (``--align-*``).

    The training fields (``align_epochs`` ...) feed :class:`bids_vem.alignment.train.AlignConfig`
    through :meth:`train_settings`: their names there are these less ``align_``, except where
    ``TRAIN_NAMES`` says otherwise.
    """

    NAME = "alignment"
    #: AlignConfig's names for the settings whose name there is not the field's less "align_"
    TRAIN_NAMES = {"align_weight": "alignment_weight", "align_captions": "caption_sampling"}

    align: bool = setting(
        False,
        help="Align an open_clip image encoder to the caption embeddings (LLM-VEM) and fit its "
        "features as one more feature space.",
        flags=("--align",),
        off_flag="--no-align",
        kind="flag",
    )
    align_base: str | None = setting(
        None,
        help="Image feature space whose encoder is aligned. Default: the first open_clip one.",
        flags=("--align-base",),
        metavar="NAME",
    )
    align_target: str | None = setting(
        None,
        help="Text feature space whose caption embeddings are the targets. Default: the first one.",
        flags=("--align-target",),
        metavar="NAME",
    )
    align_name: str = setting(
        "aligned",
        help="Name of the aligned feature space (desc- of its maps).",
        flags=("--align-name",),
        checks=((lambda v: bool(LABEL.match(v)), "must be letters and digits"),),
    )
    align_corpus: Path | None = setting(
        None,
        help="Image-caption corpus to align on instead of the participants' stimuli: a folder "
        "with captions.tsv (stim_file, caption) or COCO annotations/captions_*.json.",
        flags=("--align-corpus",),
        type="dir",
    )
    align_folds: int = setting(
        0,
        help="Groups of runs whose stimuli an alignment holds out, so that no test run's images "
        "are trained on (0: one per run, as the encoding CV). Fewer folds train fewer "
        "alignments.",
        flags=("--align-folds",),
        type="int",
        minimum=0,
        checks=((lambda v: v != 1, "must be 0 (one per run) or at least 2"),),
    )
    align_epochs: int = setting(
        10,
        help="Alignment epochs (early stopping on a validation slice).",
        flags=("--align-epochs",),
        type="int",
        minimum=1,
    )
    align_lr: float = setting(
        1e-5,
        help="Alignment learning rate (AdamW, warmup + cosine).",
        flags=("--align-lr",),
        type="float",
        minimum=0,
        min_open=True,
    )
    align_temperature_lr: float = setting(
        1e-3,
        help="Learning rate of InfoNCE's learnable temperature (AdamW, no weight decay, same "
        "schedule). It has its own: at the image tower's rate it would stay at 0.07. 0 fixes "
        "the temperature at 0.07.",
        flags=("--align-temperature-lr",),
        type="float",
        minimum=0,
    )
    align_batch_size: int = setting(
        256,
        help="Images per alignment step (in-batch negatives of InfoNCE).",
        flags=("--align-batch-size",),
        type="int",
        minimum=2,
    )
    align_unfreeze_blocks: int = setting(
        2,
        help="Last blocks of the image tower that train (-1: all).",
        flags=("--align-unfreeze-blocks",),
        type="int",
        minimum=-1,
    )
    align_loss: str = setting(
        "infonce",
        help="infonce: CLIP's symmetric contrastive loss, where images with the same caption "
        "(cosine > 0.99) are not each other's negatives; cosine: regression to the caption "
        "embedding (Doerig et al.).",
        flags=("--align-loss",),
        choices=("infonce", "cosine"),
    )
    align_weight: float = setting(
        1.0,
        help="Weight of the alignment loss against preserving the original image features "
        "(LLM-VEM reports a small weight working best, e.g. 0.1).",
        flags=("--align-weight",),
        type="float",
        minimum=0,
        min_open=True,
        maximum=1,
    )
    align_method: str = setting(
        "partial",
        help="partial: unfreeze the last blocks; lora: low-rank adapters on every block's "
        "attention and MLP.",
        flags=("--align-method",),
        choices=("partial", "lora"),
    )
    align_lora_rank: int = setting(
        8,
        help="Rank of the LoRA adapters (--align-method lora).",
        flags=("--align-lora-rank",),
        type="int",
        minimum=1,
    )
    align_captions: str = setting(
        "mean",
        help="Several captions per image: target their mean embedding, or sample one per step.",
        flags=("--align-captions",),
        choices=("mean", "sample"),
    )

    @classmethod
    def train_fields(cls) -> dict[str, str]:
        """AlignConfig's name of each training setting -> the setting's field name."""
        return {
            cls.TRAIN_NAMES.get(f.name, f.name.removeprefix("align_")): f.name
            for f, _ in declared(cls)
            if f.name not in _ALIGN_PLAN_FIELDS
        }

    def train_settings(self) -> dict[str, Any]:
        """The training hyperparameters as keyword arguments of ``AlignConfig``."""
        return {name: getattr(self, field) for name, field in self.train_fields().items()}


#: alignment settings that plan the alignment rather than train it
_ALIGN_PLAN_FIELDS = frozenset(
    {"align", "align_base", "align_target", "align_name", "align_corpus", "align_folds"}
)


@dataclass(frozen=True)
class ExecutionSettings(Section):
    """Where and how the work runs: devices, folders, processes, memory, logging."""

    NAME = "execution"

    device: str = setting(
        "auto",
        help="Torch device: auto, cpu, cuda, cuda:N.",
        flags=("--device",),
    )
    model_dirs: tuple[Path, ...] = setting(
        (),
        help="Folder(s) searched for model weights before the Hugging Face cache.",
        flags=("--model-dir", "--model_dir"),
        kind="list",
        type="path",
        from_cli=values.model_dirs,
    )
    work_dir: Path | None = setting(
        None,
        help="Work directory (cache; rerun reuses it). Default: ./work",
        flags=("-w", "--work-dir", "--work_dir"),
        type="dir",
        from_cli=_work_dir,
    )
    nprocs: int | None = setting(
        None,
        help="CPUs for the whole run (nipype MultiProc). Default: all available.",
        flags=("--nprocs", "--n-cpus", "--n_cpus"),
        type="int",
        minimum=1,
    )
    omp_nthreads: int | None = setting(
        None,
        help="Threads of one step (torch, BLAS). Default: min(nprocs - 1, 8), at least 1.",
        flags=("--omp-nthreads", "--omp_nthreads"),
        type="int",
        minimum=1,
    )
    mem_mb: int | None = setting(
        None,
        help="Memory budget in MB, or with a unit: 16GB, 16GiB. Encoding models read the BOLD in voxel "
        "chunks sized to fit it.",
        flags=("--mem", "--mem-mb", "--mem_mb"),
        metavar="SIZE",
        from_cli=values.parse_mem,
    )
    plugin: dict = setting(
        {},
        help="nipype plugin YAML (plugin: + plugin_args:), e.g. for SLURM.",
        flags=("--use-plugin", "--use_plugin"),
        type="file",
        cli_default=None,
        from_cli=values.plugin_file,
    )
    skip_bids_validation: bool = setting(
        False,
        help="Do not validate BIDS_DIR with bids-validator-deno.",
        flags=("--skip-bids-validation", "--skip_bids_validation"),
        kind="flag",
    )
    feature_cache: bool = setting(
        True,
        help="Reuse features cached in the work directory.",
        flags=("--feature-cache",),
        off_flag="--no-feature-cache",
        kind="flag",
    )
    stop_on_first_crash: bool = setting(
        False,
        help="Stop at the first failed step.",
        flags=("--stop-on-first-crash",),
        kind="flag",
    )
    clean_workdir: bool = setting(
        False,
        help="Empty the work directory before running.",
        flags=("--clean-workdir",),
        kind="flag",
    )
    random_seed: int = setting(
        0,
        help="Seed of every random step.",
        flags=("--random-seed", "--random_seed"),
        type="int",
    )
    verbosity: int = setting(
        0,
        help="More log output (-vv: tracebacks too).",
        flags=("-v", "--verbose"),
        kind="count",
    )

    def __post_init__(self) -> None:
        # fMRIPrep's defaults: every CPU we may use, steps of up to 8 threads
        if self.nprocs is None:
            object.__setattr__(self, "nprocs", values.available_cpus())
        if self.omp_nthreads is None:
            object.__setattr__(self, "omp_nthreads", max(1, min(self.nprocs - 1, 8)))
        super().__post_init__()
        if self.omp_nthreads > self.nprocs:
            raise UsageError(
                f"{option_name('omp_nthreads')} {self.omp_nthreads} exceeds "
                f"{option_name('nprocs')} {self.nprocs}"
            )


#: the sections of a RunConfig, in the order of the command line's help
SECTIONS: dict[str, type[Section]] = {
    cls.NAME: cls
    for cls in (
        InputSettings,
        ModelSettings,
        CaptioningSettings,
        FeatureSettings,
        EvaluationSettings,
        OutputSettings,
        AnalysisSettings,
        AlignmentSettings,
        ExecutionSettings,
    )
}
#: field name -> its section's name (field names are unique across sections)
_SECTION_OF: dict[str, str] = {}
for _name, _cls in SECTIONS.items():
    for _field in dataclasses.fields(_cls):
        if _field.name in _SECTION_OF:  # pragma: no cover - a declaration error
            raise TypeError(f"setting {_field.name} is declared in two sections")
        _SECTION_OF[_field.name] = _name


#: field name -> (its dataclass field, its declaration)
_DECLARED: dict[str, tuple[dataclasses.Field, Setting]] = {
    f.name: (f, declaration)
    for section in SECTIONS.values()
    for f, declaration in declared(section)
}


def option_name(name: str) -> str:
    """How messages name a setting: its flag (``delays`` -> ``--delays``).

    Core code names settings by field; the declaration holds the flag, so renaming an option
    changes one place.
    """
    return _DECLARED[name][1].option or name if name in _DECLARED else name


def setting_default(name: str) -> Any:
    """The declared default of the setting ``name`` (for core functions' keyword defaults)."""
    f = _DECLARED[name][0]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def setting_choices(name: str) -> tuple[str, ...]:
    """The values the setting ``name`` may take (empty: not a choice)."""
    return _DECLARED[name][1].choices


def check_setting(name: str, value: Any) -> None:
    """Raise UsageError (64) when ``value`` is not valid for the setting ``name``.

    For core functions called outside a RunConfig (the library API): the same check as
    the section's, with the same message.
    """
    _DECLARED[name][1].check(value, name)


@dataclass(frozen=True)
class RunConfig:
    """All settings of one run: the three positional arguments and the sections."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    inputs: InputSettings = field(default_factory=InputSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    captioning: CaptioningSettings = field(default_factory=CaptioningSettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    outputs: OutputSettings = field(default_factory=OutputSettings)
    analyses: AnalysisSettings = field(default_factory=AnalysisSettings)
    alignment: AlignmentSettings = field(default_factory=AlignmentSettings)
    execution: ExecutionSettings = field(default_factory=ExecutionSettings)

    def __post_init__(self) -> None:
        if self.analysis_level not in ("participant", "group"):
            raise UsageError(
                f"analysis level must be participant or group, got {self.analysis_level!r}"
            )
        if (
            self.alignment.align
            and self.evaluation.design == "trialwise"
            and self.alignment.align_corpus is None
        ):
            raise UsageError(
                f"{option_name('align')} with {option_name('design')} trialwise needs "
                f"{option_name('align_corpus')} (the trial-wise model has no per-fold aligned "
                "features)"
            )

    @classmethod
    def create(
        cls, bids_dir: Path, output_dir: Path, analysis_level: str, **settings: Any
    ) -> RunConfig:
        """A RunConfig from flat settings (``delays=(2, 3), space="T1w"``), each to its section."""
        unknown = sorted(set(settings) - set(_SECTION_OF))
        if unknown:
            raise UsageError(f"unknown setting(s) {', '.join(unknown)}")
        sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for key, value in settings.items():
            sections[_SECTION_OF[key]][key] = value
        return cls(
            bids_dir=Path(bids_dir),
            output_dir=Path(output_dir),
            analysis_level=analysis_level,
            **{name: SECTIONS[name](**kwargs) for name, kwargs in sections.items()},
        )

    @property
    def resolved_work_dir(self) -> Path:
        """The work directory (default ``./work``, as fMRIPrep)."""
        work_dir = self.execution.work_dir
        return work_dir if work_dir is not None else Path.cwd() / "work"

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with flat settings changed (``config.replace(delays=(1,))``)."""
        top = {
            k: changes.pop(k) for k in ("bids_dir", "output_dir", "analysis_level") if k in changes
        }
        by_section: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            if key not in _SECTION_OF:
                raise UsageError(f"unknown setting {key}")
            by_section.setdefault(_SECTION_OF[key], {})[key] = value
        for name, section_changes in by_section.items():
            top[name] = dataclasses.replace(getattr(self, name), **section_changes)
        return dataclasses.replace(self, **top)

    def to_toml_dict(self) -> dict:
        """A TOML-ready dictionary: one table per section (paths as strings, None left out)."""
        out: dict = {
            "bids_dir": str(self.bids_dir),
            "output_dir": str(self.output_dir),
            "analysis_level": self.analysis_level,
        }
        for name in SECTIONS:
            table = {k: v for k, v in getattr(self, name).to_dict().items() if v is not None}
            out[name] = table
        return out

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps({"bids_vem": self.to_toml_dict()})


def _flat_property(section: str, name: str) -> property:
    def get(self: RunConfig) -> Any:
        return getattr(getattr(self, section), name)

    get.__doc__ = f"``{section}.{name}``"
    return property(get)


# every setting also reads flat: config.delays is config.evaluation.delays
for _name, _section in _SECTION_OF.items():
    setattr(RunConfig, _name, _flat_property(_section, _name))


def load_config_file(path: Path) -> dict:
    """Read a TOML config file into flat keyword arguments of :meth:`RunConfig.create`.

    The file holds a ``[bids_vem]`` table (as written by :meth:`RunConfig.to_toml`, one
    sub-table per section) or the settings at top level, in sections or flat. Unknown
    keys are a usage error that names them.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as err:
        raise UsageError(f"--config-file {path}: no such file") from err
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"--config-file {path}: not valid TOML ({err})") from err
    data = data.get("bids_vem", data)
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):
            flat.update({(k, key): v for k, v in value.items()})
        else:
            flat[(key, None)] = value
    known = set(_SECTION_OF) | {"bids_dir", "output_dir", "analysis_level"}
    unknown = sorted(k for k, _ in flat if k not in known)
    if unknown:
        raise UsageError(f"--config-file {path}: unknown setting(s) {', '.join(unknown)}")
    out: dict = {}
    for (key, _), value in flat.items():
        if key in _SECTION_OF:
            section = SECTIONS[_SECTION_OF[key]]
            value = section.typed(key, value)
        elif key in ("bids_dir", "output_dir"):
            value = Path(value)
        out[key] = value
    return out
