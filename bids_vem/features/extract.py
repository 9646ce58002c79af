# Longer than 500 lines: the feature stage (cache keys, the four kinds of stimulus input, derivatives).
"""The feature stage: one feature space over the unique stimuli, cached, and its derivative files."""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bids_vem._utils import file_lock, is_label
from bids_vem.config import setting_default
from bids_vem.errors import DataError, InputMissingError, OutputError, UsageError
from bids_vem.features import encoders
from bids_vem.features.batching import autocast_context
from bids_vem.features.cache import FeatureCache, cache_key
from bids_vem.features.families import get_family
from bids_vem.features.feature_set import FeatureSet
from bids_vem.features.models import resolve_model_path
from bids_vem.features.specs import FeatureSpaceSpec, expand_layers
from bids_vem.features.story import (
    read_event_words,
    read_word_timings,
    word_contexts,
)
from bids_vem.features.weights import (
    library_versions,
    numeric_versions,
    offline_mode,
    weights_sha256,
)
from bids_vem.inputs.stimuli import file_sha256, stimulus_kind
from bids_vem.outputs.atomic import atomic_path, write_text_atomic
from bids_vem.outputs.names import derivative_name

__all__ = [
    "expand_feature_space",
    "extract_feature_spaces",
    "write_feature_derivatives",
]

logger = logging.getLogger(__name__)

#: bump when the way features are computed here changes (invalidates every cache entry)
FEATURE_CODE_VERSION = 1
_LISTED = 20


def _first(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f", ... ({len(items) - _LISTED} more)" if len(items) > _LISTED else "")


def _caption_lists(
    spec: FeatureSpaceSpec, stim_ids: tuple[str, ...], captions: Mapping[str, Sequence[str]] | None
) -> list[list[str]]:
    captions = captions or {}
    lists = []
    missing = []
    for stim_id in stim_ids:
        texts = [str(c).strip() for c in captions.get(stim_id, ()) if str(c).strip()]
        if not texts:
            missing.append(stim_id)
        lists.append(texts)
    if missing:
        raise InputMissingError(
            f"feature space {spec.name!r} embeds captions, but {len(missing)} of {len(stim_ids)} "
            f"stimuli have none: {_first(missing)}"
        )
    return lists


def _image_inputs(
    spec: FeatureSpaceSpec,
    stim_ids: tuple[str, ...],
    image_paths: Mapping[str, Path] | None,
    image_sha256: Mapping[str, str] | None,
) -> tuple[list[Path], list[str]]:
    image_paths = image_paths or {}
    image_sha256 = image_sha256 or {}
    missing = [s for s in stim_ids if s not in image_paths or not Path(image_paths[s]).is_file()]
    if missing:
        raise InputMissingError(
            f"feature space {spec.name!r} embeds images, but {len(missing)} of {len(stim_ids)} "
            f"stimuli have no image file: {_first(missing)}"
        )
    paths = [Path(image_paths[s]) for s in stim_ids]
    hashes = [image_sha256.get(s) or file_sha256(p) for s, p in zip(stim_ids, paths, strict=True)]
    return paths, hashes


def _expand(spec: FeatureSpaceSpec, model_path: Path) -> list[FeatureSpaceSpec]:
    depth = get_family(spec.family).depth
    if spec.layers is None or depth is None:  # the parser refused #layers for this family
        return [spec]
    n_layers, has_pooler = depth(spec, model_path)
    return expand_layers(spec, n_layers, has_pooler=has_pooler)


def expand_feature_space(
    spec: FeatureSpaceSpec,
    model_dirs: Sequence[Path | str] = (),
    *,
    allow_downloads: bool = False,
) -> list[FeatureSpaceSpec]:
    """The feature spaces one spec stands for: itself, or one per ``#layers`` layer.

    ``#layers=all`` needs the model's depth, read from its ``config.json`` (no weights are
    loaded), so the model is resolved first.

    Returns
    -------
    list of FeatureSpaceSpec
        Named ``<name>L<k>`` / ``<name>Pooler`` for layer requests (``layer`` set).

    Raises
    ------
    InputMissingError
        The model is not found (66).
    UsageError
        A layer the model does not have (64).
    """
    if spec.layers is None:
        return [spec]
    with offline_mode(allow_downloads):
        model_path = resolve_model_path(spec, model_dirs, allow_downloads=allow_downloads)
        return _expand(spec, model_path)


