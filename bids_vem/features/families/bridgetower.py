"""BridgeTower (``bridgetower:``): text and image streams of one multimodal model.

``bridgetower``: ``BridgeTowerModel`` with the stimulus in one modality and the other left
empty, as Tang et al. (2023) ran each stimulus through one modality at a time: texts go with
a black image, images with an empty text (``<s></s>``). Layers of a modality are its
uni-modal encoder layers 1..n (RoBERTa layers for text, ViT blocks for images; 0 is the
embedding output) followed by the cross-modal layers n+1..n+c of the same stream; each is
pooled over tokens (``mean``, the default, or ``cls``). ``pooler`` is the cross-modal pooler
output (text and image CLS, concatenated). The default output is the last layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bids_vem.errors import UsageError
from bids_vem.features.families._base import EncodeRequest
from bids_vem.features.families.transformers import (
    TransformersInfo,
    check_layers,
    encode_pixel_batches,
    encode_token_batches,
    load,
    pool_tokens,
    read_config,
    transformers_family,
)

if TYPE_CHECKING:
    from bids_vem.features.specs import FeatureSpaceSpec

__all__ = ["FAMILY", "inspect_bridgetower"]


def inspect_bridgetower(spec: FeatureSpaceSpec, model_path: Path) -> TransformersInfo:
    """Layers of the spec's stream (uni-modal then cross-modal) and its pooling, from the config.

    Raises
    ------
    UsageError
        The folder is not a BridgeTower model (64).
    """
    config = read_config(model_path)
    model_type = str(config.model_type)
    if model_type != "bridgetower":
        raise UsageError(
            f"feature space {spec.text!r}: {model_path} is a {model_type!r} model, "
            f"not BridgeTower; use the hf family for it"
        )
    side = config.text_config if spec.modality == "text" else config.vision_config
    n_layers = int(side.num_hidden_layers) + int(config.num_hidden_layers)
    return TransformersInfo(model_type, n_layers, spec.modality == "image", spec.pool or "mean")


def encode_texts(request: EncodeRequest, texts: list[str]) -> dict[Any, np.ndarray]:
    """Texts with a black image; each layer of the text stream pooled over tokens."""
    from transformers import BridgeTowerModel

    info = inspect_bridgetower(request.spec, request.model_path)
    check_layers(request.spec, info, request.layers)
    model = load(BridgeTowerModel, request.model_path, request.device)
    forward = _bridgetower_text_forward(
        model, request.model_path, request.device, info, request.layers
    )
    return encode_token_batches(request, texts, forward)


def encode_images(request: EncodeRequest, images: list[Any]) -> dict[Any, np.ndarray]:
    """Images with an empty text; each layer of the image stream pooled, or the pooler."""
    info = inspect_bridgetower(request.spec, request.model_path)
    check_layers(request.spec, info, request.layers)
    forward = _bridgetower_image_forward(request.model_path, request.device, info, request.layers)
    return encode_pixel_batches(request, images, forward, keys=("pixel_values", "pixel_mask"))


def _bridgetower_inputs(model_path: Path) -> tuple[Any, int]:
    from transformers import AutoImageProcessor

    processor = load(AutoImageProcessor, model_path, "cpu")
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
    return pool_tokens(states, mask if modality == "text" else None, pool)


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


def _bridgetower_image_forward(
    model_path: Path, device: str, info: TransformersInfo, layers: list[Any]
) -> Any:
    from transformers import AutoTokenizer, BridgeTowerModel

    model = load(BridgeTowerModel, model_path, device)
    tokenizer = load(AutoTokenizer, model_path, "cpu")
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


FAMILY = transformers_family(
    "bridgetower",
    inspect_bridgetower,
    {"text": ("mean", "cls"), "image": ("mean", "cls")},
    encode_texts,
    encode_images,
)
