"""The alignment training loop: fine-tune an image encoder towards its images' caption embeddings.

Brain data never enter here: the caller passes the training-split stimuli (or an external
image-caption corpus) only, and may name held-out stimulus ids that must not be among them.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from bids_vem.alignment.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from bids_vem.alignment.losses import ALIGN_LOSSES, LogitScale, alignment_objective
from bids_vem.alignment.model import AlignedImageEncoder
from bids_vem.alignment.retrieval import retrieval_recall
from bids_vem.errors import DataError, UsageError
from bids_vem.features.image import autocast_context, read_rgb_image
from bids_vem.outputs.atomic import write_text_atomic

__all__ = ["AlignConfig", "TrainResult", "train_alignment", "split_train_val"]

logger = logging.getLogger(__name__)

CAPTION_SAMPLING = ("mean", "sample")


@dataclass
class AlignConfig:
    """Hyperparameters of one alignment run (the ``--align-*`` options)."""

    epochs: int = 10
    lr: float = 1e-5
    batch_size: int = 256
    weight_decay: float = 0.1
    warmup_steps: int = 0
    grad_accum: int = 1
    clip_grad_norm: float | None = 1.0
    loss: str = "infonce"
    alignment_weight: float = 1.0
    unfreeze_blocks: int = 2
    caption_sampling: str = "mean"
    val_fraction: float = 0.1
    patience: int | None = 3
    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"
    init_temperature: float = 0.07
    grad_checkpointing: bool = False
    train_metrics: bool = True  # also retrieval on the training slice each epoch

    def check(self) -> None:
        """Raise UsageError naming the first option out of range."""
        if self.epochs < 1:
            raise UsageError(f"--align-epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise UsageError(f"--align-lr must be > 0, got {self.lr}")
        if self.batch_size < 2:
            raise UsageError(f"--align-batch-size must be >= 2, got {self.batch_size}")
        if self.grad_accum < 1:
            raise UsageError(f"alignment gradient accumulation must be >= 1, got {self.grad_accum}")
        if self.loss not in ALIGN_LOSSES:
            raise UsageError(
                f"--align-loss must be one of {', '.join(ALIGN_LOSSES)}: {self.loss!r}"
            )
        if self.caption_sampling not in CAPTION_SAMPLING:
            raise UsageError(
                f"caption sampling must be mean or sample, got {self.caption_sampling!r}"
            )
        if not 0.0 <= self.alignment_weight <= 1.0:
            raise UsageError(f"alignment weight must be in [0, 1], got {self.alignment_weight}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UsageError(
                f"alignment validation fraction must be in [0, 1): {self.val_fraction}"
            )


@dataclass
class TrainResult:
    """What a run did: per-epoch metrics (epoch 0 = before training) and which stimuli it used."""

    metrics: list[dict[str, float]]
    best_epoch: int
    stopped_early: bool
    train_ids: list[str]
    val_ids: list[str]
    seen_ids: set[str] = field(default_factory=set)  # every stimulus a batch actually read
    config: dict[str, Any] = field(default_factory=dict)


def split_train_val(n_items: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train indices, validation indices) split of ``n_items`` by ``seed``."""
    order = np.random.default_rng(seed).permutation(n_items)
    n_val = int(round(val_fraction * n_items)) if val_fraction > 0 else 0
    if val_fraction > 0:
        n_val = min(max(n_val, 2), n_items - 2)  # retrieval needs >= 2 pairs on each side
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _lr_factor(step: int, warmup: int, total: int) -> float:
    # linear warmup then cosine decay to 0 over the remaining optimizer steps
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class _Pixels:
    """Decode and preprocess images on demand, recording which were read."""

    def __init__(self, paths: list[Path], ids: list[str], preprocess: Any) -> None:
        self.paths, self.ids, self.preprocess = paths, ids, preprocess
        self.seen: set[str] = set()

    def __call__(self, indices: np.ndarray) -> torch.Tensor:
        self.seen.update(self.ids[i] for i in indices)
        return torch.stack([self.preprocess(read_rgb_image(self.paths[i])) for i in indices])


def _batches(indices: np.ndarray, batch_size: int) -> list[np.ndarray]:
    # drop a last batch of one: InfoNCE needs negatives
    out = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    return [b for b in out if len(b) >= 2]


@torch.no_grad()
def _embed(
    model: AlignedImageEncoder, pixels: _Pixels, indices: np.ndarray, config
) -> torch.Tensor:
    autocast, _ = autocast_context(config.device, config.precision)
    out = []
    for start in range(0, len(indices), config.batch_size):
        with autocast:
            batch = pixels(indices[start : start + config.batch_size]).to(config.device)
            out.append(model(batch).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.text_dim)


