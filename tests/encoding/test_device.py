"""Device resolution and thread limits."""

from __future__ import annotations

import pytest
import torch

from bids_vem.encoding.device import limit_threads, resolve_device
from bids_vem.errors import UsageError


def test_cpu_and_auto_without_cuda(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UsageError, match="no CUDA device") as info:
        resolve_device("cuda:0")
    assert info.value.exit_code == 64


def test_cuda_index_is_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda:0")
    assert resolve_device("CUDA:1") == torch.device("cuda:1")
    with pytest.raises(UsageError, match="2 CUDA device"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "mps0", ""])
def test_unknown_spellings(spec):
    with pytest.raises(UsageError, match="--device"):
        resolve_device(spec)


def test_limit_threads_restores_the_setting():
    before = torch.get_num_threads()
    with limit_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(UsageError, match="omp-nthreads"):
        with limit_threads(0):
            pass
