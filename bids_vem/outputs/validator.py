"""Run the BIDS schema validator (``bids-validator-deno``) on OUTPUT_DIR, offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bids_vem.errors import InputMissingError, IOFailure

__all__ = ["VALIDATOR", "find_validator", "validate_derivatives", "validate_raw"]

VALIDATOR = "bids-validator-deno"


def find_validator() -> Path:
    """The validator executable: beside ``sys.executable`` (the venv), else on PATH.

    Raises
    ------
    InputMissingError
        Not installed.
    """
    beside = Path(sys.executable).parent / VALIDATOR
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(VALIDATOR)
    if found:
        return Path(found)
    raise InputMissingError(
        f"{VALIDATOR} not found beside {sys.executable} or on PATH; "
        f"install it with 'pip install {VALIDATOR}'"
    )


def validate_derivatives(
    output_dir: Path | str, *, ignore_nifti_headers: bool = False, timeout: float = 600
) -> list[str]:
    """Validate a bids_vem derivative dataset; returns its errors (empty: valid).

    See :func:`validate_raw` for the input dataset.
    """
    return _validate(output_dir, "derivative", ignore_nifti_headers, timeout)


def validate_raw(
    bids_dir: Path | str, *, ignore_nifti_headers: bool = False, timeout: float = 3600
) -> list[str]:
    """Validate the input (raw) BIDS dataset; returns its errors (empty: valid).

    Same as :func:`validate_derivatives` with ``--datasetTypes raw``; the derivatives
    folder inside it is not validated.
    """
    return _validate(bids_dir, "raw", ignore_nifti_headers, timeout)


def _validate(
    output_dir: Path | str, dataset_type: str, ignore_nifti_headers: bool, timeout: float
) -> list[str]:
    """Validate one dataset; returns its errors (empty: valid).

    Runs ``bids-validator-deno --datasetTypes <dataset_type> --format json`` with the schema
    bundled in the validator (``BIDS_SCHEMA`` is removed from its environment, so nothing
    is downloaded). Warnings are not returned.

    Parameters
    ----------
    output_dir : path
        The dataset root (holding dataset_description.json).
    ignore_nifti_headers : bool
        Pass ``--ignoreNiftiHeaders``.
    timeout : float
        Seconds before the validator is stopped.

    Returns
    -------
    list of str
        One ``"CODE location"`` per error (``"CODE location (subCode)"`` when it has one).

    Raises
    ------
    InputMissingError
        The validator is not installed or ``output_dir`` does not exist.
    IOFailure
        The validator crashed or its output cannot be read.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise InputMissingError(f"{output_dir}: not a directory, nothing to validate")
    executable = find_validator()
    env = {k: v for k, v in os.environ.items() if k != "BIDS_SCHEMA"}
    env.setdefault("DENO_NO_UPDATE_CHECK", "1")
    with tempfile.TemporaryDirectory(prefix="bids_vem_validator_") as tmp:
        report = Path(tmp) / "report.json"
        command = [
            str(executable),
            "--format",
            "json",
            "--datasetTypes",
            dataset_type,
            "--no-color",
            "-o",
            str(report),
        ]
        if ignore_nifti_headers:
            command.append("--ignoreNiftiHeaders")
        command.append(str(output_dir))
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise IOFailure(
                f"{VALIDATOR} did not finish within {timeout:g} s on {output_dir}"
            ) from exc
        # exit 16 means "errors found"; any other non-zero code is a crash
        if done.returncode not in (0, 16) or not report.exists():
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise IOFailure(
                f"{VALIDATOR} failed on {output_dir} (exit {done.returncode}): {last[0]}"
            )
        try:
            issues = json.loads(report.read_text(encoding="utf-8"))["issues"]["issues"]
        except (ValueError, KeyError, TypeError) as exc:
            raise IOFailure(
                f"cannot read the report of {VALIDATOR} on {output_dir}: {exc}"
            ) from exc
    errors = []
    for issue in issues:
        if issue.get("severity") != "error":
            continue
        text = f"{issue.get('code')} {issue.get('location', '')}".strip()
        if issue.get("subCode"):
            text += f" ({issue['subCode']})"
        errors.append(text)
    return sorted(set(errors))
