"""Command-line options of bids_vem: parse them into a :class:`~bids_vem.config.RunConfig`.

Only parsing and checking of the command line lives here; no science. Spelling follows
fMRIPrep (``--participant-label 01 02``, underscore aliases, ``@file`` lists).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import click

from bids_vem import __version__
from bids_vem.config import DEFAULT_ALPHAS, DEFAULT_SPACE, RunConfig, load_config_file
from bids_vem.errors import InputMissingError, UnknownLevelError, UsageError

__all__ = ["absolute_spec", "cli", "config_from_click", "expand_list_options", "parse_mem"]

#: options that take one or more values after a single flag (``--delays 1 2 3 4``)
LIST_OPTIONS = {
    "--participant-label": "--participant-label",
    "--participant_label": "--participant-label",
    "--session-label": "--session-label",
    "--session_label": "--session-label",
    "--session-id": "--session-label",
    "--session_id": "--session-label",
    "--task": "--task",
    "--task-id": "--task",
    "--task_id": "--task",
    "--text-encoder": "--text-encoder",
    "--text_encoder": "--text-encoder",
    "--image-encoder": "--image-encoder",
    "--image_encoder": "--image-encoder",
    "--delays": "--delays",
    "--alphas": "--alphas",
    "--confounds": "--confounds",
    "--model-dir": "--model-dir",
    "--model_dir": "--model-dir",
    "--roi": "--roi",
    "--test-runs": "--test-runs",
    "--test_runs": "--test-runs",
    "-d": "--derivatives",
    "--derivatives": "--derivatives",
}

_LABEL = re.compile(r"^[A-Za-z0-9]+$")


def expand_list_options(argv: list[str]) -> list[str]:
    """Rewrite ``--opt a b c`` as ``--opt a --opt b --opt c`` for the list options.

    click has no ``nargs='+'``; users of BIDS Apps type lists after one flag. Values end at
    the next argument that starts with ``-`` (every value we take is non-negative).
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=")
        if name in LIST_OPTIONS and not (name in ("-d", "--derivatives") and eq):
            flag = LIST_OPTIONS[name]
            values = [inline] if eq else []
            j = i + 1
            while j < len(argv) and not (argv[j].startswith("-") and not _is_number(argv[j])):
                values.append(argv[j])
                j += 1
            if not values:  # let click report the missing value
                out.append(arg)
            for value in values:
                out += [flag, value]
            i = j
            continue
        if name in ("-d", "--derivatives") and eq:
            out += ["--derivatives", inline]
        else:
            out.append(arg)
        i += 1
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_label_file(value: str, option: str) -> list[str]:
    path = Path(value[1:])
    try:
        lines = path.read_text().split()
    except OSError as err:
        raise UsageError(
            f"{option} {value}: cannot read the label file {path} ({err.strerror})"
        ) from err
    return lines


def _labels(values: tuple[str, ...], prefix: str, option: str) -> tuple[str, ...]:
    labels: list[str] = []
    for value in values:
        items = _read_label_file(value, option) if value.startswith("@") else [value]
        for item in items:
            item = item.strip()
            if item.startswith(f"{prefix}-"):
                item = item[len(prefix) + 1 :]
            if not _LABEL.match(item):
                raise UsageError(
                    f"{option}: {item!r} is not a valid BIDS label (letters and digits only)"
                )
            if item not in labels:
                labels.append(item)
    return tuple(labels)


def absolute_spec(text: str) -> str:
    """A model spec whose relative paths (to folders or files that exist) are made absolute.

    Steps of the workflow run in their own folders, so ``openclip:models/my-clip`` given
    relative to the user's working directory must be pinned down while parsing.
    """
    name, eq, rest = text.partition("=")
    if not eq or ":" in name:
        name, eq, rest = "", "", text
    family, colon, model = rest.partition(":")
    if not colon:
        return text
    model, at, weights = model.partition("@")

    def pin(part: str) -> str:
        path = Path(part).expanduser()
        if (
            part
            and not path.is_absolute()
            and ("/" in part or part.startswith("."))
            and path.exists()
        ):
            return str(path.absolute())
        return part

    return f"{name}{eq}{family}:{pin(model)}{at}{pin(weights) if at else ''}"


