"""Text encoders: captions -> embeddings, one row per text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from bids_vem.errors import UsageError
from bids_vem.features.models import inspect_openclip, load_openclip, load_sentence_model
from bids_vem.features.specs import FeatureSpaceSpec

__all__ = ["encode_texts"]


def _length_order(texts: list[str]) -> np.ndarray:
    # batches of similar length waste less padding
    return np.argsort([len(t) for t in texts], kind="stable")


def _encode_sentence(
    spec: FeatureSpaceSpec, texts: list[str], model_path: Path, device: str, batch_size: int
) -> np.ndarray:
    model = load_sentence_model(model_path, device=device)
    order = _length_order(texts)
    embeddings = model.encode(
        [texts[i] for i in order],
        batch_size=batch_size,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    out = np.empty_like(embeddings)
    out[order] = embeddings
    return out


def _encode_openclip_text(
    spec: FeatureSpaceSpec, texts: list[str], model_path: Path, device: str, batch_size: int
) -> np.ndarray:
    import torch

    info = inspect_openclip(spec, model_path)
    model, _, tokenizer = load_openclip(info, device=device)
    order = _length_order(texts)
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = [texts[i] for i in order[start : start + batch_size]]
            tokens = tokenizer(batch).to(device)
            chunks.append(model.encode_text(tokens, normalize=True).float().cpu().numpy())
    embeddings = np.concatenate(chunks)
    out = np.empty_like(embeddings)
    out[order] = embeddings
    return out


#: family -> text encoder(spec, texts, model_path, device, batch_size) -> (n_texts, d)
TEXT_ENCODERS: dict[str, Callable[..., np.ndarray]] = {
    "sentence": _encode_sentence,
    "openclip": _encode_openclip_text,
}


def encode_texts(
    spec: FeatureSpaceSpec,
    texts: list[str],
    *,
    model_path: Path,
    device: str = "cpu",
    batch_size: int = 32,
) -> np.ndarray:
    """Embed ``texts`` with the text model of ``spec``.

    Embeddings are what the model gives: sentence-transformers runs its own module stack
    (pooling and normalisation as configured in the folder); open_clip returns
    ``encode_text(normalize=True)``. Texts are batched by length and returned in input order.

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

    Returns
    -------
    ndarray of shape (n_texts, n_features), float32
    """
    if spec.family not in TEXT_ENCODERS:
        raise UsageError(f"feature space {spec.text!r}: family {spec.family!r} cannot embed text")
    if batch_size < 1:
        raise UsageError(f"feature space {spec.text!r}: batch size must be >= 1, got {batch_size}")
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    values = TEXT_ENCODERS[spec.family](spec, texts, Path(model_path), device, batch_size)
    return np.ascontiguousarray(values, dtype=np.float32)
