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
from bids_vem.alignment.losses import LogitScale, alignment_objective
from bids_vem.alignment.model import AlignedImageEncoder
from bids_vem.alignment.retrieval import retrieval_recall
from bids_vem.config import AlignmentSettings, check_setting, option_name, setting_choices
from bids_vem.errors import DataError, UsageError
from bids_vem.features.batching import autocast_context, read_rgb_image
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


class _DecodedImages:
    """Decode + preprocess image ``i``; a bad file yields its error (raised in the main process).

    With ``pil_part`` the output is the (3, H, W) uint8 image that ``ToTensor`` would have
    scaled (the rest of the preprocess runs on the batch, on the device); without, the full
    preprocess output.
    """

    def __init__(self, paths: list[Path], preprocess: Any, pil_part: Any | None) -> None:
        self.paths, self.preprocess, self.pil_part = paths, preprocess, pil_part

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            image = read_rgb_image(self.paths[index])
        except DataError as exc:
            return index, None, str(exc)
        if self.pil_part is None:
            return index, self.preprocess(image), None
        image = self.pil_part(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
        # the bytes ToTensor reads: (H, W, 3) -> (3, H, W)
        return index, torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1), None


def _collate(items: list) -> tuple[list[int], torch.Tensor | None, str | None]:
    errors = [error for _, _, error in items if error is not None]
    if errors:
        return [], None, errors[0]
    shapes = {tuple(x.shape) for _, x, _ in items}
    if len(shapes) > 1:
        return [], None, f"preprocessed images differ in shape {sorted(shapes)}"
    return [i for i, _, _ in items], torch.stack([x for _, x, _ in items]), None


def _split_preprocess(preprocess: Any) -> tuple[Any | None, tuple | None]:
    """(PIL part, (mean, std)) when ``preprocess`` is a Compose ending in ToTensor + Normalize.

    open_clip's evaluation transforms are. Then images can be kept as uint8 and scaled and
    normalised on the device with exactly torchvision's float32 operations; otherwise
    (None, None) and the full transform runs per image.
    """
    from torchvision.transforms import Compose, Normalize, ToTensor

    if not isinstance(preprocess, Compose) or len(preprocess.transforms) < 2:
        return None, None
    *head, to_tensor, normalize = preprocess.transforms
    # exact types only: a subclass may compute something else
    if type(to_tensor) is not ToTensor and type(to_tensor).__name__ != "MaybeToTensor":
        return None, None
    if type(normalize) is not Normalize:
        return None, None
    return Compose(head), (normalize.mean, normalize.std)


