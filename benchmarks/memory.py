"""Process memory figures of the benchmarks (Linux ``/proc/self``)."""

from __future__ import annotations

from pathlib import Path


def status_mb(field: str) -> float:
    """A memory line of /proc/self/status (``VmRSS``, ``VmHWM``...) in MB; NaN elsewhere."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return float("nan")
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    return float("nan")


def reset_peak_rss() -> None:
    """Reset the peak RSS (VmHWM) to the current RSS.

    ``ru_maxrss`` cannot be reset and is even inherited from the parent process across exec.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
