"""Cross-modal retrieval recall@k from paired image and caption embeddings."""

from __future__ import annotations

import numpy as np

from bids_vem.errors import DataError

__all__ = ["retrieval_recall"]


def _recall(similarity: np.ndarray, ks: tuple[int, ...]) -> dict[int, float]:
    # rank of the true match (the diagonal) among each row; ties count against the match
    true = np.diag(similarity)[:, None]
    rank = (similarity >= true).sum(axis=1) - 1
    return {k: float(np.mean(rank < k)) for k in ks}


def retrieval_recall(
    image_embeddings: np.ndarray, text_embeddings: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Image->caption and caption->image recall@k by cosine similarity.

    Parameters
    ----------
    image_embeddings, text_embeddings
        (n_pairs, n_dims); row i of each is a matching pair.
    ks
        Cut-offs.

    Returns
    -------
    ``{"i2t_r1": ..., "t2i_r1": ..., ...}``: fraction of queries whose match ranks in the top k.
    A tie with the match counts as ranking above it (no credit for constant embeddings).
    """
    image = np.asarray(image_embeddings, dtype=np.float64)
    text = np.asarray(text_embeddings, dtype=np.float64)
    if image.ndim != 2 or image.shape != text.shape:
        raise DataError(
            f"retrieval needs two (n_pairs, n_dims) matrices of one shape, "
            f"got {image.shape} and {text.shape}"
        )
    image = image / np.maximum(np.linalg.norm(image, axis=1, keepdims=True), 1e-12)
    text = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
    similarity = image @ text.T
    out = {}
    for prefix, sim in (("i2t", similarity), ("t2i", similarity.T)):
        for k, value in _recall(sim, ks).items():
            out[f"{prefix}_r{k}"] = value
    return out
