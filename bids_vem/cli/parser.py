"""Command-line options of bids_vem, generated from the settings declarations.

Only parsing lives here: every option is a field of a section of :mod:`bids_vem.config`,
and :func:`build_cli` turns those declarations into click options (flags, types, choices,
ranges, defaults and help). Spelling follows fMRIPrep (``--participant-label 01 02``,
underscore aliases, ``@file`` lists).

``--help`` groups the options in panels as fMRIPrep's help does (:data:`PANELS`), with
rich-click: its options take a panel name, so the groups follow the settings sections with
no change to how options are declared or parsed (click-option-group would wrap every option
in its own decorators and constraints). Each option shows one spelling; the others are
rewritten to it before click parses (:data:`ALIASES`).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import click
from rich_click import RichCommand, RichHelpConfiguration, RichOption
from rich_click.rich_panel import RichOptionPanel

from bids_vem import __version__
from bids_vem.config import SECTIONS, RunConfig, load_config_file
from bids_vem.errors import UnknownLevelError
from bids_vem.option_values import absolute_spec, available_cpus, parse_mem
from bids_vem.settings import MISSING, Setting, declared

__all__ = [
    "ALIASES",
    "LIST_OPTIONS",
    "PANELS",
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


def _aliases() -> dict[str, str]:
    """Every further long spelling of an option -> the one ``--help`` shows."""
    return {
        flag: declaration.option
        for _, declaration in _cli_fields()
        for flag in declaration.flags
        if flag.startswith("--") and flag != declaration.option
    }


#: accepted spellings that ``--help`` does not show (``--participant_label``) -> the shown one
ALIASES = _aliases() | {"--config_file": "--config-file"}

#: the panels of ``--help``, in order: per settings section, and fields placed elsewhere
PANELS = (
    "Inputs and filtering",
    "Features",
    "Alignment",
    "Encoding and evaluation",
    "Statistics",
    "Analyses",
    "Outputs",
    "Performance",
    "Other",
)
_PANEL_OF_SECTION = {
    "inputs": "Inputs and filtering",
    "models": "Features",
    "captioning": "Features",
    "features": "Features",
    "alignment": "Alignment",
    "evaluation": "Encoding and evaluation",
    "analyses": "Analyses",
    "outputs": "Outputs",
    "execution": "Performance",
}
_PANEL_OF_FIELD = {
    "permutations": "Statistics",
    "model_dirs": "Features",
    "skip_bids_validation": "Other",
    "random_seed": "Other",
    "verbosity": "Other",
}
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
        if name in ALIASES:  # one spelling reaches click (the one --help shows)
            name = ALIASES[name]
            arg = name + eq + inline
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


#: what a value of each type is called in ``--help`` when the declaration names none
_METAVARS = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "dir": "DIR", "file": "FILE",
             "path": "PATH"}  # fmt: skip


#: a help text's closing "Default: ..." sentence (a default computed at run time)
_DEFAULT_SENTENCE = re.compile(r"\s*Default: (?P<value>[^\n]+?)\.?\s*$")
#: choices longer than this (characters, joined) are listed in the help, not the metavar
_LONG_CHOICES = 30


def _help(declaration: Setting) -> tuple[str, str | None]:
    """The declared help with the spellings also accepted that are not just ``_`` for ``-``,
    and the default it states in words (shown as ``[default: ...]`` like every other)."""
    shown = declaration.option or ""
    others = [
        f for f in (*declaration.flags, *declaration.list_aliases)
        if f.startswith("--") and f != shown
        and not ("_" in f and f.replace("_", "-") in (shown, *declaration.flags))
    ]  # fmt: skip
    text, default = declaration.help, None
    match = _DEFAULT_SENTENCE.search(text)
    if match:
        text, default = text[: match.start()], match["value"]
    if declaration.choices and len("|".join(declaration.choices)) > _LONG_CHOICES:
        text += f" One of: {', '.join(declaration.choices)}."
    return text + (f" Also: {', '.join(others)}." if others else ""), default


def _option(name: str, default: Any, declaration: Setting, panel: str) -> click.Option:
    """The click option of one declared setting, in its ``--help`` panel."""
    cli_default = default if declaration.cli_default is MISSING else declaration.cli_default
    text, default_in_words = _help(declaration)
    kwargs: dict[str, Any] = {"help": text, "panel": panel}
    if default_in_words:
        kwargs["show_default"] = default_in_words
    # one spelling shown: the short flag (-w) and the first long one; the rest are ALIASES
    flags = [f for f in declaration.flags if not f.startswith("--")] + [declaration.option]
    if declaration.kind == "count":
        return RichOption(flags, count=True, **kwargs)
    if declaration.kind == "flag":
        if declaration.off_flag:
            flags = [f"{declaration.option}/{declaration.off_flag}"]
            kwargs["show_default"] = True
        return RichOption(flags, is_flag=True, default=bool(cli_default), **kwargs)
    metavar = declaration.metavar or (
        "[" + "|".join(declaration.choices) + "]"
        if declaration.choices and len("|".join(declaration.choices)) <= _LONG_CHOICES
        else "NAME"
        if declaration.choices
        else _METAVARS[declaration.type]
    )
    if declaration.kind == "list":
        kwargs["multiple"] = True
        metavar += " ..."  # several values after one flag, or the flag repeated
        if cli_default not in ((), None):
            kwargs["default"] = tuple(cli_default)
            kwargs["show_default"] = default_in_words or declaration.show_default
    elif cli_default is not None:
        kwargs["default"] = cli_default
        kwargs["show_default"] = default_in_words or declaration.show_default
    kwargs["metavar"] = metavar
    if declaration.type != "str" or declaration.choices:
        kwargs["type"] = _click_type(declaration)
    return RichOption(flags, **kwargs)


def _options() -> list[click.Option]:
    """One click option per declared setting; records which parameter sets which field."""
    options = []
    for section_name, section in SECTIONS.items():
        for f, declaration in declared(section):
            if declaration.flags:
                default = (
                    f.default_factory()
                    if f.default_factory is not dataclasses.MISSING
                    else f.default
                )
                panel = _PANEL_OF_FIELD.get(f.name, _PANEL_OF_SECTION[section_name])
                options.append(_option(f.name, default, declaration, panel))
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
Subcommands:
  bids_vem models list|verify --text-encoder SPEC ...   which model weights are on this
                                                        machine (offline; exit 66 if missing)
  bids_vem models fetch SPEC ... --dest DIR              download weights (needs network)

\b
Options with several values take them after one flag (--delays 1 2 3 4) or repeated.
Underscore spellings (--participant_label) are accepted for every option.
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
        RichOption(
            ["--config-file", "config_file"],
            type=click.Path(path_type=Path, dir_okay=False),
            metavar="FILE",
            help="TOML file of options (as saved in OUTPUT_DIR/logs); the command line "
            "overrides it.",
            panel="Other",
        ),
    ]
    command = RichCommand(
        "bids_vem",
        params=params,
        callback=parse,
        help=_HELP,
        panels=[RichOptionPanel(name) for name in PANELS],
        context_settings={
            "help_option_names": ["-h", "--help"],
            "rich_help_config": RichHelpConfiguration(
                options_panel_title="Other", width=100, max_width=100
            ),
        },
    )
    return click.version_option(
        __version__, "--version", prog_name="bids_vem", message="%(prog)s %(version)s"
    )(command)


cli = build_cli()
