"""What every model family shares to run a model over stimuli: batches, precision, loading.

Texts are batched by length (less padding) and returned in input order; images are decoded
in a DataLoader (a bad file is reported by name), preprocessed by the family's own transform,
and run under the device's autocast. A loaded model is kept for the next call with the same
weights (a movie is encoded batch by batch; several layers share one load). Used by the
families in :mod:`bids_vem.features.families` and by the alignment stage.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bids_vem.errors import DataError, UsageError

__all__ = [
    "LOADED_MODELS_KEPT",
    "autocast_context",
    "cached_load",
    "check_images",
    "length_order",
    "read_rgb_image",
    "run_image_batches",
    "run_text_batches",
]

logger = logging.getLogger(__name__)


def length_order(texts: list[str]) -> np.ndarray:
    """Indices that sort ``texts`` by length (stable)."""
    # batches of similar length waste less padding
    return np.argsort([len(t) for t in texts], kind="stable")


_LOADED: OrderedDict[tuple, Any] = OrderedDict()

#: models kept loaded in one process (a video is encoded batch by batch with the same model)
LOADED_MODELS_KEPT = 2


def cached_load(key: tuple, load: Callable[[], Any]) -> Any:
    """``load()`` once per ``key`` (which must name the weights' content); keeps the last few.

    Encoding a movie frame batch by frame batch, or several feature spaces of one model, must
    not read the weights again for every call.
    """
    if key in _LOADED:
        _LOADED.move_to_end(key)
        return _LOADED[key]
    value = load()
    _LOADED[key] = value
    while len(_LOADED) > LOADED_MODELS_KEPT:
        _LOADED.popitem(last=False)
    return value


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
        # the format is read from the content: a JPEG named .png opens as the JPEG it is
        with Image.open(path) as image:
            image.load()
            if image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")  # avoids PIL's palette-transparency warning
            if image.mode.startswith("I") or image.mode == "F":
                image = _to_8_bit(image)
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        size = path.stat().st_size if path.exists() else None
        detail = "empty file (0 bytes)" if size == 0 else f"{type(exc).__name__}: {exc}"
        raise DataError(f"stimulus image {path}: cannot be read as an image ({detail})") from exc


def _to_8_bit(image: Any) -> Any:
    """A 16-bit, 32-bit integer or float grey image as 8-bit grey: PIL's own conversion clips
    every value above 255 to white. 16-bit images span 0..65535; others are rescaled from their
    range unless already within 0..255 (0..1 for floats)."""
    from PIL import Image

    array = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        array = array / 257.0
    else:
        low, high = float(array.min()), float(array.max())
        if image.mode == "F" and low >= 0.0 and high <= 1.0:
            array = array * 255.0
        elif low < 0.0 or high > 255.0:
            array = (array - low) / max(high - low, 1e-12) * 255.0
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "L")


def check_images(paths: Sequence[Path], n_workers: int = 8) -> None:
    """Decode every image once, before any work starts (a thread pool).

    Raises
    ------
    DataError
        The first file that cannot be decoded, named (empty, truncated, not an image).
    """
    from concurrent.futures import ThreadPoolExecutor

    def decode(path: Path) -> None:
        read_rgb_image(path)  # the pixels are dropped at once: memory stays flat

    with ThreadPoolExecutor(max_workers=max(1, min(n_workers, len(paths)))) as pool:
        for _ in pool.map(decode, paths):
            pass


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


def run_text_batches(
    texts: list[str],
    forward: Callable[[list[str]], dict[Any, Any]],
    *,
    device: str = "cpu",
    batch_size: int = 32,
    precision: str = "auto",
) -> dict[Any, np.ndarray]:
    """Run ``forward`` over ``texts`` in length-ordered batches; rows back in input order.

    Parameters
    ----------
    texts : list of str
        Length n_texts.
    forward : callable
        A batch of texts -> {layer: tensor of shape (batch, n_features)}; it tokenises and
        moves the tokens to ``device`` itself.
    device, batch_size, precision
        Torch device, texts per forward pass, and the precision (:func:`autocast_context`).

    Returns
    -------
    dict
        Layer -> ndarray of shape (n_texts, n_features), float32.
    """
    import torch

    order = length_order(texts)
    chunks: dict[Any, list[np.ndarray]] = {}
    autocast, _ = autocast_context(device, precision)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = [texts[i] for i in order[start : start + batch_size]]
            with autocast:
                outputs = forward(batch)
            for layer, values in outputs.items():
                chunks.setdefault(layer, []).append(values.float().cpu().numpy())
    out = {}
    for layer, parts in chunks.items():
        embeddings = np.concatenate(parts)
        values = np.empty_like(embeddings)
        values[order] = embeddings
        out[layer] = values
    return out