class _PixelSource:
    """Batches of preprocessed pixels on the device, from an in-memory cache or decoded anew.

    Every image is decoded and preprocessed once into memory (uint8 when the preprocess ends in
    ToTensor + Normalize, else float32) when the whole set fits ``cache_mb``; otherwise each
    batch is decoded again by a DataLoader with ``num_workers`` processes. Both paths give
    bit-identical pixels. Records which stimuli were read.
    """

    def __init__(
        self,
        paths: list[Path],
        ids: list[str],
        preprocess: Any,
        *,
        device: str,
        cache_mb: int,
        num_workers: int,
    ) -> None:
        self.ids, self.device, self.num_workers = ids, device, num_workers
        self.pin = str(device).startswith("cuda")
        pil_part, norm = _split_preprocess(preprocess)
        self.dataset = _DecodedImages(paths, preprocess, pil_part)
        self.seen: set[str] = set()
        self.norm: tuple[torch.Tensor, torch.Tensor] | None = None
        if norm is not None:
            mean, std = (
                torch.as_tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1)
                for v in norm
            )
            self.norm = (mean, std)
        self.cache = self._fill_cache(cache_mb) if cache_mb > 0 else None

    def _decode(self, batches: list[np.ndarray]):
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=batches,
            num_workers=self.num_workers,
            collate_fn=_collate,
            pin_memory=self.pin,
        )
        for batch in loader:
            indices, pixels, error = batch
            if error is not None:
                raise DataError(
                    error if error.startswith("stimulus image") else f"alignment: {error}"
                )
            self.seen.update(self.ids[i] for i in indices)
            yield pixels

    def _fill_cache(self, cache_mb: int) -> torch.Tensor | None:
        n_images = len(self.dataset)
        _, first, error = self.dataset[0]
        if error is not None:
            raise DataError(error)
        n_bytes = n_images * first.numel() * first.element_size()
        if n_bytes > cache_mb * 2**20:
            logger.info(
                "alignment: %d images need %.0f MB of pixels, over the %d MB cache: "
                "decoding every batch",
                n_images,
                n_bytes / 2**20,
                cache_mb,
            )
            return None
        cache = torch.empty((n_images, *first.shape), dtype=first.dtype)
        chunk = 256
        order = np.arange(n_images)
        start = 0
        for pixels in self._decode([order[i : i + chunk] for i in range(0, n_images, chunk)]):
            if pixels.shape[1:] != first.shape:
                raise DataError(
                    f"preprocessed images differ in shape ({tuple(first.shape)} and "
                    f"{tuple(pixels.shape[1:])}): the alignment preprocess must crop to one size"
                )
            cache[start : start + len(pixels)] = pixels
            start += len(pixels)
        logger.info("alignment: %d images cached in memory (%.0f MB)", n_images, n_bytes / 2**20)
        return cache

    def batches(self, batches: list[np.ndarray]):
        """Yield one (len(batch), 3, H, W) float32 tensor on the device per index array."""
        if self.cache is None:
            host = self._decode(batches)
        else:
            host = (self._gather(batch) for batch in batches)
        for pixels in host:
            pixels = pixels.to(self.device, non_blocking=True)
            if self.norm is not None:
                # ToTensor + Normalize, as torchvision computes them, on the whole batch
                pixels = pixels.float().div_(255.0).sub_(self.norm[0]).div_(self.norm[1])
            yield pixels

    def _gather(self, batch: np.ndarray) -> torch.Tensor:
        pixels = self.cache.index_select(0, torch.from_numpy(np.asarray(batch, dtype=np.int64)))
        return pixels.pin_memory() if self.pin else pixels


def _batches(indices: np.ndarray, batch_size: int) -> list[np.ndarray]:
    # drop a last batch of one: InfoNCE needs negatives
    out = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    return [b for b in out if len(b) >= 2]


