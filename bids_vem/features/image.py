"""Image feature spaces: stimulus images -> embeddings, one row per image, by model family."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bids_vem.errors import UsageError
from bids_vem.features.families import EncodeRequest, get_family
from bids_vem.features.specs import FeatureSpaceSpec

__all__ = ["encode_images", "encode_image_layers"]


def _check(spec: FeatureSpaceSpec, batch_size: int) -> None:
    if get_family(spec.family).encode_images is None:
        raise UsageError(f"feature space {spec.text!r}: family {spec.family!r} cannot embed images")
    if batch_size < 1:
        raise UsageError(f"feature space {spec.text!r}: batch size must be >= 1, got {batch_size}")


def encode_image_layers(
    spec: FeatureSpaceSpec,
    paths: list[Path],
    *,
    model_path: Path,
    layers: list[int | str | None],
    device: str = "cpu",
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    precision: str = "auto",
) -> dict[int | str | None, np.ndarray]:
    """Embed image files at several layers of one model: one load, one forward pass per batch.

    Parameters
    ----------
    spec : FeatureSpaceSpec
        An image feature space (its ``layer`` is ignored: ``layers`` says what to compute).
    paths : list of Path
        Image files, length n_images.
    model_path : Path
        From :func:`bids_vem.features.models.resolve_model_path`.
    layers : list of int, "pooler" or None
        Layer outputs to compute (None: the model's final output, as :func:`encode_images`).
    device, batch_size, num_workers, progress, precision
        As :func:`encode_images`.

    Returns
    -------
    dict
        Layer -> ndarray of shape (n_images, n_features), float32.
    """
    _check(spec, batch_size)
    # file paths, or decoded frames (PIL images) of video stimuli
    paths = [p if hasattr(p, "convert") else Path(p) for p in paths]
    if not paths:
        return {layer: np.zeros((0, 0), dtype=np.float32) for layer in layers}
    request = EncodeRequest(
        spec, Path(model_path), list(layers), device, batch_size, precision, num_workers, progress
    )
    values = get_family(spec.family).encode_images(request, paths)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in values.items()}


def encode_images(
    spec: FeatureSpaceSpec,
    paths: list[Path],
    *,
    model_path: Path,
    device: str = "cpu",
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    precision: str = "auto",
) -> np.ndarray:
    """Embed image files with the image model of ``spec``, using the model's own preprocessing.

    open_clip: the eval transform of the model's preprocess config (resize, centre crop,
    normalise), then ``encode_image(normalize=True)``. ``hf`` and ``bridgetower``: see
    :mod:`bids_vem.features.families.transformers`; a spec with ``layer`` set gives that layer. Images are decoded in a torch DataLoader
    (``num_workers`` processes) and converted to RGB; a progress bar shows images/s.

    Parameters
    ----------
    spec : FeatureSpaceSpec
        An image feature space.
    paths : list of Path
        Image files, length n_images.
    model_path : Path
        From :func:`bids_vem.features.models.resolve_model_path`.
    device : str
        Torch device.
    batch_size : int
        Images per forward pass.
    num_workers : int
        DataLoader worker processes decoding images (0: in this process).
    progress : bool
        Show a tqdm progress bar.
    precision : str
        ``"auto"`` (bf16/fp16 autocast on CUDA, float32 on CPU) or ``"float32"``; see
        :func:`autocast_context`.

    Returns
    -------
    ndarray of shape (n_images, n_features), float32

    Raises
    ------
    DataError
        An image cannot be decoded (exit 65); the message names the file.
    """
    _check(spec, batch_size)
    values = encode_image_layers(
        spec,
        paths,
        model_path=model_path,
        layers=[spec.layer],
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        precision=precision,
    )
    return values[spec.layer]
