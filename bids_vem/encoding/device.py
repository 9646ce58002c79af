"""The torch device the encoding stage computes on, and the number of CPU threads it may use."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch

from bids_vem.config import option_name
from bids_vem.errors import UsageError

__all__ = ["resolve_device", "limit_threads"]

_CUDA_SPEC = re.compile(r"^cuda(?::(\d+))?$")


def resolve_device(spec: str | torch.device) -> torch.device:
    """Turn a ``--device`` value into a :class:`torch.device`, checking that it exists.

    Parameters
    ----------
    spec : str or torch.device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns
    -------
    torch.device

    Raises
    ------
    UsageError
        Unknown spelling, or a CUDA device that this machine does not have.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA_SPEC.match(text)
    if match is None:
        raise UsageError(f"{option_name('device')} {spec!r}: expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UsageError(
            f"{option_name('device')} {spec}: no CUDA device is available "
            f"(in a container, pass --gpus all (Docker) or --nv (Apptainer)); use {option_name('device')} cpu"
        )
    index = int(match.group(1)) if match.group(1) is not None else 0
    n_devices = torch.cuda.device_count()
    if index >= n_devices:
        raise UsageError(
            f"{option_name('device')} {spec}: this machine has {n_devices} CUDA device(s) "
            f"(cuda:0..cuda:{n_devices - 1})"
        )
    return torch.device(f"cuda:{index}")


@contextlib.contextmanager
def limit_threads(n_threads: int | None) -> Iterator[None]:
    """Limit torch and BLAS/OpenMP threads to ``n_threads`` inside the block (``--omp-nthreads``).

    The previous settings are restored on exit, so parallel nipype nodes in one process do
    not leak settings into each other. ``None`` leaves everything as it is.

    Examples
    --------
    >>> with limit_threads(2):  # doctest: +SKIP
    ...     result = fit_encoding_model(Xs, Ys, alphas)
    """
    if n_threads is None:
        yield
        return
    if int(n_threads) < 1:
        raise UsageError(f"{option_name('omp_nthreads')} must be at least 1, got {n_threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(int(n_threads))
    try:
        with _blas_limits(int(n_threads)):
            yield
    finally:
        torch.set_num_threads(previous)


def _blas_limits(n_threads: int) -> contextlib.AbstractContextManager:
    # numpy/scipy BLAS pools (nilearn's cleaning runs there); threadpoolctl comes with scikit-learn
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - torch threads are limited all the same
        return contextlib.nullcontext()
    return threadpool_limits(limits=n_threads)
