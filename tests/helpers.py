"""Helpers shared by test files: builders and thin shortcuts over the pipeline's functions.

Import as ``from tests.helpers import ...`` (pytest runs from the repository root).
"""

from __future__ import annotations

from pathlib import Path

from bids_vem.features.extract import extract_feature_spaces
from bids_vem.features.feature_set import FeatureSet
from bids_vem.features.specs import FeatureSpaceSpec
from bids_vem.inputs.layout import collect_runs_report
from bids_vem.inputs.runs import Run

__all__ = ["collect_runs", "extract_feature_space"]


def collect_runs(bids_dir: Path, **query) -> list[Run]:
    """The runs :func:`collect_runs_report` finds (the sentences of skipped runs dropped)."""
    runs, _ = collect_runs_report(bids_dir, **query)
    return runs


def extract_feature_space(spec: FeatureSpaceSpec, stim_ids, **kwargs) -> FeatureSet:
    """The one feature set of a spec without ``#layers`` (:func:`extract_feature_spaces`)."""
    (feature_set,) = extract_feature_spaces(spec, stim_ids, **kwargs)
    return feature_set
