"""Feature-space specs: one string names a model family, a model and where its weights come from.

Syntax: ``[name=]family:model[@weights][#option=value...]``, for example::

    sentence:/models/all-MiniLM-L6-v2            a sentence-transformers folder
    sentence:all-MiniLM-L6-v2                    a name, resolved in the model directories
    openclip:ViT-B-32@/models/vit-b-32.safetensors  an open_clip architecture + a weights file
    openclip:ViT-B-32@laion2b_s34b_b79k          a pretrained tag, resolved from the local cache only
    openclip:/models/my-clip                     an open_clip local-dir folder
                                                 (open_clip_config.json + open_clip_model.safetensors)
    minilm=sentence:all-MiniLM-L6-v2             the same with an explicit feature-space name
    hf:/models/roberta-base#pool=mean            any transformers text model (encoder or decoder
                                                 LM), token states pooled: mean | cls | last
    hf:/models/clip-vit-b-32                     a CLIP / SigLIP vision tower (transformers) for
                                                 images: embeds | pooled | mean | cls
    bridgetower:/models/bt-base#layers=all       BridgeTower, one feature space per layer
    bridgetower:/models/bt-base#layers=4,8#pool=cls

Options follow the model as ``#key=value`` (several: ``#layers=4,8#pool=cls``):

``pool``
    How token states become one vector. ``hf`` text: ``mean`` (masked mean over tokens, the
    default), ``cls`` (first token) or ``last`` (last non-padding token, for decoder LMs).
    ``hf`` images: ``embeds`` (CLIP ``image_embeds``, after the projection), ``pooled``
    (the tower's ``pooler_output``), ``mean`` or ``cls`` over patch tokens; the default is
    ``embeds`` for CLIP checkpoints with a projection, else ``pooled``. ``bridgetower``:
    ``mean`` (default) or ``cls``. Layer spaces always pool with ``mean`` or ``cls``.
``layers``
    Intermediate layers, each its own feature space named ``<name>L<k>``: ``all``, or a
    comma list of layer numbers and ``pooler``. Layer 0 is the embedding layer, layer k the
    output of the k-th block. For ``bridgetower`` the blocks are the modality's uni-modal
    encoder layers (1..n) followed by the cross-modal layers (n+1..n+c) of the same stream;
    ``pooler`` is the cross-modal pooler (images; ``all`` includes it for images), named
    ``<name>Pooler``. ``all`` is every block, 1..n_layers. Families: ``hf``, ``bridgetower``.

Default names are the model's base name with every non-alphanumeric character removed
(``all-MiniLM-L6-v2`` -> ``allMiniLML6v2``, ``ViT-B-32`` -> ``ViTB32``). Families that embed
both text and images (open_clip) get the modality as a suffix, so that the text and image
spaces of one model never share a name: ``ViTB32Text``, ``ViTB32Image``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from bids_vem._utils import LABEL
from bids_vem.errors import UsageError
from bids_vem.features import families
from bids_vem.features.weights import WEIGHT_SUFFIXES, is_path_like

__all__ = [
    "MODALITIES",
    "FeatureSpaceSpec",
    "parse_feature_space",
    "expand_layers",
    "layer_suffix",
    "check_unique_names",
    "is_path_like",
]

#: token poolings that apply to intermediate layers
LAYER_POOLINGS = ("mean", "cls", "last")
_OPTIONS = ("pool", "layers", "long")
#: what an open_clip text tower does with texts longer than its context (77 tokens for CLIP)
LONG_TEXTS = ("truncate", "chunks")

MODALITIES = ("text", "image")

_SPEC_RE = re.compile(r"^(?:(?P<name>[^=:]*)=)?(?P<family>[A-Za-z0-9_-]+):(?P<rest>.+)$")


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
        Model family, a key of :data:`bids_vem.features.families.FAMILIES` (``"openclip"``).
    model : str
        Architecture name, model name or folder path, as written in the spec.
    weights : str or None
        The part after ``@``: a weights file or a pretrained tag (open_clip only).
    text : str
        The original spec string.
    pool : str or None
        ``#pool=`` option (the family's ``poolings``); None: the family's default.
    layers : tuple or None
        ``#layers=`` request: ``("all",)`` or layer numbers and ``"pooler"``; None: the final
        output only. Cleared by :func:`expand_layers`, which sets ``layer`` instead.
    layer : int, str or None
        The one layer this spec is (after :func:`expand_layers`): a layer number or
        ``"pooler"``; None: the model's final output.
    long : str or None
        ``#long=`` option of open_clip text spaces, for texts longer than the tower's context
        (77 tokens): ``"truncate"`` (open_clip's behaviour, the default) or ``"chunks"`` (the
        mean of the embeddings of consecutive chunks that fit, renormalised).
    """

    name: str
    modality: str
    family: str
    model: str
    weights: str | None
    text: str
    pool: str | None = None
    layers: tuple[int | str, ...] | None = None
    layer: int | str | None = None
    long: str | None = None

    @property
    def options(self) -> dict[str, object]:
        """The options that change the numbers (for cache keys and metadata); empty by default."""
        out: dict[str, object] = {}
        if self.pool is not None:
            out["pool"] = self.pool
        if self.layer is not None:
            out["layer"] = self.layer
        if self.layers is not None:
            out["layers"] = list(self.layers)
        if self.long is not None:
            out["long"] = self.long
        return out


