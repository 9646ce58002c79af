"""Text encoders: captions -> embeddings, one row per text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bids_vem.errors import UsageError
from bids_vem.features.models import inspect_openclip, load_openclip, load_sentence_model
from bids_vem.features.specs import FeatureSpaceSpec

__all__ = ["encode_texts", "encode_text_layers"]


def length_order(texts: list[str]) -> np.ndarray:
    # batches of similar length waste less padding
    return np.argsort([len(t) for t in texts], kind="stable")


def _no_layers(spec: FeatureSpaceSpec, layers: list[Any]) -> None:
    if layers != [None]:
        raise UsageError(f"feature space {spec.text!r}: {spec.family} spaces have no layer outputs")


def _encode_sentence(
    spec: FeatureSpaceSpec,
    texts: list[str],
    model_path: Path,
    device: str,
    batch_size: int,
    layers: list[Any],
    precision: str,
) -> dict[Any, np.ndarray]:
    _no_layers(spec, layers)
    model = load_sentence_model(model_path, device=device)
    order = length_order(texts)
    embeddings = model.encode(
        [texts[i] for i in order],
        batch_size=batch_size,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    out = np.empty_like(embeddings)
    out[order] = embeddings
    return {None: out}


def _encode_openclip_text(
    spec: FeatureSpaceSpec,
    texts: list[str],
    model_path: Path,
    device: str,
    batch_size: int,
    layers: list[Any],
    precision: str,
) -> dict[Any, np.ndarray]:
    import torch

    from bids_vem.features.image import autocast_context

    _no_layers(spec, layers)
    info = inspect_openclip(spec, model_path)
    model, _, tokenizer = load_openclip(info, device=device)
    order = length_order(texts)
    chunks = []
    autocast, _ = autocast_context(device, precision)
    with torch.inference_mode(), autocast:
        for start in range(0, len(texts), batch_size):
            batch = [texts[i] for i in order[start : start + batch_size]]
            tokens = tokenizer(batch).to(device)
            chunks.append(model.encode_text(tokens, normalize=True).float().cpu().numpy())
    embeddings = np.concatenate(chunks)
    out = np.empty_like(embeddings)
    out[order] = embeddings
    return {None: out}


def _encode_transformers_text(*args: Any) -> dict[Any, np.ndarray]:
    from bids_vem.features import transformers_encoders

    return transformers_encoders.encode_texts_transformers(*args)


#: family -> text encoder(spec, texts, model_path, device, batch_size, layers, precision)
#: -> {layer: (n_texts, d)}
TEXT_ENCODERS: dict[str, Callable[..., dict[Any, np.ndarray]]] = {
    "sentence": _encode_sentence,
    "openclip": _encode_openclip_text,
    "hf": _encode_transformers_text,
    "bridgetower": _encode_transformers_text,
}


def encode_text_layers(
    spec: FeatureSpaceSpec,
    texts: list[str],
    *,
    model_path: Path,
    layers: list[int | str | None],
    device: str = "cpu",
    batch_size: int = 32,
    precision: str = "auto",
) -> dict[int | str | None, np.ndarray]:
    """Embed ``texts`` at several layers of one model: one load, one forward pass per batch.

    Parameters
    ----------
    spec : FeatureSpaceSpec
        A text feature space (its ``layer`` is ignored: ``layers`` says what to compute).
    texts : list of str
        The texts, length n_texts.
    model_path : Path
        From :func:`bids_vem.features.models.resolve_model_path`.
    layers : list of int, "pooler" or None
        Layer outputs to compute (None: the model's final output, as :func:`encode_texts`).
    device, batch_size, precision
        As :func:`encode_texts`.

    Returns
    -------
    dict
        Layer -> ndarray of shape (n_texts, n_features), float32, rows in input order.
    """
    if spec.family not in TEXT_ENCODERS:
        raise UsageError(f"feature space {spec.text!r}: family {spec.family!r} cannot embed text")
    if batch_size < 1:
        raise UsageError(f"feature space {spec.text!r}: batch size must be >= 1, got {batch_size}")
    texts = [str(t) for t in texts]
    if not texts:
        return {layer: np.zeros((0, 0), dtype=np.float32) for layer in layers}
    values = TEXT_ENCODERS[spec.family](
        spec, texts, Path(model_path), device, batch_size, list(layers), precision
    )
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in values.items()}


def encode_texts(
    spec: FeatureSpaceSpec,
    texts: list[str],
    *,
    model_path: Path,
    device: str = "cpu",
    batch_size: int = 32,
    precision: str = "auto",
) -> np.ndarray:
    """Embed ``texts`` with the text model of ``spec``.

    Embeddings are what the model gives: sentence-transformers runs its own module stack
    (pooling and normalisation as configured in the folder); open_clip returns
    ``encode_text(normalize=True)``; ``hf`` and ``bridgetower`` pool token states (see
    :mod:`bids_vem.features.transformers_encoders`; a spec with ``layer`` set gives that
    layer). Texts are batched by length and returned in input order.

    Parameters
    ----------
    spec : FeatureSpaceSpec
        A text feature space (``spec.modality == "text"``).
    texts : list of str
        The texts, length n_texts.
    model_path : Path
        From :func:`bids_vem.features.models.resolve_model_path`.
    device : str
        Torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    batch_size : int
        Texts per forward pass.
    precision : str
        ``"auto"`` (bf16/fp16 autocast on CUDA, float32 on CPU) or ``"float32"``.

    Returns
    -------
    ndarray of shape (n_texts, n_features), float32
    """
    values = encode_text_layers(
        spec,
        texts,
        model_path=model_path,
        layers=[spec.layer],
        device=device,
        batch_size=batch_size,
        precision=precision,
    )
    return values[spec.layer]
