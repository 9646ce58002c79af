"""What a model family is: the one object the rest of bids_vem asks about a family."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # families never import the spec parser (it asks them)
    from bids_vem.features.specs import FeatureSpaceSpec

__all__ = ["EncodeRequest", "Family"]


@dataclass(frozen=True)
class EncodeRequest:
    """One call of a family's encoder: which model, which layers, how to run it.

    Attributes
    ----------
    spec : FeatureSpaceSpec
        The feature space (its ``layer`` is ignored: ``layers`` says what to compute).
    model_path : Path
        From the family's ``resolve``.
    layers : list of int, "pooler" or None
        Outputs to compute; None is the model's final output.
    device, batch_size, precision
        Torch device, stimuli per forward pass, ``"auto"`` or ``"float32"``.
    num_workers, progress
        Image-decoding processes and a progress bar (images only).
    """

    spec: FeatureSpaceSpec
    model_path: Path
    layers: list[Any] = field(default_factory=lambda: [None])
    device: str = "cpu"
    batch_size: int = 32
    precision: str = "auto"
    num_workers: int = 0
    progress: bool = True

    def image_batches(self) -> dict[str, Any]:
        """Keyword arguments of :func:`bids_vem.features.batching.run_image_batches`."""
        return {
            "device": self.device,
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "progress": self.progress,
            "desc": self.spec.name,
            "precision": self.precision,
        }

    def text_batches(self) -> dict[str, Any]:
        """Keyword arguments of :func:`bids_vem.features.batching.run_text_batches`."""
        return {"device": self.device, "batch_size": self.batch_size, "precision": self.precision}


#: request, texts -> {layer: (n_texts, n_features)}
TextEncoder = Callable[[EncodeRequest, list[str]], dict[Any, np.ndarray]]
#: request, image files or decoded frames -> {layer: (n_images, n_features)}
ImageEncoder = Callable[[EncodeRequest, list[Any]], dict[Any, np.ndarray]]


def _no_description(spec: FeatureSpaceSpec, model_path: Path) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Family:
    """A model family: everything bids_vem needs to parse, find, describe and run its models.

    One module of :mod:`bids_vem.features.families` defines one ``FAMILY``; the registry
    finds it by itself (``docs/developing.md``: adding a family is one file).

    Attributes
    ----------
    name : str
        The spec prefix (``openclip`` in ``openclip:ViT-B-32@...``).
    modalities : frozenset of str
        What it embeds: ``"text"`` (captions), ``"image"`` (stimulus images).
    resolve : callable
        ``(spec, model_dirs, allow_downloads) -> Path``: the local weights (module docstring
        of :mod:`bids_vem.features.models` for the search order); raises InputMissingError.
    poolings : mapping
        Modality -> the ``#pool=`` values it accepts (absent: no ``#pool``).
    layers : bool
        Whether ``#layers=`` (intermediate layers) is supported.
    takes_weights : bool
        Whether ``@weights`` (a weights file or pretrained tag) may follow the model.
    packages : tuple of str
        Libraries whose major version is part of the feature cache key.
    describe : callable
        ``(spec, model_path) -> dict``: architecture and preprocessing for the sidecars and
        the cache key, read without loading the weights.
    depth : callable or None
        ``(spec, model_path) -> (n_layers, has_pooler)``, for ``#layers``.
    verify : callable or None
        ``(spec, model_path) -> dict``: extra facts ``bids_vem models verify`` checks.
    encode_texts, encode_images : callable or None
        The encoders of each modality it embeds (:data:`TextEncoder`, :data:`ImageEncoder`).
    """

    name: str
    modalities: frozenset[str]
    resolve: Callable[[FeatureSpaceSpec, Sequence[Path], bool], Path]
    poolings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    layers: bool = False
    takes_weights: bool = False
    packages: tuple[str, ...] = ("torch",)
    describe: Callable[[FeatureSpaceSpec, Path], dict[str, Any]] = _no_description
    depth: Callable[[FeatureSpaceSpec, Path], tuple[int, bool]] | None = None
    verify: Callable[[FeatureSpaceSpec, Path], dict[str, Any]] | None = None
    encode_texts: TextEncoder | None = None
    encode_images: ImageEncoder | None = None