def parse_mem(text: str | None) -> int | None:
    """Memory in MB from ``16000``, ``16000MB``, ``16G``, ``16GB`` (fMRIPrep spelling)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)B?\s*", str(text), flags=re.IGNORECASE)
    if not match:
        raise UsageError(f"--mem {text!r}: expected a number of MB or a size like 16GB")
    value, unit = float(match.group(1)), match.group(2).upper()
    factor = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    return max(1, int(value * factor))


def _derivatives(values: tuple[str, ...]) -> tuple[tuple[str, Path], ...]:
    out = []
    for value in values:
        name, eq, path = value.partition("=")
        if not eq:
            name, path = Path(value).name, value
        out.append((name, Path(path).expanduser().absolute()))
    return tuple(out)


def _rois(values: tuple[str, ...]) -> tuple[tuple[str, Path], ...]:
    out: list[tuple[str, Path]] = []
    for value in values:
        name, eq, path = value.partition("=")
        if not eq:
            # a file name such as sub-01_label-FFA_mask.nii.gz names its region
            path = value
            stem = Path(value).name.split(".")[0]
            label = re.search(r"label-([A-Za-z0-9]+)", stem)
            name = label.group(1) if label else re.sub(r"[^A-Za-z0-9]", "", stem)
        if not _LABEL.match(name):
            raise UsageError(f"--roi {value}: the region name {name!r} must be letters and digits")
        if name in dict(out):
            raise UsageError(f"--roi {value}: the region name {name!r} is given twice")
        out.append((name, Path(path).expanduser().absolute()))
    return tuple(out)


def _read_filter_file(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise InputMissingError(f"--bids-filter-file {path}: no such file") from err
    except json.JSONDecodeError as err:
        raise UsageError(
            f"--bids-filter-file {path}: not valid JSON ({err.msg} at line {err.lineno})"
        ) from err
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UsageError(
            f"--bids-filter-file {path}: expected an object of queries, e.g. "
            '{"bold": {"session": "1"}}'
        )
    return data


def _read_plugin(path: Path | None) -> dict:
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError as err:
        raise InputMissingError(f"--use-plugin {path}: no such file") from err
    except yaml.YAMLError as err:
        raise UsageError(f"--use-plugin {path}: not valid YAML ({err})") from err
    if not isinstance(data, dict) or "plugin" not in data:
        raise UsageError(
            f"--use-plugin {path}: expected a 'plugin:' key (and optional 'plugin_args:')"
        )
    return {"plugin": str(data["plugin"]), "plugin_args": dict(data.get("plugin_args") or {})}


def config_from_click(ctx: click.Context, params: dict) -> RunConfig:
    """Build the RunConfig from click's parsed values, the config file underneath.

    Values given on the command line override those of ``--config-file``.
    """
    from_file: dict = load_config_file(params["config_file"]) if params["config_file"] else {}

    def given(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return source is not None and source.name == "COMMANDLINE"

    level = params["analysis_level"]
    if level not in ("participant", "group"):
        raise UnknownLevelError(f"unknown analysis level {level!r}: choose participant or group")

    values: dict = {
        "bids_dir": Path(params["bids_dir"]).expanduser().absolute(),
        "output_dir": Path(params["output_dir"]).expanduser().absolute(),
        "analysis_level": level,
    }
    cli_values = {
        "participant_label": _labels(params["participant_label"], "sub", "--participant-label"),
        "session_label": _labels(params["session_label"], "ses", "--session-label"),
        "task": _labels(params["task"], "task", "--task"),
        "space": params["space"],
        "derivatives": _derivatives(params["derivatives"]),
        "bids_filters": _read_filter_file(params["bids_filter_file"]),
        "stim_column": params["stim_column"],
        "captions": None if params["captions"] is None else Path(params["captions"]).absolute(),
        "text_encoders": tuple(absolute_spec(t) for t in params["text_encoder"]),
        "image_encoders": tuple(absolute_spec(t) for t in params["image_encoder"]),
        "captioner": None if params["captioner"] is None else absolute_spec(params["captioner"]),
        "caption_prompt": params["caption_prompt"],
        "captions_per_image": params["captions_per_image"],
        "caption_max_tokens": params["caption_max_tokens"],
        "recaption": params["recaption"],
        "frame_rate": params["frame_rate"],
        "context_words": params["context_words"],
        "allow_downloads": params["allow_downloads"],
        "delays": tuple(params["delays"]),
        "alphas": tuple(params["alphas"]) or DEFAULT_ALPHAS,
        "confounds": tuple(params["confounds"]),
        "rois": _rois(params["roi"]),
        "test_runs": tuple(params["test_runs"]),
        "average_test_repeats": params["average_test_repeats"],
        "cv_groups": params["cv_groups"],
        "save_weights": params["save_weights"],
        "design": params["design"] or ("trialwise" if params["betas"] else "continuous"),
        "hrf_model": params["hrf_model"],
        "betas": None if params["betas"] is None else Path(params["betas"]).expanduser().absolute(),
        "align": params["align"],
        "align_base": params["align_base"],
        "align_target": params["align_target"],
        "align_name": params["align_name"],
        "align_corpus": None
        if params["align_corpus"] is None
        else Path(params["align_corpus"]).expanduser().absolute(),
        "align_folds": params["align_folds"],
        "align_epochs": params["align_epochs"],
        "align_lr": params["align_lr"],
        "align_batch_size": params["align_batch_size"],
        "align_unfreeze_blocks": params["align_unfreeze_blocks"],
        "align_loss": params["align_loss"],
        "align_weight": params["align_weight"],
        "align_method": params["align_method"],
        "align_lora_rank": params["align_lora_rank"],
        "align_captions": params["align_captions"],
        "device": params["device"],
        "model_dirs": tuple(Path(p).expanduser().absolute() for p in params["model_dir"]),
        "work_dir": None if params["work_dir"] is None else Path(params["work_dir"]).absolute(),
        "nprocs": params["nprocs"],
        "omp_nthreads": params["omp_nthreads"],
        "mem_mb": parse_mem(params["mem"]),
        "plugin": _read_plugin(params["use_plugin"]),
        "skip_bids_validation": params["skip_bids_validation"],
        "feature_cache": params["feature_cache"],
        "stop_on_first_crash": params["stop_on_first_crash"],
        "clean_workdir": params["clean_workdir"],
        "random_seed": params["random_seed"],
        "verbosity": params["verbose"],
    }
    param_of = {
        "bids_filters": "bids_filter_file",
        "plugin": "use_plugin",
        "mem_mb": "mem",
        "text_encoders": "text_encoder",
        "image_encoders": "image_encoder",
        "model_dirs": "model_dir",
        "verbosity": "verbose",
        "rois": "roi",
    }
    for key, value in cli_values.items():
        if key in from_file and not given(param_of.get(key, key)):
            values[key] = from_file[key]
        else:
            values[key] = value
    if values["work_dir"] is None:
        values["work_dir"] = Path.cwd() / "work"
    # fMRIPrep's defaults: every CPU we may use, steps of up to 8 threads
    if values["nprocs"] is None:
        values["nprocs"] = available_cpus()
    if values["omp_nthreads"] is None:
        values["omp_nthreads"] = max(1, min(values["nprocs"] - 1, 8))
    if values["omp_nthreads"] > values["nprocs"]:
        raise UsageError(
            f"--omp-nthreads {values['omp_nthreads']} exceeds --nprocs {values['nprocs']}"
        )
    return RunConfig(**values)


def available_cpus() -> int:
    """CPUs this process may run on (honours taskset, cgroups cpusets and SLURM allocations)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_HELP = """bids_vem: language-aligned vision models as voxelwise encoding models of fMRI.

\b
BIDS_DIR        the raw BIDS dataset (events.tsv name stimuli under BIDS_DIR/stimuli)
OUTPUT_DIR      where the derivatives go (e.g. BIDS_DIR/derivatives/bids_vem)
ANALYSIS_LEVEL  participant (features + encoding models per participant) or group

\b
Example:
  bids_vem /data/ds /data/ds/derivatives/bids_vem participant --participant-label 01 02 \\
      --captions /data/ds/stimuli/captions.tsv \\
      --text-encoder sentence:/models/all-MiniLM-L6-v2 \\
      --image-encoder openclip:ViT-B-32@/models/vit-b-32.safetensors
  bids_vem /data/ds /data/ds/derivatives/bids_vem group

\b
Which model weights are on this machine (offline):
  bids_vem models list|verify --text-encoder SPEC --image-encoder SPEC --captioner SPEC
"""