def extract_feature_spaces(
    spec: FeatureSpaceSpec,
    stim_ids: Sequence[str],
    *,
    image_paths: Mapping[str, Path] | None = None,
    image_sha256: Mapping[str, str] | None = None,
    captions: Mapping[str, Sequence[str]] | None = None,
    model_dirs: Sequence[Path | str] = (),
    cache_dir: Path | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    num_workers: int = 0,
    allow_downloads: bool = False,
    progress: bool = True,
    precision: str = "auto",
    frame_rate: float = setting_default("frame_rate"),
    context_words: int = setting_default("context_words"),
    context: str = setting_default("context"),
) -> list[FeatureSet]:
    """Every feature space of one spec (one per ``#layers`` layer) from ONE model load.

    Image spaces over video stimuli embed frames sampled at ``frame_rate`` (per second) and
    return timed feature sets (one row per frame, with its time from the video's start).

    Each layer space is cached on its own (its key includes the layer and pooling); the model
    is loaded only when some layer is missing from the cache, and then every missing layer
    comes from the same forward pass per batch. Parameters and errors as
    one feature set per layer.

    Returns
    -------
    list of FeatureSet
        In the order of :func:`expand_feature_space` (``<name>L<k>``...), each
        (n_stimuli, n_features) float32.
    """
    stim_ids = tuple(str(s) for s in stim_ids)
    if not stim_ids:
        raise UsageError(f"feature space {spec.name!r}: no stimuli to embed")
    duplicated = sorted(s for s, n in Counter(stim_ids).items() if n > 1)
    if duplicated:
        raise UsageError(
            f"feature space {spec.name!r}: duplicated stimulus ids {_first(duplicated)}"
        )
    inputs = _stimulus_inputs(
        spec, stim_ids, image_paths, image_sha256, captions, frame_rate, context_words, context
    )
    with offline_mode(allow_downloads):
        model_path = resolve_model_path(spec, model_dirs, allow_downloads=allow_downloads)
        weights_hash = weights_sha256(model_path)
        layer_specs = _expand(spec, model_path)
        stimuli_hash = cache_key({"stimuli": inputs.cache_part})
        _, computed_precision = autocast_context(device, precision)
        cache = FeatureCache(cache_dir) if cache_dir is not None else None
        results: dict[int, FeatureSet] = {}
        todo: list[tuple[int, FeatureSpaceSpec, str, dict[str, Any]]] = []
        for index, layer_spec in enumerate(layer_specs):
            description = get_family(layer_spec.family).describe(layer_spec, model_path)
            key = _cache_key(
                layer_spec, description, weights_hash, stimuli_hash, computed_precision
            )
            todo.append((index, layer_spec, key, description))
        todo = _from_cache(cache, todo, stim_ids, results)
        # jobs sharing the cache (array jobs, parallel participants) take turns: the first
        # computes, the others wait for it and then read its result instead of recomputing
        turn = contextlib.nullcontext()
        if todo and cache is not None:
            model_key = cache_key(
                {"model": weights_hash, "spec": spec.text, "stimuli": stimuli_hash}
            )
            turn = file_lock(cache.cache_dir / "locks" / f"{model_key[:24]}.lock")
        with turn:
            todo = _from_cache(cache, todo, stim_ids, results)
            if not todo:
                return [results[i] for i in range(len(layer_specs))]

            common = {"device": device, "batch_size": batch_size, "precision": precision}
            layers = [layer_spec.layer for _, layer_spec, _, _ in todo]
            encoded = inputs.encode(spec, model_path, layers, common, num_workers, progress)
            for index, layer_spec, key, description in todo:
                metadata: dict[str, Any] = {
                    "spec": layer_spec.text,
                    "family": layer_spec.family,
                    "model": layer_spec.model,
                    "weights": layer_spec.weights,
                    "model_path": str(model_path),
                    "weights_sha256": weights_hash,
                    **description,
                    "versions": library_versions(),
                    "stimuli_sha256": stimuli_hash,
                    "precision": computed_precision,
                }
                if layer_spec.layer is not None:
                    metadata["layer"] = layer_spec.layer
                feature_set = FeatureSet(
                    name=layer_spec.name,
                    spec=layer_spec.text,
                    modality=layer_spec.modality,
                    stim_ids=encoded.row_ids or stim_ids,
                    values=encoded.per_layer[layer_spec.layer],
                    metadata=metadata | inputs.metadata(),
                    times=encoded.times,
                )
                if cache is not None:
                    cache.put(key, feature_set)
                    feature_set = replace(
                        feature_set, metadata={**feature_set.metadata, "cache_key": key}
                    )
                results[index] = feature_set
                logger.info(
                    "feature space %s: %d stimuli, %d dims, computed",
                    layer_spec.name,
                    len(stim_ids),
                    feature_set.n_features,
                )
    return [results[i] for i in range(len(layer_specs))]


