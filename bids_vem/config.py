"""RunConfig: every option of a bids_vem run, typed and validated in one place.

One immutable object is built by the CLI (or by a test) and passed down; nothing in
bids_vem reads global settings. It is saved beside the outputs as TOML
(``logs/config-<run id>.toml``) and can be read back with ``--config-file``.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from bids_vem.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["RunConfig", "DEFAULT_ALPHAS", "DEFAULT_SPACE", "load_config_file"]

DEFAULT_SPACE = "MNI152NLin2009cAsym"
#: 10^-2 .. 10^12 in half decades: wide enough that few voxels select an edge value
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 12, 29))


def _paths(values) -> tuple[Path, ...]:
    return tuple(Path(v) for v in values)


@dataclass(frozen=True)
class RunConfig:
    """All settings of one run. Field docs are the option help texts of the CLI."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    #: participant labels without the ``sub-`` prefix (empty: all)
    participant_label: tuple[str, ...] = ()
    #: session labels without the ``ses-`` prefix (empty: all)
    session_label: tuple[str, ...] = ()
    #: task labels (empty: every task whose events name stimuli)
    task: tuple[str, ...] = ()
    #: output space of the preprocessed BOLD (fMRIPrep ``space-`` entity)
    space: str = DEFAULT_SPACE
    #: derivative datasets as (name, path); empty: every dataset under BIDS_DIR/derivatives
    derivatives: tuple[tuple[str, Path], ...] = ()
    #: BIDS filter file contents (fMRIPrep-style JSON: query name -> entities)
    bids_filters: dict = field(default_factory=dict)
    #: events.tsv column naming the stimulus file relative to stimuli/
    stim_column: str = "stim_file"
    #: TSV of human captions (stim_file, caption)
    captions: Path | None = None
    #: text feature spaces (model specs, optionally ``name=spec``)
    text_encoders: tuple[str, ...] = ()
    #: image feature spaces (model specs, optionally ``name=spec``)
    image_encoders: tuple[str, ...] = ()
    #: vision-language model that captions the stimulus images (model spec, optionally ``name=spec``)
    captioner: str | None = None
    #: instruction given to chat VLMs (None: ask for a detailed description of the scene)
    caption_prompt: str | None = None
    #: captions generated per image (averaged in embedding space, as human captions)
    captions_per_image: int = 1
    #: longest generated caption, in tokens
    caption_max_tokens: int = 60
    #: caption every stimulus even when --captions has human captions for it
    recaption: bool = False
    #: frames per second sampled from video stimuli
    frame_rate: float = 15.0
    #: words of context on each side of a story word (Tang et al. 2023: 20)
    context_words: int = 20
    #: let model weights be downloaded from the Hugging Face hub (default: offline)
    allow_downloads: bool = False
    #: FIR delays in TRs
    delays: tuple[int, ...] = (1, 2, 3, 4)
    #: ridge penalty grid
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    #: confound columns regressed out of the BOLD signal
    confounds: tuple[str, ...] = ()
    #: test runs (run labels, BIDS run names or ses-<label>): penalties by CV on the other runs,
    #: scores on these only (empty: nested leave-one-run-out over all runs)
    test_runs: tuple[str, ...] = ()
    #: average test runs that show the same stimulus sequence before scoring
    average_test_repeats: bool = False
    #: what a cross-validation fold holds out: run or session
    cv_groups: str = "run"
    #: write each encoding model's weights (models/, .npy)
    save_weights: bool = False
    #: continuous (features on the TR grid, FIR delays) or trialwise (one response per trial, LSS)
    design: str = "continuous"
    #: HRF of the single-trial model (trialwise design): glover or spm
    hrf_model: str = "glover"
    #: folder of single-trial betas (e.g. GLMsingle): <...>_betas.nii.gz + a .tsv naming each volume's stimulus
    betas: Path | None = None
    #: regions of interest as (name, mask image) for the summaries and the report
    rois: tuple[tuple[str, Path], ...] = ()
    #: align an open_clip image encoder to the caption embeddings (LLM-VEM) and fit its features
    align: bool = False
    #: image feature space whose encoder is aligned (None: the first open_clip image space)
    align_base: str | None = None
    #: text feature space whose caption embeddings are the targets (None: the first text space)
    align_target: str | None = None
    #: name of the aligned feature space
    align_name: str = "aligned"
    #: external image-caption corpus to align on instead of the participants' stimuli
    align_corpus: Path | None = None
    #: contiguous groups of runs whose stimuli an alignment holds out (0: one per run)
    align_folds: int = 0
    align_epochs: int = 10
    align_lr: float = 1e-5
    align_batch_size: int = 256
    #: last blocks of the image tower that train (-1: all)
    align_unfreeze_blocks: int = 2
    #: infonce (CLIP loss) or cosine (regression to the caption embedding)
    align_loss: str = "infonce"
    #: weight of the alignment loss against feature preservation (1: alignment only)
    align_weight: float = 1.0
    #: partial (unfreeze the last blocks) or lora (low-rank adapters on every block)
    align_method: str = "partial"
    align_lora_rank: int = 8
    #: several captions per image: their mean embedding, or one sampled per step
    align_captions: str = "mean"
    #: torch device: auto, cpu, cuda, cuda:N
    device: str = "auto"
    #: folders searched for model weights, first match wins
    model_dirs: tuple[Path, ...] = ()
    #: work directory (nipype cache, feature cache)
    work_dir: Path | None = None
    #: CPUs for the whole run (the CLI defaults to all available)
    nprocs: int = 1
    #: threads of one step (the CLI defaults to min(nprocs - 1, 8))
    omp_nthreads: int = 1
    #: memory budget in MB (None: no limit)
    mem_mb: int | None = None
    #: nipype plugin settings (``plugin`` + ``plugin_args``)
    plugin: dict = field(default_factory=dict)
    skip_bids_validation: bool = False
    feature_cache: bool = True
    stop_on_first_crash: bool = False
    clean_workdir: bool = False
    random_seed: int = 0
    verbosity: int = 0

    def __post_init__(self) -> None:
        if self.analysis_level not in ("participant", "group"):
            raise UsageError(
                f"analysis level must be participant or group, got {self.analysis_level!r}"
            )
        if not self.delays or any(int(d) < 0 for d in self.delays):
            raise UsageError(
                f"--delays must be non-negative integers (TRs), got {list(self.delays)}"
            )
        if not self.alphas or any(not np.isfinite(a) or a <= 0 for a in self.alphas):
            raise UsageError(f"--alphas must be positive and finite, got {list(self.alphas)}")
        if self.captions_per_image < 1 or self.caption_max_tokens < 1:
            raise UsageError("--captions-per-image and --caption-max-tokens must be at least 1")
        if self.context_words < 0:
            raise UsageError(f"--context-words must be 0 or more, got {self.context_words}")
        if not self.frame_rate > 0:
            raise UsageError(f"--frame-rate must be positive, got {self.frame_rate}")
        self._check_align()
        if self.average_test_repeats and not self.test_runs:
            raise UsageError("--average-test-repeats needs --test-runs (the repeated test runs)")
        if self.cv_groups not in ("run", "session"):
            raise UsageError(f"--cv-groups must be run or session, got {self.cv_groups!r}")
        self._check_design()
        if self.nprocs < 1 or self.omp_nthreads < 1:
            raise UsageError("--nprocs and --omp-nthreads must be at least 1")

    def _check_design(self) -> None:
        if self.design not in ("continuous", "trialwise"):
            raise UsageError(f"--design must be continuous or trialwise, got {self.design!r}")
        if self.hrf_model not in ("glover", "spm"):
            raise UsageError(f"--hrf-model must be glover or spm, got {self.hrf_model!r}")
        if self.design != "trialwise":
            if self.betas is not None:
                raise UsageError("--betas gives single-trial responses: use --design trialwise")
            return
        if self.test_runs:
            raise UsageError(
                "--test-runs is not available with --design trialwise: the trial-wise model is "
                "cross-validated by run or session (--cv-groups)"
            )
        if self.align and self.align_corpus is None:
            raise UsageError(
                "--align with --design trialwise needs --align-corpus (the trial-wise model has "
                "no per-fold aligned features)"
            )

    def _check_align(self) -> None:
        import re

        if not re.fullmatch(r"[A-Za-z0-9]+", self.align_name):
            raise UsageError(f"--align-name must be letters and digits, got {self.align_name!r}")
        checks = [
            (self.align_epochs >= 1, f"--align-epochs must be >= 1, got {self.align_epochs}"),
            (self.align_lr > 0, f"--align-lr must be > 0, got {self.align_lr}"),
            (self.align_batch_size >= 2, f"--align-batch-size must be >= 2, got {self.align_batch_size}"),
            (
                self.align_unfreeze_blocks >= -1,
                f"--align-unfreeze-blocks must be -1 (all) or more, got {self.align_unfreeze_blocks}",
            ),
            (self.align_loss in ("infonce", "cosine"), f"--align-loss must be infonce or cosine, got {self.align_loss!r}"),
            (0 < self.align_weight <= 1, f"--align-weight must be in (0, 1], got {self.align_weight}"),
            (self.align_method in ("partial", "lora"), f"--align-method must be partial or lora, got {self.align_method!r}"),
            (self.align_lora_rank >= 1, f"--align-lora-rank must be >= 1, got {self.align_lora_rank}"),
            (self.align_captions in ("mean", "sample"), f"--align-captions must be mean or sample, got {self.align_captions!r}"),
            (
                self.align_folds == 0 or self.align_folds >= 2,
                f"--align-folds must be 0 (one per run) or at least 2, got {self.align_folds}",
            ),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    @property
    def resolved_work_dir(self) -> Path:
        """The work directory (default ``./work``, as fMRIPrep)."""
        return self.work_dir if self.work_dir is not None else Path.cwd() / "work"

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_toml_dict(self) -> dict:
        """A TOML-ready dictionary (paths as strings, None left out)."""
        out: dict = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, Path):
                value = str(value)
            elif f.name in ("derivatives", "rois"):
                value = {name: str(path) for name, path in value}
            elif f.name == "model_dirs":
                value = [str(v) for v in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps({"bids_vem": self.to_toml_dict()})


_PATH_FIELDS = {"bids_dir", "output_dir", "captions", "work_dir", "align_corpus", "betas"}


def load_config_file(path: Path) -> dict:
    """Read a TOML config file into keyword arguments of :class:`RunConfig`.

    The file holds a ``[bids_vem]`` table (as written by :meth:`RunConfig.to_toml`)
    or the keys at top level. Unknown keys are a usage error that names them.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as err:
        raise UsageError(f"--config-file {path}: no such file") from err
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"--config-file {path}: not valid TOML ({err})") from err
    data = data.get("bids_vem", data)
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(f"--config-file {path}: unknown setting(s) {', '.join(unknown)}")
    out: dict = {}
    for key, value in data.items():
        if key in _PATH_FIELDS:
            value = Path(value)
        elif key in ("derivatives", "rois"):
            value = tuple((name, Path(p)) for name, p in dict(value).items())
        elif key == "model_dirs":
            value = _paths(value)
        elif isinstance(value, list):
            value = tuple(value)
        out[key] = value
    return out