def _default_name(family: str, model: str, modality: str) -> str:
    base = model.rstrip("/\\")
    base = re.split(r"[/\\]", base)[-1]
    for suffix in WEIGHT_SUFFIXES:
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
    name = re.sub(r"[^A-Za-z0-9]", "", base)
    if len(families.FAMILIES[family].modalities) > 1:
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
            f"feature space {spec_text!r}: expected [name=]family:model[@weights][#option=value], "
            f"e.g. 'sentence:/models/all-MiniLM-L6-v2' or 'openclip:ViT-B-32@/models/w.safetensors'"
        )
    family = match["family"].lower()
    if family not in families.FAMILIES:
        raise UsageError(
            f"feature space {spec_text!r}: unknown model family {match['family']!r} "
            f"(known: {', '.join(sorted(families.FAMILIES))})"
        )
    if modality not in families.FAMILIES[family].modalities:
        raise UsageError(
            f"feature space {spec_text!r}: family {family!r} cannot embed {modality} "
            f"(it embeds: {', '.join(sorted(families.FAMILIES[family].modalities))})"
        )
    rest, _, option_text = match["rest"].partition("#")
    pool, layers, long = _parse_options(spec_text, family, modality, option_text)
    model, sep, weights = rest.partition("@")
    model = model.strip()
    weights_value: str | None = weights.strip() if sep else None
    if not model:
        raise UsageError(f"feature space {spec_text!r}: the model part after {family}: is empty")
    if sep and not weights_value:
        raise UsageError(f"feature space {spec_text!r}: nothing after '@' (weights file or tag)")
    if not families.FAMILIES[family].takes_weights and weights_value is not None:
        raise UsageError(
            f"feature space {spec_text!r}: {family} models take no @weights; "
            f"give the model folder, e.g. '{family}:/models/<model folder>'"
        )
    if match["name"] is not None:
        name = match["name"].strip()
        if not LABEL.match(name):
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
        pool=pool,
        layers=layers,
        long=long,
    )