def _evaluate(
    model, logit_scale, pixels, indices, mean_targets, initial, config, prefix
) -> dict[str, float]:
    embeddings = _embed(model, pixels, indices, config)
    targets = mean_targets[indices]
    losses, sizes = [], []
    for batch in _batches(np.arange(len(indices)), config.batch_size):
        with torch.no_grad():
            losses.append(
                float(
                    alignment_objective(
                        embeddings[batch],
                        targets[batch],
                        loss=config.loss,
                        logit_scale=logit_scale().detach().cpu(),
                        alignment_weight=config.alignment_weight,
                        initial_embeddings=initial[indices][batch],
                    )
                )
            )
            sizes.append(len(batch))
    out = {f"{prefix}_loss": float(np.average(losses, weights=sizes)) if losses else float("nan")}
    for key, value in retrieval_recall(embeddings.numpy(), targets.numpy()).items():
        out[f"{prefix}_{key}"] = value
    return out


def _targets(targets: list[np.ndarray], text_dim: int) -> list[torch.Tensor]:
    out = []
    for i, caption_embeddings in enumerate(targets):
        array = np.asarray(caption_embeddings, dtype=np.float32)
        if array.ndim == 1:
            array = array[None]
        if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] != text_dim:
            raise DataError(
                f"caption embeddings of image {i}: expected (n_captions, {text_dim}), "
                f"got {array.shape}"
            )
        if not np.isfinite(array).all():
            raise DataError(f"caption embeddings of image {i} contain NaN or infinite values")
        out.append(F.normalize(torch.from_numpy(array), dim=-1))
    return out


def _write_metrics(checkpoint_dir: Path, metrics: list[dict[str, float]]) -> None:
    columns = list(dict.fromkeys(k for row in metrics for k in row))
    lines = ["\t".join(columns)]
    lines += ["\t".join(_fmt(row.get(c, float("nan"))) for c in columns) for row in metrics]
    write_text_atomic(checkpoint_dir / "metrics.tsv", "\n".join(lines) + "\n")
    write_text_atomic(checkpoint_dir / "metrics.json", json.dumps(metrics, indent=1))


def _fmt(value: float) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.6g}"


def _model_state(model: AlignedImageEncoder, logit_scale: LogitScale) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["logit_scale.log_scale"] = logit_scale.log_scale.detach()
    return state


def _load_model_state(model, logit_scale, state: dict[str, torch.Tensor]) -> None:
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    with torch.no_grad():
        logit_scale.log_scale.copy_(state["logit_scale.log_scale"])


