"""Content-addressed feature cache: a rerun with the same model and stimuli recomputes nothing.

The key is a SHA-256 over everything that changes the numbers: the spec, the weights hash,
the preprocessing, the major versions of the libraries that compute the features, and the
stimuli (content hashes of images, or the caption texts). Values are FeatureSet ``.npz`` files
under ``CACHE_DIR/<key[:2]>/<key>.npz``, written to a unique temporary name and renamed, so
two processes filling the cache at once never see a partial file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from bids_vem.features.feature_set import FeatureSet, load_feature_set, save_feature_set

__all__ = ["cache_key", "FeatureCache"]

logger = logging.getLogger(__name__)


def cache_key(parts: dict[str, Any]) -> str:
    """SHA-256 (hex) of ``parts`` as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class FeatureCache:
    """A folder of FeatureSets keyed by :func:`cache_key`.

    Parameters
    ----------
    cache_dir : Path
        Folder of the cache (created on first ``put``), typically ``WORK_DIR/features``.
    """

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)

    def path(self, key: str) -> Path:
        """File that holds ``key``."""
        return self.cache_dir / key[:2] / f"{key}.npz"

    def get(self, key: str) -> FeatureSet | None:
        """The cached FeatureSet of ``key``, or None (absent or unreadable: recomputed)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return load_feature_set(path)
        except Exception as exc:  # noqa: BLE001 - a damaged entry is a miss, not a failure
            logger.warning("feature cache entry %s unreadable (%s); recomputing", path, exc)
            return None

    def put(self, key: str, feature_set: FeatureSet) -> Path:
        """Store ``feature_set`` under ``key`` atomically; returns the file."""
        feature_set = dataclasses.replace(
            feature_set, metadata={**feature_set.metadata, "cache_key": key}
        )
        return save_feature_set(feature_set, self.path(key))
