"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: real data written by others, beside the project (absent in a user's own clone)
SHARED_FIXTURES = Path(
    os.environ.get(
        "BIDS_VEM_SHARED_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures"
    )
)

# never reach a model hub from the tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _devices() -> list[str]:
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=_devices())
def device(request) -> str:
    """The torch devices of this machine: cpu, and cuda where a GPU is present."""
    return request.param


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """Path of ``../shared/fixtures``; skips the test when the folder is absent."""
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {SHARED_FIXTURES}")
    return SHARED_FIXTURES


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory):
    """The demo dataset with 3 participants x 4 runs (generated once per test session)."""
    from bids_vem.demo import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo_e2e"), n_subjects=3, n_runs=4)
