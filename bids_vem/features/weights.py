"""Where model weights are on this machine, offline first, and what identifies them.

Shared by every model family (:mod:`bids_vem.features.families`) and the captioners: the
folders searched (``--model-dir``, ``$BIDS_VEM_MODEL_DIR``, the Hugging Face caches),
offline mode, the "not found" message, content hashes of weights, and library versions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path, PurePath
from typing import Any

from bids_vem.config import option_name
from bids_vem.errors import DataError, InputMissingError
from bids_vem.inputs.stimuli import file_sha256

__all__ = [
    "MODEL_DIR_ENV",
    "hf_cache_dirs",
    "hf_cached_file",
    "hf_snapshot",
    "find_in_folders",
    "is_path_like",
    "library_versions",
    "model_search_dirs",
    "not_found",
    "numeric_versions",
    "offline_mode",
    "read_json",
    "weights_sha256",
]

MODEL_DIR_ENV = "BIDS_VEM_MODEL_DIR"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")

_HOW_TO_PROVIDE = (
    "Provide the weights offline: download them with `huggingface-cli download <repo> "
    f"--local-dir DIR` (or save_pretrained / model.save into DIR) and pass DIR with {option_name('model_dirs')} "
    "or give the folder or file path in the spec."
)


def is_path_like(value: str) -> bool:
    """Whether ``value`` is written as a filesystem path rather than a name or a tag.

    Absolute paths, ``./``, ``../`` and ``~`` prefixes, and names ending in a weights suffix
    (``.safetensors``, ``.bin``, ``.pt``...) are paths; ``org/name`` is a hub-style name.
    """
    return (
        value.startswith(("/", "./", "../", "~", "\\"))
        or PurePath(value).is_absolute()
        or value.lower().endswith(WEIGHT_SUFFIXES)
    )


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


def hf_snapshot(cache_dir: Path, repo_id: str) -> Path | None:
    """The cached snapshot folder of ``repo_id`` in a hub cache, without any network access."""
    if not (cache_dir / f"models--{repo_id.replace('/', '--')}").is_dir():
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not usable from the cache"
        return None


def hf_cached_file(cache_dir: Path, repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
    except Exception:  # noqa: BLE001 - malformed cache entries count as absent
        return None
    return Path(found) if isinstance(found, str) else None


def not_found(spec: Any, tried: Sequence[Path | str], what: str) -> InputMissingError:
    """The error for weights not found: every place tried, and how to provide them."""
    places = "; ".join(str(t) for t in tried) if tried else "(nowhere: no candidate paths)"
    return InputMissingError(
        f"feature space {spec.text!r}: {what} not found; looked in: {places}. {_HOW_TO_PROVIDE}"
    )


def find_in_folders(
    dirs: Sequence[Path], names: Sequence[str], is_model: Any, tried: list[Path | str]
) -> Path | None:
    """The first ``DIR/NAME`` (dirs in order, then names) that ``is_model`` accepts.

    Every candidate is appended to ``tried``, for the "not found" message.
    """
    for directory in dirs:
        for name in names:
            candidate = Path(directory) / name
            tried.append(candidate)
            if is_model(candidate):
                return candidate.resolve()
    return None


def read_json(path: Path) -> dict:
    """A JSON file's object, or DataError (65) naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from exc


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


def numeric_versions(packages: Sequence[str]) -> dict[str, str | None]:
    """Major versions of the libraries whose upgrade may change the numbers (cache keys).

    ``packages`` are keys of :func:`library_versions` (a family's ``packages``).
    """
    versions = library_versions()
    return {n: (versions.get(n) or "none").split(".")[0] for n in packages}
