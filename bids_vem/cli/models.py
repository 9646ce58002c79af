"""``bids_vem models list|verify|fetch``: which model specs resolve to weights on this machine.

``fetch`` is the one command that downloads: it puts the weights of the given specs into a
folder laid out the way the model search reads it (``DIR/<name>``, ``DIR/<org>/<name>``, a hub
cache inside ``DIR``), so that ``--model-dir DIR`` or ``BIDS_VEM_MODEL_DIR=DIR`` finds them
offline. The container images bake their models with it at build time.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from bids_vem.errors import InputMissingError, TemporaryFailure, UsageError

__all__ = ["fetch_spec", "models_cli"]

#: files of other frameworks that transformers repositories carry and PyTorch never reads
_SKIP_PATTERNS = [
    "*.h5", "*.msgpack", "*.onnx", "*.ot", "*.tflite", "*.mlmodel", "*.gguf",
    "onnx/*", "openvino/*", "coreml/*", "tf_model*", "flax_model*", "rust_model*",
]  # fmt: skip


def _specs(text_encoder, image_encoder, captioner) -> list[tuple[str, str]]:
    specs = [("text", s) for s in text_encoder] + [("image", s) for s in image_encoder]
    specs += [("captioner", s) for s in captioner]
    return specs


_SPEC_OPTIONS = [
    click.option("--text-encoder", "text_encoder", multiple=True, metavar="SPEC", help="A text feature space."),
    click.option("--image-encoder", "image_encoder", multiple=True, metavar="SPEC", help="An image feature space."),
    click.option("--captioner", "captioner", multiple=True, metavar="SPEC", help="A captioning model (hf:...)."),
    click.option("--model-dir", "model_dir", multiple=True, type=click.Path(), help="Folders searched first."),
    click.option("--config-file", "config_file", type=click.Path(dir_okay=False),
                 help="Take the specs and model folders of a saved run configuration (TOML)."),
]  # fmt: skip


def _with_spec_options(function):
    for option in reversed(_SPEC_OPTIONS):
        function = option(function)
    return function


def _gather(text_encoder, image_encoder, captioner, model_dir, config_file):
    from pathlib import Path

    from bids_vem.config import load_config_file

    model_dirs = [Path(p).absolute() for p in model_dir]
    if config_file:
        saved = load_config_file(Path(config_file))
        text_encoder = tuple(text_encoder) + tuple(saved.get("text_encoders", ()))
        image_encoder = tuple(image_encoder) + tuple(saved.get("image_encoders", ()))
        captioner = tuple(captioner) + ((saved["captioner"],) if saved.get("captioner") else ())
        model_dirs += list(saved.get("model_dirs", ()))
    specs = _specs(text_encoder, image_encoder, captioner)
    if not specs:
        raise click.UsageError(
            "name at least one model: --text-encoder, --image-encoder or --captioner"
        )
    return specs, model_dirs


def _report(rows: list[dict], *, hashes: bool) -> int:
    missing = 0
    for row in rows:
        if row.get("found"):
            line = f"ok       {row['role']:<9} {row['spec']}\n         -> {row['path']}"
            if hashes and row.get("weights_sha256"):
                line += f"\n         sha256 {row['weights_sha256']}"
        else:
            missing += 1
            line = f"MISSING  {row['role']:<9} {row['spec']}\n         {row['error']}"
        click.echo(line)
    click.echo(f"{len(rows) - missing} of {len(rows)} model(s) found on this machine")
    return missing


@click.group(name="models", context_settings={"help_option_names": ["-h", "--help"]})
def models_cli() -> None:
    """Which models the given specs resolve to, offline, with their weights."""


def _describe(specs: list[tuple[str, str]], model_dirs: list, *, verify: bool) -> list[dict]:
    from bids_vem.errors import BidsVemError
    from bids_vem.features.captioning import parse_captioner
    from bids_vem.features.models import describe_specs
    from bids_vem.features.specs import parse_feature_space

    rows = []
    for role, text in specs:
        if role == "captioner":
            try:
                row = {
                    "spec": text,
                    "found": True,
                    "path": str(parse_captioner(text, model_dirs).path),
                }
            except BidsVemError as err:
                row = {"spec": text, "found": False, "path": None, "error": str(err)}
        else:
            row = describe_specs([parse_feature_space(text, role)], model_dirs, verify=verify)[0]
        rows.append(row | {"role": role})
    return rows


@models_cli.command(name="list")
@_with_spec_options
def list_models(**options) -> None:
    """Show where each spec's weights are (nothing is loaded); exit 66 if any is missing."""
    specs, model_dirs = _gather(**options)
    missing = _report(_describe(specs, model_dirs, verify=False), hashes=False)
    if missing:
        raise InputMissingError(f"{missing} model(s) not found: see the MISSING lines above")


