"""What an option's value means, read from the text given on the command line.

Each function takes click's value and the flag it came with (for the message), and returns
the value a settings field holds: label lists without prefixes, absolute paths, model specs
with pinned paths, filter and plugin files read. The declarations in :mod:`bids_vem.config`
name them (``from_cli=``); nothing here knows click.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from bids_vem._utils import LABEL
from bids_vem.errors import InputMissingError, UsageError

__all__ = [
    "absolute_spec",
    "absolute_specs",
    "available_cpus",
    "derivatives",
    "labels",
    "model_dirs",
    "parse_mem",
    "plugin_file",
    "filter_file",
    "rois",
]


def _read_label_file(value: str, option: str) -> list[str]:
    path = Path(value[1:])
    try:
        lines = path.read_text().split()
    except OSError as err:
        raise UsageError(
            f"{option} {value}: cannot read the label file {path} ({err.strerror})"
        ) from err
    return lines


def labels(prefix: str):
    """A reader of BIDS labels (``sub-01``, ``01`` or ``@FILE``) with ``prefix`` stripped."""

    def read(values: tuple[str, ...], option: str) -> tuple[str, ...]:
        return _labels(values, prefix, option)

    return read


def _labels(values: tuple[str, ...], prefix: str, option: str) -> tuple[str, ...]:
    labels: list[str] = []
    for value in values:
        items = _read_label_file(value, option) if value.startswith("@") else [value]
        for item in items:
            item = item.strip()
            if item.startswith(f"{prefix}-"):
                item = item[len(prefix) + 1 :]
            if not LABEL.match(item):
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


def absolute_specs(values, option: str = "") -> tuple[str, ...] | str | None:
    """:func:`absolute_spec` of one spec (or None), or of each of a list."""
    if values is None or isinstance(values, str):
        return None if values is None else absolute_spec(values)
    return tuple(absolute_spec(v) for v in values)


def parse_mem(text: str | None, option: str = "--mem") -> int | None:
    """Memory in MB from ``16000``, ``16000MB``, ``16G``, ``16GB`` (fMRIPrep spelling) or
    ``16GiB``; every unit is binary (1 GB = 1024 MB), as fMRIPrep reads them."""
    if text is None:
        return None
    match = re.fullmatch(
        r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:I?B)?\s*", str(text), flags=re.IGNORECASE
    )
    if not match:
        raise UsageError(f"{option} {text!r}: expected a number of MB or a size like 16GB or 16GiB")
    value, unit = float(match.group(1)), match.group(2).upper()
    factor = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    return max(1, int(value * factor))


def model_dirs(values, option: str = "") -> tuple[Path, ...]:
    """Absolute folders, in the order given."""
    return tuple(Path(p).expanduser().absolute() for p in values)


def derivatives(values: tuple[str, ...], option: str = "") -> tuple[tuple[str, Path], ...]:
    """``[NAME=]PATH`` items as (name, absolute path); the name defaults to the folder's."""
    out = []
    for value in values:
        name, eq, path = value.partition("=")
        if not eq:
            name, path = Path(value).name, value
        out.append((name, Path(path).expanduser().absolute()))
    return tuple(out)


def rois(values: tuple[str, ...], option: str = "--roi") -> tuple[tuple[str, Path], ...]:
    """``[NAME=]MASK`` items as (name, absolute path); a ``label-X`` file name names it X."""
    out: list[tuple[str, Path]] = []
    for value in values:
        name, eq, path = value.partition("=")
        if not eq:
            # a file name such as sub-01_label-FFA_mask.nii.gz names its region
            path = value
            stem = Path(value).name.split(".")[0]
            label = re.search(r"label-([A-Za-z0-9]+)", stem)
            name = label.group(1) if label else re.sub(r"[^A-Za-z0-9]", "", stem)
        if not LABEL.match(name):
            raise UsageError(
                f"{option} {value}: the region name {name!r} must be letters and digits"
            )
        if name in dict(out):
            raise UsageError(f"{option} {value}: the region name {name!r} is given twice")
        out.append((name, Path(path).expanduser().absolute()))
    return tuple(out)


def filter_file(path: Path | None, option: str = "--bids-filter-file") -> dict:
    """The queries of a BIDS filter file (fMRIPrep's JSON form)."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise InputMissingError(f"{option} {path}: no such file") from err
    except json.JSONDecodeError as err:
        raise UsageError(
            f"{option} {path}: not valid JSON ({err.msg} at line {err.lineno})"
        ) from err
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UsageError(
            f'{option} {path}: expected an object of queries, e.g. {{"bold": {{"session": "1"}}}}'
        )
    return data


def plugin_file(path: Path | None, option: str = "--use-plugin") -> dict:
    """A nipype plugin YAML as ``{"plugin": ..., "plugin_args": {...}}``."""
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError as err:
        raise InputMissingError(f"{option} {path}: no such file") from err
    except yaml.YAMLError as err:
        raise UsageError(f"{option} {path}: not valid YAML ({err})") from err
    if not isinstance(data, dict) or "plugin" not in data:
        raise UsageError(f"{option} {path}: expected a 'plugin:' key (and optional 'plugin_args:')")
    return {"plugin": str(data["plugin"]), "plugin_args": dict(data.get("plugin_args") or {})}


def available_cpus() -> int:
    """CPUs this process may run on (honours taskset, cgroups cpusets and SLURM allocations)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
