"""Export folds the projection head into open_clip's own projection (ViT and ModifiedResNet)."""

from __future__ import annotations

import json

import pytest
import torch

from bids_vem.alignment.export import export_openclip
from bids_vem.alignment.model import AlignedImageEncoder


@pytest.mark.parametrize("arch, text_dim", [("vit", 384), ("vit", 32), ("rn", 24)])
def test_exported_model_gives_the_aligned_embeddings(
    arch, text_dim, clip_factory, tiny_vit_cfg, tiny_rn_cfg, tmp_path
):
    import open_clip

    cfg = tiny_vit_cfg if arch == "vit" else tiny_rn_cfg
    clip, preprocess = clip_factory(cfg, 0)
    encoder = AlignedImageEncoder.from_openclip(clip, text_dim, preprocess)
    # perturb the tower so the export must carry trained weights, not the base ones
    with torch.no_grad():
        for param in encoder.visual.parameters():
            param.add_(0.01 * torch.randn_like(param))
    out = export_openclip(encoder, clip, cfg, tmp_path / "aligned", sidecar={"base_model": arch})
    config = json.loads((out / "open_clip_config.json").read_text(encoding="utf-8"))
    assert config["model_cfg"]["embed_dim"] == text_dim
    assert cfg["embed_dim"] == (32 if arch == "vit" else 16)  # the caller's config untouched
    loaded = open_clip.create_model(f"local-dir:{out}").eval()
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.encode_image(pixels, normalize=True),
            encoder.encode(pixels),
            atol=1e-5,
            rtol=1e-4,
        )
        # the text tower still runs at the new width
        tokens = torch.zeros(2, cfg["text_cfg"]["context_length"], dtype=torch.long)
        assert loaded.encode_text(tokens).shape == (2, text_dim)
    sidecar = json.loads((out / "alignment.json").read_text(encoding="utf-8"))
    assert sidecar["base_model"] == arch
    assert sidecar["projection_folded"] == (text_dim != cfg["embed_dim"])
