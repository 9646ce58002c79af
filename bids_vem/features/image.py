"""Image encoders: stimulus images -> embeddings, one row per image."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bids_vem.errors import DataError, UsageError
from bids_vem.features.models import cached_load, inspect_openclip, load_openclip, weights_sha256
from bids_vem.features.specs import FeatureSpaceSpec

__all__ = [
    "encode_images",
    "encode_image_layers",
    "read_rgb_image",
    "run_image_batches",
    "autocast_context",
]

logger = logging.getLogger(__name__)


def read_rgb_image(path: Path) -> Any:
    """Open an image file as an RGB ``PIL.Image`` (grayscale, palette and RGBA converted).

    Raises
    ------
    DataError
        The file cannot be decoded as an image (empty, truncated, not an image).
    """
    from PIL import Image

    if isinstance(path, Image.Image):  # a decoded frame (video stimuli)
        return path.convert("RGB")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")  # avoids PIL's palette-transparency warning
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        size = path.stat().st_size if path.exists() else None
        detail = "empty file (0 bytes)" if size == 0 else f"{type(exc).__name__}: {exc}"
        raise DataError(f"stimulus image {path}: cannot be read as an image ({detail})") from exc


class _ImageDataset:
    """Decoded and preprocessed images; a bad file yields its error instead of raising in a worker."""

    def __init__(self, paths: list[Path], preprocess: Callable[[Any], Any]) -> None:
        self.paths = paths
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, Any, str | None]:
        try:
            return index, self.preprocess(read_rgb_image(self.paths[index])), None
        except DataError as exc:
            return index, None, str(exc)


def _collate(items: list[tuple[int, Any, str | None]]) -> tuple[list[int], Any, str | None]:
    import torch

    errors = [error for _, _, error in items if error is not None]
    if errors:
        return [], None, errors[0]
    first = items[0][1]
    if isinstance(first, dict):  # transformers processors give several tensors per image
        return (
            [i for i, _, _ in items],
            {k: torch.stack([x[k] for _, x, _ in items]) for k in first},
            None,
        )
    return [i for i, _, _ in items], torch.stack([x for _, x, _ in items]), None


def autocast_context(device: str, precision: str = "auto") -> tuple[Any, str]:
    """The autocast context for a forward pass on ``device`` and the precision it computes in.

    ``precision="auto"``: bfloat16 autocast on CUDA devices that support it, else float16 on
    CUDA, and float32 on CPU (CPU autocast gains little and changes the numbers).
    ``"float32"`` never autocasts; ``"bfloat16"`` / ``"float16"`` force that dtype on CUDA.
    """
    import torch

    if precision not in ("auto", "float32", "bfloat16", "float16"):
        raise UsageError(f"precision must be auto, float32, bfloat16 or float16, got {precision!r}")
    if not str(device).startswith("cuda") or precision == "float32":
        return contextlib.nullcontext(), "float32"
    if precision == "auto":
        precision = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype), precision


def run_image_batches(
    paths: list[Path],
    preprocess: Callable[[Any], Any],
    forward: Callable[[Any], dict[Any, Any]],
    *,
    device: str = "cpu",
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "images",
    precision: str = "auto",
) -> dict[Any, np.ndarray]:
    """Decode, preprocess and encode images in batches; one forward pass per batch for all outputs.

    Images are decoded in a torch DataLoader (``num_workers`` processes, pinned memory on
    CUDA, transfers overlapped with ``non_blocking``) and the forward pass runs under
    :func:`autocast_context`. A tqdm bar shows images/s.

    Parameters
    ----------
    paths : list of Path
        Image files, length n_images.
    preprocess : callable
        PIL RGB image -> tensor (C, H, W), or dict of tensors (a transformers processor's output).
    forward : callable
        Batch on ``device`` -> {output key: tensor (batch, n_features)}.
    device, batch_size, num_workers, progress, desc, precision
        Where and how to run (see :func:`encode_images`).

    Returns
    -------
    dict
        Output key -> ndarray of shape (n_images, n_features), float32, rows in ``paths`` order.

    Raises
    ------
    DataError
        An image cannot be decoded (exit 65); the message names the file.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    loader = DataLoader(
        _ImageDataset(paths, preprocess),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=str(device).startswith("cuda"),
    )
    autocast, _ = autocast_context(device, precision)
    out: dict[Any, np.ndarray] = {}
    with (
        torch.inference_mode(),
        tqdm(total=len(paths), unit="img", desc=desc, disable=not progress) as bar,
    ):
        for indices, pixels, error in loader:
            if error is not None:
                raise DataError(error)
            if isinstance(pixels, dict):
                pixels = {k: v.to(device, non_blocking=True) for k, v in pixels.items()}
            else:
                pixels = pixels.to(device, non_blocking=True)
            with autocast:
                outputs = forward(pixels)
            for key, features in outputs.items():
                features = features.float().cpu().numpy()
                if key not in out:
                    out[key] = np.empty((len(paths), features.shape[1]), dtype=np.float32)
                out[key][indices] = features
            bar.update(len(indices))
    return out


def _encode_openclip_images(
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
    if layers != [None]:
        raise UsageError(f"feature space {spec.text!r}: open_clip spaces have no layer outputs")
    info = inspect_openclip(spec, model_path)
    model, preprocess, _ = cached_load(
        ("openclip", str(model_path), weights_sha256(model_path), device),
        lambda: load_openclip(info, device=device),
    )
    return run_image_batches(
        paths,
        preprocess,
        lambda pixels: {None: model.encode_image(pixels, normalize=True)},
        device=device,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        desc=spec.name,
        precision=precision,
    )


def _encode_transformers_images(*args: Any) -> dict[Any, np.ndarray]:
    from bids_vem.features import transformers_encoders

    return transformers_encoders.encode_images_transformers(*args)


#: family -> image encoder(spec, paths, model_path, device, batch_size, num_workers, progress,
#: layers, precision) -> {layer: (n_images, d)}
IMAGE_ENCODERS: dict[str, Callable[..., dict[Any, np.ndarray]]] = {
    "openclip": _encode_openclip_images,
    "hf": _encode_transformers_images,
    "bridgetower": _encode_transformers_images,
}


def _check(spec: FeatureSpaceSpec, batch_size: int) -> None:
    if spec.family not in IMAGE_ENCODERS:
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
    values = IMAGE_ENCODERS[spec.family](
        spec,
        paths,
        Path(model_path),
        device,
        batch_size,
        num_workers,
        progress,
        list(layers),
        precision,
    )
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
    :mod:`bids_vem.features.transformers_encoders`; a spec with ``layer`` set gives that layer. Images are decoded in a torch DataLoader
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
