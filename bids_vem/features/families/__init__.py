"""The model families, one module each, and the registry that finds them.

Every module of this package (except those whose name starts with ``_``) defines ``FAMILY``,
a :class:`~bids_vem.features.families._base.Family`; :data:`FAMILIES` maps each family's
name to it. The spec parser, the weight resolver, the encoders and the feature sidecars ask
the family, never a table of their own, so a new family is one new module here plus its
tests (``docs/developing.md``).
"""

from __future__ import annotations

import importlib
import pkgutil

from bids_vem.errors import UsageError
from bids_vem.features.families._base import EncodeRequest, Family

__all__ = ["FAMILIES", "EncodeRequest", "Family", "get_family"]


def _discover() -> dict[str, Family]:
    found: dict[str, Family] = {}
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module.name.startswith("_"):
            continue
        family = getattr(importlib.import_module(f"{__name__}.{module.name}"), "FAMILY", None)
        if not isinstance(family, Family):
            raise TypeError(f"{__name__}.{module.name} defines no FAMILY")
        if family.name in found:
            raise TypeError(f"two modules define the model family {family.name!r}")
        found[family.name] = family
    return found


#: family name -> Family, one per module of this package
FAMILIES: dict[str, Family] = _discover()


def get_family(name: str) -> Family:
    """The family called ``name``; UsageError (64) listing the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise UsageError(
            f"unknown model family {name!r} (known: {', '.join(sorted(FAMILIES))})"
        ) from None
