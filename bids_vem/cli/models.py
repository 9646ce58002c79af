"""``bids_vem models list|verify``: which model specs resolve to weights on this machine."""

from __future__ import annotations

import click

from bids_vem.errors import InputMissingError

__all__ = ["models_cli"]


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
    """Show where each spec's weights are (nothing is loaded)."""
    specs, model_dirs = _gather(**options)
    _report(_describe(specs, model_dirs, verify=False), hashes=False)


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
