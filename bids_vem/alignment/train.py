# Longer than 500 lines: the training loop, its evaluation and its checkpoints are one unit (tests patch them here).
"""The alignment training loop: fine-tune an image encoder towards its images' caption embeddings.

Brain data never enter here: the caller passes the training-split stimuli (or an external
image-caption corpus) only, and may name held-out stimulus ids that must not be among them.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from bids_vem.alignment.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from bids_vem.alignment.losses import DUPLICATE_COSINE, LogitScale, alignment_objective
from bids_vem.alignment.model import AlignedImageEncoder
from bids_vem.alignment.pixels import PixelSource
from bids_vem.alignment.retrieval import retrieval_recall
from bids_vem.config import AlignmentSettings, check_setting, option_name, setting_choices
from bids_vem.errors import DataError, UsageError
from bids_vem.features.batching import autocast_context
from bids_vem.outputs.atomic import write_text_atomic

__all__ = ["AlignConfig", "TrainResult", "train_alignment", "split_train_val"]

logger = logging.getLogger(__name__)


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
    temperature_lr: float = 1e-3  # the temperature's own rate (0: fixed at init_temperature)
    # InfoNCE: captions closer than this (cosine) are not negatives of each other
    duplicate_cosine: float | None = DUPLICATE_COSINE
    grad_checkpointing: bool = False
    train_metrics: bool = True  # also retrieval on the training slice each epoch
    method: str = "partial"  # "partial": unfreeze the last blocks; "lora": LoRA on every block
    lora_rank: int = 8
    lora_alpha: float = 16.0  # LoRA deltas are scaled by lora_alpha / lora_rank
    pixel_cache_mb: int = 4096  # decode every image once into memory when they fit; 0: never
    num_workers: int = 0  # DataLoader processes decoding images when they are not cached

    def check(self) -> None:
        """Raise UsageError naming the first option out of range.

        The hyperparameters the command line sets are checked by their settings'
        declarations (:class:`bids_vem.config.AlignmentSettings`); the rest here.
        """
        for name, setting_name in AlignmentSettings.train_fields().items():
            if name == "alignment_weight":  # 0 is allowed here: preservation only
                continue
            value = getattr(self, name)
            try:
                check_setting(setting_name, value)
            except UsageError:
                choices = setting_choices(setting_name)
                if choices:  # name the library's field and the option that sets it
                    raise UsageError(
                        f"alignment {name.replace('_', ' ')} must be one of "
                        f"{', '.join(choices)}: {value!r} ({option_name(setting_name)})"
                    ) from None
                raise
        if self.grad_accum < 1:
            raise UsageError(f"alignment gradient accumulation must be >= 1, got {self.grad_accum}")
        if not 0.0 <= self.alignment_weight <= 1.0:
            raise UsageError(f"alignment weight must be in [0, 1], got {self.alignment_weight}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UsageError(
                f"alignment validation fraction must be in [0, 1): {self.val_fraction}"
            )
        if self.method == "lora" and not self.lora_alpha > 0:
            raise UsageError(f"alignment LoRA alpha must be > 0, got {self.lora_alpha}")
        if self.pixel_cache_mb < 0:
            raise UsageError(f"alignment pixel cache must be >= 0 MB, got {self.pixel_cache_mb}")
        if self.num_workers < 0:
            raise UsageError(f"alignment data workers must be >= 0, got {self.num_workers}")


@dataclass
class TrainResult:
    """What a run did: per-epoch metrics (epoch 0 = before training) and which stimuli it used.

    ``best_epoch`` is the epoch whose weights the model holds at the end; 0 means no epoch
    beat the unaligned model on the validation loss, and the model was left unaligned
    (``kept_unaligned``): exporting it exports the base tower (plus the untrained head).
    """

    metrics: list[dict[str, float]]
    best_epoch: int
    stopped_early: bool
    train_ids: list[str]
    val_ids: list[str]
    seen_ids: set[str] = field(default_factory=set)  # every stimulus a batch actually read
    config: dict[str, Any] = field(default_factory=dict)
    kept_unaligned: bool = False  # best_epoch == 0: the weights are those before training


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


def _batches(indices: np.ndarray, batch_size: int) -> list[np.ndarray]:
    # drop a last batch of one: InfoNCE needs negatives
    out = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    return [b for b in out if len(b) >= 2]


@torch.no_grad()
def _embed(
    model: AlignedImageEncoder, pixels: PixelSource, indices: np.ndarray, config: AlignConfig
) -> torch.Tensor:
    """(len(indices), text_dim) float32 embeddings on the CPU, in ``indices`` order."""
    autocast, _ = autocast_context(config.device, config.precision)
    batches = [
        indices[start : start + config.batch_size]
        for start in range(0, len(indices), config.batch_size)
    ]
    out = []
    for batch in pixels.batches(batches):
        with autocast:
            out.append(model(batch).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.text_dim)


def _evaluate(
    model, logit_scale, pixels, indices, mean_targets, initial, config, prefix
) -> dict[str, float]:
    embeddings = _embed(model, pixels, indices, config)
    targets = mean_targets[indices].cpu()
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
                        duplicate_cosine=config.duplicate_cosine,
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

    The tower is fine-tuned as ``config.method`` says: ``"partial"`` unfreezes its last
    ``config.unfreeze_blocks`` blocks and final projection; ``"lora"`` freezes it and trains
    LoRA deltas on every block (:meth:`AlignedImageEncoder.use_lora`). The head always trains.
    Images are decoded and preprocessed once into memory when they fit
    ``config.pixel_cache_mb`` (else every batch is decoded again, by ``config.num_workers``
    DataLoader processes); either way the pixels are the same. A tqdm bar per epoch goes to
    stderr when it is a terminal and INFO is logged; one INFO line per epoch sums it up.

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
        The model passed must be built as for the first run (same base weights and method).

    Returns
    -------
    TrainResult with per-epoch metrics: train/val loss, retrieval R@1/5/10 both ways,
    temperature, learning rate, ``best_epoch`` (the best epoch so far), and for trained epochs
    ``train_seconds`` (wall time of the training batches, evaluation excluded) and
    ``images_per_s``; row 0 holds the numbers before alignment. ``best_epoch == 0``
    (``kept_unaligned``): no epoch beat the unaligned model, whose weights the model keeps.
    """
    config.check()
    ids = _check_inputs(model, images, targets, stim_ids, held_out_ids)
    run = _TrainingRun(model, [Path(p) for p in images], ids, targets, config, checkpoint_dir)
    run.start(resume)
    while run.loop.epoch < config.epochs and not run.loop.stopped_early:
        epoch = run.loop.epoch + 1
        train_loss, n_trained, seconds = run.train_epoch(epoch)
        row = run.epoch_metrics(epoch, train_loss)
        row["train_seconds"] = seconds
        row["images_per_s"] = n_trained / seconds if seconds > 0 else float("nan")
        run.finish_epoch(epoch, row)
    return run.result()


