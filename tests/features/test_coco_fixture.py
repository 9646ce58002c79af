"""Real COCO images and human captions (../shared/fixtures/coco-mini) through the feature stage."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from bids_vem.features.encoders import encode
from bids_vem.features.extract import extract_feature_spaces
from bids_vem.features.specs import parse_feature_space
from tests.helpers import extract_feature_space, extract_images

pytestmark = pytest.mark.fixtures


@pytest.fixture(scope="module")
def coco_val(shared_fixtures):
    folder = shared_fixtures / "coco-mini"
    data = json.loads(
        (folder / "annotations" / "captions_val2017.json").read_text(encoding="utf-8")
    )
    names = {image["id"]: image["file_name"] for image in data["images"]}
    captions = defaultdict(list)
    for annotation in data["annotations"]:
        captions[names[annotation["image_id"]]].append(annotation["caption"])
    return folder / "val2017", dict(sorted(captions.items()))


def test_minilm_captions_of_one_image_are_closer_to_each_other(coco_val, minilm_path, tmp_path):
    _, captions = coco_val
    stim_ids = list(captions)
    texts = [c for s in stim_ids for c in captions[s]]
    owner = np.array([i for i, s in enumerate(stim_ids) for _ in captions[s]])
    spec = parse_feature_space("sentence:all-MiniLM-L6-v2", "text")
    embeddings = encode(spec, texts, model_path=minilm_path, batch_size=64)
    assert embeddings.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)

    cosine = embeddings @ embeddings.T
    same = owner[:, None] == owner[None, :]
    np.fill_diagonal(same, False)
    different = owner[:, None] != owner[None, :]
    assert cosine[same].mean() > cosine[different].mean() + 0.2
    # for most images, each caption's nearest other caption describes the same image
    np.fill_diagonal(cosine, -np.inf)
    nearest_is_same = owner[np.argmax(cosine, axis=1)] == owner
    per_image = np.array([nearest_is_same[owner == i].mean() for i in range(len(stim_ids))])
    assert np.mean(per_image > 0.5) > 0.8

    # the text feature space is the per-image mean of exactly these embeddings (10 images: fast)
    subset = stim_ids[:10]
    feature_set = extract_feature_space(spec, subset, captions=captions, cache_dir=tmp_path)
    assert feature_set.values.shape == (len(subset), 384)
    expected = np.stack([embeddings[owner == i].mean(axis=0) for i in range(len(subset))])
    np.testing.assert_allclose(feature_set.values, expected, atol=1e-5)


def test_tiny_clip_on_real_coco_jpegs(coco_val, tiny_clip):
    folder, _ = coco_val
    paths = sorted(folder.glob("*.jpg"))
    modes = {Image.open(p).mode for p in paths}
    sizes = {Image.open(p).size for p in paths}
    assert "L" in modes and len(sizes) > 5  # grayscale and many sizes: the point of this test
    spec = parse_feature_space(f"openclip:{tiny_clip.local_dir}", "image")
    feature_set = extract_images(spec, paths, batch_size=64)
    assert feature_set.values.shape == (len(paths), tiny_clip.config["embed_dim"])
    assert feature_set.values.dtype == np.float32
    assert np.isfinite(feature_set.values).all()
    np.testing.assert_allclose(np.linalg.norm(feature_set.values, axis=1), 1.0, atol=1e-5)
    # different images give different features
    assert len(np.unique(feature_set.values.round(5), axis=0)) == len(paths)


def test_coco_batch_size_does_not_change_features_and_cache_is_byte_exact(
    coco_val, tiny_clip, tmp_path
):
    folder, _ = coco_val
    paths = sorted(folder.glob("*.jpg"))
    stim_ids = [p.name for p in paths]
    spec = parse_feature_space(f"openclip:{tiny_clip.local_dir}", "image")
    kwargs = dict(image_paths={p.name: p for p in paths}, progress=False)
    first = extract_feature_space(spec, stim_ids, batch_size=64, cache_dir=tmp_path, **kwargs)
    # odd batch size, images decoded in two worker processes: the same rows
    other = extract_feature_space(spec, stim_ids, batch_size=7, num_workers=2, **kwargs)
    np.testing.assert_allclose(other.values, first.values, atol=1e-5)
    cached = extract_feature_space(spec, stim_ids, batch_size=3, cache_dir=tmp_path, **kwargs)
    assert cached.values.tobytes() == first.values.tobytes()
    assert cached.metadata["cache_key"] == first.metadata["cache_key"]


def test_coco_hf_layer_spaces_batch_invariant(coco_val, tmp_path):
    """A tiny transformers CLIP tower, two layer spaces from one pass, on 40 real images."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    model_dir = tmp_path / "tiny-vit"
    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, image_size=32, patch_size=8)  # fmt: skip
    CLIPVisionModel(config).eval().save_pretrained(model_dir)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32).save_pretrained(model_dir)
    folder, _ = coco_val
    paths = sorted(folder.glob("*.jpg"))[:40]
    spec = parse_feature_space(f"v=hf:{model_dir}#layers=1,2", "image")
    kwargs = dict(image_paths={p.name: p for p in paths}, progress=False)
    big = extract_feature_spaces(spec, [p.name for p in paths], batch_size=40, **kwargs)
    small = extract_feature_spaces(spec, [p.name for p in paths], batch_size=3, **kwargs)
    assert [fs.name for fs in big] == ["vL1", "vL2"]
    for a, b in zip(big, small, strict=True):
        assert a.values.shape == (40, 32) and a.values.dtype == np.float32
        np.testing.assert_allclose(a.values, b.values, atol=1e-5)
    assert not np.allclose(big[0].values, big[1].values)
