# Longer than 500 lines: the pipeline stage of alignment: targets, folds, caching and export, in one place.
"""The alignment stage of the pipeline: caption targets, one cached alignment per fold, export.

:func:`train_aligned_model` fine-tunes the open_clip image tower of a feature space towards the
caption embeddings of a text feature space on the stimuli a fold allows
(:mod:`bids_vem.alignment.folds`), exports it in open_clip ``local-dir`` form and returns the
folder. The folder is kept in the work directory under a key of everything that decides the
weights (base weights, caption model, images, captions, held-out stimuli, hyperparameters), so
participants who saw the same stimuli share one alignment, a rerun trains nothing, and a run
killed mid-training resumes from its last epoch.

Brain data never enter here.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bids_vem._utils import file_lock
from bids_vem.alignment.export import SIDECAR_NAME, export_openclip
from bids_vem.alignment.folds import FINAL_FOLD, AlignmentFold
from bids_vem.alignment.model import AlignedImageEncoder
from bids_vem.alignment.train import AlignConfig, split_train_val, train_alignment
from bids_vem.config import option_name
from bids_vem.errors import DataError, InputMissingError, UsageError
from bids_vem.features.cache import cache_key
from bids_vem.features.families.openclip import inspect_openclip, load_openclip
from bids_vem.features.feature_set import FeatureSet
from bids_vem.features.models import resolve_model_path
from bids_vem.features.specs import FeatureSpaceSpec
from bids_vem.features.weights import offline_mode, weights_sha256
from bids_vem.inputs.stimuli import StimulusTable, file_sha256

__all__ = [
    "AlignmentCorpus",
    "read_alignment_corpus",
    "embed_captions",
    "train_aligned_model",
    "align_run_group",
    "alignment_summary",
    "ALIGNMENT_CODE_VERSION",
]

logger = logging.getLogger(__name__)

#: bump when the way alignments are trained changes (invalidates the work-dir alignments)
ALIGNMENT_CODE_VERSION = 2

#: AlignConfig fields that change how fast, not what, is trained
_NOT_IN_KEY = {"device", "num_workers", "pixel_cache_mb", "train_metrics", "progress"}

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class AlignmentCorpus:
    """An external image-caption corpus (``--align-corpus``): images and their captions.

    Attributes
    ----------
    root : Path
        The corpus folder.
    images : dict of str to Path
        Image id (path relative to ``root``) to file.
    captions : dict of str to list of str
        Image id to its captions.
    """

    root: Path
    images: dict[str, Path]
    captions: dict[str, list[str]]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(sorted(self.images))


def read_alignment_corpus(folder: Path | str, option: str = "align_corpus") -> AlignmentCorpus:
    """Read an image-caption corpus folder (``option``: the setting that named it, for the
    messages).

    Two layouts are understood:

    - ``captions.tsv`` (columns ``stim_file`` and ``caption``, several rows per image allowed),
      with ``stim_file`` relative to the folder, as ``--captions`` files;
    - COCO: ``annotations/captions_<split>.json`` with the images in ``<split>/``.

    Raises
    ------
    InputMissingError
        No such folder, no captions file, or captioned images that are missing (exit 66).
    DataError
        A caption file that cannot be read, a path outside the folder, or fewer than 4 images.
    """
    from bids_vem.inputs.captions import coco_captions_to_tsv, read_captions

    root = Path(folder).expanduser().absolute()
    if not root.is_dir():
        raise InputMissingError(f"{option_name(option)} {root}: no such folder")
    tsv = root / "captions.tsv"
    coco = sorted((root / "annotations").glob("captions_*.json"))
    if tsv.is_file():
        captions = read_captions(tsv)
    elif coco:
        captions = {}
        with tempfile.TemporaryDirectory() as tmp:
            for annotations in coco:
                split = annotations.stem.removeprefix("captions_")
                out = coco_captions_to_tsv(annotations, Path(tmp) / f"{split}.tsv", f"{split}/")
                for stim_id, texts in read_captions(out).items():
                    captions.setdefault(stim_id, []).extend(texts)
    else:
        raise InputMissingError(
            f"{option_name(option)} {root}: no captions.tsv (columns stim_file, caption) and no COCO "
            "annotations/captions_*.json"
        )
    images, missing = {}, []
    for stim_id in sorted(captions):
        path = (root / stim_id).resolve()
        if not path.is_relative_to(root.resolve()):
            raise DataError(
                f"{option_name(option)} {root}: image {stim_id!r} lies outside the folder"
            )
        if path.suffix.lower() not in _IMAGE_SUFFIXES:
            raise DataError(f"{option_name(option)} {root}: {stim_id!r} is not an image file name")
        if not path.is_file():
            missing.append(stim_id)
        images[stim_id] = path
    if missing:
        raise InputMissingError(
            f"{option_name(option)} {root}: {len(missing)} captioned images are missing "
            f"(first: {', '.join(missing[:5])})"
        )
    if len(images) < 4:
        raise DataError(
            f"{option_name(option)} {root}: needs at least 4 captioned images, found {len(images)}"
        )
    return AlignmentCorpus(root=root, images=images, captions=captions)


def embed_captions(
    target: FeatureSpaceSpec,
    captions: Mapping[str, Sequence[str]],
    *,
    model_dirs: Sequence[Path] = (),
    allow_downloads: bool = False,
    device: str = "cpu",
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Each caption embedded by the text feature space ``target``: id -> (n_captions, d).

    Captions are embedded one by one (not averaged) so that training may sample one per step.
    """
    from bids_vem.features.encoders import encode

    if target.modality != "text":
        raise UsageError(f"alignment target {target.name!r} is not a text feature space")
    ids = sorted(captions)
    flat = [str(text) for stim_id in ids for text in captions[stim_id]]
    with offline_mode(allow_downloads):
        path = resolve_model_path(target, model_dirs, allow_downloads=allow_downloads)
        vectors = encode(target, flat, model_path=path, device=device, batch_size=batch_size)
    out, start = {}, 0
    for stim_id in ids:
        n = len(captions[stim_id])
        out[stim_id] = vectors[start : start + n]
        start += n
    return out