def _from_cache(
    cache: FeatureCache | None,
    todo: list[tuple[int, FeatureSpaceSpec, str, dict[str, Any]]],
    stim_ids: tuple[str, ...],
    results: dict[int, FeatureSet],
) -> list[tuple[int, FeatureSpaceSpec, str, dict[str, Any]]]:
    """Fill ``results`` with the layer spaces the cache holds; return those it does not."""
    missing = []
    for index, layer_spec, key, description in todo:
        cached = cache.get(key) if cache is not None else None
        if cached is not None and tuple(dict.fromkeys(cached.stim_ids)) == stim_ids:
            logger.info(
                "feature space %s: %d stimuli, %d dims, from cache",
                layer_spec.name,
                len(stim_ids),
                cached.n_features,
            )
            results[index] = replace(cached, name=layer_spec.name, spec=layer_spec.text)
        else:
            missing.append((index, layer_spec, key, description))
    return missing


def _cache_key(
    layer_spec: FeatureSpaceSpec,
    description: dict[str, Any],
    weights_hash: str,
    stimuli_hash: str,
    precision: str,
) -> str:
    """What decides one layer space's numbers: code, model, weights, libraries, stimuli."""
    parts: dict[str, Any] = {
        "code": FEATURE_CODE_VERSION,
        # the spec without its name: renaming a feature space recomputes nothing
        "spec": [layer_spec.family, layer_spec.model, layer_spec.weights],
        "modality": layer_spec.modality,
        "weights_sha256": weights_hash,
        "model": description,
        "versions": numeric_versions(get_family(layer_spec.family).packages),
        "stimuli": stimuli_hash,
    }
    options = {k: v for k, v in layer_spec.options.items() if k != "layers"}
    if options:  # only when set, so that keys of plain specs stay as they were
        parts["options"] = options
    if precision != "float32":
        parts["precision"] = precision
    return cache_key(parts)


@dataclass
class _Encoded:
    """Per-layer features; timed sets (words, frames) name each row's stimulus and time."""

    per_layer: dict[Any, np.ndarray]
    row_ids: tuple[str, ...] | None = None
    times: np.ndarray | None = None


class _CaptionInputs:
    """Text spaces over images: each stimulus's captions, their embeddings averaged."""

    def __init__(self, spec, stim_ids, captions) -> None:
        self.caption_lists = _caption_lists(spec, stim_ids, captions)
        self.cache_part: list = [[s, c] for s, c in zip(stim_ids, self.caption_lists, strict=True)]

    def encode(self, spec, model_path, layers, common, num_workers, progress) -> _Encoded:
        counts = [len(c) for c in self.caption_lists]
        flat = [c for texts in self.caption_lists for c in texts]
        per_layer = encoders.encode_layers(
            spec, flat, model_path=model_path, layers=layers, **common
        )
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        for layer, embeddings in per_layer.items():
            summed = np.add.reduceat(embeddings.astype(np.float64), starts, axis=0)
            per_layer[layer] = (summed / np.asarray(counts)[:, None]).astype(np.float32)
        return _Encoded(per_layer)

    def metadata(self) -> dict[str, Any]:
        return {
            "n_captions": [len(c) for c in self.caption_lists],
            "aggregation": "mean over each stimulus's caption embeddings",
        }


