"""How a setting is declared: one dataclass field carries its default, help, flags and checks.

A settings section is a frozen dataclass whose fields are made with :func:`setting`. From
those declarations alone come the command line (:mod:`bids_vem.cli.parser` generates the
click options, and :mod:`bids_vem.cli.boutiques` the descriptor from them), the TOML config
file (:meth:`Section.from_dict`), validation (once per field, in ``__post_init__``) and the
JSON that workflow nodes receive (:meth:`Section.to_json`). Adding an option is adding one
field to a section of :mod:`bids_vem.config`.

This module knows nothing of click: a declaration says what the option is (a value, a flag,
a counter, a list), and the CLI layer turns that into click objects.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bids_vem.errors import UsageError

__all__ = ["MISSING", "Check", "Section", "Setting", "declared", "setting"]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: "not declared": a command-line default that is the field's own
MISSING: Any = _Missing()

#: a predicate and what it means, e.g. ``(lambda v: v >= 1, "must be at least 1")``
Check = tuple[Callable[[Any], bool], str]


@dataclass(frozen=True)
class Setting:
    """What one field of a settings section is, to the command line and to its checks.

    Attributes
    ----------
    help : str
        The option's help text (also the Boutiques description).
    flags : tuple of str
        Command-line spellings; the first ``--long`` one names the click parameter (its
        stored name and Boutiques id) and the option in error messages. Empty: not an option.
    kind : {"value", "flag", "count", "list"}
        One value; an on/off flag; a counter (``-vv``); repeatable, or several values after
        one flag (``--delays 1 2 3``).
    type : {"str", "int", "float", "dir", "file", "path"}
        How the command line reads one value.
    off_flag : str or None
        The "off" spelling of a flag that is on by default (``--no-feature-cache``).
    choices : tuple of str
        Allowed values (checked everywhere; click shows them).
    minimum, maximum : float or None
        Inclusive bounds (``min_open``: the minimum is excluded).
    metavar : str or None
        The value's name in ``--help``.
    cli_default : object
        The command line's default when it differs from the field's (``None``: computed
        later, e.g. ``--nprocs`` from the machine); :data:`MISSING`: the field's default.
    show_default : bool
        Whether ``--help`` shows the default.
    from_cli : callable or None
        ``(value, flag) -> field value`` for what click gives (files read, paths made
        absolute, labels checked); None: a tuple for lists, absolute paths for paths.
    checks : tuple of Check
        More checks than choices and bounds; each message follows the flag.
    list_aliases : tuple of str
        Further spellings that only the list expansion knows (``--session_id``).
    inline_single : bool
        ``--opt=value`` takes that one value (values may hold ``=``, as ``[NAME=]PATH``).
    """

    help: str
    flags: tuple[str, ...] = ()
    kind: str = "value"
    type: str = "str"
    off_flag: str | None = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    min_open: bool = False
    metavar: str | None = None
    cli_default: Any = MISSING
    show_default: bool = True
    from_cli: Callable[[Any, str], Any] | None = None
    checks: tuple[Check, ...] = ()
    list_aliases: tuple[str, ...] = ()
    inline_single: bool = False

    @property
    def option(self) -> str | None:
        """The option's name in messages: its first ``--long`` flag."""
        return next((f for f in self.flags if f.startswith("--")), None)

    def check(self, value: Any, name: str) -> None:
        """Raise UsageError naming the option (else the field ``name``) when ``value`` is bad."""
        problem = self.problem(value)
        if problem:
            raise UsageError(f"{self.option or name} {problem}")

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (None: nothing). Lists are checked item by item."""
        items = value if self.kind == "list" and isinstance(value, tuple | list) else (value,)
        for item in items:
            if item is None:
                continue
            if self.choices and item not in self.choices:
                return f"must be {_either(self.choices)}, got {_shown(item)}"
            if self.minimum is not None and (
                item <= self.minimum if self.min_open else item < self.minimum
            ):
                return (
                    f"must be {'>' if self.min_open else '>='} {_number(self.minimum)}, got {item}"
                )
            if self.maximum is not None and item > self.maximum:
                return f"must be <= {_number(self.maximum)}, got {item}"
        for predicate, meaning in self.checks:
            if not predicate(value):
                return f"{meaning}, got {_shown(value)}"
        return None


def _shown(value: Any) -> str:
    return (
        str(list(value))
        if isinstance(value, tuple)
        else repr(value)
        if isinstance(value, str)
        else str(value)
    )


def _either(choices: tuple[str, ...]) -> str:
    return ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def setting(default: Any = dataclasses.MISSING, *, help: str, **declaration: Any) -> Any:  # noqa: A002
    """A dataclass field declared as a setting (see :class:`Setting` for the keywords)."""
    metadata = {"setting": Setting(help=" ".join(help.split()), **declaration)}
    if isinstance(default, dict | list):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def declared(cls: type) -> Iterator[tuple[dataclasses.Field, Setting]]:
    """The fields of a section with their declarations, in declaration order."""
    for f in dataclasses.fields(cls):
        if "setting" in f.metadata:
            yield f, f.metadata["setting"]


@dataclass(frozen=True)
class Section:
    """Base of the settings sections: checks its fields and (de)serialises them.

    Subclasses are frozen dataclasses of :func:`setting` fields; ``NAME`` is the section's
    key in the TOML file and in node inputs.
    """

    NAME: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f, declaration in declared(type(self)):
            declaration.check(getattr(self, f.name), f.name)

    def to_dict(self) -> dict[str, Any]:
        """JSON/TOML-ready values (paths as strings; (name, path) pairs as a table)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        """The section as sorted JSON (a node input that nipype hashes by value)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> typing.Self:
        """A section from :meth:`to_dict` output or a TOML table; values take the field types."""
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UsageError(f"unknown {cls.NAME} setting(s): {', '.join(unknown)}")
        return cls(**{k: _typed(hints[k], v) for k, v in data.items()})

    @classmethod
    def typed(cls, name: str, value: Any) -> Any:
        """``value`` (from JSON or TOML) as the field ``name`` holds it (paths, tuples)."""
        return _typed(typing.get_type_hints(cls)[name], value)

    @classmethod
    def from_json(cls, text: str) -> typing.Self:
        return cls.from_dict(json.loads(text))


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if (
        isinstance(value, tuple)
        and value
        and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], Path) for v in value)
    ):
        return {name: str(path) for name, path in value}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _typed(hint: Any, value: Any) -> Any:
    """``value`` (from JSON or TOML) as the annotated type: paths, tuples, pairs."""
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Path:
        return Path(value)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _typed(inner[0], value) if len(inner) == 1 else value
    if origin is tuple:
        item = args[0] if args else Any
        if typing.get_origin(item) is tuple and isinstance(value, dict):
            # (name, path) pairs are a table in TOML: {name = "path"}
            return tuple((str(k), _typed(typing.get_args(item)[1], v)) for k, v in value.items())
        return tuple(_typed(item, v) for v in value)
    return value
