"""Benchmark: image-feature throughput of the pipeline vs a bare forward loop, and the cache.

Three timings on the same images and the same open_clip model (random ViT-B-32 weights saved
in open_clip local-dir form: the numbers of work are those of the real model):

1. bare loop: open each image with PIL, the model's own preprocess, ``encode_image`` in batches;
2. encoder: ``features.encoders.encode`` (model load from disk included, DataLoader);
3. pipeline: ``extract_feature_spaces`` (stimulus hashing, spec resolution, DataLoader,
   derivative-ready FeatureSet), cold cache; ``--workers`` decoding processes. The model
   stays loaded in the process after step 2 (``features.batching.cached_load``, as in a
   pipeline step that encodes several batches or videos), so steps 1 and 3 both time the
   steady state without the one-off model load;
4. rerun: ``extract_feature_spaces`` again, served from the feature cache.

Targets (issue 3): pipeline images/s >= 90% of the bare loop's; rerun >= 20x faster than the
first run. Images: ../shared/fixtures/coco-mini (val + train JPEGs), else generated ones.

Usage::

    python benchmarks/bench_features.py                 # 96 images, batch 32, CPU
    python benchmarks/bench_features.py --n-images 246 --device cuda --workers 4
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "coco-mini"


def images(n_images: int, folder: Path) -> list[Path]:
    found = sorted(FIXTURES.glob("*/*.jpg")) if FIXTURES.is_dir() else []
    if len(found) >= n_images:
        return found[:n_images]
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n_images):
        size = (int(rng.integers(200, 640)), int(rng.integers(200, 640)))
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        path = folder / f"img{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def save_model(folder: Path, arch: str) -> Path:
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    cfg = open_clip.get_model_config(arch)
    model = open_clip.create_model(arch, pretrained=None).eval()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}), encoding="utf-8"
    )
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    return folder


def bare_loop(model_dir: Path, paths: list[Path], batch_size: int, device: str) -> float:
    import open_clip
    import torch
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    model = model.to(device).eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(paths), batch_size):
            batch = [preprocess(Image.open(p).convert("RGB")) for p in paths[i : i + batch_size]]
            model.encode_image(torch.stack(batch).to(device), normalize=True).cpu()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="ViT-B-32")
    args = parser.parse_args()

    import torch

    from bids_vem.features.encoders import encode
    from bids_vem.features.extract import extract_feature_spaces
    from bids_vem.features.specs import parse_feature_space

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        paths = images(args.n_images, tmp_path)
        model_dir = save_model(tmp_path / "model", args.arch)
        stim_ids = [p.name for p in paths]
        spec = parse_feature_space(f"openclip:{model_dir}", "image")
        kwargs = dict(
            image_paths=dict(zip(stim_ids, paths, strict=True)),
            batch_size=args.batch_size,
            num_workers=args.workers,
            device=args.device,
            progress=False,
            precision="float32",  # the bare loop runs float32: compare like with like
        )
        bare_loop(model_dir, paths[: args.batch_size], args.batch_size, args.device)  # warm-up
        bare = bare_loop(model_dir, paths, args.batch_size, args.device)
        start = time.perf_counter()
        encode(
            spec,
            paths,
            model_path=model_dir,
            batch_size=args.batch_size,
            num_workers=args.workers,
            device=args.device,
            progress=False,
            precision="float32",
        )
        encode = time.perf_counter() - start
        start = time.perf_counter()
        extract_feature_spaces(spec, stim_ids, cache_dir=tmp_path / "cache", **kwargs)
        first = time.perf_counter() - start
        start = time.perf_counter()
        extract_feature_spaces(spec, stim_ids, cache_dir=tmp_path / "cache", **kwargs)
        rerun = time.perf_counter() - start

    n = len(paths)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"torch threads, device {args.device}",
        "arch": args.arch,
        "n_images": n,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "bare_images_per_s": round(n / bare, 2),
        "encoder_images_per_s": round(n / encode, 2),
        "encoder_vs_bare": round(bare / encode, 3),
        "pipeline_images_per_s": round(n / first, 2),
        "pipeline_vs_bare": round(bare / first, 3),
        "first_run_s": round(first, 3),
        "cached_rerun_s": round(rerun, 4),
        "rerun_speedup": round(first / rerun, 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
