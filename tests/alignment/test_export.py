"""Export folds the projection head into open_clip's own projection (ViT and ModifiedResNet)."""

from __future__ import annotations

import json

import numpy as np
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


def test_an_alignment_starts_from_its_seed_whatever_ran_before(tmp_path):
    """A fold trained after others were reused from the cache (a resumed run) must equal the
    same fold trained after training them: the new head is drawn from the seed alone."""
    import torch
    from safetensors.numpy import load_file

    from bids_vem.alignment.folds import AlignmentFold
    from bids_vem.alignment.stage import train_aligned_model
    from bids_vem.alignment.train import AlignConfig
    from bids_vem.demo import make_demo_dataset
    from bids_vem.features.specs import parse_feature_space

    demo = make_demo_dataset(tmp_path / "demo", n_subjects=1, n_runs=2, n_stimuli=12)
    images = {p.name: p for p in sorted((demo.bids_dir / "stimuli" / "images").glob("*.png"))}
    rng = np.random.default_rng(0)
    targets = {s: rng.standard_normal((2, 16)).astype(np.float32) for s in images}
    base = parse_feature_space(demo.image_model_spec, "image")
    target = parse_feature_space("minilm=sentence:all-MiniLM-L6-v2", "text")
    fold = AlignmentFold(name="final", held_out_runs=(), train_ids=tuple(images), held_out_ids=())
    config = AlignConfig(epochs=1, batch_size=8, lr=1e-3, unfreeze_blocks=-1, seed=3)
    weights = []
    for consumed in (0, 1000):
        torch.rand(consumed)  # what an earlier fold of this process would have drawn
        model = train_aligned_model(
            base, target, images=images, targets=targets, fold=fold, config=config,
            cache_root=tmp_path / f"cache{consumed}",
        )  # fmt: skip
        weights.append(load_file(str(model / "open_clip_model.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        np.testing.assert_array_equal(weights[0][name], weights[1][name], err_msg=name)
