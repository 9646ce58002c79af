"""open_clip models (``openclip:``): CLIP text and image towers.

A spec names an architecture and its weights: ``openclip:ARCH@FILE`` (a weights file),
``openclip:ARCH@TAG`` (a pretrained tag, found only in local caches), or
``openclip:FOLDER`` (an open_clip local-dir: ``open_clip_config.json`` + weights). Images
go through the model's own eval transform and ``encode_image(normalize=True)``; texts
through its tokenizer and ``encode_text(normalize=True)``. The architecture config,
QuickGELU and preprocessing are read before any weights load and recorded with every
feature set (open_clip#771: a QuickGELU mismatch silently degrades features).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bids_vem._utils import first_line, jsonable
from bids_vem.errors import DataError, InputMissingError, UsageError
from bids_vem.features.batching import cached_load, run_image_batches, run_text_batches
from bids_vem.features.families._base import EncodeRequest, Family
from bids_vem.features.weights import (
    hf_cache_dirs,
    hf_cached_file,
    is_path_like,
    model_search_dirs,
    not_found,
    read_json,
    weights_sha256,
)

if TYPE_CHECKING:
    from bids_vem.features.specs import FeatureSpaceSpec

logger = logging.getLogger(__name__)

__all__ = ["FAMILY", "OpenClipInfo", "inspect_openclip", "load_openclip", "loaded_openclip"]

_OPENCLIP_CHECKPOINTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)


def _openclip_checkpoint(folder: Path) -> Path | None:
    for name in _OPENCLIP_CHECKPOINTS:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.safetensors"))
    return found[0] if found else None


def _is_openclip_dir(path: Path) -> bool:
    return (
        path.is_dir()
        and (path / "open_clip_config.json").is_file()
        and _openclip_checkpoint(path) is not None
    )


def _check_openclip_tag(spec: FeatureSpaceSpec) -> dict:
    import open_clip

    if spec.model not in open_clip.list_models():
        raise UsageError(
            f"feature space {spec.text!r}: {spec.model!r} is not an open_clip architecture "
            f"(a pretrained tag needs one of open_clip.list_models(), e.g. ViT-B-32)"
        )
    tags = open_clip.list_pretrained_tags_by_model(spec.model)
    if spec.weights not in tags:
        raise UsageError(
            f"feature space {spec.text!r}: {spec.weights!r} is neither a weights file "
            f"(.safetensors/.bin/.pt, or a path) nor a pretrained tag of {spec.model} "
            f"(tags: {', '.join(tags) or 'none'})"
        )
    return open_clip.get_pretrained_cfg(spec.model, spec.weights)


def resolve(spec: FeatureSpaceSpec, model_dirs: Sequence[Path], allow_downloads: bool) -> Path:
    """A local-dir folder, a weights file, or a pretrained tag's file in a local cache."""
    dirs = model_search_dirs(model_dirs)
    tried: list[Path | str] = []
    if spec.weights is None:
        # a local-dir folder: open_clip_config.json + weights
        if is_path_like(spec.model):
            path = Path(spec.model).expanduser()
            if _is_openclip_dir(path):
                return path.resolve()
            raise not_found(
                spec,
                [path],
                "open_clip folder (open_clip_config.json + open_clip_model.safetensors)",
            )
        # a relative folder ("models/my-clip"), then a name inside each model folder
        for candidate in [Path(spec.model), *(directory / spec.model for directory in dirs)]:
            tried.append(candidate.absolute())
            if _is_openclip_dir(candidate):
                return candidate.resolve()
        raise not_found(
            spec,
            tried,
            "open_clip folder (open_clip_config.json + open_clip_model.safetensors; "
            "or give weights as openclip:ARCH@FILE)",
        )
    if is_path_like(spec.weights):
        path = Path(spec.weights).expanduser()
        if path.is_absolute() or spec.weights.startswith((".", "~")):
            if path.is_file():
                return path.resolve()
            raise not_found(spec, [path], "weights file")
        for directory in dirs:
            candidate = directory / path
            tried.append(candidate)
            if candidate.is_file():
                return candidate.resolve()
        raise not_found(spec, tried, "weights file")
    # a pretrained tag: only from local caches
    cfg = _check_openclip_tag(spec)
    hf_hub = cfg.get("hf_hub") or ""
    url = cfg.get("url") or ""
    caches = list(dirs) + hf_cache_dirs()
    if hf_hub:
        # open_clip writes 'org/repo/' (default file names) or 'org/repo/file'
        if hf_hub.endswith("/"):
            repo_id, filename = hf_hub.rstrip("/"), ""
        else:
            repo_id, filename = os.path.split(hf_hub)
        filenames = (
            [filename]
            if filename
            else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        )
        for cache in caches:
            tried.append(cache / f"models--{repo_id.replace('/', '--')}")
            for name in filenames:
                found = hf_cached_file(cache, repo_id, name)
                if found is not None:
                    return found
    if url:
        base = os.path.basename(url)
        for folder in [*dirs, Path("~/.cache/clip").expanduser()]:
            candidate = folder / base
            tried.append(candidate)
            if candidate.is_file():
                return candidate.resolve()
    if allow_downloads:
        import open_clip

        return Path(open_clip.download_pretrained(cfg))
    raise not_found(spec, tried, f"open_clip pretrained weights {spec.model}@{spec.weights}")


