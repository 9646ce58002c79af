"""Pixels of the alignment images: decoded once, cached in memory, batched onto the device.

The alignment reads the same images every epoch; decoding them once into a uint8 cache (when
the model's preprocess ends in ToTensor + Normalize) and normalising on the device keeps the
training loop at the speed of a bare PyTorch loop (benchmarks/bench_alignment.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bids_vem.errors import DataError
from bids_vem.features.batching import read_rgb_image

__all__ = ["PixelSource"]

logger = logging.getLogger("bids_vem.alignment.train")


class _DecodedImages:
    """Decode + preprocess image ``i``; a bad file yields its error (raised in the main process).

    With ``pil_part`` the output is the (3, H, W) uint8 image that ``ToTensor`` would have
    scaled (the rest of the preprocess runs on the batch, on the device); without, the full
    preprocess output.
    """

    def __init__(self, paths: list[Path], preprocess: Any, pil_part: Any | None) -> None:
        self.paths, self.preprocess, self.pil_part = paths, preprocess, pil_part

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            image = read_rgb_image(self.paths[index])
        except DataError as exc:
            return index, None, str(exc)
        if self.pil_part is None:
            return index, self.preprocess(image), None
        image = self.pil_part(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
        # the bytes ToTensor reads: (H, W, 3) -> (3, H, W)
        return index, torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1), None


def _collate(items: list) -> tuple[list[int], torch.Tensor | None, str | None]:
    errors = [error for _, _, error in items if error is not None]
    if errors:
        return [], None, errors[0]
    shapes = {tuple(x.shape) for _, x, _ in items}
    if len(shapes) > 1:
        return [], None, f"preprocessed images differ in shape {sorted(shapes)}"
    return [i for i, _, _ in items], torch.stack([x for _, x, _ in items]), None


def _split_preprocess(preprocess: Any) -> tuple[Any | None, tuple | None]:
    """(PIL part, (mean, std)) when ``preprocess`` is a Compose ending in ToTensor + Normalize.

    open_clip's evaluation transforms are. Then images can be kept as uint8 and scaled and
    normalised on the device with exactly torchvision's float32 operations; otherwise
    (None, None) and the full transform runs per image.
    """
    from torchvision.transforms import Compose, Normalize, ToTensor

    if not isinstance(preprocess, Compose) or len(preprocess.transforms) < 2:
        return None, None
    *head, to_tensor, normalize = preprocess.transforms
    # exact types only: a subclass may compute something else
    if type(to_tensor) is not ToTensor and type(to_tensor).__name__ != "MaybeToTensor":
        return None, None
    if type(normalize) is not Normalize:
        return None, None
    return Compose(head), (normalize.mean, normalize.std)


class PixelSource:
    """Batches of preprocessed pixels on the device, from an in-memory cache or decoded anew.

    Every image is decoded and preprocessed once into memory (uint8 when the preprocess ends in
    ToTensor + Normalize, else float32) when the whole set fits ``cache_mb``; otherwise each
    batch is decoded again by a DataLoader with ``num_workers`` processes. Both paths give
    bit-identical pixels. Records which stimuli were read.
    """

    def __init__(
        self,
        paths: list[Path],
        ids: list[str],
        preprocess: Any,
        *,
        device: str,
        cache_mb: int,
        num_workers: int,
    ) -> None:
        self.ids, self.device, self.num_workers = ids, device, num_workers
        self.pin = str(device).startswith("cuda")
        pil_part, norm = _split_preprocess(preprocess)
        self.dataset = _DecodedImages(paths, preprocess, pil_part)
        self.seen: set[str] = set()
        self.norm: tuple[torch.Tensor, torch.Tensor] | None = None
        if norm is not None:
            mean, std = (
                torch.as_tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1)
                for v in norm
            )
            self.norm = (mean, std)
        self.cache = self._fill_cache(cache_mb) if cache_mb > 0 else None

    def _decode(self, batches: list[np.ndarray]):
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=batches,
            num_workers=self.num_workers,
            collate_fn=_collate,
            pin_memory=self.pin,
        )
        for batch in loader:
            indices, pixels, error = batch
            if error is not None:
                raise DataError(
                    error if error.startswith("stimulus image") else f"alignment: {error}"
                )
            self.seen.update(self.ids[i] for i in indices)
            yield pixels

    def _fill_cache(self, cache_mb: int) -> torch.Tensor | None:
        n_images = len(self.dataset)
        _, first, error = self.dataset[0]
        if error is not None:
            raise DataError(error)
        n_bytes = n_images * first.numel() * first.element_size()
        if n_bytes > cache_mb * 2**20:
            logger.info(
                "alignment: %d images need %.0f MB of pixels, over the %d MB cache: "
                "decoding every batch",
                n_images,
                n_bytes / 2**20,
                cache_mb,
            )
            return None
        cache = torch.empty((n_images, *first.shape), dtype=first.dtype)
        chunk = 256
        order = np.arange(n_images)
        start = 0
        for pixels in self._decode([order[i : i + chunk] for i in range(0, n_images, chunk)]):
            if pixels.shape[1:] != first.shape:
                raise DataError(
                    f"preprocessed images differ in shape ({tuple(first.shape)} and "
                    f"{tuple(pixels.shape[1:])}): the alignment preprocess must crop to one size"
                )
            cache[start : start + len(pixels)] = pixels
            start += len(pixels)
        logger.info("alignment: %d images cached in memory (%.0f MB)", n_images, n_bytes / 2**20)
        return cache

    def batches(self, batches: list[np.ndarray]):
        """Yield one (len(batch), 3, H, W) float32 tensor on the device per index array."""
        if self.cache is None:
            host = self._decode(batches)
        else:
            host = (self._gather(batch) for batch in batches)
        for pixels in host:
            pixels = pixels.to(self.device, non_blocking=True)
            if self.norm is not None:
                # ToTensor + Normalize, as torchvision computes them, on the whole batch
                pixels = pixels.float().div_(255.0).sub_(self.norm[0]).div_(self.norm[1])
            yield pixels

    def _gather(self, batch: np.ndarray) -> torch.Tensor:
        pixels = self.cache.index_select(0, torch.from_numpy(np.asarray(batch, dtype=np.int64)))
        return pixels.pin_memory() if self.pin else pixels
