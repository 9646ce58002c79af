"""Image encoders: stimulus images -> embeddings, one row per image."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bids_vem.errors import DataError, UsageError
from bids_vem.features.models import inspect_openclip, load_openclip
from bids_vem.features.specs import FeatureSpaceSpec

__all__ = ["encode_images", "read_rgb_image"]

logger = logging.getLogger(__name__)


def read_rgb_image(path: Path) -> Any:
    """Open an image file as an RGB ``PIL.Image`` (grayscale, palette and RGBA converted).

    Raises
    ------
    DataError
        The file cannot be decoded as an image (empty, truncated, not an image).
    """
    from PIL import Image

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
    return [i for i, _, _ in items], torch.stack([x for _, x, _ in items]), None


def _encode_openclip_images(
    spec: FeatureSpaceSpec,
    paths: list[Path],
    model_path: Path,
    device: str,
    batch_size: int,
    num_workers: int,
    progress: bool,
) -> np.ndarray:
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    info = inspect_openclip(spec, model_path)
    model, preprocess, _ = load_openclip(info, device=device)
    loader = DataLoader(
        _ImageDataset(paths, preprocess),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=str(device).startswith("cuda"),
    )
    out: np.ndarray | None = None
    with (
        torch.inference_mode(),
        tqdm(total=len(paths), unit="img", desc=spec.name, disable=not progress) as bar,
    ):
        for indices, pixels, error in loader:
            if error is not None:
                raise DataError(error)
            features = model.encode_image(pixels.to(device, non_blocking=True), normalize=True)
            features = features.float().cpu().numpy()
            if out is None:
                out = np.empty((len(paths), features.shape[1]), dtype=np.float32)
            out[indices] = features
            bar.update(len(indices))
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


#: family -> image encoder(spec, paths, model_path, device, batch_size, num_workers, progress)
IMAGE_ENCODERS: dict[str, Callable[..., np.ndarray]] = {
    "openclip": _encode_openclip_images,
}


def encode_images(
    spec: FeatureSpaceSpec,
    paths: list[Path],
    *,
    model_path: Path,
    device: str = "cpu",
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """Embed image files with the image model of ``spec``, using the model's own preprocessing.

    open_clip: the eval transform of the model's preprocess config (resize, centre crop,
    normalise), then ``encode_image(normalize=True)``. Images are decoded in a torch DataLoader
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

    Returns
    -------
    ndarray of shape (n_images, n_features), float32

    Raises
    ------
    DataError
        An image cannot be decoded (exit 65); the message names the file.
    """
    if spec.family not in IMAGE_ENCODERS:
        raise UsageError(f"feature space {spec.text!r}: family {spec.family!r} cannot embed images")
    if batch_size < 1:
        raise UsageError(f"feature space {spec.text!r}: batch size must be >= 1, got {batch_size}")
    paths = [Path(p) for p in paths]
    if not paths:
        return np.zeros((0, 0), dtype=np.float32)
    values = IMAGE_ENCODERS[spec.family](
        spec, paths, Path(model_path), device, batch_size, num_workers, progress
    )
    return np.ascontiguousarray(values, dtype=np.float32)