class _StoryInputs:
    """Text spaces over stories: the words of each transcript, each in its context."""

    def __init__(self, spec, stim_ids, image_paths, image_sha256, n_context, context) -> None:
        paths, _ = _image_inputs(spec, stim_ids, image_paths, image_sha256)
        self.stim_ids, self.n_context = stim_ids, int(n_context)
        if context not in ("causal", "symmetric"):
            raise UsageError(f"context must be causal or symmetric, got {context!r}")
        self.causal = context == "causal"
        self.timings = [_story_timings(s, p) for s, p in zip(stim_ids, paths, strict=True)]
        self.cache_part: list = [
            [s, file_sha256(p)]
            # a .txt transcript's words are in the .tsv beside it
            + ([file_sha256(p.with_suffix(".tsv"))] if p.suffix.lower() == ".txt" else [])
            for s, p in zip(stim_ids, paths, strict=True)
        ]
        self.cache_part.append(["n_context", self.n_context])
        if self.causal:  # symmetric keeps the key it had before causal contexts existed
            self.cache_part.append(["context", "causal"])

    def encode(self, spec, model_path, layers, common, num_workers, progress) -> _Encoded:
        contexts = [
            c
            for words, _ in self.timings
            for c in word_contexts(words, self.n_context, causal=self.causal)
        ]
        per_layer = encoders.encode_layers(
            spec, contexts, model_path=model_path, layers=layers, **common
        )
        row_ids = tuple(s for s, (w, _) in zip(self.stim_ids, self.timings, strict=True) for _ in w)
        times = np.concatenate([onsets for _, onsets in self.timings]).astype(np.float64)
        return _Encoded(per_layer, row_ids, times)

    def metadata(self) -> dict[str, Any]:
        return {
            "n_context": self.n_context,
            "context": "causal" if self.causal else "symmetric",
            "resample": "lanczos",
            "aggregation": (
                f"one row per word, embedded with up to {self.n_context} words of context "
                + ("before it" if self.causal else "on each side")
                + "; Lanczos-resampled to TRs by the design"
            ),
        }


class _ImageInputs:
    """Image spaces over images: one row per image file."""

    def __init__(self, spec, stim_ids, image_paths, image_sha256) -> None:
        self.stim_ids = stim_ids
        self.paths, hashes = _image_inputs(spec, stim_ids, image_paths, image_sha256)
        self.cache_part: list = [[s, h] for s, h in zip(stim_ids, hashes, strict=True)]

    def encode(self, spec, model_path, layers, common, num_workers, progress) -> _Encoded:
        per_layer = encoders.encode_layers(
            spec, self.paths, model_path=model_path, layers=layers, num_workers=num_workers,
            progress=progress, **common,
        )  # fmt: skip
        return _Encoded(per_layer)

    def metadata(self) -> dict[str, Any]:
        return {}


class _VideoInputs(_ImageInputs):
    """Image spaces over videos: frames sampled at ``frame_rate``, one row per frame."""

    def __init__(self, spec, stim_ids, image_paths, image_sha256, frame_rate) -> None:
        super().__init__(spec, stim_ids, image_paths, image_sha256)
        self.frame_rate = float(frame_rate)
        self.cache_part.append(["frame_rate", self.frame_rate])

    def encode(self, spec, model_path, layers, common, num_workers, progress) -> _Encoded:
        per_layer, row_ids, times = _encode_video_layers(
            spec, self.stim_ids, self.paths, model_path, layers, self.frame_rate, progress, common
        )
        return _Encoded(per_layer, row_ids, times)

    def metadata(self) -> dict[str, Any]:
        return {
            "frame_rate": self.frame_rate,
            "aggregation": "one row per frame; averaged within each TR by the design",
        }