def _check_inputs(
    model: AlignedImageEncoder,
    images: list[Path],
    targets: list[np.ndarray],
    stim_ids: list[str] | None,
    held_out_ids: set[str] | None,
) -> list[str]:
    """The stimulus ids of ``images``, once the inputs are known to fit together."""
    if model.preprocess is None:
        raise UsageError("the aligned image encoder has no preprocess transform")
    ids = list(stim_ids) if stim_ids is not None else [Path(p).name for p in images]
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
    return ids


@dataclass
class _LoopState:
    """Where training stands; saved with every checkpoint so that a killed run resumes."""

    epoch: int = 0
    metrics: list[dict[str, float]] = field(default_factory=list)
    best_val: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _LoopState:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class _CaptionTargets:
    """The caption embeddings on the device: every caption in one table, and per-image means."""

    def __init__(self, caption_sets: list[torch.Tensor], device: str) -> None:
        self.mean = torch.stack([F.normalize(c.mean(0), dim=-1) for c in caption_sets]).to(device)
        self.captions = torch.cat(caption_sets).to(device)
        self.n_captions = torch.tensor([len(c) for c in caption_sets])
        self.first = torch.cumsum(self.n_captions, 0) - self.n_captions
        self.device = device

    def of_batch(self, batch: torch.Tensor, sampling: str, generator: torch.Generator):
        """The targets of a batch of images: their mean caption, or one caption drawn each."""
        if sampling == "sample":
            pick = (torch.rand(len(batch), generator=generator) * self.n_captions[batch]).long()
            return self.captions[(self.first[batch] + pick).to(self.device)]
        return self.mean[batch.to(self.device)]