@torch.no_grad()
def _embed(
    model: AlignedImageEncoder, pixels: _PixelSource, indices: np.ndarray, config: AlignConfig
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
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    train_idx, val_idx = split_train_val(len(images), config.val_fraction, config.seed)
    device = config.device
    # targets live on the device: one flat table of every caption, and the per-image means
    mean_targets = torch.stack([F.normalize(c.mean(0), dim=-1) for c in caption_sets]).to(device)
    all_captions = torch.cat(caption_sets).to(device)
    n_captions = torch.tensor([len(c) for c in caption_sets])
    first_caption = torch.cumsum(n_captions, 0) - n_captions
    model.to(device)
    # eval mode throughout: no dropout, BatchNorm statistics of frozen layers stay put
    model.eval()
    if config.method == "lora":
        model.use_lora(config.lora_rank, config.lora_alpha)
    else:
        model.freeze_all_but_last(config.unfreeze_blocks)
    model.set_grad_checkpointing(config.grad_checkpointing)
    logit_scale = LogitScale(config.init_temperature).to(device)
    pixels = _PixelSource(
        images,
        ids,
        model.preprocess,
        device=device,
        cache_mb=config.pixel_cache_mb,
        num_workers=config.num_workers,
    )

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
    logger.info(
        "alignment: %d training and %d validation images, %s fine-tuning, "
        "%d of %d parameters train",
        len(train_idx),
        len(val_idx),
        f"LoRA rank {config.lora_rank}"
        if config.method == "lora"
        else f"last {config.unfreeze_blocks} blocks",
        model.n_parameters(trainable_only=True),
        model.n_parameters(),
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
    initial_on_device = initial.to(device) if config.alignment_weight < 1.0 else None
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
        loop["metrics"].append({**epoch_metrics(0, float("nan")), "best_epoch": 0})
        save_file(
            {k: v.cpu().contiguous() for k, v in _model_state(model, logit_scale).items()},
            str(best_file),
        )
        loop["best_val"] = loop["metrics"][0].get("val_loss")
        logger.info("%s", _epoch_line(loop["metrics"][0], config.epochs))
    autocast, _ = autocast_context(device, config.precision)
    is_cuda = str(device).startswith("cuda")
    show_bar = logger.isEnabledFor(logging.INFO) and sys.stderr.isatty()
    stopped_early = loop.get("stopped_early", False)
    while loop["epoch"] < config.epochs and not stopped_early:
        epoch = loop["epoch"] + 1
        order = train_idx[torch.randperm(len(train_idx), generator=generator).numpy()]
        batches = _batches(order, config.batch_size)
        bar = tqdm(
            total=len(batches),
            desc=f"alignment epoch {epoch}/{config.epochs}",
            unit="batch",
            file=sys.stderr,
            leave=False,
            disable=not show_bar,
        )
        # the loss stays on the device (no sync per batch); the bar shows the previous
        # batch's, which the device has finished by the time the next one is queued
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        n_trained, shown = 0, None
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        for b, (batch, batch_pixels) in enumerate(
            zip(batches, pixels.batches(batches), strict=True)
        ):
            batch_t = torch.from_numpy(batch)
            if config.caption_sampling == "sample":
                pick = (torch.rand(len(batch), generator=generator) * n_captions[batch_t]).long()
                target = all_captions[(first_caption[batch_t] + pick).to(device)]
            else:
                target = mean_targets[batch_t.to(device)]
            with autocast:
                embeddings = model(batch_pixels)
            loss = alignment_objective(
                embeddings.float(),
                target,
                loss=config.loss,
                logit_scale=logit_scale(),
                alignment_weight=config.alignment_weight,
                initial_embeddings=None
                if initial_on_device is None
                else initial_on_device[batch_t.to(device)],
            )
            (loss / config.grad_accum).backward()
            loss_sum += loss.detach().double() * len(batch)
            n_trained += len(batch)
            if (b + 1) % config.grad_accum == 0 or b + 1 == len(batches):
                if config.clip_grad_norm:
                    torch.nn.utils.clip_grad_norm_(
                        params + [logit_scale.log_scale], config.clip_grad_norm
                    )
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if show_bar:
                if shown is not None:
                    bar.set_postfix(loss=f"{float(shown):.4g}", refresh=False)
                shown = loss.detach()
                bar.update()
        train_loss = float(loss_sum) / n_trained if n_trained else float("nan")
        if is_cuda:
            torch.cuda.synchronize(device)
        train_seconds = time.perf_counter() - started
        bar.close()
        row = epoch_metrics(epoch, train_loss)
        row["train_seconds"] = train_seconds
        row["images_per_s"] = n_trained / train_seconds if train_seconds > 0 else float("nan")
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
        row["best_epoch"] = loop["best_epoch"]
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
        logger.info("%s", _epoch_line(row, config.epochs))
    _write_metrics(checkpoint_dir, loop["metrics"])
    _load_model_state(model, logit_scale, load_file(str(best_file)))
    kept_unaligned = loop["best_epoch"] == 0
    if kept_unaligned:
        logger.warning(
            "alignment: no epoch beat the unaligned model's validation loss %.4g: "
            "the unaligned weights are kept (best epoch 0)",
            loop["metrics"][0].get("val_loss", float("nan")),
        )
    elif stopped_early:
        logger.info(
            "alignment: stopped early after epoch %d; keeping epoch %d",
            loop["epoch"],
            loop["best_epoch"],
        )
    return TrainResult(
        metrics=loop["metrics"],
        best_epoch=loop["best_epoch"],
        stopped_early=stopped_early,
        train_ids=[ids[i] for i in train_idx],
        val_ids=[ids[i] for i in val_idx],
        seen_ids=pixels.seen,
        config=asdict(config),
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
