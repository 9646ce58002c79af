"""The Boutiques descriptor of bids_vem, generated from the click command (one source of truth).

``python -m bids_vem.cli.boutiques`` prints it; ``descriptors/bids_vem.json`` is that output
(a test fails when they differ). Every option of :data:`bids_vem.cli.parser.cli` becomes an
input, so options added later appear without edits here. The command line follows the BIDS-App
form that ``bosh validate --bids`` checks::

    mkdir -p [OUTPUT_DIR]; bids_vem [BIDS_DIR] [OUTPUT_DIR] [ANALYSIS_LEVEL] [PARTICIPANT_LABEL]
    [SESSION_LABEL] [TASK] ...

No ``default-value`` is written: Boutiques would pass defaults on the command line, where they
would override the values of ``--config-file``; the defaults are in the descriptions instead.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from typing import Any

import click

from bids_vem import __version__, errors

__all__ = [
    "ANALYSIS_LEVELS",
    "DOCKER_IMAGE",
    "boutiques_descriptor",
    "descriptor_json",
    "error_codes",
    "main",
]

#: the published image (Docker Hub); Singularity.def bootstraps from it
DOCKER_IMAGE = "bidsvem/bids_vem"
#: analysis levels the CLI accepts (bids_vem.cli.parser.config_from_click checks them)
ANALYSIS_LEVELS = ("participant", "group")
#: options that open the command line, right after the positional arguments (BIDS-App order)
_LEADING = ("participant_label", "session_label")
_EXECUTABLE = "bids_vem"


def _value_key(name: str) -> str:
    return f"[{name.upper()}]"


def _long_flag(param: click.Option, opts: list[str]) -> str:
    """The first ``--long`` spelling (``-d/--derivatives`` -> ``--derivatives``)."""
    for opt in opts:
        if opt.startswith("--"):
            return opt
    return opts[0]


def _is_unset(value: Any) -> bool:
    # click >= 8.3 marks "no default" with a sentinel object
    return value is None or type(value).__name__ == "Sentinel" or value == ()


def _first_paragraph(text: str | None) -> str:
    text = inspect.cleandoc(text or "")
    return " ".join(text.split("\n\n")[0].split())


def _number_fields(param_type: click.ParamType) -> dict[str, Any]:
    fields: dict[str, Any] = {"type": "Number"}
    if isinstance(param_type, click.types.IntParamType | click.IntRange):
        fields["integer"] = True
    if isinstance(param_type, click.IntRange | click.FloatRange):
        if param_type.min is not None:
            fields["minimum"] = param_type.min
            if param_type.min_open:
                fields["exclusive-minimum"] = True
        if param_type.max is not None:
            fields["maximum"] = param_type.max
            if param_type.max_open:
                fields["exclusive-maximum"] = True
    return fields


def _type_fields(param_type: click.ParamType) -> dict[str, Any]:
    if isinstance(param_type, click.types.IntParamType | click.types.FloatParamType):
        return _number_fields(param_type)
    if isinstance(param_type, click.Path):
        return {"type": "File"}
    if isinstance(param_type, click.Choice):
        return {"type": "String", "value-choices": [str(c) for c in param_type.choices]}
    return {"type": "String"}


def _option_input(param: click.Option, ctx: click.Context, list_flags: set[str]) -> dict | None:
    """One Boutiques input for one click option (None for --version and hidden options)."""
    if not param.expose_value or param.hidden:
        return None
    name = param.name or ""
    default = param.get_default(ctx, call=False)
    description = " ".join((param.help or "").split())
    item: dict[str, Any] = {
        "id": name,
        "name": name.replace("_", " ").capitalize(),
        "value-key": _value_key(name),
        "optional": not param.required,
    }
    if param.count:
        # -v, -vv: the repeated flag is the value
        item |= {"type": "String", "value-choices": ["-v", "-vv"]}
        default = None
    elif param.is_flag:
        # a flag whose default is on is given by its "off" spelling (--no-feature-cache)
        flag_off = default is True and bool(param.secondary_opts)
        flag = _long_flag(param, param.secondary_opts if flag_off else param.opts)
        item |= {"type": "Flag", "command-line-flag": flag}
        if flag_off:
            description = f"Turns off what is on by default: {description}"
        default = None
    else:
        flag = _long_flag(param, param.opts)
        item |= _type_fields(param.type) | {"command-line-flag": flag}
        if param.multiple:
            item["list"] = True
            if flag not in list_flags:
                # the CLI takes several values only as "--opt a --opt b"
                item["list-separator"] = f" {flag} "
    if isinstance(param.show_default, str):  # a default said in words (computed at run time)
        description += f" Default: {param.show_default}."
    elif not _is_unset(default) and default is not False:
        shown = " ".join(str(v) for v in default) if isinstance(default, tuple) else default
        description += f" Default: {shown}."
    item["description"] = description.strip() or item["name"]
    return item


def error_codes() -> list[dict[str, Any]]:
    """The exit codes of :mod:`bids_vem.errors`, each with the first line of its docstring."""
    seen: dict[int, str] = {}
    for name in errors.__all__:
        error = getattr(errors, name)
        code = int(error.exit_code)
        if code and code not in seen:
            text = re.sub(r"\s*\((exit|exit code) [^)]*\)", "", _first_paragraph(error.__doc__))
            seen[code] = "Unspecified failure" if error is errors.BidsVemError else text.rstrip(".")
    return [{"code": code, "description": text} for code, text in sorted(seen.items())]


def _positional_inputs() -> list[dict[str, Any]]:
    out_text = (
        "The directory where the outputs go (e.g. BIDS_DIR/derivatives/bids_vem). For the group "
        "level it holds the participant level's outputs."
    )
    return [
        {
            "id": "bids_dir",
            "name": "BIDS directory",
            "type": "File",
            "value-key": "[BIDS_DIR]",
            "optional": False,
            "description": "The raw BIDS dataset (events.tsv name stimuli under BIDS_DIR/stimuli); "
            "read only.",
        },
        {
            "id": "output_dir_name",
            "name": "Output directory name",
            "type": "String",
            "value-key": "[OUTPUT_DIR]",
            "optional": True,
            "description": out_text,
        },
        {
            "id": "participant_level_analysis_dir",
            "name": "Participant-level output directory",
            "type": "File",
            "value-key": "[OUTPUT_DIR]",
            "optional": True,
            "description": "An existing output directory of the participant level (group level).",
        },
        {
            "id": "analysis_level",
            "name": "Analysis level",
            "type": "String",
            "value-key": "[ANALYSIS_LEVEL]",
            "value-choices": list(ANALYSIS_LEVELS),
            "optional": False,
            "description": "participant: features and encoding models per participant; group: "
            "statistics across the participants' maps.",
        },
    ]


def _tests() -> list[dict[str, Any]]:
    return [
        {
            "name": "a missing BIDS_DIR stops at once with exit 66",
            "invocation": {
                "bids_dir": "no-such-dataset",
                "output_dir_name": "out",
                "analysis_level": "participant",
            },
            "assertions": {"exit-code": errors.InputMissingError.exit_code},
        },
        {
            "name": "a bad --mem is a usage error (exit 64)",
            "invocation": {
                "bids_dir": "no-such-dataset",
                "output_dir_name": "out",
                "analysis_level": "participant",
                "mem": "lots",
            },
            "assertions": {"exit-code": errors.UsageError.exit_code},
        },
    ]


def boutiques_descriptor(command: click.Command | None = None) -> dict[str, Any]:
    """The descriptor (schema 0.5, BIDS-App form) of ``command`` (default: the bids_vem CLI).

    Parameters
    ----------
    command : click.Command, optional
        The command whose options become inputs; its arguments must be BIDS_DIR, OUTPUT_DIR
        and ANALYSIS_LEVEL.

    Returns
    -------
    dict
        JSON-ready; keys in a fixed order, so the rendered text is stable.
    """
    from bids_vem.cli.parser import LIST_OPTIONS, cli

    command = cli if command is None else command
    ctx = click.Context(command)
    list_flags = set(LIST_OPTIONS.values())
    options = [
        item
        for param in command.params
        if isinstance(param, click.Option)
        and (item := _option_input(param, ctx, list_flags)) is not None
    ]
    arguments = [p.name for p in command.params if isinstance(p, click.Argument)]
    if arguments != ["bids_dir", "output_dir", "analysis_level"]:
        raise ValueError(f"expected the BIDS-App arguments, found {arguments}")
    leading = [o for name in _LEADING for o in options if o["id"] == name]
    rest = [o for o in options if o["id"] not in _LEADING]
    keys = " ".join(o["value-key"] for o in leading + rest)
    return {
        "name": "bids_vem",
        "tool-version": __version__,
        "description": (
            "BIDS App: language-aligned vision models as voxelwise encoding models of fMRI "
            "(features of the stimuli from vision, language and vision-language models; "
            "ridge encoding models per voxel; group statistics)."
        ),
        "author": "bids_vem developers",
        "url": "https://github.com/bids-vem/bids_vem",
        "schema-version": "0.5",
        "command-line": (
            f"mkdir -p [OUTPUT_DIR]; {_EXECUTABLE} [BIDS_DIR] [OUTPUT_DIR] [ANALYSIS_LEVEL] {keys}"
        ),
        "container-image": {
            "type": "docker",
            "image": f"{DOCKER_IMAGE}:{__version__}",
            "entrypoint": True,
        },
        "inputs": _positional_inputs() + leading + rest,
        "groups": [
            {
                "id": "output_directory",
                "name": "Output directory",
                "description": "A new output directory (participant level) or the participant "
                "level's outputs (group level).",
                "members": ["output_dir_name", "participant_level_analysis_dir"],
                "mutually-exclusive": True,
                "one-is-required": True,
            }
        ],
        "output-files": [
            {
                "id": "output_dir",
                "name": "Output directory",
                "description": "The BIDS-derivative dataset: stat maps, features, reports, logs.",
                "path-template": "[OUTPUT_DIR]",
                "optional": False,
            }
        ],
        "suggested-resources": {
            "cpu-cores": 8,
            "ram": 32,
            "gpu-cores": 1,
            "disk-space": 50,
            "walltime-estimate": 4 * 3600,
        },
        "error-codes": error_codes(),
        "tags": {"domain": ["neuroinformatics", "fmri", "bids", "encoding-models"]},
        "tests": _tests(),
        "custom": {"BIDSApplicationVersion": "2.0"},
    }


def descriptor_json(command: click.Command | None = None) -> str:
    """The descriptor as the text of ``descriptors/bids_vem.json`` (2-space indent, final newline)."""
    return json.dumps(boutiques_descriptor(command), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    """Print the descriptor to stdout."""
    sys.stdout.write(descriptor_json())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
