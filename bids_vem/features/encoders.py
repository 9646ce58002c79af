"""Embed stimuli with the model of a feature space: the one entry point to every family.

Texts (captions, story words) go to text spaces, image files or decoded video frames to image
spaces; the spec's family (:mod:`bids_vem.features.families`) runs its model. Embeddings are
what the model gives: sentence-transformers runs its own module stack, open_clip returns
``encode_text`` / ``encode_image`` with ``normalize=True`` after its own preprocessing, ``hf``
and ``bridgetower`` pool token states (a spec with ``layer`` set gives that layer). Rows come
back in input order, float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bids_vem.errors import UsageError
from bids_vem.features.families import EncodeRequest, get_family
from bids_vem.features.specs import FeatureSpaceSpec

__all__ = ["encode", "encode_layers"]


def encode_layers(
    spec: FeatureSpaceSpec,
    stimuli: list[Any],
    *,
    model_path: Path,
    layers: list[int | str | None],
    device: str = "cpu",
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    precision: str = "auto",
) -> dict[int | str | None, np.ndarray]:
    """Embed ``stimuli`` at several layers of one model: one load, one forward pass per batch.

    Parameters
    ----------
    spec : FeatureSpaceSpec
        A text or image feature space (its ``layer`` is ignored: ``layers`` says what to
        compute).
    stimuli : list
        Texts for a text space; image files (or decoded PIL frames) for an image space;
        length n_stimuli.
    model_path : Path
        From :func:`bids_vem.features.models.resolve_model_path`.
    layers : list of int, "pooler" or None
        Layer outputs to compute (None: the model's final output).
    device : str
        Torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    batch_size : int
        Stimuli per forward pass.
    num_workers, progress
        Image-decoding processes (0: in this process) and a progress bar (images).
    precision : str
        ``"auto"`` (bf16/fp16 autocast on CUDA, float32 on CPU) or ``"float32"``; see
        :func:`bids_vem.features.batching.autocast_context`.

    Returns
    -------
    dict
        Layer -> ndarray of shape (n_stimuli, n_features), float32, rows in input order.

    Raises
    ------
    UsageError
        A family that cannot embed the spec's modality, or a batch size below 1 (64).
    DataError
        An image cannot be decoded (65); the message names the file.
    """
    family = get_family(spec.family)
    encoder = family.encode_texts if spec.modality == "text" else family.encode_images
    if encoder is None:
        raise UsageError(
            f"feature space {spec.text!r}: family {spec.family!r} cannot embed {spec.modality}s"
        )
    if batch_size < 1:
        raise UsageError(f"feature space {spec.text!r}: batch size must be >= 1, got {batch_size}")
    if spec.modality == "text":
        stimuli, progress = [str(t) for t in stimuli], False
    else:  # file paths, or decoded frames (PIL images) of video stimuli
        stimuli = [s if hasattr(s, "convert") else Path(s) for s in stimuli]
    if not stimuli:
        return {layer: np.zeros((0, 0), dtype=np.float32) for layer in layers}
    request = EncodeRequest(
        spec, Path(model_path), list(layers), device, batch_size, precision, num_workers, progress
    )
    values = encoder(request, stimuli)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in values.items()}


def encode(
    spec: FeatureSpaceSpec, stimuli: list[Any], *, model_path: Path, **options: Any
) -> np.ndarray:
    """Embed ``stimuli`` with the model of ``spec``: its final output, or its ``layer``.

    Parameters and errors as :func:`encode_layers` (``options``: ``device``,
    ``batch_size``, ``num_workers``, ``progress``, ``precision``).

    Returns
    -------
    ndarray of shape (n_stimuli, n_features), float32
    """
    return encode_layers(spec, stimuli, model_path=model_path, layers=[spec.layer], **options)[
        spec.layer
    ]
