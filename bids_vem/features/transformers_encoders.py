"""Hugging Face transformers encoders: ``hf`` text LMs and vision towers, and BridgeTower.

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

``bridgetower``: ``BridgeTowerModel`` with the stimulus in one modality and the other left
empty, as Tang et al. (2023) ran each stimulus through one modality at a time: texts go with
a black image, images with an empty text (``<s></s>``). Layers of a modality are its
uni-modal encoder layers 1..n (RoBERTa layers for text, ViT blocks for images; 0 is the
embedding output) followed by the cross-modal layers n+1..n+c of the same stream; each is
pooled over tokens (``mean``, the default, or ``cls``). ``pooler`` is the cross-modal pooler
output (text and image CLS, concatenated). The default output is the last layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bids_vem.errors import DataError, InputMissingError, UsageError
from bids_vem.features.models import cached_load, weights_sha256
from bids_vem.features.specs import FeatureSpaceSpec
from bids_vem.features.text import length_order

__all__ = [
    "TransformersInfo",
    "inspect_transformers",
    "model_layers",
    "encode_texts_transformers",
    "encode_images_transformers",
]

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


def _config(model_path: Path) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(model_path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - unknown model type, unreadable JSON...
        raise DataError(
            f"model folder {model_path}: config.json cannot be read by transformers "
            f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
        ) from exc


def _text_config(config: Any) -> Any:
    return getattr(config, "text_config", None) or config


def _vision_config(config: Any) -> Any:
    return getattr(config, "vision_config", None) or config


def inspect_transformers(spec: FeatureSpaceSpec, model_path: Path) -> TransformersInfo:
    """Layers, pooler and default pooling of an ``hf`` / ``bridgetower`` spec, from its config.

    Raises
    ------
    UsageError
        The folder is not a model of the spec's family, or the pooling does not apply (64).
    DataError
        ``config.json`` unreadable (65).
    """
    config = _config(model_path)
    model_type = str(config.model_type)
    if spec.family == "bridgetower":
        if model_type != "bridgetower":
            raise UsageError(
                f"feature space {spec.text!r}: {model_path} is a {model_type!r} model, "
                f"not BridgeTower; use the hf family for it"
            )
        side = config.text_config if spec.modality == "text" else config.vision_config
        n_layers = int(side.num_hidden_layers) + int(config.num_hidden_layers)
        return TransformersInfo(model_type, n_layers, spec.modality == "image", spec.pool or "mean")
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
        text_config = _text_config(config)
        if getattr(config, "is_encoder_decoder", False):
            n_layers = getattr(config, "encoder_layers", None) or getattr(config, "num_layers", 0)
        else:
            n_layers = getattr(text_config, "num_hidden_layers", 0)
        return TransformersInfo(model_type, int(n_layers), False, spec.pool or "mean")
    vision = _vision_config(config)
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


def model_layers(spec: FeatureSpaceSpec, model_path: Path) -> tuple[int, bool]:
    """(n_layers, has_pooler) of the spec's model for its modality, for ``expand_layers``."""
    info = inspect_transformers(spec, model_path)
    return info.n_layers, info.has_pooler


def _load(loader: Any, model_path: Path, device: str, **kwargs: Any) -> Any:
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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputMissingError(
            f"model folder {model_path}: cannot load {getattr(loader, '__name__', loader)} "
            f"({type(exc).__name__}: {first})"
        ) from exc
    if isinstance(model, tuple):  # output_loading_info=True
        return (model[0].to(device).eval(), model[1])
    return model.to(device).eval() if hasattr(model, "eval") else model


def _pool_tokens(states: Any, mask: Any, pool: str) -> Any:
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


def _check_layers(spec: FeatureSpaceSpec, info: TransformersInfo, layers: Sequence[Any]) -> None:
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


