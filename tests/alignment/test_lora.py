"""LoRA fine-tuning: what trains, step-0 equivalence, learning, resume and merged export."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from bids_vem.alignment.export import export_openclip
from bids_vem.alignment.lora import LoRADelta, merged_state_dict
from bids_vem.alignment.model import AlignedImageEncoder
from bids_vem.alignment.train import AlignConfig, train_alignment
from bids_vem.errors import UsageError
from bids_vem.features.batching import read_rgb_image
from tests.helpers import kill_after_checkpoint

TEXT_DIM = 24
LORA = AlignConfig(
    epochs=6,
    lr=1e-2,
    batch_size=8,
    warmup_steps=0,
    method="lora",
    lora_rank=4,
    lora_alpha=8.0,
    val_fraction=0.0,
    patience=None,
    train_metrics=False,
    seed=0,
)
TIMING = ("train_seconds", "images_per_s")


def _encoder(clip_factory, cfg, text_dim=TEXT_DIM):
    clip, preprocess = clip_factory(cfg, 0)
    torch.manual_seed(1)
    return clip, AlignedImageEncoder.from_openclip(clip, text_dim, preprocess)


def _targets(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(2, TEXT_DIM)).astype(np.float32) for _ in range(n)]


def test_only_lora_factors_and_head_train(clip_factory, tiny_vit_cfg):
    _, encoder = _encoder(clip_factory, tiny_vit_cfg)
    factors = encoder.use_lora(rank=4, alpha=8.0)
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert "head.weight" in trainable
    assert all(n == "head.weight" or n.endswith((".lora_A", ".lora_B")) for n in trainable)
    # two blocks x (attention in/out projections + two MLP linears), an A and a B each
    assert len(factors) == 2 * 4 * 2 and len(trainable) == len(factors) + 1
    width, rank = 64, 4  # tiny ViT: width 64, MLP 4 x 64
    per_block = rank * ((width + 3 * width) + 2 * width + (width + 4 * width) * 2)
    assert encoder.n_parameters(trainable_only=True) == 2 * per_block + TEXT_DIM * 32
    # the tower's own weights (ln_post and proj included) are frozen
    frozen = {n for n, p in encoder.named_parameters() if not p.requires_grad}
    assert {"visual.proj", "visual.ln_post.weight", "visual.conv1.weight"} <= frozen
    assert any(n.endswith("in_proj_weight.original") for n in frozen)
    # again with the same rank: the same factors, nothing doubled
    assert encoder.use_lora(rank=4, alpha=8.0) == factors
    with pytest.raises(UsageError, match="already has LoRA of rank 4"):
        encoder.use_lora(rank=2, alpha=8.0)


def test_lora_starts_as_the_base_model(clip_factory, tiny_vit_cfg):
    clip, encoder = _encoder(clip_factory, tiny_vit_cfg)
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = encoder(pixels)
    encoder.use_lora(rank=4, alpha=8.0)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels), before, atol=0, rtol=0)
    # with grad (the slow attention path) too, and it reaches the factors
    out = encoder(pixels)
    torch.testing.assert_close(out, before, atol=1e-6, rtol=1e-5)
    out.square().sum().backward()
    block = clip.visual.transformer.resblocks[0]
    delta = block.attn.parametrizations.in_proj_weight[0]
    assert isinstance(delta, LoRADelta)
    assert delta.lora_B.grad.abs().sum() > 0  # B = 0 gets a gradient through A
    assert block.attn.parametrizations.in_proj_weight.original.grad is None


def test_lora_delta_is_the_low_rank_product():
    linear = torch.nn.Linear(6, 5)
    base = linear.weight.detach().clone()
    delta = LoRADelta(5, 6, rank=2, alpha=3.0)
    torch.nn.utils.parametrize.register_parametrization(linear, "weight", delta)
    with torch.no_grad():
        delta.lora_B.normal_()
    expected = base + 1.5 * delta.lora_B.detach() @ delta.lora_A.detach()
    torch.testing.assert_close(linear.weight, expected)
    merged = merged_state_dict(linear)
    assert set(merged) == {"weight", "bias"}
    torch.testing.assert_close(merged["weight"], expected)
    # merging does not change the module
    assert torch.nn.utils.parametrize.is_parametrized(linear, "weight")


def test_lora_on_a_resnet_tower_is_a_usage_error(clip_factory, tiny_rn_cfg):
    clip, preprocess = clip_factory(tiny_rn_cfg, 0)
    encoder = AlignedImageEncoder.from_openclip(clip, TEXT_DIM, preprocess)
    with pytest.raises(UsageError) as info:
        encoder.use_lora()
    message = str(info.value)
    assert "ModifiedResNet" in message and "partial" in message and "\n" not in message
    assert info.value.exit_code == 64
    with pytest.raises(UsageError, match="rank must be >= 1"):
        replace(LORA, lora_rank=0).check()
    with pytest.raises(UsageError, match="alignment method must be one of partial, lora"):
        replace(LORA, method="adapter").check()


@pytest.fixture(scope="module")
def lora_trained(clip_factory, tiny_vit_cfg, make_jpegs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora_images")
    paths = make_jpegs(folder, 24)
    clip, encoder = _encoder(clip_factory, tiny_vit_cfg)
    base = {k: v.clone() for k, v in clip.visual.state_dict().items()}
    work = tmp_path_factory.mktemp("lora_work")
    result = train_alignment(encoder, paths, _targets(24), LORA, work)
    return clip, encoder, base, paths, result, work


def test_lora_training_lowers_the_loss_and_leaves_base_weights(lora_trained):
    clip, encoder, base, _, result, _ = lora_trained
    losses = [row["train_loss"] for row in result.metrics]
    assert losses[-1] < 0.5 * losses[0]
    assert result.best_epoch == LORA.epochs and not result.kept_unaligned
    state = clip.visual.state_dict()
    for key, value in base.items():
        original = key.replace("in_proj_weight", "parametrizations.in_proj_weight.original")
        if original not in state:
            original = key.replace(".weight", ".parametrizations.weight.original")
        torch.testing.assert_close(state.get(key, state.get(original)), value, atol=0, rtol=0)
    moved = [p.abs().max() for n, p in encoder.named_parameters() if n.endswith("lora_B")]
    assert min(moved) > 0  # every delta moved away from zero


def test_lora_export_has_plain_keys_and_the_same_embeddings(
    lora_trained, clip_factory, tiny_vit_cfg, tmp_path
):
    import open_clip

    clip, encoder, _, paths, result, _ = lora_trained
    out = export_openclip(encoder, clip, tiny_vit_cfg, tmp_path / "aligned", sidecar={"m": 1})
    from safetensors.torch import load_file

    keys = set(load_file(str(out / "open_clip_model.safetensors")))
    assert not any("parametrizations" in k or "lora" in k for k in keys)
    plain, _ = clip_factory(tiny_vit_cfg, 0)
    assert keys == set(plain.state_dict())
    loaded = open_clip.create_model(f"local-dir:{out}").eval()
    with torch.no_grad():
        pixels = torch.stack([encoder.preprocess(read_rgb_image(p)) for p in paths[:6]])
        torch.testing.assert_close(
            loaded.encode_image(pixels, normalize=True),
            encoder.encode(pixels),
            atol=1e-5,
            rtol=1e-4,
        )
    # the in-memory model keeps its LoRA (still trainable, still the aligned model)
    assert encoder.has_lora
    assert json.loads((out / "open_clip_config.json").read_text())["model_cfg"]["embed_dim"] == 24


def test_lora_resume_reaches_the_same_weights(
    clip_factory, tiny_vit_cfg, make_jpegs, tmp_path, monkeypatch
):
    paths = make_jpegs(tmp_path, 16)
    targets = _targets(16, seed=1)
    config = replace(LORA, epochs=3, caption_sampling="sample", val_fraction=0.25)
    straight_clip, straight = _encoder(clip_factory, tiny_vit_cfg)
    want = train_alignment(straight, paths, targets, config, tmp_path / "straight")

    kill_after_checkpoint(
        monkeypatch,
        lambda: train_alignment(
            _encoder(clip_factory, tiny_vit_cfg)[1], paths, targets, config, tmp_path / "k"
        ),
    )
    _, resumed = _encoder(clip_factory, tiny_vit_cfg)
    got = train_alignment(resumed, paths, targets, config, tmp_path / "k", resume=True)
    for a, b in zip(got.metrics, want.metrics, strict=True):
        keys = [k for k in a if k not in TIMING]
        np.testing.assert_allclose([a[k] for k in keys], [b[k] for k in keys], rtol=1e-5)
    resumed_state, straight_state = resumed.state_dict(), straight.state_dict()
    assert resumed_state.keys() == straight_state.keys()
    assert any("lora_B" in k for k in resumed_state)
    for name, value in straight_state.items():
        torch.testing.assert_close(resumed_state[name], value, msg=name)
    files = {p.suffix for p in (tmp_path / "k").rglob("*") if p.is_file()}
    assert files <= {".safetensors", ".json", ".tsv"}


def test_lora_with_gradient_checkpointing_gives_the_same_gradients(clip_factory, tiny_vit_cfg):
    grads = []
    for checkpointing in (False, True):
        clip, encoder = _encoder(clip_factory, tiny_vit_cfg)
        torch.manual_seed(2)
        encoder.use_lora(rank=4, alpha=8.0)
        with torch.no_grad():
            for name, param in encoder.named_parameters():
                if name.endswith("lora_B"):
                    param.normal_(0, 0.1)
        encoder.set_grad_checkpointing(checkpointing)
        encoder(torch.ones(2, 3, 32, 32)).square().sum().backward()
        delta = clip.visual.transformer.resblocks[0].attn.parametrizations.in_proj_weight[0]
        grads.append((delta.lora_A.grad.clone(), delta.lora_B.grad.clone()))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
