"""Alignment training on real COCO images and MiniLM caption embeddings: learning, resume,
export, leakage."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from bids_vem.alignment import checkpoint as checkpoint_module
from bids_vem.alignment.export import export_openclip
from bids_vem.alignment.model import AlignedImageEncoder
from bids_vem.alignment.train import AlignConfig, split_train_val, train_alignment
from bids_vem.errors import DataError, UsageError
from bids_vem.features.batching import read_rgb_image
from tests.helpers import kill_after_checkpoint

MINILM_DIM = 384
TIMING = ("train_seconds", "images_per_s")

FAST = AlignConfig(
    epochs=6,
    lr=1e-3,
    batch_size=16,
    warmup_steps=2,
    unfreeze_blocks=-1,
    val_fraction=0.2,
    patience=None,
    seed=0,
)


@pytest.fixture(scope="module")
def trained(coco_captions, clip_factory, tiny_vit_cfg, tmp_path_factory):
    clip, preprocess = clip_factory(tiny_vit_cfg, 0)
    encoder = AlignedImageEncoder.from_openclip(clip, MINILM_DIM, preprocess)
    work = tmp_path_factory.mktemp("align_work")
    result = train_alignment(
        encoder,
        coco_captions.paths,
        coco_captions.embeddings,
        FAST,
        work,
        stim_ids=coco_captions.ids,
    )
    return clip, encoder, result, work


def test_training_aligns_images_with_their_captions(trained):
    _, _, result, work = trained
    before, after = result.metrics[0], result.metrics[-1]
    assert [row["epoch"] for row in result.metrics] == list(range(FAST.epochs + 1))
    n_train = len(result.train_ids)
    chance = 1 / n_train
    assert before["train_i2t_r1"] < 4 * chance  # a random tower: about chance
    assert after["train_loss"] < 0.8 * result.metrics[1]["train_loss"]
    assert after["train_i2t_r1"] > 8 * chance and after["train_t2i_r1"] > 8 * chance
    for key in ("val_loss", "val_i2t_r1", "val_t2i_r10", "temperature", "lr"):
        assert np.isfinite(after[key])
    # per-epoch metrics on disk, TSV and JSON agree
    table = (work / "metrics.tsv").read_text(encoding="utf-8").splitlines()
    header = table[0].split("\t")
    assert len(table) == FAST.epochs + 2 and "val_i2t_r5" in header
    assert json.loads((work / "metrics.json").read_text(encoding="utf-8")) == result.metrics


def test_validation_slice_is_deterministic_and_disjoint(trained, coco_captions):
    _, _, result, _ = trained
    assert not set(result.train_ids) & set(result.val_ids)
    assert sorted(result.train_ids + result.val_ids) == sorted(coco_captions.ids)
    assert len(result.val_ids) == 16
    train, val = split_train_val(80, 0.2, 0)
    assert [coco_captions.ids[i] for i in val] == result.val_ids
    other_train, _ = split_train_val(80, 0.2, 1)
    assert not np.array_equal(train, other_train)


def test_export_loads_as_open_clip_and_feature_space(
    trained, coco_captions, tiny_vit_cfg, tmp_path
):
    import open_clip

    from bids_vem.features.specs import parse_feature_space
    from tests.helpers import extract_images

    clip, encoder, result, _ = trained
    out = export_openclip(
        encoder,
        clip,
        tiny_vit_cfg,
        tmp_path / "aligned",
        sidecar={"base_model": "tiny", "metrics": result.metrics, "config": result.config},
    )
    paths = coco_captions.paths[:6]
    with torch.no_grad():
        pixels = torch.stack([encoder.preprocess(read_rgb_image(p)) for p in paths])
        expected = encoder.encode(pixels).numpy()
        loaded = open_clip.create_model(f"local-dir:{out}").eval()
        torch.testing.assert_close(
            loaded.encode_image(pixels, normalize=True).numpy(), expected, atol=1e-5, rtol=1e-4
        )
    spec = parse_feature_space(f"openclip:{out}", "image")
    features = extract_images(spec, paths, batch_size=4)
    np.testing.assert_allclose(features.values, expected, atol=1e-5)
    sidecar = json.loads((out / "alignment.json").read_text(encoding="utf-8"))
    assert sidecar["embedding_width"] == MINILM_DIM and sidecar["projection_folded"]
    assert sidecar["config"]["lr"] == FAST.lr and len(sidecar["metrics"]) == FAST.epochs + 1


def test_resume_reaches_the_same_weights(
    coco_captions, clip_factory, tiny_vit_cfg, tmp_path, monkeypatch
):
    paths, targets = coco_captions.paths[:24], coco_captions.embeddings[:24]
    config = replace(
        FAST,
        epochs=3,
        batch_size=8,
        grad_accum=2,
        caption_sampling="sample",
        train_metrics=False,
        unfreeze_blocks=1,
        alignment_weight=0.7,
    )

    def fresh():
        clip, preprocess = clip_factory(tiny_vit_cfg, 0)
        torch.manual_seed(1)
        return AlignedImageEncoder.from_openclip(clip, MINILM_DIM, preprocess)

    straight = fresh()
    straight_result = train_alignment(straight, paths, targets, config, tmp_path / "straight")

    kill_after_checkpoint(
        monkeypatch, lambda: train_alignment(fresh(), paths, targets, config, tmp_path / "killed")
    )
    resumed = fresh()
    resumed_result = train_alignment(
        resumed, paths, targets, config, tmp_path / "killed", resume=True
    )
    assert [r["epoch"] for r in resumed_result.metrics] == [0, 1, 2, 3]
    for got, want in zip(resumed_result.metrics, straight_result.metrics, strict=True):
        assert got.keys() == want.keys()
        numbers = [k for k in got if k not in TIMING]  # wall times differ from run to run
        np.testing.assert_allclose([got[k] for k in numbers], [want[k] for k in numbers], rtol=1e-5)
    for (name, a), (_, b) in zip(
        straight.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    # the last-epoch checkpoints agree too, and they moved away from the start: the
    # comparison is not of two untrained models
    from safetensors.torch import load_file

    last = [
        load_file(str(d / "epoch-0003" / "model.safetensors"))
        for d in (tmp_path / "straight", tmp_path / "killed")
    ]
    assert last[0].keys() == last[1].keys()
    for name in last[0]:
        torch.testing.assert_close(last[0][name], last[1][name], msg=name)
    assert not torch.allclose(last[0]["model.head.weight"], fresh().head.weight)
    # no pickle anywhere in the checkpoint
    files = {p.suffix for p in (tmp_path / "killed").rglob("*") if p.is_file()}
    assert files <= {".safetensors", ".json", ".tsv"}


def test_held_out_stimuli_are_never_trained_on(coco_captions, clip_factory, tiny_vit_cfg, tmp_path):
    ids, paths, targets = coco_captions.ids, coco_captions.paths, coco_captions.embeddings
    test_ids = set(ids[::4])  # the encoding test split
    train_only = [i for i, stim in enumerate(ids) if stim not in test_ids]
    clip, preprocess = clip_factory(tiny_vit_cfg, 0)
    encoder = AlignedImageEncoder.from_openclip(clip, MINILM_DIM, preprocess)
    config = replace(FAST, epochs=1, unfreeze_blocks=0)
    with pytest.raises(DataError, match="held-out test stimuli") as info:
        train_alignment(
            encoder, paths, targets, config, tmp_path / "leak", stim_ids=ids, held_out_ids=test_ids
        )
    assert info.value.exit_code == 65
    result = train_alignment(
        encoder,
        [paths[i] for i in train_only],
        [targets[i] for i in train_only],
        config,
        tmp_path / "ok",
        stim_ids=[ids[i] for i in train_only],
        held_out_ids=test_ids,
    )
    assert result.seen_ids == {ids[i] for i in train_only}
    assert not result.seen_ids & test_ids


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"epochs": 0}, "--align-epochs"),
        ({"lr": 0.0}, "--align-lr"),
        ({"batch_size": 1}, "--align-batch-size"),
        ({"loss": "mse"}, "--align-loss"),
        ({"caption_sampling": "first"}, "caption sampling"),
    ],
)
def test_bad_options_are_usage_errors(change, fragment):
    with pytest.raises(UsageError) as info:
        replace(FAST, **change).check()
    assert fragment in str(info.value) and info.value.exit_code == 64


def test_wrong_caption_width_is_a_data_error(clip_factory, tiny_vit_cfg, tmp_path, make_jpegs):
    clip, preprocess = clip_factory(tiny_vit_cfg, 0)
    encoder = AlignedImageEncoder.from_openclip(clip, MINILM_DIM, preprocess)
    targets = [np.ones((2, MINILM_DIM), np.float32)] * 4
    targets[2] = np.ones((2, 10), np.float32)
    with pytest.raises(DataError, match=r"image 2: expected \(n_captions, 384\)"):
        train_alignment(encoder, make_jpegs(tmp_path, 4), targets, FAST, tmp_path / "w")


def test_early_stopping_keeps_the_best_validation_epoch(
    clip_factory, tiny_vit_cfg, tmp_path, make_jpegs, monkeypatch
):
    import bids_vem.alignment.train as train_module

    clip, preprocess = clip_factory(tiny_vit_cfg, 0)
    encoder = AlignedImageEncoder.from_openclip(clip, 16, preprocess)
    rng = np.random.default_rng(0)
    targets = [rng.normal(size=(2, 16)).astype(np.float32) for _ in range(10)]
    real_evaluate = train_module._evaluate
    scripted_val = iter([1.0, 0.8, 0.9, 0.95, 0.5, 0.4])  # epochs 0..5: best is epoch 1

    def evaluate(*args):
        out = real_evaluate(*args)
        if args[-1] == "val":
            out["val_loss"] = next(scripted_val)
        return out

    saved = {}
    real_save = checkpoint_module.save_checkpoint

    def save(*args, **kwargs):
        saved[args[1]] = {k: v.clone() for k, v in kwargs["model_state"].items()}
        return real_save(*args, **kwargs)

    monkeypatch.setattr(train_module, "_evaluate", evaluate)
    monkeypatch.setattr(train_module, "save_checkpoint", save)
    config = replace(
        FAST, epochs=5, batch_size=4, val_fraction=0.4, patience=2, train_metrics=False
    )
    result = train_alignment(encoder, make_jpegs(tmp_path, 10), targets, config, tmp_path / "w")
    assert result.stopped_early and result.best_epoch == 1
    assert [row["epoch"] for row in result.metrics] == [0, 1, 2, 3]
    assert sorted(saved) == [1, 2, 3]
    assert not torch.equal(saved[1]["model.head.weight"], saved[3]["model.head.weight"])
    for name, value in encoder.state_dict().items():
        torch.testing.assert_close(value, saved[1][f"model.{name}"], msg=name)


def test_metrics_time_each_epoch_and_log_one_line_per_epoch(
    clip_factory, tiny_vit_cfg, tmp_path, make_jpegs, caplog
):
    clip, preprocess = clip_factory(tiny_vit_cfg, 0)
    encoder = AlignedImageEncoder.from_openclip(clip, 16, preprocess)
    rng = np.random.default_rng(0)
    targets = [rng.normal(size=(2, 16)).astype(np.float32) for _ in range(12)]
    config = replace(FAST, epochs=2, batch_size=4, val_fraction=0.25)
    with caplog.at_level("INFO", logger="bids_vem.alignment.train"):
        result = train_alignment(encoder, make_jpegs(tmp_path, 12), targets, config, tmp_path / "w")
    before, *epochs = result.metrics
    assert "train_seconds" not in before and before["best_epoch"] == 0
    for row in epochs:
        assert row["train_seconds"] > 0
        # 9 training images, in batches of 4, 4 and 1: the batch of one is dropped
        np.testing.assert_allclose(row["images_per_s"] * row["train_seconds"], 8)
        assert row["best_epoch"] == result.best_epoch or row["epoch"] < result.best_epoch
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(lines) == 3 and lines[0].startswith("epoch 0/2 (before alignment): train loss ")
    second = epochs[-1]
    assert lines[2] == (
        f"epoch 2/2: train loss {second['train_loss']:.4g}, val loss {second['val_loss']:.4g}, "
        f"image->caption R@1 {second['val_i2t_r1']:.2f} (val), "
        f"caption->image R@1 {second['val_t2i_r1']:.2f} (val), "
        f"temperature {second['temperature']:.3g}, {second['images_per_s']:.0f} images/s"
    )
    header = (tmp_path / "w" / "metrics.tsv").read_text(encoding="utf-8").splitlines()[0]
    assert {"train_seconds", "images_per_s", "best_epoch"} <= set(header.split("\t"))


def test_no_better_epoch_keeps_the_unaligned_model_and_says_so(
    clip_factory, tiny_vit_cfg, tmp_path, make_jpegs, monkeypatch, caplog
):
    import bids_vem.alignment.train as train_module

    clip, preprocess = clip_factory(tiny_vit_cfg, 0)
    encoder = AlignedImageEncoder.from_openclip(clip, 16, preprocess)
    start = {k: v.clone() for k, v in encoder.state_dict().items()}
    rng = np.random.default_rng(0)
    targets = [rng.normal(size=(2, 16)).astype(np.float32) for _ in range(10)]
    real_evaluate = train_module._evaluate
    scripted_val = iter([0.5, 0.8, 0.9])  # no epoch beats the unaligned model

    def evaluate(*args):
        out = real_evaluate(*args)
        if args[-1] == "val":
            out["val_loss"] = next(scripted_val)
        return out

    monkeypatch.setattr(train_module, "_evaluate", evaluate)
    config = replace(FAST, epochs=2, batch_size=4, val_fraction=0.4, train_metrics=False)
    with caplog.at_level("WARNING", logger="bids_vem.alignment.train"):
        result = train_alignment(encoder, make_jpegs(tmp_path, 10), targets, config, tmp_path / "w")
    assert result.best_epoch == 0 and result.kept_unaligned
    assert [row["best_epoch"] for row in result.metrics] == [0, 0, 0]
    assert any(
        "unaligned weights are kept (best epoch 0)" in r.getMessage() for r in caplog.records
    )
    for name, value in encoder.state_dict().items():
        torch.testing.assert_close(value, start[name], msg=name)


def test_progress_bar_on_a_terminal(clip_factory, tiny_vit_cfg, tmp_path, make_jpegs, monkeypatch):
    import functools
    import io
    import logging

    import tqdm

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    # every update drawn, however fast the batches (tqdm otherwise redraws every 0.1 s)
    monkeypatch.setattr(
        "bids_vem.alignment.train.tqdm", functools.partial(tqdm.tqdm, mininterval=0, miniters=1)
    )
    logging.getLogger("bids_vem.alignment.train").setLevel(logging.INFO)
    try:
        clip, preprocess = clip_factory(tiny_vit_cfg, 0)
        encoder = AlignedImageEncoder.from_openclip(clip, 16, preprocess)
        targets = [np.ones((1, 16), np.float32) * i for i in range(1, 9)]
        config = replace(FAST, epochs=2, batch_size=2, val_fraction=0.0, train_metrics=False)
        train_alignment(encoder, make_jpegs(tmp_path, 8), targets, config, tmp_path / "w")
    finally:
        logging.getLogger("bids_vem.alignment.train").setLevel(logging.NOTSET)
    text = terminal.getvalue()
    assert "alignment epoch 1/2" in text and "alignment epoch 2/2" in text
    assert "loss=" in text and "4/4" in text
    # not on a pipe
    pipe = io.StringIO()
    monkeypatch.setattr("sys.stderr", pipe)
    clip, preprocess = clip_factory(tiny_vit_cfg, 0)
    encoder = AlignedImageEncoder.from_openclip(clip, 16, preprocess)
    train_alignment(encoder, make_jpegs(tmp_path, 8), targets, config, tmp_path / "w2")
    assert pipe.getvalue() == ""


def test_the_temperature_learns_at_its_own_rate(
    coco_captions, clip_factory, tiny_vit_cfg, tmp_path
):
    """At a fine-tuning rate (1e-5) the temperature would stay at 0.07; its own rate moves
    it, and a rate of 0 fixes it (both recorded in the metrics, hence the training curve)."""
    n = 32
    temperatures = {}
    for rate in (1e-5, 5e-2, 0.0):
        clip, preprocess = clip_factory(tiny_vit_cfg, 0)
        encoder = AlignedImageEncoder.from_openclip(clip, MINILM_DIM, preprocess)
        config = replace(FAST, epochs=2, lr=1e-5, temperature_lr=rate, train_metrics=False)
        result = train_alignment(
            encoder, coco_captions.paths[:n], coco_captions.embeddings[:n], config,
            tmp_path / f"rate{rate}", stim_ids=coco_captions.ids[:n],
        )  # fmt: skip
        temperatures[rate] = [row["temperature"] for row in result.metrics]
    assert temperatures[0.0] == [pytest.approx(0.07, abs=1e-7)] * 3
    assert abs(temperatures[1e-5][-1] - 0.07) < 1e-4  # the tower's rate: it does not move
    assert abs(temperatures[5e-2][-1] - 0.07) > 1e-3  # its own rate: it learns
