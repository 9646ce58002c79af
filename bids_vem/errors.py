"""Exception types of bids_vem.

Every error a user can cause carries the exit code of the BIDS-Apps execution
specification and a one-line message that names the file or option at fault.
The CLI prints ``str(error)`` and exits with ``error.exit_code``; nothing else
needs to know about exit codes. Each type also derives from the closest builtin
exception, so library callers can catch ``ValueError`` or ``FileNotFoundError``.
"""

from __future__ import annotations

__all__ = [
    "BidsVemError",
    "UsageError",
    "BIDSValidationError",
    "UnknownLevelError",
    "NoMatchError",
    "DataError",
    "InputMissingError",
    "OutputError",
    "IOFailure",
    "TemporaryFailure",
]


class BidsVemError(Exception):
    """Base of every error bids_vem raises on purpose (exit code 1: unspecified)."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        # one line: the CLI prints it as is
        super().__init__(" ".join(str(message).split("\n")).strip())

    @property
    def message(self) -> str:
        return str(self)


class UsageError(BidsVemError, ValueError):
    """The command was used incorrectly (exit 64)."""

    exit_code = 64


class BIDSValidationError(BidsVemError):
    """The input dataset failed BIDS validation (exit 16)."""

    exit_code = 16


class UnknownLevelError(BidsVemError, ValueError):
    """The analysis level is neither participant nor group (exit 17)."""

    exit_code = 17


class NoMatchError(BidsVemError, LookupError):
    """Entity filters selected no files (exit 18)."""

    exit_code = 18


class DataError(BidsVemError, ValueError):
    """Input present but wrong: mismatched TR, NaN-only BOLD, bad events (exit 65)."""

    exit_code = 65


class InputMissingError(BidsVemError, FileNotFoundError):
    """Input missing or unreadable: stimuli, derivatives, model weights (exit 66)."""

    exit_code = 66


class OutputError(BidsVemError, OSError):
    """The output cannot be created (exit 73)."""

    exit_code = 73


class IOFailure(BidsVemError, OSError):
    """Reading or writing failed part-way (exit 74)."""

    exit_code = 74


class TemporaryFailure(BidsVemError):
    """A temporary failure: retrying may succeed (exit 75)."""

    exit_code = 75
