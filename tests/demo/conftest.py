"""Demo datasets shared by the demo tests (generated once per session)."""

from __future__ import annotations

import time

import pytest

from bids_vem.demo import DemoParameters, make_demo_dataset

#: a small dataset for the tests that do not need the default size
SMALL = {
    "n_subjects": 1,
    "n_runs": 2,
    "n_stimuli": 24,
    "parameters": DemoParameters(n_trials_per_run=20),
}


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The default demo (2 subjects, 4 runs, 96 images), seed 0."""
    root = tmp_path_factory.mktemp("demo")
    started = time.perf_counter()
    paths = make_demo_dataset(root)
    # reported, never asserted
    print(f"\ndefault demo generated in {time.perf_counter() - started:.1f} s")
    return paths


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory):
    """A small demo (1 subject, 2 runs, 24 images), seed 3."""
    return make_demo_dataset(tmp_path_factory.mktemp("small"), seed=3, **SMALL)
