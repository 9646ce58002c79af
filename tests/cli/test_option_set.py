"""The generated command line accepts exactly the options it accepted before the settings
were declared in sections (``data/option_set.json``, taken from the hand-written parser)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bids_vem.cli.parser import ALIASES, LIST_OPTIONS, cli
from bids_vem.config import SECTIONS
from bids_vem.settings import declared

SNAPSHOT = Path(__file__).parent / "data" / "option_set.json"


def option_set(command: click.Command) -> dict:
    """Every parameter's spellings (the one ``--help`` shows and the aliases rewritten to it
    before click parses), default, arity and type, keyed by its stored name."""
    ctx = click.Context(command)
    out = {}
    for param in command.params:
        default = param.get_default(ctx, call=False)
        if type(default).__name__ == "Sentinel":  # click >= 8.3: no default
            default = None
        aliases = [alias for alias, shown in ALIASES.items() if shown in param.opts]
        out[param.name] = {
            "kind": "Argument" if isinstance(param, click.Argument) else "Option",
            "opts": sorted([*param.opts, *aliases]),
            "secondary_opts": sorted(getattr(param, "secondary_opts", [])),
            "default": list(default) if isinstance(default, tuple) else default,
            "multiple": bool(getattr(param, "multiple", False)),
            "is_flag": bool(getattr(param, "is_flag", False)),
            "count": bool(getattr(param, "count", False)),
            "type": param.type.name,
            "choices": list(getattr(param.type, "choices", []) or []) or None,
            "min": getattr(param.type, "min", None),
            "max": getattr(param.type, "max", None),
        }
    return out


def test_generated_options_equal_the_previous_option_set():
    """Every option of the snapshot is still accepted, spelled and defaulted as before.

    The snapshot was taken from the hand-written parser before the settings were declared in
    sections; options added later may appear beside them.
    """
    expected = json.loads(SNAPSHOT.read_text())
    options = option_set(cli)
    assert {name: options.get(name) for name in expected["options"]} == expected["options"]
    list_options = {k: v for k, v in LIST_OPTIONS.items() if k in expected["list_options"]}
    assert list_options == expected["list_options"]


def test_every_declared_setting_is_an_option_or_says_why_not():
    names = {p.name for p in cli.params}
    for section in SECTIONS.values():
        for f, declaration in declared(section):
            assert declaration.flags, f"{section.NAME}.{f.name} has no flag"
            assert declaration.help, f"{section.NAME}.{f.name} has no help"
    # one option per setting, plus the three arguments, --config-file and --version
    n_settings = sum(1 for section in SECTIONS.values() for _ in declared(section))
    assert len(names) == n_settings + 5