class _TrainingRun:
    """One alignment: the model set up for fine-tuning, its data, optimiser and loop state."""

    def __init__(
        self,
        model: AlignedImageEncoder,
        images: list[Path],
        ids: list[str],
        targets: list[np.ndarray],
        config: AlignConfig,
        checkpoint_dir: Path,
    ) -> None:
        self.model, self.ids, self.config = model, ids, config
        self.checkpoint_dir = Path(checkpoint_dir)
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.best_file = self.checkpoint_dir / "best.safetensors"
        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.train_idx, self.val_idx = split_train_val(
            len(images), config.val_fraction, config.seed
        )
        self.targets = _CaptionTargets(_targets(targets, model.text_dim), config.device)
        self._prepare_model()
        self.logit_scale = LogitScale(config.init_temperature).to(config.device)
        self.pixels = PixelSource(
            images,
            ids,
            model.preprocess,
            device=config.device,
            cache_mb=config.pixel_cache_mb,
            num_workers=config.num_workers,
        )
        self._make_optimizer()
        self.loop = _LoopState()
        self.initial: torch.Tensor | None = None

    def _prepare_model(self) -> None:
        model, config = self.model, self.config
        model.to(config.device)
        # eval mode throughout: no dropout, BatchNorm statistics of frozen layers stay put
        model.eval()
        if config.method == "lora":
            model.use_lora(config.lora_rank, config.lora_alpha)
        else:
            model.freeze_all_but_last(config.unfreeze_blocks)
        model.set_grad_checkpointing(config.grad_checkpointing)

    def _make_optimizer(self) -> None:
        """AdamW without weight decay on biases, norms and the temperature; warmup + cosine.

        The temperature has its own learning rate (``temperature_lr``): at the image tower's
        fine-tuning rate (1e-5) it would not move from its start; 0 fixes it.
        """
        config = self.config
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in self.params if p.ndim >= 2]
        no_decay = [p for p in self.params if p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        temperature = self.logit_scale.log_scale
        temperature.requires_grad_(config.temperature_lr > 0)
        if config.temperature_lr > 0:
            groups.append(
                {"params": [temperature], "weight_decay": 0.0, "lr": config.temperature_lr}
            )
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr)
        n_batches = len(_batches(self.train_idx, config.batch_size))
        total_steps = config.epochs * max(1, math.ceil(n_batches / config.grad_accum))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: _lr_factor(step, config.warmup_steps, total_steps)
        )
        logger.info(
            "alignment: %d training and %d validation images, %s fine-tuning, "
            "%d of %d parameters train",
            len(self.train_idx),
            len(self.val_idx),
            f"LoRA rank {config.lora_rank}"
            if config.method == "lora"
            else f"last {config.unfreeze_blocks} blocks",
            self.model.n_parameters(trainable_only=True),
            self.model.n_parameters(),
        )

    def start(self, resume: bool) -> None:
        """Resume from the last checkpoint, or measure the unaligned model (epoch 0)."""
        folder = latest_checkpoint(self.checkpoint_dir) if resume else None
        if folder is not None:
            weights, loop, extra = load_checkpoint(
                folder, optimizer=self.optimizer, scheduler=self.scheduler, generator=self.generator
            )
            _load_model_state(self.model, self.logit_scale, weights)
            self.initial = extra["extra.initial_embeddings"]
            self.loop = _LoopState.from_dict(loop)
            logger.info("alignment: resuming after epoch %d from %s", self.loop.epoch, folder)
        else:
            # the frozen original's embeddings, for feature preservation and the 'before' numbers
            self.initial = _embed(self.model, self.pixels, np.arange(len(self.ids)), self.config)
        self.initial_on_device = (
            self.initial.to(self.config.device) if self.config.alignment_weight < 1.0 else None
        )
        if self.loop.epoch == 0 and not self.loop.metrics:
            self.loop.metrics.append({**self.epoch_metrics(0, float("nan")), "best_epoch": 0})
            self._save_best()
            self.loop.best_val = self.loop.metrics[0].get("val_loss")
            logger.info("%s", _epoch_line(self.loop.metrics[0], self.config.epochs))

    def epoch_metrics(self, epoch: int, train_loss: float) -> dict[str, float]:
        """Loss, retrieval recall, temperature and learning rate after ``epoch``."""
        config, row = self.config, {"epoch": epoch, "train_loss": train_loss}

        def evaluate(indices: np.ndarray, prefix: str) -> dict[str, float]:
            return _evaluate(
                self.model, self.logit_scale, self.pixels, indices, self.targets.mean,
                self.initial, config, prefix,
            )  # fmt: skip

        if config.train_metrics or epoch == 0:
            evaluated = evaluate(self.train_idx, "train")
            if epoch == 0:
                row["train_loss"] = evaluated["train_loss"]
            row.update({k: v for k, v in evaluated.items() if k != "train_loss"})
        if len(self.val_idx):
            row.update(evaluate(self.val_idx, "val"))
        row["temperature"] = self.logit_scale.temperature
        row["lr"] = float(self.scheduler.get_last_lr()[0])
        return row

    def train_epoch(self, epoch: int) -> tuple[float, int, float]:
        """One pass over the training images; returns (mean loss, images, seconds)."""
        config, device = self.config, self.config.device
        order = self.train_idx[
            torch.randperm(len(self.train_idx), generator=self.generator).numpy()
        ]
        batches = _batches(order, config.batch_size)
        show_bar = logger.isEnabledFor(logging.INFO) and sys.stderr.isatty()
        bar = tqdm(
            total=len(batches),
            desc=f"alignment epoch {epoch}/{config.epochs}",
            unit="batch",
            file=sys.stderr,
            leave=False,
            disable=not show_bar,
        )
        autocast, _ = autocast_context(device, config.precision)
        # the loss stays on the device (no sync per batch); the bar shows the previous
        # batch's, which the device has finished by the time the next one is queued
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        n_trained, shown = 0, None
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        for b, (batch, batch_pixels) in enumerate(
            zip(batches, self.pixels.batches(batches), strict=True)
        ):
            batch_t = torch.from_numpy(batch)
            target = self.targets.of_batch(batch_t, config.caption_sampling, self.generator)
            with autocast:
                embeddings = self.model(batch_pixels)
            initial = self.initial_on_device
            loss = alignment_objective(
                embeddings.float(),
                target,
                loss=config.loss,
                logit_scale=self.logit_scale(),
                alignment_weight=config.alignment_weight,
                initial_embeddings=None if initial is None else initial[batch_t.to(device)],
                duplicate_cosine=config.duplicate_cosine,
            )
            (loss / config.grad_accum).backward()
            loss_sum += loss.detach().double() * len(batch)
            n_trained += len(batch)
            if (b + 1) % config.grad_accum == 0 or b + 1 == len(batches):
                self._step()
            if show_bar:
                if shown is not None:
                    bar.set_postfix(loss=f"{float(shown):.4g}", refresh=False)
                shown = loss.detach()
                bar.update()
        train_loss = float(loss_sum) / n_trained if n_trained else float("nan")
        if str(device).startswith("cuda"):
            torch.cuda.synchronize(device)
        bar.close()
        return train_loss, n_trained, time.perf_counter() - started

    def _step(self) -> None:
        if self.config.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(
                self.params + [self.logit_scale.log_scale], self.config.clip_grad_norm
            )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _save_best(self) -> None:
        state = _model_state(self.model, self.logit_scale)
        save_file({k: v.cpu().contiguous() for k, v in state.items()}, str(self.best_file))

    def finish_epoch(self, epoch: int, row: dict[str, float]) -> None:
        """Keep the best epoch, stop early after ``patience`` worse ones, save a checkpoint."""
        loop, config = self.loop, self.config
        loop.metrics.append(row)
        loop.epoch = epoch
        val_loss = row.get("val_loss")
        if val_loss is None or loop.best_val is None or val_loss < loop.best_val:
            loop.best_val, loop.best_epoch, loop.bad_epochs = val_loss, epoch, 0
            self._save_best()
        else:
            loop.bad_epochs += 1
            if config.patience is not None and loop.bad_epochs >= config.patience:
                loop.stopped_early = True
        row["best_epoch"] = loop.best_epoch
        _write_metrics(self.checkpoint_dir, loop.metrics)
        save_checkpoint(
            self.checkpoint_dir,
            epoch,
            model_state=_model_state(self.model, self.logit_scale),
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            generator=self.generator,
            loop_state=asdict(loop),
            extra_tensors={"extra.initial_embeddings": self.initial},
        )
        logger.info("%s", _epoch_line(row, config.epochs))

    def result(self) -> TrainResult:
        """Load the best epoch's weights into the model and say what the run did."""
        loop = self.loop
        _write_metrics(self.checkpoint_dir, loop.metrics)
        _load_model_state(self.model, self.logit_scale, load_file(str(self.best_file)))
        kept_unaligned = loop.best_epoch == 0
        if kept_unaligned:
            logger.warning(
                "alignment: no epoch beat the unaligned model's validation loss %.4g: "
                "the unaligned weights are kept (best epoch 0)",
                loop.metrics[0].get("val_loss", float("nan")),
            )
        elif loop.stopped_early:
            logger.info(
                "alignment: stopped early after epoch %d; keeping epoch %d",
                loop.epoch,
                loop.best_epoch,
            )
        return TrainResult(
            metrics=loop.metrics,
            best_epoch=loop.best_epoch,
            stopped_early=loop.stopped_early,
            train_ids=[self.ids[i] for i in self.train_idx],
            val_ids=[self.ids[i] for i in self.val_idx],
            seen_ids=self.pixels.seen,
            config=asdict(self.config),
            kept_unaligned=kept_unaligned,
        )


def _epoch_line(row: dict[str, float], epochs: int) -> str:
    """One log line per epoch, e.g. ``epoch 3/10: train loss 2.31, val loss 2.40, ...``."""
    epoch = int(row["epoch"])
    head = f"epoch {epoch}/{epochs}" + (" (before alignment)" if epoch == 0 else "")
    parts = [f"train loss {row['train_loss']:.4g}"]
    if "val_loss" in row:
        parts.append(f"val loss {row['val_loss']:.4g}")
    split = "val" if "val_i2t_r1" in row else "train"
    if f"{split}_i2t_r1" in row:
        parts.append(
            f"image->caption R@1 {row[f'{split}_i2t_r1']:.2f} ({split}), "
            f"caption->image R@1 {row[f'{split}_t2i_r1']:.2f} ({split})"
        )
    parts.append(f"temperature {row['temperature']:.3g}")
    if "images_per_s" in row:
        parts.append(f"{row['images_per_s']:.0f} images/s")
    return f"{head}: " + ", ".join(parts)
