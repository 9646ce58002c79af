"""Feature-space specs: one string names a model family, a model and where its weights come from.

Syntax: ``[name=]family:model[@weights]``, for example::

    sentence:/models/all-MiniLM-L6-v2            a sentence-transformers folder
    sentence:all-MiniLM-L6-v2                    a name, resolved in the model directories
    openclip:ViT-B-32@/models/vit-b-32.safetensors  an open_clip architecture + a weights file
    openclip:ViT-B-32@laion2b_s34b_b79k          a pretrained tag, resolved from the local cache only
    openclip:/models/my-clip                     an open_clip local-dir folder
                                                 (open_clip_config.json + open_clip_model.safetensors)
    minilm=sentence:all-MiniLM-L6-v2             the same with an explicit feature-space name

Default names are the model's base name with every non-alphanumeric character removed
(``all-MiniLM-L6-v2`` -> ``allMiniLML6v2``, ``ViT-B-32`` -> ``ViTB32``). Families that embed
both text and images (open_clip) get the modality as a suffix, so that the text and image
spaces of one model never share a name: ``ViTB32Text``, ``ViTB32Image``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath

from bids_vem.errors import UsageError

__all__ = [
    "FAMILIES",
    "MODALITIES",
    "FeatureSpaceSpec",
    "parse_feature_space",
    "check_unique_names",
    "is_path_like",
]

#: Known model families and the modalities each can embed. A new family (``hf`` for
#: BridgeTower and Hugging Face encoders) is added here and gets an entry in the resolver
#: table of ``models.py`` and in the encoder tables of ``text.py`` / ``image.py``.
FAMILIES: dict[str, frozenset[str]] = {
    "openclip": frozenset({"text", "image"}),
    "sentence": frozenset({"text"}),
}

MODALITIES = ("text", "image")

_SPEC_RE = re.compile(r"^(?:(?P<name>[^=:]*)=)?(?P<family>[A-Za-z0-9_-]+):(?P<rest>.+)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9]+$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class FeatureSpaceSpec:
    """One feature space as the user asked for it.

    Attributes
    ----------
    name : str
        BIDS-safe name (letters and digits), used as ``desc-<name>`` in outputs.
    modality : str
        ``"text"`` (embeds captions) or ``"image"`` (embeds the stimulus images).
    family : str
        Model family, a key of :data:`FAMILIES` (``"openclip"``, ``"sentence"``).
    model : str
        Architecture name, model name or folder path, as written in the spec.
    weights : str or None
        The part after ``@``: a weights file or a pretrained tag (open_clip only).
    text : str
        The original spec string.
    """

    name: str
    modality: str
    family: str
    model: str
    weights: str | None
    text: str


def is_path_like(value: str) -> bool:
    """Whether ``value`` is written as a filesystem path rather than a name or a tag.

    Absolute paths, ``./``, ``../`` and ``~`` prefixes, and names ending in a weights suffix
    (``.safetensors``, ``.bin``, ``.pt``...) are paths; ``org/name`` is a hub-style name.
    """
    return (
        value.startswith(("/", "./", "../", "~", "\\"))
        or PurePath(value).is_absolute()
        or value.lower().endswith(_WEIGHT_SUFFIXES)
    )


def _default_name(family: str, model: str, modality: str) -> str:
    base = model.rstrip("/\\")
    base = re.split(r"[/\\]", base)[-1]
    for suffix in _WEIGHT_SUFFIXES:
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
    name = re.sub(r"[^A-Za-z0-9]", "", base)
    if len(FAMILIES[family]) > 1:
        name += modality.capitalize()
    return name


def parse_feature_space(text: str, modality: str) -> FeatureSpaceSpec:
    """Parse a ``[name=]family:model[@weights]`` spec for one modality.

    Parameters
    ----------
    text : str
        The spec as given on the command line.
    modality : {"text", "image"}
        What the feature space embeds: captions (``--text-feature-space``) or images.

    Returns
    -------
    FeatureSpaceSpec

    Raises
    ------
    UsageError
        Bad syntax, an unknown family, a family that cannot embed ``modality``, or a name
        with characters other than letters and digits (exit 64).
    """
    spec_text = str(text).strip()
    if modality not in MODALITIES:
        raise UsageError(
            f"feature space {spec_text!r}: modality must be one of {MODALITIES}, got {modality!r}"
        )
    match = _SPEC_RE.match(spec_text)
    if match is None:
        raise UsageError(
            f"feature space {spec_text!r}: expected [name=]family:model[@weights], "
            f"e.g. 'sentence:/models/all-MiniLM-L6-v2' or 'openclip:ViT-B-32@/models/w.safetensors'"
        )
    family = match["family"].lower()
    if family not in FAMILIES:
        raise UsageError(
            f"feature space {spec_text!r}: unknown model family {match['family']!r} "
            f"(known: {', '.join(sorted(FAMILIES))})"
        )
    if modality not in FAMILIES[family]:
        raise UsageError(
            f"feature space {spec_text!r}: family {family!r} cannot embed {modality} "
            f"(it embeds: {', '.join(sorted(FAMILIES[family]))})"
        )
    rest = match["rest"]
    model, sep, weights = rest.partition("@")
    model = model.strip()
    weights_value: str | None = weights.strip() if sep else None
    if not model:
        raise UsageError(f"feature space {spec_text!r}: the model part after {family}: is empty")
    if sep and not weights_value:
        raise UsageError(f"feature space {spec_text!r}: nothing after '@' (weights file or tag)")
    if family == "sentence" and weights_value is not None:
        raise UsageError(
            f"feature space {spec_text!r}: sentence models take no @weights; "
            f"give the model folder, e.g. 'sentence:/models/all-MiniLM-L6-v2'"
        )
    if match["name"] is not None:
        name = match["name"].strip()
        if not _NAME_RE.match(name):
            raise UsageError(
                f"feature space {spec_text!r}: name {name!r} must be letters and digits only "
                f"(it becomes desc-<name> in BIDS file names)"
            )
    else:
        name = _default_name(family, model, modality)
        if not name:
            raise UsageError(
                f"feature space {spec_text!r}: cannot derive a name from the model; "
                f"give one as name=family:model"
            )
    return FeatureSpaceSpec(
        name=name,
        modality=modality,
        family=family,
        model=model,
        weights=weights_value,
        text=spec_text,
    )


def check_unique_names(specs: Iterable[FeatureSpaceSpec]) -> None:
    """Raise UsageError (64) when two feature spaces share a name (their outputs would clash)."""
    seen: dict[str, FeatureSpaceSpec] = {}
    for spec in specs:
        if spec.name in seen:
            raise UsageError(
                f"feature spaces {seen[spec.name].text!r} and {spec.text!r} share the name "
                f"{spec.name!r}; name one of them explicitly as name=family:model"
            )
        seen[spec.name] = spec
