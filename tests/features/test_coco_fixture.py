"""Real COCO images and human captions (../shared/fixtures/coco-mini) through the feature stage."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from bids_vem.features.extract import extract_feature_space
from bids_vem.features.specs import parse_feature_space
from bids_vem.features.text import encode_texts

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
    embeddings = encode_texts(spec, texts, model_path=minilm_path, batch_size=64)
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
    feature_set = extract_feature_space(
        spec,
        [p.name for p in paths],
        image_paths={p.name: p for p in paths},
        batch_size=64,
        progress=False,
    )
    assert feature_set.values.shape == (len(paths), tiny_clip.config["embed_dim"])
    assert feature_set.values.dtype == np.float32
    assert np.isfinite(feature_set.values).all()
    np.testing.assert_allclose(np.linalg.norm(feature_set.values, axis=1), 1.0, atol=1e-5)
    # different images give different features
    assert len(np.unique(feature_set.values.round(5), axis=0)) == len(paths)
