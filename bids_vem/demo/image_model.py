"""A tiny open_clip model with random weights: the demo's offline image feature space.

The demo must run without downloads, so its image tower is a small open_clip ViT created
with ``pretrained=None`` from a seed and saved in open_clip's local-dir form
(``open_clip_config.json`` + ``open_clip_model.safetensors``), which
``open_clip.create_model("local-dir:<folder>")`` and the spec ``openclip:<folder>`` load.
Its features are a random-feature baseline, not a trained vision model.
"""

from __future__ import annotations

import json
from pathlib import Path

from bids_vem.outputs.atomic import atomic_path, write_text_atomic

__all__ = ["TINY_OPENCLIP_CONFIG", "write_random_openclip"]

#: a ViT small enough to embed a hundred images in about a second on one CPU core
TINY_OPENCLIP_CONFIG: dict = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    # the text tower is required by open_clip's CLIP class; keep it minimal but usable
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
_PREPROCESS_CFG = {
    # open_clip's (OpenAI CLIP's) normalisation, so the standard transforms apply
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}

_README = """\
# {name}: a random-weight open_clip model (demo only)

This folder holds a tiny open_clip ViT (image size {image_size}, {layers} layers, width {width},
embedding dimension {embed_dim}) whose weights are RANDOM: it was created with
`pretrained=None` from seed {seed} by `bids_vem.demo` and never trained.

Its image features are a random-feature baseline: they keep some low-level image
statistics and nothing semantic. It exists so that the demo runs offline with no
download. For real analyses, bring real weights, for example
`--image-encoder openclip:ViT-B-32@/models/vit-b-32.safetensors`.

Load it with `open_clip.create_model("local-dir:<this folder>")` or with the
bids_vem spec `openclip:<this folder>`.
"""


def write_random_openclip(model_dir: Path, *, seed: int = 0) -> Path:
    """Create the tiny random open_clip model and save it in local-dir form.

    Parameters
    ----------
    model_dir : Path
        Folder to write (created): ``open_clip_config.json``, ``open_clip_model.safetensors``
        and a ``README.md`` that says the weights are random.
    seed : int
        Seed of the weight initialisation; the same seed gives the same bytes.

    Returns
    -------
    Path
        ``model_dir``.
    """
    import open_clip
    import torch
    from safetensors.torch import save_file

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps(TINY_OPENCLIP_CONFIG))
    # a local fork of the global RNG: the caller's torch random state is left as it was
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(**config)
    state = {key: value.detach().contiguous().clone() for key, value in model.state_dict().items()}
    with atomic_path(model_dir / "open_clip_model.safetensors") as tmp:
        # one metadata key only: safetensors writes a map of several in no fixed order
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_text_atomic(
        model_dir / "open_clip_config.json",
        json.dumps(
            {
                "model_cfg": config,
                "preprocess_cfg": _PREPROCESS_CFG,
                # open_clip reads only the two keys above; this one tells people what they hold
                "bids_vem_demo": {"weights": "random", "seed": seed},
            },
            indent=2,
        )
        + "\n",
    )
    vision = config["vision_cfg"]
    write_text_atomic(
        model_dir / "README.md",
        _README.format(
            name=model_dir.name,
            seed=seed,
            embed_dim=config["embed_dim"],
            **{k: vision[k] for k in ("image_size", "layers", "width")},
        ),
    )
    return model_dir
