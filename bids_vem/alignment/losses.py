"""Alignment objectives: CLIP's symmetric InfoNCE, cosine regression, feature preservation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bids_vem.config import check_setting
from bids_vem.errors import UsageError

__all__ = [
    "DUPLICATE_COSINE",
    "LogitScale",
    "duplicate_targets",
    "infonce_loss",
    "cosine_regression_loss",
    "preservation_loss",
    "alignment_objective",
]


#: CLIP clamps the logit scale at 100 (log 100) so the softmax cannot collapse
MAX_LOG_SCALE = math.log(100.0)


class LogitScale(torch.nn.Module):
    """Learnable inverse temperature of InfoNCE, stored as a log and clamped as CLIP does.

    Parameters
    ----------
    init_temperature
        Starting temperature (CLIP starts at 0.07: logit scale 1/0.07).
    """

    def __init__(self, init_temperature: float = 0.07) -> None:
        super().__init__()
        if not init_temperature > 0:
            raise UsageError(f"alignment temperature must be > 0, got {init_temperature}")
        self.log_scale = torch.nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(self) -> torch.Tensor:
        """The logit scale exp(log_scale), with log_scale clamped to [0, log 100]."""
        return self.log_scale.clamp(0.0, MAX_LOG_SCALE).exp()

    @property
    def temperature(self) -> float:
        """Current temperature 1 / logit scale."""
        return float(1.0 / self.forward().detach())


#: targets closer than this (cosine) count as the same caption: not negatives of each other
DUPLICATE_COSINE = 0.99


def duplicate_targets(text: torch.Tensor, threshold: float = DUPLICATE_COSINE) -> torch.Tensor:
    """(n, n) bool: pairs ``i != j`` whose (normalised) targets have cosine > ``threshold``."""
    similar = (text @ text.T) > threshold
    return similar & ~torch.eye(len(text), dtype=torch.bool, device=text.device)


def infonce_loss(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    logit_scale: torch.Tensor,
    duplicate_cosine: float | None = DUPLICATE_COSINE,
) -> torch.Tensor:
    """Symmetric InfoNCE (the CLIP loss): row i of each matrix is a matching pair.

    Two images with the same caption (frequent with generated captions: "a close-up of a
    face") would push apart what their targets say is identical. Pairs whose targets have
    cosine above ``duplicate_cosine`` are therefore left out of each other's negatives, in
    both directions; every row keeps its own positive.

    Parameters
    ----------
    image_embeddings, text_embeddings
        (n_pairs, n_dims); normalised here, so any scale is fine.
    logit_scale
        Scalar inverse temperature (already exponentiated).
    duplicate_cosine
        Targets closer than this are not negatives of each other; None keeps every negative
        (CLIP's loss as published).

    Returns
    -------
    Scalar: mean of image->text and text->image cross-entropy over the batch.
    """
    image = F.normalize(image_embeddings.float(), dim=-1)
    text = F.normalize(text_embeddings.float(), dim=-1)
    logits = logit_scale * image @ text.T
    if duplicate_cosine is not None:
        # symmetric: text j is a duplicate of text i exactly when i is of j
        logits = logits.masked_fill(duplicate_targets(text.detach(), duplicate_cosine), -torch.inf)
    labels = torch.arange(len(image), device=image.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def cosine_regression_loss(
    image_embeddings: torch.Tensor, text_embeddings: torch.Tensor
) -> torch.Tensor:
    """Mean (1 - cosine similarity) between each image embedding and its target (Doerig et al.).

    Both inputs are (n_pairs, n_dims); 0 when every pair points the same way.
    """
    cosine = F.cosine_similarity(image_embeddings.float(), text_embeddings.float(), dim=-1)
    return (1.0 - cosine).mean()


def preservation_loss(
    image_embeddings: torch.Tensor, initial_embeddings: torch.Tensor
) -> torch.Tensor:
    """Mean (1 - cosine) to the frozen original model's embeddings: keeps what the encoder knew.

    Both inputs are (n_images, n_dims) in the same space (the initial ones projected by the
    initial head).
    """
    return cosine_regression_loss(image_embeddings, initial_embeddings.detach())


def alignment_objective(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    *,
    loss: str = "infonce",
    logit_scale: torch.Tensor | None = None,
    alignment_weight: float = 1.0,
    initial_embeddings: torch.Tensor | None = None,
    duplicate_cosine: float | None = DUPLICATE_COSINE,
) -> torch.Tensor:
    """``w * align_loss + (1 - w) * preservation_loss`` with ``w = alignment_weight``.

    Parameters
    ----------
    image_embeddings, text_embeddings
        (n_pairs, n_dims) current image embeddings and their caption targets.
    loss
        ``"infonce"`` (needs ``logit_scale``) or ``"cosine"``.
    alignment_weight
        In [0, 1]; below 1 ``initial_embeddings`` (n_pairs, n_dims) are required.
    duplicate_cosine
        InfoNCE only: targets closer than this are not negatives (:func:`infonce_loss`).
    """
    check_setting("align_loss", loss)
    if not 0.0 <= alignment_weight <= 1.0:
        raise UsageError(f"alignment weight must be in [0, 1], got {alignment_weight}")
    if loss == "infonce":
        if logit_scale is None:
            raise UsageError("the infonce alignment loss needs a logit scale")
        align = infonce_loss(image_embeddings, text_embeddings, logit_scale, duplicate_cosine)
    else:
        align = cosine_regression_loss(image_embeddings, text_embeddings)
    if alignment_weight == 1.0:
        return align
    if initial_embeddings is None:
        raise UsageError("an alignment weight below 1 needs the initial image embeddings")
    keep = preservation_loss(image_embeddings, initial_embeddings)
    return alignment_weight * align + (1.0 - alignment_weight) * keep
