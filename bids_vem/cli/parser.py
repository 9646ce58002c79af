"""Command-line options of bids_vem, generated from the settings declarations.

Only parsing lives here: every option is a field of a section of :mod:`bids_vem.config`,
and :func:`build_cli` turns those declarations into click options (flags, types, choices,
ranges, defaults and help). Spelling follows fMRIPrep (``--participant-label 01 02``,
underscore aliases, ``@file`` lists).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from bids_vem import __version__
from bids_vem.config import SECTIONS, RunConfig, load_config_file
from bids_vem.errors import UnknownLevelError
from bids_vem.option_values import absolute_spec, available_cpus, parse_mem
from bids_vem.settings import MISSING, Setting, declared

__all__ = [
    "LIST_OPTIONS",
    "absolute_spec",
    "available_cpus",
    "build_cli",
    "cli",
    "config_from_click",
    "expand_list_options",
    "parse_mem",
]


def _cli_fields() -> list[tuple[str, Setting]]:
    """(field name, declaration) of every setting that is a command-line option, in order."""
    return [
        (f.name, declaration)
        for section in SECTIONS.values()
        for f, declaration in declared(section)
        if declaration.flags
    ]


def _list_options() -> dict[str, str]:
    """Spelling -> canonical flag of the options that take several values after one flag."""
    out: dict[str, str] = {}
    for _, declaration in _cli_fields():
        if declaration.kind == "list":
            canonical = declaration.option or declaration.flags[0]
            for flag in (*declaration.flags, *declaration.list_aliases):
                out[flag] = canonical
    return out


#: options that take one or more values after a single flag (``--delays 1 2 3 4``)
LIST_OPTIONS = _list_options()
#: list options whose ``--opt=value`` is that one value (values such as ``name=path``)
_INLINE_SINGLE = {
    flag for _, d in _cli_fields() if d.inline_single for flag in (*d.flags, *d.list_aliases)
}


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
        if name in LIST_OPTIONS and not (name in _INLINE_SINGLE and eq):
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
        if name in _INLINE_SINGLE and eq:
            out += [LIST_OPTIONS[name], inline]
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


def config_from_click(ctx: click.Context, params: dict) -> RunConfig:
    """Build the RunConfig from click's parsed values, the config file underneath.

    Values given on the command line override those of ``--config-file``; each option's
    value is read as its declaration says (:attr:`bids_vem.settings.Setting.from_cli`).
    """
    from_file: dict = load_config_file(params["config_file"]) if params["config_file"] else {}
    level = params["analysis_level"]
    if level not in ("participant", "group"):
        raise UnknownLevelError(f"unknown analysis level {level!r}: choose participant or group")
    settings: dict[str, Any] = {}
    for name, declaration in _cli_fields():
        param = _PARAM_OF[name]
        source = ctx.get_parameter_source(param)
        given = source is not None and source.name == "COMMANDLINE"
        if name in from_file and not given:
            settings[name] = from_file[name]
        else:
            settings[name] = _from_cli(declaration, params[param])
    return RunConfig.create(
        bids_dir=Path(params["bids_dir"]).expanduser().absolute(),
        output_dir=Path(params["output_dir"]).expanduser().absolute(),
        analysis_level=level,
        **settings,
    )


def _from_cli(declaration: Setting, value: Any) -> Any:
    if declaration.from_cli is not None:
        return declaration.from_cli(value, declaration.option)
    if declaration.type in ("dir", "file", "path"):
        if declaration.kind == "list":
            return tuple(Path(v).expanduser().absolute() for v in value)
        return None if value is None else Path(value).expanduser().absolute()
    if declaration.kind == "list":
        return tuple(value)
    return value


_TYPES = {
    "str": click.STRING,
    "int": click.INT,
    "float": click.FLOAT,
    "dir": click.Path(path_type=Path, file_okay=False),
    "file": click.Path(path_type=Path, dir_okay=False),
    "path": click.Path(path_type=Path),
}


def _click_type(declaration: Setting) -> click.ParamType:
    if declaration.choices:
        return click.Choice(list(declaration.choices))
    low, high = declaration.minimum, declaration.maximum
    if declaration.type == "int" and (low is not None or high is not None):
        return click.IntRange(min=low, max=high)
    if declaration.type == "float" and (low is not None or high is not None):
        return click.FloatRange(min=low, max=high, min_open=declaration.min_open)
    return _TYPES[declaration.type]


def _option(name: str, default: Any, declaration: Setting) -> click.Option:
    """The click option of one declared setting."""
    cli_default = default if declaration.cli_default is MISSING else declaration.cli_default
    kwargs: dict[str, Any] = {"help": declaration.help}
    if declaration.kind == "count":
        return click.Option(list(declaration.flags), count=True, **kwargs)
    if declaration.kind == "flag":
        flags = list(declaration.flags)
        if declaration.off_flag:
            flags = [f"{flags[0]}/{declaration.off_flag}"]
            kwargs["show_default"] = True
        return click.Option(flags, is_flag=True, default=bool(cli_default), **kwargs)
    if declaration.metavar:
        kwargs["metavar"] = declaration.metavar
    if declaration.kind == "list":
        kwargs["multiple"] = True
        if cli_default not in ((), None):
            kwargs["default"] = tuple(cli_default)
            kwargs["show_default"] = declaration.show_default
    elif cli_default is not None:
        kwargs["default"] = cli_default
        kwargs["show_default"] = declaration.show_default
    if declaration.type != "str" or declaration.choices:
        kwargs["type"] = _click_type(declaration)
    return click.Option(list(declaration.flags), **kwargs)


def _options() -> list[click.Option]:
    """One click option per declared setting; records which parameter sets which field."""
    options = []
    for section in SECTIONS.values():
        for f, declaration in declared(section):
            if declaration.flags:
                default = (
                    f.default_factory()
                    if f.default_factory is not dataclasses.MISSING
                    else f.default
                )
                options.append(_option(f.name, default, declaration))
                _PARAM_OF[f.name] = options[-1].name
    return options


#: field name -> the click parameter that sets it (click names it after the first long flag)
_PARAM_OF: dict[str, str] = {}


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


def build_cli() -> click.Command:
    """The ``bids_vem`` click command: the positional arguments, every declared setting,
    ``--config-file`` and ``--version``. Its callback returns the RunConfig."""

    @click.pass_context
    def parse(ctx: click.Context, **params: Any) -> RunConfig:
        return config_from_click(ctx, params)

    params: list[click.Parameter] = [
        click.Argument(["bids_dir"], type=click.Path(path_type=Path, file_okay=False)),
        click.Argument(["output_dir"], type=click.Path(path_type=Path, file_okay=False)),
        click.Argument(["analysis_level"]),
        *_options(),
        click.Option(
            ["--config-file", "--config_file", "config_file"],
            type=click.Path(path_type=Path, dir_okay=False),
            help="TOML file of options (as saved in OUTPUT_DIR/logs); the command line "
            "overrides it.",
        ),
    ]
    command = click.Command(
        "bids_vem",
        params=params,
        callback=parse,
        help=_HELP,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )
    return click.version_option(
        __version__, "--version", prog_name="bids_vem", message="%(prog)s %(version)s"
    )(command)


cli = build_cli()
