"""Export an aligned encoder as an open_clip model in ``local-dir`` form, with a JSON sidecar.

The folder holds ``open_clip_config.json`` + ``open_clip_model.safetensors`` (what
``open_clip.create_model("local-dir:<folder>")`` reads) and ``alignment.json``. The projection
head is folded into the tower's own final projection, so ``encode_image`` of the loaded model
gives the aligned embeddings; the config's ``embed_dim`` becomes the caption width. LoRA deltas
are merged into the weights (plain open_clip keys, no LoRA at load time). The text
projection gets the same head, which keeps the checkpoint shape-consistent (the text tower
is not aligned and not meant for use).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from bids_vem._utils import jsonable
from bids_vem.alignment.lora import merged_state_dict
from bids_vem.alignment.model import AlignedImageEncoder
from bids_vem.errors import UsageError
from bids_vem.outputs.atomic import atomic_path, write_text_atomic

__all__ = ["fold_head_into_state", "export_openclip", "SIDECAR_NAME"]

SIDECAR_NAME = "alignment.json"
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"


def fold_head_into_state(
    encoder: AlignedImageEncoder, clip_model: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """The open_clip state dict of ``clip_model`` with ``encoder``'s tower and head folded in.

    ViT: ``visual.proj`` (width, d_img) -> ``proj @ W.T`` (width, d_text); ModifiedResNet:
    ``attnpool.c_proj`` -> ``W @ c_proj``. ``W`` is the head's (d_text, d_img) weight. LoRA
    deltas of the tower are merged into the weights they adapt.
    """
    state = {k: v for k, v in clip_model.state_dict().items() if not k.startswith("visual.")}
    # LoRA deltas merged into their weights: the export has plain open_clip keys
    state.update({f"visual.{k}": v for k, v in merged_state_dict(encoder.visual).items()})
    if not encoder.has_head:
        return state
    head = encoder.head.weight.detach()
    if "visual.proj" in state and state["visual.proj"] is not None:
        state["visual.proj"] = state["visual.proj"] @ head.T
    elif "visual.attnpool.c_proj.weight" in state:
        state["visual.attnpool.c_proj.weight"] = head @ state["visual.attnpool.c_proj.weight"]
        state["visual.attnpool.c_proj.bias"] = head @ state["visual.attnpool.c_proj.bias"]
    else:
        raise UsageError(
            "cannot fold the alignment projection into this image tower (no visual.proj or "
            "attnpool.c_proj); export needs an open_clip ViT or ModifiedResNet"
        )
    if not isinstance(state.get("text_projection"), torch.Tensor):
        raise UsageError("cannot export: the open_clip model has no text_projection matrix")
    state["text_projection"] = state["text_projection"] @ head.T
    return state


def export_openclip(
    encoder: AlignedImageEncoder,
    clip_model: torch.nn.Module,
    model_cfg: dict[str, Any],
    out_dir: Path,
    *,
    preprocess_cfg: dict[str, Any] | None = None,
    sidecar: dict[str, Any] | None = None,
) -> Path:
    """Write the aligned model to ``out_dir`` in open_clip local-dir form.

    Parameters
    ----------
    encoder
        The trained encoder.
    clip_model
        The open_clip model whose image tower was trained (supplies the text tower).
    model_cfg
        The open_clip model config the base model was built from (``model_cfg`` of its
        ``open_clip_config.json``, or ``open_clip.get_model_config(name)``).
    out_dir
        Destination folder (created).
    preprocess_cfg
        Preprocessing config to keep (default: the tower's ``preprocess_cfg``).
    sidecar
        Provenance to record in ``alignment.json`` (base model, data, hyperparameters, metrics).

    Returns
    -------
    ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = fold_head_into_state(encoder, clip_model)
    cfg = copy.deepcopy(model_cfg)
    cfg["embed_dim"] = encoder.text_dim
    if preprocess_cfg is None:
        preprocess_cfg = dict(getattr(encoder.visual, "preprocess_cfg", {}) or {})
    with atomic_path(out_dir / WEIGHTS_NAME) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
    config = {"model_cfg": cfg, "preprocess_cfg": jsonable(preprocess_cfg)}
    write_text_atomic(out_dir / CONFIG_NAME, json.dumps(config, indent=1))
    meta = {
        "embedding_width": encoder.text_dim,
        "image_width": encoder.image_dim,
        "projection_folded": encoder.has_head,
        **(sidecar or {}),
    }
    write_text_atomic(out_dir / SIDECAR_NAME, json.dumps(jsonable(meta), indent=1))
    return out_dir
