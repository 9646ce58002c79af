"""Text feature spaces: captions -> embeddings, one row per text, by the spec's model family."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bids_vem.errors import UsageError
from bids_vem.features.families import EncodeRequest, get_family
from bids_vem.features.specs import FeatureSpaceSpec

__all__ = ["encode_texts", "encode_text_layers"]


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
    family = get_family(spec.family)
    if family.encode_texts is None:
        raise UsageError(f"feature space {spec.text!r}: family {spec.family!r} cannot embed text")
    if batch_size < 1:
        raise UsageError(f"feature space {spec.text!r}: batch size must be >= 1, got {batch_size}")
    texts = [str(t) for t in texts]
    if not texts:
        return {layer: np.zeros((0, 0), dtype=np.float32) for layer in layers}
    request = EncodeRequest(
        spec, Path(model_path), list(layers), device, batch_size, precision, progress=False
    )
    values = family.encode_texts(request, texts)
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
    :mod:`bids_vem.features.families.transformers`; a spec with ``layer`` set gives that
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