def _stimulus_inputs(
    spec, stim_ids, image_paths, image_sha256, captions, frame_rate, n_context, context="causal"
):
    """What a feature space embeds, by its modality and the kind of its stimuli."""
    if spec.modality == "text":
        if _are_stories(spec, stim_ids, image_paths):
            return _StoryInputs(spec, stim_ids, image_paths, image_sha256, n_context, context)
        return _CaptionInputs(spec, stim_ids, captions)
    if _are_videos(spec, stim_ids, image_paths):
        return _VideoInputs(spec, stim_ids, image_paths, image_sha256, frame_rate)
    return _ImageInputs(spec, stim_ids, image_paths, image_sha256)


def _story_timings(stim_id: str, path: Path) -> tuple[list[str], np.ndarray]:
    """Words and onsets of a transcript (``.txt`` + timings), or of events that carry words."""
    if stimulus_kind(stim_id) == "words":
        return read_event_words(path)
    words, onsets, _ = read_word_timings(path)
    return words, onsets


def _kind(stim_id: str, paths: Mapping[str, Path] | None) -> str | None:
    """A stimulus's kind, from its file when its name has no extension."""
    return stimulus_kind(stim_id, (paths or {}).get(stim_id))


def _are_stories(
    spec: FeatureSpaceSpec, stim_ids: Sequence[str], paths: Mapping[str, Path] | None
) -> bool:
    """Whether a text space embeds stories (transcripts, words in events) or captions (none)."""
    n_texts = sum(_kind(stim_id, paths) in ("text", "words") for stim_id in stim_ids)
    if 0 < n_texts < len(stim_ids):
        raise DataError(
            f"feature space {spec.name!r}: {n_texts} transcript (.txt) and "
            f"{len(stim_ids) - n_texts} other stimuli; run stories and other stimuli as separate tasks"
        )
    return n_texts > 0


def _are_videos(
    spec: FeatureSpaceSpec, stim_ids: Sequence[str], paths: Mapping[str, Path] | None
) -> bool:
    """Whether an image space embeds videos (all stimuli) or images (none); both is an error."""
    kinds = {stim_id: _kind(stim_id, paths) for stim_id in stim_ids}
    n_videos = sum(kind == "video" for kind in kinds.values())
    if 0 < n_videos < len(stim_ids):
        images = [s for s, kind in kinds.items() if kind != "video"]
        raise DataError(
            f"feature space {spec.name!r}: {n_videos} video and {len(images)} other stimuli "
            f"(first: {_first(images)}); run images and videos as separate tasks"
        )
    return n_videos > 0


def _encode_video_layers(
    spec: FeatureSpaceSpec,
    stim_ids: tuple[str, ...],
    paths: list[Path],
    model_path: Path,
    layers: list[Any],
    frame_rate: float,
    progress: bool,
    common: dict[str, Any],
) -> tuple[dict[Any, np.ndarray], tuple[str, ...], np.ndarray]:
    """Frames of every video through the image model, batch by batch (one model load).

    Returns the per-layer features (n_frames_total, d), each row's stimulus id and its time
    (s) from the start of its video.
    """
    from tqdm.auto import tqdm

    from bids_vem.features.video import iter_frames

    per_layer: dict[Any, list[np.ndarray]] = {layer: [] for layer in layers}
    row_ids: list[str] = []
    times: list[float] = []

    def flush(frames: list[Any]) -> None:
        encoded = encoders.encode_layers(
            spec, frames, model_path=model_path, layers=layers, progress=False, **common
        )
        for layer in layers:
            per_layer[layer].append(encoded[layer])

    bar = tqdm(total=len(paths), desc=f"{spec.name} (videos)", unit="video", disable=not progress)
    for stim_id, path in zip(stim_ids, paths, strict=True):
        frames: list[Any] = []
        for time_s, frame in iter_frames(path, frame_rate):
            frames.append(frame)
            row_ids.append(stim_id)
            times.append(time_s)
            if len(frames) == common["batch_size"]:
                flush(frames)
                frames = []
        if frames:
            flush(frames)
        bar.update()
    bar.close()
    values = {layer: np.concatenate(parts).astype(np.float32) for layer, parts in per_layer.items()}
    return values, tuple(row_ids), np.asarray(times, dtype=np.float64)


