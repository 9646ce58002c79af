"""The image encoder being aligned: an open_clip image tower plus a projection to the text width."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from bids_vem.alignment.lora import add_lora, has_lora
from bids_vem.config import option_name
from bids_vem.errors import UsageError

__all__ = ["AlignedImageEncoder"]


class AlignedImageEncoder(torch.nn.Module):
    """open_clip image tower (``clip_model.visual``) followed by a projection head.

    The head maps the tower's embedding width to the caption-embedding width: a bias-free
    ``Linear`` (so it can be folded into the tower's own projection at export) when the widths
    differ, the identity otherwise.

    Parameters
    ----------
    visual
        The open_clip image tower (``VisionTransformer`` or ``ModifiedResNet``).
    text_dim
        Width of the caption embeddings the images are aligned to.
    preprocess
        The tower's evaluation transform (PIL image -> (3, H, W) tensor).
    """

    def __init__(
        self, visual: torch.nn.Module, text_dim: int, preprocess: Callable[[Any], Any] | None = None
    ) -> None:
        super().__init__()
        self.visual = visual
        self.image_dim = int(visual.output_dim)
        self.text_dim = int(text_dim)
        if self.image_dim == self.text_dim:
            self.head: torch.nn.Module = torch.nn.Identity()
        else:
            self.head = torch.nn.Linear(self.image_dim, self.text_dim, bias=False)
            # start close to a random orthogonal map: keeps the tower's geometry
            torch.nn.init.orthogonal_(self.head.weight)
        self.preprocess = preprocess

    @classmethod
    def from_openclip(
        cls, clip_model: torch.nn.Module, text_dim: int, preprocess: Callable[[Any], Any] | None
    ) -> AlignedImageEncoder:
        """Wrap the image tower of an open_clip ``CLIP`` model (the text tower is not kept)."""
        return cls(clip_model.visual, text_dim, preprocess)

    @property
    def has_head(self) -> bool:
        """True when a learned projection maps image width to text width."""
        return isinstance(self.head, torch.nn.Linear)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n_images, 3, H, W) pixels -> (n_images, text_dim) embeddings, not normalised."""
        checkpointing = getattr(getattr(self.visual, "transformer", None), "grad_checkpointing", 0)
        if not self.has_lora or checkpointing:
            # (a block recomputed in the backward pass must read its weights as it did forward)
            return self.head(self.visual(pixels))
        # a LoRA weight is read several times per attention call: merge it once per forward
        with parametrize.cached():
            return self.head(self.visual(pixels))

    def encode(self, pixels: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Embeddings as open_clip's ``encode_image`` gives them (L2-normalised by default)."""
        out = self.forward(pixels)
        return F.normalize(out, dim=-1) if normalize else out

    def _blocks(self) -> tuple[list[torch.nn.Module], list[Any]]:
        """(blocks in depth order, the parts after them that always train)."""
        visual = self.visual
        if hasattr(visual, "transformer") and hasattr(visual.transformer, "resblocks"):
            tail = [visual.ln_post]
            if getattr(visual, "attn_pool", None) is not None:
                tail.append(visual.attn_pool)
            return list(visual.transformer.resblocks), tail
        if all(hasattr(visual, name) for name in ("layer1", "layer4", "attnpool")):
            return [visual.layer1, visual.layer2, visual.layer3, visual.layer4], [visual.attnpool]
        raise UsageError(
            f"alignment cannot partially unfreeze image towers of type {type(visual).__name__}: "
            "only open_clip VisionTransformer and ModifiedResNet are known"
        )

    def freeze_all_but_last(self, blocks: int) -> None:
        """Freeze the tower except its last ``blocks`` blocks and its final projection.

        ViT: the last ``blocks`` of ``visual.transformer.resblocks`` plus ``ln_post`` and
        ``proj``; ModifiedResNet: the last ``blocks`` of ``layer1..layer4`` plus ``attnpool``.
        The head always trains. ``blocks=-1`` unfreezes everything.
        """
        all_blocks, tail = self._blocks()
        if blocks < -1:
            raise UsageError(f"{option_name('align_unfreeze_blocks')} must be >= -1, got {blocks}")
        if blocks > len(all_blocks):
            raise UsageError(
                f"{option_name('align_unfreeze_blocks')} {blocks}: the image tower has only {len(all_blocks)} blocks"
            )
        trainable = blocks == -1
        for param in self.visual.parameters():
            param.requires_grad_(trainable)
        if not trainable:
            for module in all_blocks[len(all_blocks) - blocks :] + tail:
                for param in module.parameters():
                    param.requires_grad_(True)
            if isinstance(getattr(self.visual, "proj", None), torch.nn.Parameter):
                self.visual.proj.requires_grad_(True)
        for param in self.head.parameters():
            param.requires_grad_(True)

    def use_lora(self, rank: int = 8, alpha: float = 16.0) -> list[torch.nn.Parameter]:
        """Freeze the tower and train LoRA deltas on its blocks instead (ViT towers only).

        Every transformer block's attention input/output projections and MLP linears get a
        rank-``rank`` delta scaled by ``alpha / rank`` (:mod:`bids_vem.alignment.lora`), zero at
        the start. What trains: the LoRA factors and the head; the tower's own weights,
        ``ln_post`` and ``proj`` included, stay frozen (the head is the trainable projection
        when the widths differ; without one, the blocks' deltas alone move the embeddings).
        Idempotent for the same rank and alpha.

        Returns
        -------
        The LoRA factors.

        Raises
        ------
        UsageError
            The tower is not an open_clip VisionTransformer (ModifiedResNet has no LoRA here).
        """
        params = add_lora(self.visual, rank, alpha)
        for param in self.head.parameters():
            param.requires_grad_(True)
        return params

    @property
    def has_lora(self) -> bool:
        """True when the tower carries LoRA deltas."""
        return has_lora(self.visual)

    def n_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (only those that train with ``trainable_only``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute tower activations in the backward pass instead of storing them."""
        self.visual.set_grad_checkpointing(enable)