@dataclass(frozen=True)
class OpenClipInfo:
    """How an open_clip feature space is built, known before loading any weights.

    Attributes
    ----------
    architecture : str
        Registry name (``ViT-B-32``) or the local-dir folder name.
    checkpoint : Path
        The weights file that is loaded.
    config_source : str
        ``"open_clip registry: <arch>"`` or the path of the ``open_clip_config.json`` used.
    model_cfg : dict
        The architecture config (``embed_dim``, ``vision_cfg``, ``text_cfg``, ``quick_gelu``...).
    quick_gelu : bool
        Whether the model uses QuickGELU (open_clip#771: a mismatch with the weights silently
        degrades features, so it is recorded with every feature set).
    preprocessing : dict
        open_clip ``PreprocessCfg`` fields (size, mean, std, interpolation, resize_mode...).
    create_name : str
        The name given to ``open_clip.create_model`` / ``get_tokenizer``.
    """

    architecture: str
    checkpoint: Path
    config_source: str
    model_cfg: dict
    quick_gelu: bool
    preprocessing: dict
    create_name: str
    preprocess_overlay: dict = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for metadata and cache keys."""
        return {
            "architecture": self.architecture,
            "config_source": self.config_source,
            "quick_gelu": self.quick_gelu,
            "model_cfg": self.model_cfg,
            "preprocessing": self.preprocessing,
        }


def inspect_openclip(spec: FeatureSpaceSpec, model_path: Path) -> OpenClipInfo:
    """Architecture config, QuickGELU and preprocessing of an open_clip spec, without loading it.

    For a local-dir folder its ``open_clip_config.json`` is authoritative. For a weights file
    the architecture comes from open_clip's registry when ``spec.model`` is a registered name,
    else from an ``open_clip_config.json`` beside the file. For a pretrained tag, the tag's
    preprocessing and QuickGELU setting are applied (they describe how the weights were trained).
    """
    import open_clip
    from open_clip.factory import merge_preprocess_dict
    from open_clip.transform import PreprocessCfg

    model_path = Path(model_path)
    overlay: dict = {}
    if model_path.is_dir():
        config_path = model_path / "open_clip_config.json"
        config = read_json(config_path)
        if "model_cfg" not in config:
            raise DataError(f"{config_path}: no 'model_cfg' entry (not an open_clip config)")
        model_cfg = config["model_cfg"]
        overlay = config.get("preprocess_cfg", {})
        checkpoint = _openclip_checkpoint(model_path)
        architecture = config.get("model_name") or model_path.name
        config_source = str(config_path)
        create_name = f"local-dir:{model_path}"
    else:
        checkpoint = model_path
        beside = model_path.parent / "open_clip_config.json"
        registry_cfg = open_clip.get_model_config(spec.model)
        if registry_cfg is not None:
            model_cfg = registry_cfg
            architecture = spec.model
            config_source = f"open_clip registry: {spec.model}"
            create_name = spec.model
        elif beside.is_file():
            config = read_json(beside)
            if "model_cfg" not in config:
                raise DataError(f"{beside}: no 'model_cfg' entry (not an open_clip config)")
            model_cfg = config["model_cfg"]
            overlay = config.get("preprocess_cfg", {})
            architecture = config.get("model_name") or spec.model
            config_source = str(beside)
            create_name = f"local-dir:{model_path.parent}"
        else:
            raise InputMissingError(
                f"feature space {spec.text!r}: architecture config for {spec.model!r} not found; "
                f"looked in: open_clip's registry; {beside}. Use a registered architecture "
                f"name or put open_clip_config.json beside the weights."
            )
        if spec.weights is not None and not is_path_like(spec.weights):
            tag_cfg = open_clip.get_pretrained_cfg(spec.model, spec.weights)
            overlay = {
                k: tag_cfg[k]
                for k in ("mean", "std", "interpolation", "resize_mode")
                if k in tag_cfg
            }
            if tag_cfg.get("quick_gelu") and not model_cfg.get("quick_gelu"):
                # the weights were trained with QuickGELU: build the model that way (open_clip#771)
                model_cfg = {**model_cfg, "quick_gelu": True}
    preprocessing = merge_preprocess_dict(PreprocessCfg(), overlay)
    preprocessing["size"] = model_cfg.get("vision_cfg", {}).get("image_size", preprocessing["size"])
    return OpenClipInfo(
        architecture=architecture,
        checkpoint=checkpoint,
        config_source=config_source,
        model_cfg=jsonable(model_cfg),
        quick_gelu=bool(model_cfg.get("quick_gelu", False)),
        preprocessing=jsonable(preprocessing),
        create_name=create_name,
        preprocess_overlay=dict(overlay),
    )


def _drop_random_init_warning(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("No pretrained weights loaded")


def load_openclip(info: OpenClipInfo, *, device: str = "cpu") -> tuple[Any, Any, Any]:
    """Build the open_clip model of ``info``, load its weights, return (model, preprocess, tokenizer).

    Weights are read with ``open_clip.load_checkpoint`` (safetensors files with
    ``safetensors.torch.load_file``, other formats only with ``torch.load(weights_only=True)``),
    strictly: every key must fit the architecture. The model is in eval mode on ``device``.
    """
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    # open_clip warns "initialized randomly" on the root logger: true here, but the weights
    # are loaded right below, so the warning would only mislead
    root = logging.getLogger()
    root.addFilter(_drop_random_init_warning)
    try:
        model = open_clip.create_model(
            info.create_name,
            pretrained=None,
            load_weights=False,
            pretrained_image=False,
            pretrained_text=False,  # never fetch base tower weights from the hub
            force_quick_gelu=info.quick_gelu and not info.create_name.startswith("local-dir:"),
            force_preprocess_cfg=info.preprocess_overlay or None,
        )
    finally:
        root.removeFilter(_drop_random_init_warning)
    try:
        open_clip.load_checkpoint(model, str(info.checkpoint), strict=True, weights_only=True)
    except RuntimeError as exc:
        first = first_line(exc)
        raise DataError(
            f"open_clip weights {info.checkpoint} do not fit architecture {info.architecture} "
            f"({info.config_source}): {first}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - safetensors/pickle errors: unreadable file
        raise InputMissingError(
            f"open_clip weights {info.checkpoint}: unreadable ({type(exc).__name__}: {exc})"
        ) from exc
    model = model.to(device).eval()
    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    try:
        tokenizer = open_clip.get_tokenizer(info.create_name)
    except Exception as exc:  # noqa: BLE001 - e.g. a Hugging Face tokenizer absent offline
        raise InputMissingError(
            f"open_clip tokenizer of {info.architecture} ({info.config_source}) cannot be loaded "
            f"offline ({type(exc).__name__}: {exc})"
        ) from exc
    return model, preprocess, tokenizer


def loaded_openclip(spec: FeatureSpaceSpec, model_path: Path, device: str) -> tuple[Any, Any, Any]:
    """(model, preprocess, tokenizer), loaded once per weights and device."""
    info = inspect_openclip(spec, model_path)
    return cached_load(
        ("openclip", str(model_path), weights_sha256(model_path), device),
        lambda: load_openclip(info, device=device),
    )


def _final_output_only(request: EncodeRequest) -> None:
    if request.layers != [None]:
        raise UsageError(
            f"feature space {request.spec.text!r}: open_clip spaces have no layer outputs"
        )


def encode_texts(request: EncodeRequest, texts: list[str]) -> dict[Any, np.ndarray]:
    """``encode_text(normalize=True)`` of the tokenised texts.

    Texts longer than the tower's context (77 tokens for CLIP: LLM-VEM's MiniGPT-4
    descriptions often are) are counted and a warning names how many. ``#long=truncate``
    (the default, open_clip's behaviour) embeds their first tokens; ``#long=chunks`` embeds
    every consecutive chunk that fits and returns the renormalised mean of the chunks'
    embeddings, so that the whole text counts.
    """
    _final_output_only(request)
    model, _, tokenizer = loaded_openclip(request.spec, request.model_path, request.device)
    length = int(getattr(tokenizer, "context_length", 0) or model.context_length)
    token_ids = _token_ids(tokenizer, texts)
    strategy = request.spec.long or "truncate"
    n_long = sum(len(ids) > length - 2 for ids in token_ids) if token_ids is not None else 0
    if n_long:
        logger.warning(
            "feature space %s: %d of %d text(s) are longer than the text tower's %d tokens: %s",
            request.spec.name,
            n_long,
            len(texts),
            length,
            "their first tokens are embedded (#long=chunks embeds them whole, in chunks)"
            if strategy == "truncate"
            else f"embedded in chunks of {length - 2} tokens, averaged (#long=chunks)",
        )
    if strategy != "chunks" or not n_long:
        return run_text_batches(
            texts,
            lambda batch: {
                None: model.encode_text(tokenizer(batch).to(request.device), normalize=True)
            },
            **request.text_batches(),
        )
    import torch

    step = length - 2  # the start and end tokens take two places
    pieces, owner = [], []
    for index, ids in enumerate(token_ids):
        for start in range(0, max(1, len(ids)), step):
            pieces.append(ids[start : start + step])
            owner.append(index)
    sot, eot = tokenizer.sot_token_id, tokenizer.eot_token_id

    def forward(batch: list[list[int]]) -> dict[Any, Any]:
        tokens = torch.zeros((len(batch), length), dtype=torch.long)
        for row, ids in enumerate(batch):
            tokens[row, : len(ids) + 2] = torch.tensor([sot, *ids, eot])
        return {None: model.encode_text(tokens.to(request.device), normalize=True)}

    chunked = run_text_batches(pieces, forward, **request.text_batches())[None]
    # one pass over the chunks (not one scan of them per text): sums, then means
    owner_index = np.asarray(owner)
    sums = np.zeros((len(texts), chunked.shape[1]), dtype=np.float64)
    np.add.at(sums, owner_index, chunked)
    means = sums / np.bincount(owner_index, minlength=len(texts))[:, None]
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    return {None: means.astype(np.float32)}


def _token_ids(tokenizer: Any, texts: list[str]) -> list[list[int]] | None:
    """Each text's token ids without start and end tokens (open_clip's CLIP tokenizer);
    None for tokenizers that cannot say (Hugging Face ones truncate on their own)."""
    if not all(hasattr(tokenizer, name) for name in ("encode", "sot_token_id", "eot_token_id")):
        return None
    return [tokenizer.encode(text) for text in texts]


def encode_images(request: EncodeRequest, images: list[Any]) -> dict[Any, np.ndarray]:
    """``encode_image(normalize=True)`` after the model's eval transform."""
    _final_output_only(request)
    model, preprocess, _ = loaded_openclip(request.spec, request.model_path, request.device)
    return run_image_batches(
        images,
        preprocess,
        lambda pixels: {None: model.encode_image(pixels, normalize=True)},
        **request.image_batches(),
    )


FAMILY = Family(
    name="openclip",
    modalities=frozenset({"text", "image"}),
    resolve=resolve,
    takes_weights=True,
    packages=("open_clip", "torch"),
    describe=lambda spec, path: (
        inspect_openclip(spec, path).describe()
        | ({"long_texts": spec.long or "truncate"} if spec.modality == "text" else {})
    ),
    verify=lambda spec, path: {"quick_gelu": inspect_openclip(spec, path).quick_gelu},
    encode_texts=encode_texts,
    encode_images=encode_images,
)