def _parse_options(
    spec_text: str, family: str, modality: str, option_text: str
) -> tuple[str | None, tuple[int | str, ...] | None, str | None]:
    pool: str | None = None
    layers: tuple[int | str, ...] | None = None
    long: str | None = None
    if not option_text:
        return pool, layers, long
    for item in option_text.split("#"):
        key, sep, value = (part.strip() for part in item.partition("="))
        key = key.lower()
        if key not in _OPTIONS or not sep or not value:
            raise UsageError(
                f"feature space {spec_text!r}: bad option {item!r}; options are "
                f"#pool=<pooling>, #layers=all|<k>,<k>... (e.g. '#layers=4,8#pool=mean') and, "
                f"for open_clip text, #long=truncate|chunks"
            )
        if key == "long":
            if family != "openclip" or modality != "text":
                raise UsageError(
                    f"feature space {spec_text!r}: #long applies to open_clip text spaces "
                    f"(their 77-token tower), not {family} {modality} spaces"
                )
            if value.lower() not in LONG_TEXTS:
                raise UsageError(
                    f"feature space {spec_text!r}: #long={value}: expected "
                    f"{' or '.join(LONG_TEXTS)}"
                )
            long = value.lower()
            continue
        if key == "pool":
            allowed = families.FAMILIES[family].poolings.get(modality, ())
            if value.lower() not in allowed:
                what = f"one of {', '.join(allowed)}" if allowed else "not an option"
                raise UsageError(
                    f"feature space {spec_text!r}: #pool={value} is not supported for "
                    f"{family} {modality} spaces ({what})"
                )
            pool = value.lower()
        else:
            if not families.FAMILIES[family].layers:
                layered = sorted(name for name, f in families.FAMILIES.items() if f.layers)
                raise UsageError(
                    f"feature space {spec_text!r}: #layers is supported for the families "
                    f"{', '.join(layered)}, not {family!r}"
                )
            layers = _parse_layers(spec_text, value)
    if layers is not None and pool is not None and pool not in LAYER_POOLINGS:
        raise UsageError(
            f"feature space {spec_text!r}: #pool={pool} gives one vector per image, not per "
            f"layer; layer spaces pool with {' or '.join(LAYER_POOLINGS)}"
        )
    return pool, layers, long


def _parse_layers(spec_text: str, value: str) -> tuple[int | str, ...]:
    if value.lower() == "all":
        return ("all",)
    out: list[int | str] = []
    for token in value.split(","):
        token = token.strip().lower()
        if token == "pooler":
            out.append("pooler")
        elif token.isdigit():
            out.append(int(token))
        else:
            raise UsageError(
                f"feature space {spec_text!r}: #layers={value}: {token!r} is not a layer number "
                f"(give all, or numbers and 'pooler' separated by commas)"
            )
    if len(set(out)) != len(out):
        raise UsageError(f"feature space {spec_text!r}: #layers={value} repeats a layer")
    return tuple(out)


def layer_suffix(layer: int | str) -> str:
    """The name suffix of one layer space: ``L4`` for layer 4, ``Pooler`` for the pooler."""
    return "Pooler" if layer == "pooler" else f"L{int(layer)}"


def expand_layers(
    spec: FeatureSpaceSpec, n_layers: int, *, has_pooler: bool = False
) -> list[FeatureSpaceSpec]:
    """One spec per requested layer, named ``<name>L<k>`` (``<name>Pooler``).

    Parameters
    ----------
    spec : FeatureSpaceSpec
        A parsed spec; without ``#layers`` it is returned alone, unchanged.
    n_layers : int
        Blocks of the model for this modality (from its config, see
        :func:`bids_vem.features.layers.model_layers`): layers 0..n_layers exist.
    has_pooler : bool
        Whether the model has a ``pooler`` output for this modality (``all`` includes it).

    Returns
    -------
    list of FeatureSpaceSpec
        Each with ``layers=None`` and ``layer`` set, in the requested order.

    Raises
    ------
    UsageError
        A layer number above ``n_layers`` or ``pooler`` where the model has none (exit 64).
    """
    if spec.layers is None:
        return [spec]
    if spec.layers == ("all",):
        wanted: list[int | str] = list(range(1, n_layers + 1))
        if has_pooler:
            wanted.append("pooler")
    else:
        wanted = list(spec.layers)
    for layer in wanted:
        if layer == "pooler" and not has_pooler:
            raise UsageError(
                f"feature space {spec.text!r}: this model has no pooler layer for "
                f"{spec.modality} (layers 0..{n_layers} exist)"
            )
        if layer != "pooler" and int(layer) > n_layers:
            raise UsageError(
                f"feature space {spec.text!r}: layer {layer} does not exist "
                f"(layers 0..{n_layers}: 0 is the embedding layer)"
            )
    return [
        replace(spec, name=spec.name + layer_suffix(layer), layers=None, layer=layer)
        for layer in wanted
    ]


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
