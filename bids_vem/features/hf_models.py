"""Locating Hugging Face ``transformers`` models on this machine, never downloading.

An ``hf:`` model is given either as a local ``save_pretrained`` folder (a path) or as a hub id
(``Salesforce/blip-image-captioning-large``). A hub id is looked up, first hit wins, in:

1. each ``--model-dir`` folder (``model_dirs``), then each folder of ``$BIDS_VEM_MODEL_DIR``:
   ``<dir>/<id>`` (``<dir>/Salesforce/blip-image-captioning-large``), ``<dir>/<base name>``
   (``<dir>/blip-image-captioning-large``), and ``<dir>`` as a hub cache
   (``<dir>/models--Salesforce--blip-image-captioning-large``);
2. the local Hugging Face hub caches: ``$HF_HUB_CACHE``, ``$HF_HOME/hub`` and
   ``~/.cache/huggingface/hub`` (``models--org--name/snapshots/<rev>``, the revision named by
   ``refs/main``, else the newest snapshot).

A folder counts as a model only with a ``config.json`` and a weights file
(``*.safetensors``, ``pytorch_model*.bin`` or a sharded index), so an interrupted download is
reported as missing rather than failing later inside ``from_pretrained``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bids_vem.config import option_name
from bids_vem.errors import InputMissingError, UsageError
from bids_vem.features.models import hf_cache_dirs, model_search_dirs
from bids_vem.features.specs import is_path_like

__all__ = ["HF_PREFIX", "hf_cache_dirs", "is_hf_model_dir", "resolve_hf_model"]

HF_PREFIX = "hf:"

_HOW_TO_PROVIDE = (
    "Provide the weights offline: `huggingface-cli download <repo-id> --local-dir DIR/<repo-id>` "
    f"(or save_pretrained into that folder) and pass DIR with {option_name('model_dirs')}, or give the folder path."
)


def is_hf_model_dir(path: Path) -> bool:
    """Whether ``path`` is a complete ``save_pretrained`` folder (config.json + weights)."""
    if not (path.is_dir() and (path / "config.json").is_file()):
        return False
    patterns = (
        "*.safetensors",
        "pytorch_model*.bin",
        "*.safetensors.index.json",
        "*.bin.index.json",
    )
    return any(any(path.glob(pattern)) for pattern in patterns)


def _cached_snapshot(cache_dir: Path, repo_id: str) -> tuple[Path, Path | None]:
    """(the repo folder in a hub cache, its snapshot of ``refs/main`` or newest, or None)."""
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return repo, None
    ref = repo / "refs" / "main"
    if ref.is_file():
        revision = ref.read_text(encoding="utf-8").strip()
        if revision and (snapshots / revision).is_dir():
            return repo, snapshots / revision
    found = sorted(
        (p for p in snapshots.iterdir() if p.is_dir()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    complete = [p for p in found if is_hf_model_dir(p)]
    return repo, (complete or found or [None])[0]


def resolve_hf_model(model: str, model_dirs: Sequence[Path | str] = ()) -> Path:
    """Find the local folder of a transformers model (search order in the module docstring).

    Parameters
    ----------
    model : str
        A local ``save_pretrained`` folder (``/models/blip``, ``./blip``, ``~/blip``) or a hub id
        (``Salesforce/blip-image-captioning-large``), with or without the ``hf:`` prefix.
    model_dirs : sequence of path
        The ``--model-dir`` folders, searched in order before ``$BIDS_VEM_MODEL_DIR`` and the
        Hugging Face caches.

    Returns
    -------
    Path
        An absolute model folder with ``config.json`` and weights.

    Raises
    ------
    UsageError
        An empty model name (exit 64).
    InputMissingError
        Not found or incomplete (exit 66); the one-line message lists every path tried and how
        to provide the weights.
    """
    name = model[len(HF_PREFIX) :] if model.startswith(HF_PREFIX) else model
    name = name.strip()
    if not name:
        raise UsageError(f"model {model!r}: empty model name (give a folder or a hub id)")
    tried: list[Path] = []
    label = f"{HF_PREFIX}{name}"
    path = Path(name).expanduser()
    if is_path_like(name) or path.is_dir():
        if is_hf_model_dir(path):
            return path.resolve()
        what = (
            "incomplete model folder (needs config.json and weights)"
            if path.is_dir()
            else ("model folder")
        )
        raise InputMissingError(
            f"model {label}: {what} not found; looked in: {path}. {_HOW_TO_PROVIDE}"
        )
    base = name.rstrip("/").split("/")[-1]
    names = list(dict.fromkeys([name, base]))
    dirs = model_search_dirs(model_dirs)
    for directory in dirs:
        for candidate_name in names:
            candidate = directory / candidate_name
            tried.append(candidate)
            if is_hf_model_dir(candidate):
                return candidate.resolve()
    # --model-dir folders may themselves be hub caches (HF_HUB_CACHE copied into an image)
    for cache in [*dirs, *hf_cache_dirs()]:
        repo, snapshot = _cached_snapshot(cache, name)
        tried.append(snapshot or repo)
        if snapshot is not None and is_hf_model_dir(snapshot):
            return snapshot.resolve()
    places = (
        "; ".join(str(t) for t in tried)
        or f"(nowhere: no {option_name('model_dirs')} and no hub id)"
    )
    raise InputMissingError(
        f"model {label}: transformers model folder (config.json + weights) not found; "
        f"looked in: {places}. {_HOW_TO_PROVIDE}"
    )