def write_feature_derivatives(
    feature_set: FeatureSet, output_dir: Path, sources: Mapping[str, str] | None = None
) -> list[Path]:
    """Write ``OUTPUT_DIR/features/desc-<name>_features.{npy,tsv,json}`` atomically.

    The ``.npy`` holds the float32 matrix (n_stimuli, n_features); the ``.tsv`` its stimulus
    index (``row``, 0-based, and ``stim_id``); the ``.json`` sidecar describes the model,
    weights hash, preprocessing and sources.

    Returns
    -------
    list of Path
        The three files, in the order npy, tsv, json.

    Raises
    ------
    UsageError
        The feature-space name is not BIDS-safe (letters and digits).
    OutputError
        A file cannot be written (exit 73).
    """
    name = feature_set.name
    if not is_label(name):
        raise UsageError(f"feature space name {name!r} must be letters and digits only")
    bad = [s for s in feature_set.stim_ids if "\t" in s or "\n" in s or "\r" in s]
    if bad:
        raise UsageError(
            f"feature space {name!r}: stimulus ids with tabs or newlines: {_first(bad)}"
        )
    folder = Path(output_dir) / "features"
    npy, tsv, sidecar = (
        folder / derivative_name({"desc": name}, "features", ext)
        for ext in (".npy", ".tsv", ".json")
    )
    meta = feature_set.metadata
    description = {
        "Description": (
            f"Features of the {feature_set.modality} feature space '{name}': "
            + (
                "one row per timed sample, a story's word or a video's frame "
                f"(rows and their times in {tsv.name})"
                if feature_set.timed
                else f"one row per stimulus (rows listed in {tsv.name})"
            )
            + f", from model spec '{feature_set.spec}'."
            + (
                f" {str(meta['aggregation'])[0].upper()}{str(meta['aggregation'])[1:]}."
                if meta.get("aggregation") and feature_set.timed
                else " Each row is the mean of the embeddings of the stimulus's captions."
                if feature_set.modality == "text"
                else ""
            )
        ),
        "Context": meta.get("context"),
        "ContextWords": meta.get("n_context"),
        "FeatureSpace": name,
        "ModelSpec": feature_set.spec,
        "Modality": feature_set.modality,
        "ModelFamily": meta.get("family"),
        "ModelPath": meta.get("model_path"),
        "WeightsSHA256": meta.get("weights_sha256"),
        "Architecture": meta.get("architecture"),
        "QuickGELU": meta.get("quick_gelu"),
        "ConfigSource": meta.get("config_source"),
        "Preprocessing": meta.get("preprocessing"),
        "NStimuli": len(dict.fromkeys(feature_set.stim_ids)),
        "FrameRate": meta.get("frame_rate"),
        "NFeatures": feature_set.n_features,
        "CaptionsPerStimulus": meta.get("n_captions"),
        "Layer": meta.get("layer"),
        "TokenPooling": meta.get("pool"),
        "Precision": meta.get("precision"),
        "SoftwareVersions": meta.get("versions"),
        # where each stimulus was read (BIDS URIs); without a map, BIDS_DIR/stimuli/<stim_id>
        "Sources": list(
            dict.fromkeys(
                sources[s] if sources is not None else f"bids:raw:stimuli/{s}"
                for s in feature_set.stim_ids
                if sources is None or s in sources
            )
        ),
    }
    description = {k: v for k, v in description.items() if v is not None}
    if feature_set.timed:  # video frames: each row's time from the start of its video
        header = "row\tstim_id\ttime\n"
        rows = "".join(
            f"{i}\t{s}\t{t:.6f}\n"
            for i, (s, t) in enumerate(zip(feature_set.stim_ids, feature_set.times, strict=True))
        )
    else:
        header = "row\tstim_id\n"
        rows = "".join(f"{i}\t{s}\n" for i, s in enumerate(feature_set.stim_ids))
    try:
        with atomic_path(npy) as tmp, open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(feature_set.values, dtype=np.float32))
        write_text_atomic(tsv, header + rows)
        write_text_atomic(sidecar, json.dumps(description, indent=2, default=str) + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write feature files under {folder}: {exc}") from exc
    return [npy, tsv, sidecar]
