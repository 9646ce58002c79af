"""The pixel cache: decoded once, bit-identical to the model's preprocess, same training."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from bids_vem.alignment.model import AlignedImageEncoder
from bids_vem.alignment.pixels import PixelSource as _PixelSource
from bids_vem.alignment.train import AlignConfig, train_alignment
from bids_vem.errors import DataError
from bids_vem.features.batching import read_rgb_image

CONFIG = AlignConfig(
    epochs=2,
    lr=1e-3,
    batch_size=6,
    unfreeze_blocks=1,
    val_fraction=0.0,  # no validation: the last epoch's weights are kept and compared
    patience=None,
    caption_sampling="sample",
    alignment_weight=0.8,
    seed=0,
)
TIMING = ("train_seconds", "images_per_s")


@pytest.fixture(scope="module")
def images(make_jpegs, tmp_path_factory) -> list:
    folder = tmp_path_factory.mktemp("pixels")
    paths = make_jpegs(folder, 14)
    # odd sizes and modes: grayscale, palette, a tall PNG with alpha
    Image.fromarray(np.arange(50 * 70, dtype=np.uint8).reshape(50, 70) % 251).save(
        folder / "gray.jpg"
    )
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 30, 4), np.uint8)).save(
        folder / "rgba.png"
    )
    return paths + [folder / "gray.jpg", folder / "rgba.png"]


def _source(paths, preprocess, **kwargs) -> _PixelSource:
    defaults = {"device": "cpu", "cache_mb": 64, "num_workers": 0}
    return _PixelSource(paths, [p.name for p in paths], preprocess, **{**defaults, **kwargs})


def _all(source: _PixelSource, n: int) -> torch.Tensor:
    order = np.arange(n)
    return torch.cat(list(source.batches([order[i : i + 5] for i in range(0, n, 5)])))


def test_cached_and_decoded_pixels_equal_the_preprocess_exactly(images, clip_factory, tiny_vit_cfg):
    _, preprocess = clip_factory(tiny_vit_cfg, 0)
    expected = torch.stack([preprocess(read_rgb_image(p)) for p in images])
    cached = _source(images, preprocess)
    assert cached.cache is not None and cached.cache.dtype == torch.uint8  # 4x less than float
    assert cached.seen == {p.name for p in images}
    decoded = _source(images, preprocess, cache_mb=0)
    assert decoded.cache is None
    workers = _source(images, preprocess, cache_mb=0, num_workers=1)
    for source in (cached, decoded, workers):
        assert torch.equal(_all(source, len(images)), expected)


def test_other_preprocess_is_cached_as_float(images):
    def preprocess(image):  # not a torchvision Compose: cached as its own output
        return torch.from_numpy(np.asarray(image.resize((16, 16)), np.float32) / 7.0).permute(
            2, 0, 1
        )

    source = _source(images, preprocess)
    assert source.cache.dtype == torch.float32
    expected = torch.stack([preprocess(read_rgb_image(p)) for p in images])
    assert torch.equal(_all(source, len(images)), expected)
    assert torch.equal(_all(_source(images, preprocess, cache_mb=0), len(images)), expected)


def test_images_over_the_budget_are_decoded_per_batch(images):
    from open_clip.transform import PreprocessCfg, image_transform_v2

    # 640 x 640 x 3 bytes = 1.2 MB per image: 16 images do not fit in 16 MB
    big = image_transform_v2(PreprocessCfg(size=(640, 640)), is_train=False)
    assert _source(images, big, cache_mb=16).cache is None
    assert _source(images[:8], big, cache_mb=16).cache is not None


@pytest.mark.parametrize("cache_mb, workers", [(64, 0), (0, 0), (0, 1)])
def test_a_broken_image_is_a_data_error_naming_it(
    images, clip_factory, tiny_vit_cfg, cache_mb, workers, tmp_path
):
    _, preprocess = clip_factory(tiny_vit_cfg, 0)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    paths = images[:3] + [broken]
    with pytest.raises(DataError, match="broken.jpg: cannot be read as an image") as info:
        _all(_source(paths, preprocess, cache_mb=cache_mb, num_workers=workers), len(paths))
    assert info.value.exit_code == 65 and "\n" not in str(info.value)


def test_training_is_identical_with_and_without_the_cache(
    images, clip_factory, tiny_vit_cfg, tmp_path
):
    runs = []
    for name, change in (
        ("cache", {}),
        ("decode", {"pixel_cache_mb": 0}),
        ("workers", {"pixel_cache_mb": 0, "num_workers": 1}),
    ):
        clip, preprocess = clip_factory(tiny_vit_cfg, 0)
        torch.manual_seed(1)
        encoder = AlignedImageEncoder.from_openclip(clip, 16, preprocess)
        rng = np.random.default_rng(0)
        targets = [rng.normal(size=(3, 16)).astype(np.float32) for _ in images]
        result = train_alignment(
            encoder, images, targets, replace(CONFIG, **change), tmp_path / name
        )
        runs.append((result, encoder.state_dict()))
    (want, want_state), *others = runs
    assert want.best_epoch == CONFIG.epochs
    fresh, _ = clip_factory(tiny_vit_cfg, 0)
    assert not torch.equal(want_state["visual.proj"], fresh.visual.proj)  # it trained
    for got, state in others:
        for a, b in zip(got.metrics, want.metrics, strict=True):
            assert {k: v for k, v in a.items() if k not in TIMING} == {
                k: v for k, v in b.items() if k not in TIMING
            }
        for name, value in want_state.items():
            assert torch.equal(state[name], value), name
