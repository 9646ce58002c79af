"""AlignedImageEncoder: head, partial unfreezing, gradient checkpointing."""

from __future__ import annotations

import pytest
import torch

from bids_vem.alignment.model import AlignedImageEncoder
from bids_vem.errors import UsageError


def _trainable(encoder: AlignedImageEncoder) -> set[str]:
    return {name for name, p in encoder.named_parameters() if p.requires_grad}


def test_head_only_when_widths_differ(clip_factory, tiny_vit_cfg):
    clip, preprocess = clip_factory(tiny_vit_cfg, 0)
    pixels = torch.randn(3, 3, 32, 32)
    same = AlignedImageEncoder.from_openclip(clip, 32, preprocess)
    assert not same.has_head
    # identity head: exactly open_clip's image embeddings
    with torch.no_grad():
        torch.testing.assert_close(same.encode(pixels), clip.encode_image(pixels, normalize=True))
    wider = AlignedImageEncoder.from_openclip(clip, 384, preprocess)
    assert wider.has_head and wider.head.weight.shape == (384, 32)
    with torch.no_grad():
        assert wider(pixels).shape == (3, 384)


def test_freeze_vit_blocks(clip_factory, tiny_vit_cfg):
    clip, preprocess = clip_factory(tiny_vit_cfg, 0)
    encoder = AlignedImageEncoder.from_openclip(clip, 384, preprocess)
    encoder.freeze_all_but_last(0)
    assert _trainable(encoder) == {
        "visual.proj",
        "visual.ln_post.weight",
        "visual.ln_post.bias",
        "head.weight",
    }
    encoder.freeze_all_but_last(1)
    names = _trainable(encoder)
    assert any(n.startswith("visual.transformer.resblocks.1.") for n in names)
    assert not any(n.startswith("visual.transformer.resblocks.0.") for n in names)
    assert "visual.conv1.weight" not in names
    n_block = sum(p.numel() for p in clip.visual.transformer.resblocks[1].parameters())
    head_and_tail = 384 * 32 + clip.visual.proj.numel() + 2 * 64
    assert encoder.n_parameters(trainable_only=True) == n_block + head_and_tail
    encoder.freeze_all_but_last(-1)
    assert encoder.n_parameters(trainable_only=True) == encoder.n_parameters()
    with pytest.raises(UsageError, match="only 2 blocks") as info:
        encoder.freeze_all_but_last(3)
    assert info.value.exit_code == 64


def test_freeze_modified_resnet(clip_factory, tiny_rn_cfg):
    clip, preprocess = clip_factory(tiny_rn_cfg, 0)
    encoder = AlignedImageEncoder.from_openclip(clip, 24, preprocess)
    encoder.freeze_all_but_last(1)
    names = _trainable(encoder)
    assert any(n.startswith("visual.layer4.") for n in names)
    assert any(n.startswith("visual.attnpool.") for n in names)
    assert not any(n.startswith(("visual.layer3.", "visual.conv1")) for n in names)
    with torch.no_grad():
        assert encoder(torch.randn(2, 3, 32, 32)).shape == (2, 24)


def test_gradient_checkpointing_gives_the_same_gradients(clip_factory, tiny_vit_cfg):
    grads = []
    for checkpointing in (False, True):
        clip, preprocess = clip_factory(tiny_vit_cfg, 0)
        torch.manual_seed(5)
        encoder = AlignedImageEncoder.from_openclip(clip, 16, preprocess)
        encoder.freeze_all_but_last(-1)
        encoder.set_grad_checkpointing(checkpointing)
        encoder(torch.ones(2, 3, 32, 32)).square().sum().backward()
        grads.append(encoder.visual.transformer.resblocks[0].mlp.c_fc.weight.grad.clone())
    assert clip.visual.transformer.grad_checkpointing
    torch.testing.assert_close(grads[0], grads[1])
