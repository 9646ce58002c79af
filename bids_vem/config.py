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
        if self.nprocs < 1 or self.omp_nthreads < 1:
            raise UsageError("--nprocs and --omp-nthreads must be at least 1")

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
            elif f.name == "derivatives":
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


_PATH_FIELDS = {"bids_dir", "output_dir", "captions", "work_dir"}


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
        elif key == "derivatives":
            value = tuple((name, Path(p)) for name, p in dict(value).items())
        elif key == "model_dirs":
            value = _paths(value)
        elif isinstance(value, list):
            value = tuple(value)
        out[key] = value
    return out