def _tokenizer(model_path: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = _load(AutoTokenizer, model_path, "cpu")
    tokenizer.padding_side = "right"  # last-token pooling and masks assume right padding
    if tokenizer.pad_token is None:
        # decoder LMs (GPT-2) have no pad token; padded positions are masked out anyway
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise DataError(f"tokenizer of {model_path}: no pad, eos or unk token to pad with")
        tokenizer.pad_token = fallback
    return tokenizer


def encode_texts_transformers(
    spec: FeatureSpaceSpec,
    texts: list[str],
    model_path: Path,
    device: str,
    batch_size: int,
    layers: list[Any],
    precision: str,
) -> dict[Any, np.ndarray]:
    """Text encoder of the ``hf`` and ``bridgetower`` families (see the module docstring).

    Returns
    -------
    dict
        Layer (None: the final output) -> ndarray of shape (n_texts, n_features).
    """
    import torch

    from bids_vem.features.image import autocast_context

    info = inspect_transformers(spec, model_path)
    _check_layers(spec, info, layers)
    tokenizer = _tokenizer(model_path)
    if spec.family == "bridgetower":
        from transformers import BridgeTowerModel

        model = _load(BridgeTowerModel, model_path, device)
        forward = _bridgetower_text_forward(model, model_path, device, info, layers)
    else:
        from transformers import AutoModel

        model = _load(AutoModel, model_path, device)
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()
        forward = _hf_text_forward(model, info, layers)
    max_length = _max_length(tokenizer, _text_config(_config(model_path)))
    order = length_order(texts)
    chunks: dict[Any, list[np.ndarray]] = {layer: [] for layer in layers}
    autocast, _ = autocast_context(device, precision)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = [texts[i] for i in order[start : start + batch_size]]
            tokens = tokenizer(
                batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            ).to(device)
            with autocast:
                outputs = forward(tokens)
            for layer in layers:
                chunks[layer].append(outputs[layer].float().cpu().numpy())
    out = {}
    for layer, parts in chunks.items():
        embeddings = np.concatenate(parts)
        values = np.empty_like(embeddings)
        values[order] = embeddings
        out[layer] = values
    return out


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
            result[layer] = _pool_tokens(states, mask, info.pool)
        return result

    return forward


def _bridgetower_inputs(model_path: Path) -> tuple[Any, int]:
    from transformers import AutoImageProcessor

    processor = _load(AutoImageProcessor, model_path, "cpu")
    crop = getattr(processor, "crop_size", None) or getattr(processor, "size", None) or {}
    crop = dict(crop) if not isinstance(crop, dict) else crop
    side = crop.get("shortest_edge") or crop.get("height") or 288
    return processor, int(side)


def _bridgetower_layer(
    output: Any, modality: str, n_uni: int, layer: Any, mask: Any, pool: str
) -> Any:
    """Pooled states of one layer of one stream (layer numbering in the module docstring)."""
    if layer == "pooler":
        return output.pooler_output
    text_states, image_states, cross_states = output.hidden_states
    if layer <= n_uni:
        if modality == "text":
            states = text_states[layer]
        else:
            states = image_states[layer].permute(1, 0, 2)  # the ViT runs (tokens, batch, d)
    else:
        states = cross_states[layer - n_uni - 1][0 if modality == "text" else 1]
    return _pool_tokens(states, mask if modality == "text" else None, pool)


def _bridgetower_text_forward(
    model: Any, model_path: Path, device: str, info: TransformersInfo, layers: list[Any]
) -> Any:
    from PIL import Image

    processor, side = _bridgetower_inputs(model_path)
    black = processor(images=Image.new("RGB", (side, side)), return_tensors="pt")
    blank = {k: v.to(device) for k, v in black.items()}
    n_uni = int(model.config.text_config.num_hidden_layers)

    def forward(tokens: Any) -> dict[Any, Any]:
        n = tokens["input_ids"].shape[0]
        images = {k: v.expand(n, *v.shape[1:]) for k, v in blank.items()}
        output = model(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            **images,
            output_hidden_states=True,
        )
        mask = tokens["attention_mask"]
        return {
            layer: _bridgetower_layer(
                output, "text", n_uni, info.n_layers if layer is None else layer, mask, info.pool
            )
            for layer in layers
        }

    return forward


def encode_images_transformers(
    spec: FeatureSpaceSpec,
    paths: list[Path],
    model_path: Path,
    device: str,
    batch_size: int,
    num_workers: int,
    progress: bool,
    layers: list[Any],
    precision: str,
) -> dict[Any, np.ndarray]:
    """Image encoder of the ``hf`` and ``bridgetower`` families (see the module docstring).

    Returns
    -------
    dict
        Layer (None: the final output) -> ndarray of shape (n_images, n_features).
    """
    from transformers import AutoImageProcessor

    from bids_vem.features.image import run_image_batches

    info = inspect_transformers(spec, model_path)
    _check_layers(spec, info, layers)
    processor = _load(AutoImageProcessor, model_path, "cpu")
    if spec.family == "bridgetower":
        forward = _bridgetower_image_forward(model_path, device, info, layers)
        keys = ("pixel_values", "pixel_mask")
    else:
        forward = _hf_image_forward(spec, model_path, device, info, layers)
        keys = ("pixel_values",)

    def preprocess(image: Any) -> dict[str, Any]:
        batch = processor(images=image, return_tensors="pt")
        return {k: batch[k][0] for k in keys if k in batch}

    return run_image_batches(
        paths,
        preprocess,
        forward,
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        desc=spec.name,
        precision=precision,
    )


def _hf_image_forward(
    spec: FeatureSpaceSpec, model_path: Path, device: str, info: TransformersInfo, layers: list
) -> Any:
    import transformers

    if info.model_type in _CLIP_TYPES:
        kwargs: dict[str, Any] = {"output_loading_info": True}
        config = _config(model_path)
        if info.model_type == "clip":
            # a full CLIP checkpoint: the projection width lives in the top-level config
            vision = config.vision_config
            vision.projection_dim = config.projection_dim
            kwargs["config"] = vision
        model, loading = _load(
            transformers.CLIPVisionModelWithProjection, model_path, device, **kwargs
        )
        has_projection = not any("visual_projection" in k for k in loading["missing_keys"])
        if info.pool == "embeds" and not has_projection:
            raise DataError(
                f"feature space {spec.text!r}: {model_path} has no visual projection weights; "
                f"use #pool=pooled"
            )
    elif info.model_type in _SIGLIP_TYPES:
        model = _load(transformers.SiglipVisionModel, model_path, device)
    else:
        model = _load(transformers.AutoModel, model_path, device)
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
                result[layer] = _pool_tokens(output.hidden_states[layer], None, info.pool)
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
                result[layer] = _pool_tokens(output.last_hidden_state, None, info.pool)
        return result

    return forward


def _bridgetower_image_forward(
    model_path: Path, device: str, info: TransformersInfo, layers: list[Any]
) -> Any:
    from transformers import AutoTokenizer, BridgeTowerModel

    model = _load(BridgeTowerModel, model_path, device)
    tokenizer = _load(AutoTokenizer, model_path, "cpu")
    empty = tokenizer([""], return_tensors="pt")  # <s></s>: the image alone
    empty_ids = empty["input_ids"].to(device)
    empty_mask = empty["attention_mask"].to(device)
    n_uni = int(model.config.vision_config.num_hidden_layers)

    def forward(pixels: dict[str, Any]) -> dict[Any, Any]:
        n = pixels["pixel_values"].shape[0]
        output = model(
            input_ids=empty_ids.expand(n, -1),
            attention_mask=empty_mask.expand(n, -1),
            pixel_values=pixels["pixel_values"],
            pixel_mask=pixels.get("pixel_mask"),
            output_hidden_states=True,
        )
        return {
            layer: _bridgetower_layer(
                output, "image", n_uni, info.n_layers if layer is None else layer, None, info.pool
            )
            for layer in layers
        }

    return forward
