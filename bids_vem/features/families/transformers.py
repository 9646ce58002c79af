# Longer than 500 lines: the hf family plus the loading, pooling and batch loops BridgeTower shares.
"""Hugging Face ``transformers`` models (``hf:``): text LMs and vision towers.

Hugging Face transformers encoders: ``hf`` text LMs and vision towers, and BridgeTower.

``hf`` text (any encoder or decoder LM, loaded with ``AutoModel``; encoder-decoder models use
their encoder): token states of the last layer (or of layer k, ``#layers``) pooled with
``mean`` (over non-padding tokens, the default), ``cls`` (first token) or ``last`` (last
non-padding token; padding is on the right). Layer 0 is the embedding output.

``hf`` images: CLIP checkpoints load as ``CLIPVisionModelWithProjection`` (``embeds``: the
projected ``image_embeds``, the default when the checkpoint has the projection), SigLIP as
``SiglipVisionModel`` (``pooled``: its attention-pooled output, the default), any other vision
model (ViT, DINOv2...) with ``AutoModel`` (``pooled`` when it has a pooler, else ``mean``).
``mean`` / ``cls`` pool the last layer's patch tokens. Preprocessing is the folder's
``AutoImageProcessor``.

Finding a model folder (also for the captioners of :mod:`bids_vem.features.captioning`):
An ``hf:`` model is given either as a local ``save_pretrained`` folder (a path) or as a hub id
(``Salesforce/blip-image-captioning-large``). A hub id is looked up, first hit wins, in:

1. each ``--model-dir`` folder (``model_dirs``), then each folder of ``$BIDS_VEM_MODEL_DIR``:
   ``<dir>/<id>`` (``<dir>/Salesforce/blip-image-captioning-large``), ``<dir>/<base name>``
   (``<dir>/blip-image-captioning-large``), and ``<dir>`` as a hub cache
   (``<dir>/models--Salesforce--blip-image-captioning-large``);
2. the local Hugging Face hub caches: ``$HF_HUB_CACHE``, ``$HF_HOME/hub`` and
   ``~/.cache/huggingface/hub`` (``models--org--name/snapshots/<rev>``, the revision named by
   ``refs/main``, else the newest snapshot).

A folder counts as a model only with a ``config.json`` and a weights file
(``*.safetensors``, ``pytorch_model*.bin`` or a sharded index), so an interrupted download is
reported as missing rather than failing later inside ``from_pretrained``.

The shared parts (config reading, loading once per weights, token pooling, tokenisation and
the batch loops) serve the ``bridgetower`` family too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bids_vem._utils import first_line
from bids_vem.config import option_name
from bids_vem.errors import DataError, InputMissingError, UsageError
from bids_vem.features.batching import cached_load, run_image_batches, run_text_batches
from bids_vem.features.families._base import EncodeRequest, Family
from bids_vem.features.weights import (
    find_in_folders,
    hf_cache_dirs,
    is_path_like,
    model_search_dirs,
    weights_sha256,
)

if TYPE_CHECKING:
    from bids_vem.features.specs import FeatureSpaceSpec

__all__ = [
    "FAMILY",
    "HF_PREFIX",
    "TransformersInfo",
    "encode_pixel_batches",
    "encode_token_batches",
    "inspect_hf",
    "is_hf_model_dir",
    "load",
    "pool_tokens",
    "read_config",
    "resolve_hf_model",
    "transformers_family",
]

HF_PREFIX = "hf:"

_HOW_TO_PROVIDE = (
    "Provide the weights offline: `huggingface-cli download <repo-id> --local-dir DIR/<repo-id>` "
    f"(or save_pretrained into that folder) and pass DIR with {option_name('model_dirs')}, or give the folder path."
)


def is_hf_model_dir(path: Path) -> bool:
    """Whether ``path`` is a complete ``save_pretrained`` folder (config.json + weights)."""
    if not (path.is_dir() and (path / "config.json").is_file()):
        return False
    patterns = (
        "*.safetensors",
        "pytorch_model*.bin",
        "*.safetensors.index.json",
        "*.bin.index.json",
    )
    return any(any(path.glob(pattern)) for pattern in patterns)


def _cached_snapshot(cache_dir: Path, repo_id: str) -> tuple[Path, Path | None]:
    """(the repo folder in a hub cache, its snapshot of ``refs/main`` or newest, or None)."""
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return repo, None
    ref = repo / "refs" / "main"
    if ref.is_file():
        revision = ref.read_text(encoding="utf-8").strip()
        if revision and (snapshots / revision).is_dir():
            return repo, snapshots / revision
    found = sorted(
        (p for p in snapshots.iterdir() if p.is_dir()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    complete = [p for p in found if is_hf_model_dir(p)]
    return repo, (complete or found or [None])[0]


def resolve_hf_model(model: str, model_dirs: Sequence[Path | str] = ()) -> Path:
    """Find the local folder of a transformers model (search order in the module docstring).

    Parameters
    ----------
    model : str
        A local ``save_pretrained`` folder (``/models/blip``, ``./blip``, ``~/blip``) or a hub id
        (``Salesforce/blip-image-captioning-large``), with or without the ``hf:`` prefix.
    model_dirs : sequence of path
        The ``--model-dir`` folders, searched in order before ``$BIDS_VEM_MODEL_DIR`` and the
        Hugging Face caches.

    Returns
    -------
    Path
        An absolute model folder with ``config.json`` and weights.

    Raises
    ------
    UsageError
        An empty model name (exit 64).
    InputMissingError
        Not found or incomplete (exit 66); the one-line message lists every path tried and how
        to provide the weights.
    """
    name = model[len(HF_PREFIX) :] if model.startswith(HF_PREFIX) else model
    name = name.strip()
    if not name:
        raise UsageError(f"model {model!r}: empty model name (give a folder or a hub id)")
    tried: list[Path] = []
    label = f"{HF_PREFIX}{name}"
    path = Path(name).expanduser()
    if is_path_like(name) or path.is_dir():
        if is_hf_model_dir(path):
            return path.resolve()
        what = (
            "incomplete model folder (needs config.json and weights)"
            if path.is_dir()
            else ("model folder")
        )
        raise InputMissingError(
            f"model {label}: {what} not found; looked in: {path}. {_HOW_TO_PROVIDE}"
        )
    base = name.rstrip("/").split("/")[-1]
    names = list(dict.fromkeys([name, base]))
    dirs = model_search_dirs(model_dirs)
    found = find_in_folders(dirs, names, is_hf_model_dir, tried)
    if found is not None:
        return found
    # --model-dir folders may themselves be hub caches (HF_HUB_CACHE copied into an image)
    for cache in [*dirs, *hf_cache_dirs()]:
        repo, snapshot = _cached_snapshot(cache, name)
        tried.append(snapshot or repo)
        if snapshot is not None and is_hf_model_dir(snapshot):
            return snapshot.resolve()
    places = (
        "; ".join(str(t) for t in tried)
        or f"(nowhere: no {option_name('model_dirs')} and no hub id)"
    )
    raise InputMissingError(
        f"model {label}: transformers model folder (config.json + weights) not found; "
        f"looked in: {places}. {_HOW_TO_PROVIDE}"
    )


def resolve(
    spec: FeatureSpaceSpec, model_dirs: Sequence[Path | str], allow_downloads: bool
) -> Path:
    """A ``save_pretrained`` folder, found by :func:`resolve_hf_model`.

    With ``allow_downloads`` a hub id not found locally is downloaded into the hub cache.
    """
    try:
        return Path(resolve_hf_model(spec.model, model_dirs))
    except InputMissingError as exc:
        if allow_downloads and not is_path_like(spec.model) and "/" in spec.model:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(spec.model))
        raise InputMissingError(f"feature space {spec.text!r}: {exc}") from exc


_CLIP_TYPES = ("clip", "clip_vision_model")

_SIGLIP_TYPES = ("siglip", "siglip_vision_model")


@dataclass(frozen=True)
class TransformersInfo:
    """What a transformers feature space computes, known from the folder's config alone.

    Attributes
    ----------
    model_type : str
        ``config.model_type`` of the folder (``bert``, ``gpt2``, ``clip``, ``bridgetower``...).
    n_layers : int
        Blocks of the model for the spec's modality (layers 0..n_layers exist).
    has_pooler : bool
        Whether a ``pooler`` layer exists for the modality (BridgeTower images).
    pool : str
        The token pooling used (the spec's ``#pool`` or the default for this model).
    """

    model_type: str
    n_layers: int
    has_pooler: bool
    pool: str

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for metadata and cache keys."""
        return {
            "model_type": self.model_type,
            "n_layers": self.n_layers,
            "pool": self.pool,
        }


def read_config(model_path: Path) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(model_path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - unknown model type, unreadable JSON...
        raise DataError(
            f"model folder {model_path}: config.json cannot be read by transformers "
            f"({type(exc).__name__}: {first_line(exc)})"
        ) from exc


def text_config(config: Any) -> Any:
    return getattr(config, "text_config", None) or config


def vision_config(config: Any) -> Any:
    return getattr(config, "vision_config", None) or config


def load(loader: Any, model_path: Path, device: str, **kwargs: Any) -> Any:
    key = (
        getattr(loader, "__name__", str(loader)),
        str(model_path),
        weights_sha256(model_path),
        device,
    )
    return cached_load(
        key + tuple((k, repr(v)) for k, v in sorted(kwargs.items())),
        lambda: _load_now(loader, model_path, device, **kwargs),
    )


def _load_now(loader: Any, model_path: Path, device: str, **kwargs: Any) -> Any:
    try:
        model = loader.from_pretrained(str(model_path), local_files_only=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - missing/corrupt weights or processor files
        first = first_line(exc)
        raise InputMissingError(
            f"model folder {model_path}: cannot load {getattr(loader, '__name__', loader)} "
            f"({type(exc).__name__}: {first})"
        ) from exc
    if isinstance(model, tuple):  # output_loading_info=True
        return (model[0].to(device).eval(), model[1])
    return model.to(device).eval() if hasattr(model, "eval") else model


def pool_tokens(states: Any, mask: Any, pool: str) -> Any:
    """(batch, tokens, d) -> (batch, d): masked mean, first token or last non-padding token."""
    import torch

    if pool == "cls":
        return states[:, 0]
    if mask is None:
        mask = torch.ones(states.shape[:2], dtype=torch.long, device=states.device)
    if pool == "last":
        last = mask.long().sum(dim=1) - 1  # right padding: the last real token
        return states[torch.arange(states.shape[0], device=states.device), last]
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def check_layers(spec: FeatureSpaceSpec, info: TransformersInfo, layers: Sequence[Any]) -> None:
    for layer in layers:
        if layer is None:
            continue
        if layer == "pooler" and not info.has_pooler:
            raise UsageError(f"feature space {spec.text!r}: no pooler layer for {spec.modality}")
        if layer != "pooler" and not 0 <= int(layer) <= info.n_layers:
            raise UsageError(
                f"feature space {spec.text!r}: layer {layer} does not exist "
                f"(layers 0..{info.n_layers})"
            )


def _max_length(tokenizer: Any, config: Any) -> int:
    limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
    positions = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", 0
    )
    if positions:
        # RoBERTa-style position ids start after the padding index
        if "roberta" in str(config.model_type) or "bridgetower" in str(config.model_type):
            positions -= 2
        limit = min(limit, int(positions)) if 0 < limit < 10**9 else int(positions)
    return limit if limit > 0 else 512


def tokenizer(model_path: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = load(AutoTokenizer, model_path, "cpu")
    tokenizer.padding_side = "right"  # last-token pooling and masks assume right padding
    if tokenizer.pad_token is None:
        # decoder LMs (GPT-2) have no pad token; padded positions are masked out anyway
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise DataError(f"tokenizer of {model_path}: no pad, eos or unk token to pad with")
        tokenizer.pad_token = fallback
    return tokenizer


def inspect_hf(spec: FeatureSpaceSpec, model_path: Path) -> TransformersInfo:
    """Layers and default pooling of an ``hf`` spec, from the folder's config alone.

    Raises
    ------
    UsageError
        The folder is not a model of the spec's family, or the pooling does not apply (64).
    DataError
        ``config.json`` unreadable (65).
    """
    config = read_config(model_path)
    model_type = str(config.model_type)
    if model_type == "bridgetower":
        raise UsageError(
            f"feature space {spec.text!r}: {model_path} is a BridgeTower model; "
            f"use the bridgetower family for it"
        )
    if spec.modality == "text":
        if model_type in _CLIP_TYPES + _SIGLIP_TYPES:
            raise UsageError(
                f"feature space {spec.text!r}: hf text spaces take a language model; for CLIP "
                f"text towers use the openclip family"
            )
        text = text_config(config)
        if getattr(config, "is_encoder_decoder", False):
            n_layers = getattr(config, "encoder_layers", None) or getattr(config, "num_layers", 0)
        else:
            n_layers = getattr(text, "num_hidden_layers", 0)
        return TransformersInfo(model_type, int(n_layers), False, spec.pool or "mean")
    vision = vision_config(config)
    if spec.pool is not None:
        pool = spec.pool
    elif spec.layers is not None or spec.layer is not None:
        pool = "mean"
    elif model_type in _CLIP_TYPES and getattr(config, "projection_dim", None):
        pool = "embeds"
    else:
        pool = "pooled"
    if pool == "embeds" and model_type not in _CLIP_TYPES:
        raise UsageError(
            f"feature space {spec.text!r}: #pool=embeds needs a CLIP checkpoint, "
            f"{model_path} is {model_type!r} (use pooled, mean or cls)"
        )
    n_layers = int(getattr(vision, "num_hidden_layers", 0) or 0)
    return TransformersInfo(model_type, n_layers, False, pool)


def encode_token_batches(
    request: EncodeRequest,
    texts: list[str],
    forward: Callable[[Any], dict[Any, Any]],
) -> dict[Any, np.ndarray]:
    """Tokenise ``texts`` (right padding, truncated at the model's length) and run ``forward``.

    ``forward`` takes the tokens on the device and returns {layer: (batch, n_features)}.
    """
    path = request.model_path
    tokens_of = tokenizer(path)
    max_length = _max_length(tokens_of, text_config(read_config(path)))

    def run(batch: list[str]) -> dict[Any, Any]:
        tokens = tokens_of(
            batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(request.device)
        return forward(tokens)

    return run_text_batches(texts, run, **request.text_batches())


def encode_pixel_batches(
    request: EncodeRequest,
    images: list[Any],
    forward: Callable[[dict[str, Any]], dict[Any, Any]],
    keys: tuple[str, ...] = ("pixel_values",),
) -> dict[Any, np.ndarray]:
    """Preprocess ``images`` with the folder's ``AutoImageProcessor`` and run ``forward``."""
    from transformers import AutoImageProcessor

    processor = load(AutoImageProcessor, request.model_path, "cpu")

    def preprocess(image: Any) -> dict[str, Any]:
        batch = processor(images=image, return_tensors="pt")
        return {k: batch[k][0] for k in keys if k in batch}

    return run_image_batches(images, preprocess, forward, **request.image_batches())


def encode_texts(request: EncodeRequest, texts: list[str]) -> dict[Any, np.ndarray]:
    """Token states of the last layer (or of each requested layer), pooled."""
    from transformers import AutoModel

    info = inspect_hf(request.spec, request.model_path)
    check_layers(request.spec, info, request.layers)
    model = load(AutoModel, request.model_path, request.device)
    if getattr(model.config, "is_encoder_decoder", False):
        model = model.get_encoder()
    return encode_token_batches(request, texts, _hf_text_forward(model, info, request.layers))


def encode_images(request: EncodeRequest, images: list[Any]) -> dict[Any, np.ndarray]:
    """CLIP/SigLIP embeddings or pooled outputs, or pooled patch tokens of any vision model."""
    info = inspect_hf(request.spec, request.model_path)
    check_layers(request.spec, info, request.layers)
    forward = _hf_image_forward(
        request.spec, request.model_path, request.device, info, request.layers
    )
    return encode_pixel_batches(request, images, forward)


def _hf_text_forward(model: Any, info: TransformersInfo, layers: list[Any]) -> Any:
    need_hidden = any(layer is not None for layer in layers)

    def forward(tokens: Any) -> dict[Any, Any]:
        kwargs = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
        if "token_type_ids" in tokens:
            kwargs["token_type_ids"] = tokens["token_type_ids"]
        output = model(**kwargs, output_hidden_states=need_hidden)
        mask = tokens["attention_mask"]
        result = {}
        for layer in layers:
            states = output.last_hidden_state if layer is None else output.hidden_states[layer]
            result[layer] = pool_tokens(states, mask, info.pool)
        return result

    return forward


def _hf_image_forward(
    spec: FeatureSpaceSpec, model_path: Path, device: str, info: TransformersInfo, layers: list
) -> Any:
    import transformers

    if info.model_type in _CLIP_TYPES:
        kwargs: dict[str, Any] = {"output_loading_info": True}
        config = read_config(model_path)
        if info.model_type == "clip":
            # a full CLIP checkpoint: the projection width lives in the top-level config
            vision = config.vision_config
            vision.projection_dim = config.projection_dim
            kwargs["config"] = vision
        model, loading = load(
            transformers.CLIPVisionModelWithProjection, model_path, device, **kwargs
        )
        has_projection = not any("visual_projection" in k for k in loading["missing_keys"])
        if info.pool == "embeds" and not has_projection:
            raise DataError(
                f"feature space {spec.text!r}: {model_path} has no visual projection weights; "
                f"use #pool=pooled"
            )
    elif info.model_type in _SIGLIP_TYPES:
        model = load(transformers.SiglipVisionModel, model_path, device)
    else:
        model = load(transformers.AutoModel, model_path, device)
    need_hidden = any(layer is not None for layer in layers)

    def forward(pixels: dict[str, Any]) -> dict[Any, Any]:
        values = pixels["pixel_values"].to(model.dtype)
        embeds = None
        if info.model_type in _CLIP_TYPES:
            # the tower itself, for its pooled output; the projection of it is image_embeds
            output = model.vision_model(pixel_values=values, output_hidden_states=need_hidden)
            if info.pool == "embeds":
                embeds = model.visual_projection(output.pooler_output)
        else:
            output = model(pixel_values=values, output_hidden_states=need_hidden)
        result = {}
        for layer in layers:
            if layer is not None:
                result[layer] = pool_tokens(output.hidden_states[layer], None, info.pool)
            elif info.pool == "embeds":
                result[layer] = embeds
            elif info.pool == "pooled":
                pooled = getattr(output, "pooler_output", None)
                if pooled is None:
                    raise DataError(
                        f"feature space {spec.text!r}: {info.model_type} has no pooled output; "
                        f"use #pool=mean or #pool=cls"
                    )
                result[layer] = pooled.flatten(1)
            else:
                result[layer] = pool_tokens(output.last_hidden_state, None, info.pool)
        return result

    return forward


def transformers_family(
    name: str,
    inspect: Callable[[FeatureSpaceSpec, Path], TransformersInfo],
    poolings: dict[str, tuple[str, ...]],
    encode_texts: Any,
    encode_images: Any,
) -> Family:
    """A family of transformers folders: what it knows comes from ``inspect`` (config only)."""

    def depth(spec: FeatureSpaceSpec, model_path: Path) -> tuple[int, bool]:
        info = inspect(spec, model_path)
        return info.n_layers, info.has_pooler

    return Family(
        name=name,
        modalities=frozenset({"text", "image"}),
        resolve=resolve,
        poolings=poolings,
        layers=True,
        packages=("transformers", "torch"),
        describe=lambda spec, path: inspect(spec, path).describe(),
        depth=depth,
        verify=lambda spec, path: {"model_type": inspect(spec, path).model_type},
        encode_texts=encode_texts,
        encode_images=encode_images,
    )


FAMILY = transformers_family(
    "hf",
    inspect_hf,
    {"text": ("mean", "cls", "last"), "image": ("embeds", "pooled", "mean", "cls")},
    encode_texts,
    encode_images,
)