def _with_warmup(config: AlignConfig, n_images: int) -> AlignConfig:
    """Linear warmup over the first 5% of optimizer steps (at least one) when none is set."""
    if config.warmup_steps > 0:
        return config
    n_train = len(split_train_val(n_images, config.val_fraction, config.seed)[0])
    per_epoch = math.ceil(math.ceil(n_train / config.batch_size) / config.grad_accum)
    return replace(config, warmup_steps=max(1, round(0.05 * config.epochs * per_epoch)))


def _digest(arrays: Iterator[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array, dtype=np.float32)
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _result_summary(metrics: list[dict[str, float]], best_epoch: int) -> dict[str, Any]:
    before = metrics[0] if metrics else {}
    after = next((row for row in metrics if int(row.get("epoch", -1)) == best_epoch), before)
    skip = ("epoch", "best_epoch", "lr", "train_seconds", "images_per_s")
    keep = [k for k in after if k not in skip]
    return {
        "best_epoch": best_epoch,
        "aligned": best_epoch > 0,
        "before": {k: before.get(k) for k in keep if k in before},
        "after": {k: after.get(k) for k in keep},
    }


def train_aligned_model(
    base: FeatureSpaceSpec,
    target: FeatureSpaceSpec,
    *,
    images: Mapping[str, Path],
    targets: Mapping[str, np.ndarray],
    fold: AlignmentFold,
    config: AlignConfig,
    cache_root: Path,
    image_sha256: Mapping[str, str] | None = None,
    model_dirs: Sequence[Path] = (),
    allow_downloads: bool = False,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Align the image tower of ``base`` to the caption embeddings on ``fold.train_ids``.

    Parameters
    ----------
    base : FeatureSpaceSpec
        An open_clip image feature space: its image tower is fine-tuned.
    target : FeatureSpaceSpec
        The text feature space whose caption embeddings are the targets (recorded).
    images : mapping of str to Path
        Image file of every id in ``fold.train_ids``.
    targets : mapping of str to ndarray of shape (n_captions, d_text)
        Caption embeddings of every id in ``fold.train_ids`` (:func:`embed_captions`).
    fold : AlignmentFold
        Which stimuli to train on; ``fold.held_out_ids`` are checked never to be trained on.
    config : AlignConfig
        Hyperparameters (``config.device`` decides where it trains). Without warmup steps,
        the learning rate warms up linearly over the first 5% of the steps.
    cache_root : Path
        Work folder of alignments: ``<cache_root>/<key>/`` holds checkpoints and the model.
    image_sha256 : mapping of str to str, optional
        Content hash of every training image when already known (the stimulus table's);
        default: hashed here.
    model_dirs, allow_downloads
        Where the base weights are looked for.
    provenance : mapping, optional
        More to record in the sidecar (e.g. the run group, the data source).

    Returns
    -------
    Path
        The exported open_clip ``local-dir`` folder (``open_clip_config.json``,
        ``open_clip_model.safetensors``, ``alignment.json``, ``metrics.tsv``, ``metrics.json``).
    """
    if base.family != "openclip" or base.modality != "image":
        raise UsageError(
            f"alignment base {base.name!r} ({base.text}) is not an open_clip image feature space"
        )
    train_ids = list(fold.train_ids)
    lacking = [s for s in train_ids if s not in images or s not in targets]
    if lacking:
        raise DataError(
            f"alignment {fold.name}: {len(lacking)} training stimuli have no image or caption "
            f"embedding (first: {', '.join(lacking[:5])})"
        )
    config = _with_warmup(config, len(train_ids))
    with offline_mode(allow_downloads):
        base_path = resolve_model_path(base, model_dirs, allow_downloads=allow_downloads)
        target_path = resolve_model_path(target, model_dirs, allow_downloads=allow_downloads)
        info = inspect_openclip(base, base_path)
        base_hash = weights_sha256(base_path)
        key = cache_key(
            {
                "code": ALIGNMENT_CODE_VERSION,
                "base": {"weights": base_hash, **info.describe()},
                "target": {"spec": target.options, "weights": weights_sha256(target_path)},
                "train": [
                    [s, image_sha256[s] if image_sha256 else file_sha256(Path(images[s]))]
                    for s in train_ids
                ],
                "targets": _digest(targets[s] for s in train_ids),
                "held_out": list(fold.held_out_ids),
                "config": {k: v for k, v in asdict(config).items() if k not in _NOT_IN_KEY},
            }
        )
        folder = Path(cache_root) / key[:24]
        model_dir = folder / "model"
        # two participants with the same stimuli may ask for the same alignment at once
        with file_lock(folder.with_suffix(".lock")):
            if (model_dir / SIDECAR_NAME).is_file():
                logger.info("alignment %s: reusing %s", fold.name, model_dir)
                return model_dir
            clip_model, preprocess, _ = load_openclip(info, device="cpu")
            text_dim = int(np.asarray(targets[train_ids[0]]).shape[-1])
            import torch

            # the new head's first weights come from the seed alone, not from what this
            # process ran before: otherwise a fold trained after folds reused from the cache
            # (a resumed run) starts elsewhere than in a run that trained them all
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed)
                encoder = AlignedImageEncoder.from_openclip(
                    copy.deepcopy(clip_model), text_dim, preprocess
                )
            logger.info(
                "alignment %s: fine-tuning the image tower of %s towards %s caption embeddings "
                "on %d images (%d held out), %s",
                fold.name,
                base.name,
                target.name,
                len(train_ids),
                len(fold.held_out_ids),
                folder,
            )
            result = train_alignment(
                encoder,
                [Path(images[s]) for s in train_ids],
                [np.asarray(targets[s]) for s in train_ids],
                config,
                folder / "checkpoints",
                stim_ids=train_ids,
                held_out_ids=set(fold.held_out_ids),
                resume=True,
            )
            leaked = sorted(result.seen_ids & set(fold.held_out_ids))
            if leaked:  # the guarantee the encoding relies on, checked on what was read
                raise RuntimeError(f"alignment {fold.name} read held-out stimuli: {leaked[:5]}")
            summary = _result_summary(result.metrics, result.best_epoch)
            if not summary["aligned"]:
                logger.warning(
                    "alignment %s: no epoch improved the validation loss; the exported model "
                    "is the unaligned %s",
                    fold.name,
                    base.name,
                )
            sidecar = {
                "Description": "open_clip image encoder aligned to caption embeddings (LLM-VEM)",
                "BaseModel": {"spec": base.text, "name": base.name, "weights_sha256": base_hash},
                "CaptionModel": {"spec": target.text, "name": target.name},
                "Fold": {
                    "name": fold.name,
                    "held_out_runs": list(fold.held_out_runs),
                    "held_out_stimuli": list(fold.held_out_ids),
                    "n_train_stimuli": len(result.train_ids),
                    "n_validation_stimuli": len(result.val_ids),
                    "n_held_out_stimuli": len(fold.held_out_ids),
                },
                "Hyperparameters": result.config,
                "StoppedEarly": result.stopped_early,
                **summary,
                **dict(provenance or {}),
            }
            staging = folder / "model.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            export_openclip(
                encoder,
                clip_model,
                info.model_cfg,
                staging,
                preprocess_cfg=info.preprocessing,
                sidecar=sidecar,
            )
            for name in ("metrics.tsv", "metrics.json"):
                shutil.copy2(folder / "checkpoints" / name, staging / name)
            (staging / "train_ids.json").write_text(json.dumps(result.train_ids, indent=0))
            staging.rename(model_dir)  # the sidecar marks a complete model: rename last
    return model_dir


def align_run_group(
    base: FeatureSpaceSpec,
    target: FeatureSpaceSpec,
    *,
    name: str,
    stimuli: StimulusTable,
    captions: Mapping[str, Sequence[str]],
    folds: Sequence[AlignmentFold],
    config: AlignConfig,
    cache_root: Path,
    corpus: AlignmentCorpus | None = None,
    feature_cache_dir: Path | None = None,
    model_dirs: Sequence[Path] = (),
    allow_downloads: bool = False,
    provenance: Mapping[str, Any] | None = None,
) -> tuple[Path, list[tuple[AlignmentFold, FeatureSet]]]:
    """Every alignment of one run group, and the aligned features of its stimuli.

    Parameters
    ----------
    base, target
        The open_clip image feature space to align and the text feature space of the targets.
    name
        Name of the aligned feature space.
    stimuli
        The stimulus table; every stimulus gets aligned features.
    captions
        Captions of the stimuli (human or generated); unused with ``corpus``.
    folds
        From :func:`bids_vem.alignment.folds.plan_alignment_folds`, ending with ``final``.
        Ignored with ``corpus``: one alignment then serves every run.
    config, cache_root, model_dirs, allow_downloads, provenance
        As in :func:`train_aligned_model`.
    corpus
        External image-caption corpus. Corpus images with the content of a stimulus are left
        out, so that the alignment never sees a stimulus.
    feature_cache_dir
        Feature cache of the features stage.

    Returns
    -------
    (final model folder, [(fold, FeatureSet of every stimulus)...]) with ``final`` last.
    """
    from bids_vem.features.extract import extract_feature_spaces
    from bids_vem.features.specs import parse_feature_space

    provenance = dict(provenance or {})
    if corpus is not None:
        # each corpus image is hashed once: for this check and for the alignment's cache key
        hashes = {i: file_sha256(corpus.images[i]) for i in corpus.ids}
        stimulus_hashes = {stim.sha256 for stim in stimuli}
        overlap = sorted(i for i in corpus.ids if hashes[i] in stimulus_hashes)
        if overlap:
            logger.warning(
                f"{option_name('align_corpus')}: leaving out %d corpus images that are also stimuli (first: %s)",
                len(overlap),
                overlap[0],
            )
        train = tuple(i for i in corpus.ids if i not in set(overlap))
        folds = [AlignmentFold(FINAL_FOLD, (), train, ())]
        images = dict(corpus.images)
        texts = {i: corpus.captions[i] for i in train}
        provenance["TrainingData"] = {"corpus": str(corpus.root), "n_images": len(train)}
    else:
        needed = sorted({s for fold in folds for s in fold.train_ids})
        images = {s: stimuli[s].path for s in needed}
        hashes = {s: stimuli[s].sha256 for s in needed}  # hashed once, when the table was built
        texts = {s: list(captions.get(s, ())) for s in needed}
        lacking = [s for s, t in texts.items() if not t]
        if lacking:
            raise InputMissingError(
                f"alignment needs a caption for every training image; {len(lacking)} have none "
                f"(first: {', '.join(lacking[:5])})"
            )
        provenance["TrainingData"] = {"stimuli": "the run group's own stimuli, by fold"}
    if not folds or folds[-1].name != FINAL_FOLD:
        raise ValueError("alignment folds must end with the final fold")
    targets = embed_captions(
        target,
        texts,
        model_dirs=model_dirs,
        allow_downloads=allow_downloads,
        device=config.device,
    )
    out = []
    for fold in folds:
        model_dir = train_aligned_model(
            base,
            target,
            images=images,
            targets=targets,
            fold=fold,
            config=config,
            cache_root=cache_root,
            image_sha256=hashes,
            model_dirs=model_dirs,
            allow_downloads=allow_downloads,
            provenance=provenance,
        )
        spec = parse_feature_space(f"{name}=openclip:{model_dir}", "image")
        (feature_set,) = extract_feature_spaces(
            spec,
            stimuli.stim_ids,
            image_paths={s.stim_id: s.path for s in stimuli},
            image_sha256={s.stim_id: s.sha256 for s in stimuli},
            cache_dir=feature_cache_dir,
            device=config.device,
            progress=False,
        )
        feature_set.metadata["alignment"] = {
            "fold": fold.name,
            "held_out_runs": list(fold.held_out_runs),
            "model": str(model_dir),
        }
        out.append((fold, feature_set))
    return Path(out[-1][1].metadata["alignment"]["model"]), out


def alignment_summary(
    model_dir: Path, fold_sets: Sequence[tuple[AlignmentFold, FeatureSet]]
) -> dict[str, Any]:
    """What the report shows of a run group's alignments: each fold's sidecar numbers."""
    folds = []
    for fold, feature_set in fold_sets:
        folder = Path(feature_set.metadata["alignment"]["model"])
        sidecar = json.loads((folder / SIDECAR_NAME).read_text())
        folds.append(
            {
                "fold": fold.name,
                "held_out_runs": list(fold.held_out_runs),
                "n_train_stimuli": sidecar.get("Fold", {}).get("n_train_stimuli"),
                "best_epoch": sidecar.get("best_epoch"),
                "aligned": sidecar.get("aligned"),
                "before": sidecar.get("before", {}),
                "after": sidecar.get("after", {}),
                "model": str(folder),
            }
        )
    return {"model_dir": str(model_dir), "folds": folds}