def _floats(ctx, param, values):
    return tuple(float(v) for v in values)


@click.command(
    help=_HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.argument("bids_dir", type=click.Path(path_type=Path, file_okay=False))
@click.argument("output_dir", type=click.Path(path_type=Path, file_okay=False))
@click.argument("analysis_level")
@click.option(
    "--participant-label",
    "--participant_label",
    "participant_label",
    multiple=True,
    help="Participant label(s), with or without 'sub-', or @FILE with one label per line. Default: all.",
)
@click.option(
    "--session-label",
    "--session_label",
    "--session-id",
    "session_label",
    multiple=True,
    help="Session label(s) to analyse. Default: all sessions, pooled.",
)
@click.option(
    "--task",
    "--task-id",
    "task",
    multiple=True,
    help="Task label(s). Default: every task with stimuli.",
)
@click.option(
    "--space",
    default=DEFAULT_SPACE,
    show_default=True,
    help="Output space of the preprocessed BOLD (fMRIPrep's space- entity).",
)
@click.option(
    "-d",
    "--derivatives",
    "derivatives",
    multiple=True,
    metavar="[NAME=]PATH",
    help="Preprocessed derivatives (fMRIPrep). Default: every dataset under BIDS_DIR/derivatives.",
)
@click.option(
    "--bids-filter-file",
    "--bids_filter_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help='JSON of entity filters per query, as fMRIPrep: {"bold": {"session": "1"}}.',
)
@click.option(
    "--stim-column",
    "--stim_column",
    default="stim_file",
    show_default=True,
    help="events.tsv column naming the stimulus file, relative to BIDS_DIR/stimuli.",
)
@click.option(
    "--captions",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TSV of human captions: columns stim_file and caption; several rows per stimulus are averaged.",
)
@click.option(
    "--text-encoder",
    "--text_encoder",
    "text_encoder",
    multiple=True,
    metavar="[NAME=]SPEC",
    help="Text feature space from the captions, e.g. sentence:/models/all-MiniLM-L6-v2 (repeatable).",
)
@click.option(
    "--image-encoder",
    "--image_encoder",
    "image_encoder",
    multiple=True,
    metavar="[NAME=]SPEC",
    help="Image feature space, e.g. openclip:ViT-B-32@/models/vit-b-32.safetensors (repeatable).",
)
@click.option(
    "--captioner",
    metavar="[NAME=]SPEC",
    help="Vision-language model that captions the images, e.g. hf:/models/blip-large "
    "(human captions from --captions win unless --recaption).",
)
@click.option(
    "--caption-prompt",
    "--caption_prompt",
    "caption_prompt",
    metavar="TEXT",
    help="Instruction for chat VLMs. Default: a request for a detailed description of the scene.",
)
@click.option(
    "--captions-per-image",
    "--captions_per_image",
    "captions_per_image",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Captions generated per image (averaged in embedding space).",
)
@click.option(
    "--caption-max-tokens",
    "caption_max_tokens",
    type=click.IntRange(min=1),
    default=60,
    show_default=True,
    help="Longest generated caption, in tokens.",
)
@click.option(
    "--recaption",
    is_flag=True,
    help="Caption every image with --captioner, even those with human captions.",
)
@click.option(
    "--frame-rate",
    "--frame_rate",
    "frame_rate",
    type=click.FloatRange(min=0, min_open=True),
    default=15.0,
    show_default=True,
    help="Frames per second sampled from video stimuli.",
)
@click.option(
    "--context-words",
    "--context_words",
    "context_words",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Words of context on each side of a story word when it is embedded.",
)
@click.option(
    "--allow-downloads",
    "allow_downloads",
    is_flag=True,
    help="Let missing model weights be downloaded from the Hugging Face hub (default: offline).",
)
@click.option(
    "--delays",
    multiple=True,
    type=int,
    default=(1, 2, 3, 4),
    show_default=True,
    help="FIR delays in TRs.",
)
@click.option(
    "--alphas",
    multiple=True,
    type=float,
    callback=_floats,
    help="Ridge penalties. Default: 29 values from 1e-2 to 1e12 (half decades).",
)
@click.option(
    "--confounds",
    multiple=True,
    help="Confound columns of fMRIPrep's confounds TSV to regress out (e.g. trans_x ... rot_z).",
)
@click.option(
    "--test-runs",
    "--test_runs",
    "test_runs",
    multiple=True,
    metavar="LABEL",
    help="Test runs: run labels (2, run-2), BIDS run names or ses-LABEL for a whole session. "
    "Penalties are chosen by leave-one-run-out CV on the other runs and scores computed on "
    "these only. Default: nested leave-one-run-out over all runs.",
)
@click.option(
    "--average-test-repeats",
    "average_test_repeats",
    is_flag=True,
    help="Average the test runs that show the same stimuli at the same onsets (repeated "
    "validation runs) before scoring.",
)
@click.option(
    "--cv-groups",
    "cv_groups",
    type=click.Choice(["run", "session"]),
    default="run",
    show_default=True,
    help="What a cross-validation fold holds out: one run or one session.",
)
@click.option(
    "--design",
    type=click.Choice(["continuous", "trialwise"]),
    help="continuous: features on the TR grid with FIR delays (movies, stories, blocks); "
    "trialwise: one response per trial by least-squares-separate, features regressed on them "
    "(event-related designs, NSD). Default: continuous, trialwise with --betas.",
)
@click.option(
    "--hrf-model",
    "hrf_model",
    type=click.Choice(["glover", "spm"]),
    default="glover",
    show_default=True,
    help="HRF of the single-trial model (--design trialwise; nilearn).",
)
@click.option(
    "--betas",
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder of single-trial betas (e.g. GLMsingle) to use instead of estimating them: per "
    "participant and task a sub-<label>[_ses-<label>]_task-<label>[...]_betas.nii.gz with a .tsv "
    "beside it naming each volume's stimulus (stim_file; optional session, run).",
)
@click.option(
    "--save-weights",
    "save_weights",
    is_flag=True,
    help="Write each encoding model's weights to OUTPUT_DIR/models (.npy, features x voxels).",
)
@click.option(
    "--roi",
    "roi",
    multiple=True,
    metavar="[NAME=]MASK",
    help="Region-of-interest mask (NIfTI in the BOLD space, or resampled to it): mean r per "
    "feature space in each region goes into the summaries and the report (repeatable).",
)
@click.option(
    "--align/--no-align",
    "align",
    default=False,
    show_default=True,
    help="Align an open_clip image encoder to the caption embeddings (LLM-VEM) and fit its "
    "features as one more feature space.",
)
@click.option(
    "--align-base",
    "align_base",
    metavar="NAME",
    help="Image feature space whose encoder is aligned. Default: the first open_clip one.",
)
@click.option(
    "--align-target",
    "align_target",
    metavar="NAME",
    help="Text feature space whose caption embeddings are the targets. Default: the first one.",
)
@click.option(
    "--align-name",
    "align_name",
    default="aligned",
    show_default=True,
    help="Name of the aligned feature space (desc- of its maps).",
)
@click.option(
    "--align-corpus",
    "align_corpus",
    type=click.Path(path_type=Path, file_okay=False),
    help="Image-caption corpus to align on instead of the participants' stimuli: a folder with "
    "captions.tsv (stim_file, caption) or COCO annotations/captions_*.json.",
)
@click.option(
    "--align-folds",
    "align_folds",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Groups of runs whose stimuli an alignment holds out, so that no test run's images are "
    "trained on (0: one per run, as the encoding CV). Fewer folds train fewer alignments.",
)
@click.option(
    "--align-epochs",
    "align_epochs",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Alignment epochs (early stopping on a validation slice).",
)
@click.option(
    "--align-lr",
    "align_lr",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-5,
    show_default=True,
    help="Alignment learning rate (AdamW, warmup + cosine).",
)
@click.option(
    "--align-batch-size",
    "align_batch_size",
    type=click.IntRange(min=2),
    default=256,
    show_default=True,
    help="Images per alignment step (in-batch negatives of InfoNCE).",
)
@click.option(
    "--align-unfreeze-blocks",
    "align_unfreeze_blocks",
    type=click.IntRange(min=-1),
    default=2,
    show_default=True,
    help="Last blocks of the image tower that train (-1: all).",
)
@click.option(
    "--align-loss",
    "align_loss",
    type=click.Choice(["infonce", "cosine"]),
    default="infonce",
    show_default=True,
    help="infonce: CLIP's symmetric contrastive loss; cosine: regression to "
    "the caption embedding (Doerig et al.).",
)
@click.option(
    "--align-weight",
    "align_weight",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=1.0,
    show_default=True,
    help="Weight of the alignment loss against preserving the "
    "original image features (LLM-VEM reports a small weight working best, e.g. 0.1).",
)
@click.option(
    "--align-method",
    "align_method",
    type=click.Choice(["partial", "lora"]),
    default="partial",
    show_default=True,
    help="partial: unfreeze the last blocks; lora: low-rank adapters on every "
    "block's attention and MLP.",
)
@click.option(
    "--align-lora-rank",
    "align_lora_rank",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Rank of the LoRA adapters (--align-method lora).",
)
@click.option(
    "--align-captions",
    "align_captions",
    type=click.Choice(["mean", "sample"]),
    default="mean",
    show_default=True,
    help="Several captions per image: target their mean embedding, or sample one per step.",
)
@click.option(
    "--device", default="auto", show_default=True, help="Torch device: auto, cpu, cuda, cuda:N."
)
@click.option(
    "--model-dir",
    "--model_dir",
    "model_dir",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Folder(s) searched for model weights before the Hugging Face cache.",
)
@click.option(
    "-w",
    "--work-dir",
    "--work_dir",
    "work_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Work directory (cache; rerun reuses it). Default: ./work",
)
@click.option(
    "--nprocs",
    "--n-cpus",
    "--n_cpus",
    "nprocs",
    type=click.IntRange(min=1),
    help="CPUs for the whole run (nipype MultiProc). Default: all available.",
)
@click.option(
    "--omp-nthreads",
    "--omp_nthreads",
    "omp_nthreads",
    type=click.IntRange(min=1),
    help="Threads of one step (torch, BLAS). Default: min(nprocs - 1, 8), at least 1.",
)
@click.option(
    "--mem",
    "--mem-mb",
    "--mem_mb",
    "mem",
    metavar="SIZE",
    help="Memory budget in MB, or with a unit: 16GB. Encoding models read the BOLD in voxel "
    "chunks sized to fit it.",
)
@click.option(
    "--use-plugin",
    "--use_plugin",
    "use_plugin",
    type=click.Path(path_type=Path, dir_okay=False),
    help="nipype plugin YAML (plugin: + plugin_args:), e.g. for SLURM.",
)
@click.option(
    "--config-file",
    "--config_file",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML file of options (as saved in OUTPUT_DIR/logs); the command line overrides it.",
)
@click.option(
    "--skip-bids-validation",
    "--skip_bids_validation",
    "skip_bids_validation",
    is_flag=True,
    help="Do not validate BIDS_DIR with bids-validator-deno.",
)
@click.option(
    "--feature-cache/--no-feature-cache",
    "feature_cache",
    default=True,
    show_default=True,
    help="Reuse features cached in the work directory.",
)
@click.option(
    "--stop-on-first-crash",
    "stop_on_first_crash",
    is_flag=True,
    help="Stop at the first failed step.",
)
@click.option(
    "--clean-workdir",
    "clean_workdir",
    is_flag=True,
    help="Empty the work directory before running.",
)
@click.option(
    "--random-seed",
    "--random_seed",
    "random_seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of every random step.",
)
@click.option(
    "-v", "--verbose", "verbose", count=True, help="More log output (-vv: tracebacks too)."
)
@click.version_option(
    __version__, "--version", prog_name="bids_vem", message="%(prog)s %(version)s"
)
@click.pass_context
def cli(ctx: click.Context, **params) -> RunConfig:
    """Parse the command line; returns the RunConfig (the entry point runs it)."""
    return config_from_click(ctx, params)