@models_cli.command(name="verify")
@_with_spec_options
def verify_models(**options) -> None:
    """Resolve each spec, hash its weights and read its configuration; exit 66 if any is missing."""
    specs, model_dirs = _gather(**options)
    missing = _report(_describe(specs, model_dirs, verify=True), hashes=True)
    if missing:
        raise InputMissingError(
            f"{missing} model(s) not found or unusable: see the MISSING lines above"
        )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _download(what: str, function, *args, **kwargs) -> Path:
    """Call a downloader; network and hub failures become one-line errors with exit codes."""
    from huggingface_hub import errors as hub_errors

    try:
        return Path(function(*args, **kwargs))
    except hub_errors.LocalEntryNotFoundError as err:  # the hub could not be reached
        raise TemporaryFailure(
            f"models fetch {what}: cannot reach the Hugging Face hub; check the network and retry"
        ) from err
    except (
        hub_errors.RepositoryNotFoundError,
        hub_errors.EntryNotFoundError,
        hub_errors.RevisionNotFoundError,
    ) as err:
        raise InputMissingError(
            f"models fetch {what}: not on the Hugging Face hub ({err})"
        ) from err
    except OSError as err:  # connection errors derive from OSError (requests, urllib)
        raise TemporaryFailure(
            f"models fetch {what}: download failed ({type(err).__name__}: {err}); retry"
        ) from err


def fetch_spec(text: str, dest: Path) -> Path:
    """Download the weights of one model spec into ``dest``; returns where the search finds them.

    Parameters
    ----------
    text : str
        A feature-space spec (``sentence:all-MiniLM-L6-v2``, ``openclip:ViT-B-32@laion2b_s34b_b79k``,
        ``hf:org/model#pool=mean``, ``bridgetower:org/model``) or a captioner (``hf:org/model``);
        a ``name=`` prefix is ignored.
    dest : Path
        The model folder (created). Layout: sentence models in ``dest/<name>``, transformers
        models in ``dest/<org>/<name>``, open_clip pretrained tags as a hub cache in ``dest``.

    Returns
    -------
    Path
        The weights as :func:`bids_vem.features.models.resolve_model_path` finds them with
        ``model_dirs=[dest]`` and no network.

    Raises
    ------
    UsageError
        A spec with nothing to download (a local path, an open_clip architecture without a
        tag), or ``HF_HUB_OFFLINE`` set (exit 64).
    InputMissingError
        The model is not on the hub (exit 66).
    TemporaryFailure
        The download failed (exit 75).
    """
    import huggingface_hub

    from bids_vem.features.models import resolve_model_path
    from bids_vem.features.specs import is_path_like, parse_feature_space

    spec = parse_feature_space(text, "text")  # every family embeds text; the role does not matter
    if is_path_like(spec.model) or (spec.weights is not None and is_path_like(spec.weights)):
        raise UsageError(f"models fetch {text!r}: names a local path; there is nothing to download")
    if _offline():
        raise UsageError(
            f"models fetch {text!r}: HF_HUB_OFFLINE is set; unset it (HF_HUB_OFFLINE=0) to download"
        )
    dest = Path(dest).absolute()
    dest.mkdir(parents=True, exist_ok=True)
    if spec.family == "sentence":
        repo_id = spec.model if "/" in spec.model else f"sentence-transformers/{spec.model}"
        target = dest / spec.model.rstrip("/").split("/")[-1]
        _download(
            text,
            huggingface_hub.snapshot_download,
            repo_id,
            local_dir=str(target),
            ignore_patterns=_SKIP_PATTERNS,
        )
    elif spec.family in ("hf", "bridgetower"):
        if "/" not in spec.model:
            raise UsageError(
                f"models fetch {text!r}: expected a hub id org/name after '{spec.family}:'"
            )
        _download(
            text,
            huggingface_hub.snapshot_download,
            spec.model,
            local_dir=str(dest / spec.model),
            ignore_patterns=_SKIP_PATTERNS,
        )
    elif spec.family == "openclip":
        if spec.weights is None:
            raise UsageError(
                f"models fetch {text!r}: name a pretrained tag (openclip:ARCH@TAG, "
                "e.g. openclip:ViT-B-32@laion2b_s34b_b79k)"
            )
        import open_clip
        from open_clip import pretrained

        if spec.weights not in open_clip.list_pretrained_tags_by_model(spec.model):
            raise UsageError(
                f"models fetch {text!r}: {spec.weights!r} is not an open_clip pretrained tag of "
                f"{spec.model!r}"
            )
        cfg = open_clip.get_pretrained_cfg(spec.model, spec.weights)
        _download(text, pretrained.download_pretrained, cfg, cache_dir=str(dest))
    else:
        raise UsageError(f"models fetch {text!r}: no downloader for family {spec.family!r}")
    return resolve_model_path(spec, [dest])


@models_cli.command(name="fetch")
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to download into. Default: the first folder of $BIDS_VEM_MODEL_DIR.",
)
def fetch_models(specs: tuple[str, ...], dest: Path | None) -> None:
    """Download the weights of each SPEC into a model folder the search reads (needs network).

    Then run with --model-dir DEST, or set BIDS_VEM_MODEL_DIR=DEST (the container images do).
    """
    from bids_vem.features.weights import MODEL_DIR_ENV

    if dest is None:
        first = os.environ.get(MODEL_DIR_ENV, "").split(os.pathsep)[0].strip()
        if not first:
            raise UsageError(f"models fetch: give --dest DIR or set {MODEL_DIR_ENV}")
        dest = Path(first)
    for text in specs:
        for item in text.split():  # a build argument lists several specs in one word list
            path = fetch_spec(item, dest)
            click.echo(f"fetched  {item}\n         -> {path}")