def train_alignment(
    model: AlignedImageEncoder,
    images: list[Path],
    targets: list[np.ndarray],
    config: AlignConfig,
    checkpoint_dir: Path,
    *,
    stim_ids: list[str] | None = None,
    held_out_ids: set[str] | None = None,
    resume: bool = False,
) -> TrainResult:
    """Fine-tune ``model`` so its image embeddings align with the images' caption embeddings.

    Parameters
    ----------
    model
        The encoder (its ``preprocess`` decodes the images); trained in place, and left holding
        the weights of the best validation epoch (the last epoch without validation).
    images
        Image files, one per stimulus (training split or external corpus only).
    targets
        Per image, its frozen caption embeddings, (n_captions_i, text_dim).
    config
        Hyperparameters.
    checkpoint_dir
        Work folder: a checkpoint after every epoch, ``metrics.tsv`` / ``metrics.json``.
    stim_ids
        Stimulus ids of ``images`` (default: file names), used in the leakage check and result.
    held_out_ids
        Stimuli that must not be trained on (the encoding test split): DataError if any is given.
    resume
        Continue from the last checkpoint in ``checkpoint_dir`` (fresh start when there is none).

    Returns
    -------
    TrainResult with per-epoch metrics: train/val loss, retrieval R@1/5/10 both ways,
    temperature, learning rate; row 0 holds the numbers before alignment.
    """
    config.check()
    if model.preprocess is None:
        raise UsageError("the aligned image encoder has no preprocess transform")
    images = [Path(p) for p in images]
    ids = list(stim_ids) if stim_ids is not None else [p.name for p in images]
    if len(images) != len(targets) or len(ids) != len(images):
        raise DataError(
            f"alignment got {len(images)} images, {len(targets)} caption sets, {len(ids)} ids"
        )
    if len(images) < 4:
        raise DataError(f"alignment needs at least 4 captioned images, got {len(images)}")
    leaked = sorted(set(ids) & set(held_out_ids or ()))
    if leaked:
        raise DataError(
            f"alignment stimuli include {len(leaked)} held-out test stimuli (e.g. {leaked[0]})"
        )
    caption_sets = _targets(targets, model.text_dim)
    mean_targets = torch.stack([F.normalize(c.mean(0), dim=-1) for c in caption_sets])
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    train_idx, val_idx = split_train_val(len(images), config.val_fraction, config.seed)
    device = config.device
    model.to(device)
    # eval mode throughout: no dropout, BatchNorm statistics of frozen layers stay put
    model.eval()
    model.freeze_all_but_last(config.unfreeze_blocks)
    model.set_grad_checkpointing(config.grad_checkpointing)
    logit_scale = LogitScale(config.init_temperature).to(device)
    pixels = _Pixels(images, ids, model.preprocess)

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2] + [logit_scale.log_scale]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    n_batches = len(_batches(train_idx, config.batch_size))
    total_steps = config.epochs * max(1, math.ceil(n_batches / config.grad_accum))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, config.warmup_steps, total_steps)
    )

    folder = latest_checkpoint(checkpoint_dir) if resume else None
    if folder is not None:
        weights, loop, extra = load_checkpoint(
            folder, optimizer=optimizer, scheduler=scheduler, generator=generator
        )
        _load_model_state(model, logit_scale, weights)
        initial = extra["extra.initial_embeddings"]
        logger.info("alignment: resuming after epoch %d from %s", loop["epoch"], folder)
    else:
        # the frozen original's embeddings, for feature preservation and the 'before' numbers
        initial = _embed(model, pixels, np.arange(len(images)), config)
        loop = {"epoch": 0, "metrics": [], "best_val": None, "best_epoch": 0, "bad_epochs": 0}
    best_file = checkpoint_dir / "best.safetensors"

    def epoch_metrics(epoch: int, train_loss: float) -> dict[str, float]:
        row: dict[str, float] = {"epoch": epoch, "train_loss": train_loss}
        if config.train_metrics or epoch == 0:
            evaluated = _evaluate(
                model, logit_scale, pixels, train_idx, mean_targets, initial, config, "train"
            )
            if epoch == 0:
                row["train_loss"] = evaluated["train_loss"]
            row.update({k: v for k, v in evaluated.items() if k != "train_loss"})
        if len(val_idx):
            row.update(
                _evaluate(model, logit_scale, pixels, val_idx, mean_targets, initial, config, "val")
            )
        row["temperature"] = logit_scale.temperature
        row["lr"] = float(scheduler.get_last_lr()[0])
        return row

    if loop["epoch"] == 0 and not loop["metrics"]:
        loop["metrics"].append(epoch_metrics(0, float("nan")))
        save_file(
            {k: v.cpu().contiguous() for k, v in _model_state(model, logit_scale).items()},
            str(best_file),
        )
        loop["best_val"] = loop["metrics"][0].get("val_loss")
    autocast, _ = autocast_context(device, config.precision)
    stopped_early = loop.get("stopped_early", False)
    while loop["epoch"] < config.epochs and not stopped_early:
        epoch = loop["epoch"] + 1
        order = train_idx[torch.randperm(len(train_idx), generator=generator).numpy()]
        batches = _batches(order, config.batch_size)
        losses, sizes = [], []
        optimizer.zero_grad(set_to_none=True)
        for b, batch in enumerate(batches):
            if config.caption_sampling == "sample":
                picks = [
                    int(torch.randint(len(caption_sets[i]), (1,), generator=generator))
                    for i in batch
                ]
                target = torch.stack(
                    [caption_sets[i][k] for i, k in zip(batch, picks, strict=True)]
                )
            else:
                target = mean_targets[batch]
            with autocast:
                embeddings = model(pixels(batch).to(device))
            loss = alignment_objective(
                embeddings.float(),
                target.to(device),
                loss=config.loss,
                logit_scale=logit_scale(),
                alignment_weight=config.alignment_weight,
                initial_embeddings=initial[batch].to(device),
            )
            (loss / config.grad_accum).backward()
            losses.append(float(loss.detach()))
            sizes.append(len(batch))
            if (b + 1) % config.grad_accum == 0 or b + 1 == len(batches):
                if config.clip_grad_norm:
                    torch.nn.utils.clip_grad_norm_(
                        params + [logit_scale.log_scale], config.clip_grad_norm
                    )
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        train_loss = float(np.average(losses, weights=sizes)) if losses else float("nan")
        row = epoch_metrics(epoch, train_loss)
        loop["metrics"].append(row)
        loop["epoch"] = epoch
        val_loss = row.get("val_loss")
        if val_loss is None or loop["best_val"] is None or val_loss < loop["best_val"]:
            loop.update(best_val=val_loss, best_epoch=epoch, bad_epochs=0)
            save_file(
                {k: v.cpu().contiguous() for k, v in _model_state(model, logit_scale).items()},
                str(best_file),
            )
        else:
            loop["bad_epochs"] += 1
            if config.patience is not None and loop["bad_epochs"] >= config.patience:
                stopped_early = True
        loop["stopped_early"] = stopped_early
        _write_metrics(checkpoint_dir, loop["metrics"])
        save_checkpoint(
            checkpoint_dir,
            epoch,
            model_state=_model_state(model, logit_scale),
            optimizer=optimizer,
            scheduler=scheduler,
            generator=generator,
            loop_state=loop,
            extra_tensors={"extra.initial_embeddings": initial},
        )
        logger.info("alignment epoch %d: %s", epoch, row)
    _write_metrics(checkpoint_dir, loop["metrics"])
    _load_model_state(model, logit_scale, load_file(str(best_file)))
    return TrainResult(
        metrics=loop["metrics"],
        best_epoch=loop["best_epoch"],
        stopped_early=stopped_early,
        train_ids=[ids[i] for i in train_idx],
        val_ids=[ids[i] for i in val_idx],
        seen_ids=pixels.seen,
        config=asdict(config),
    )
