"""Entry point of the ``bids_vem`` command: parse, run, and map every failure to an exit code."""

from __future__ import annotations

import logging
import sys
import traceback

import click

from bids_vem.errors import BidsVemError

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _verbosity(argv: list[str]) -> int:
    count = 0
    for arg in argv:
        if arg in ("--verbose",):
            count += 1
        elif arg.startswith("-") and not arg.startswith("--") and set(arg[1:]) == {"v"}:
            count += len(arg) - 1
    return count


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (tests and notebooks swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; always stderr
        pass


def setup_logging(verbosity: int) -> None:
    """Log lines ``HH:MM:SS | level | message`` to stderr; -v adds detail, -vv debug."""
    level = logging.INFO if verbosity <= 1 else logging.DEBUG
    handler = _StderrHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s | %(levelname)-7s | %(message)s", "%H:%M:%S")
    )
    if verbosity < 2:
        # nipype logs failed steps with their traceback; we report one line (crash files keep it)
        handler.addFilter(
            lambda record: (
                not (record.name.startswith("nipype") and record.levelno >= logging.ERROR)
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("bids_vem").setLevel(level)
    # nipype speaks in its own words (node names, hashes): only with -v, through our handler
    from nipype import config as nipype_config
    from nipype import logging as nipype_logging

    nipype_level = "INFO" if verbosity >= 1 else "WARNING"
    for key in ("workflow_level", "interface_level", "utils_level"):
        nipype_config.set("logging", key, nipype_level)
    nipype_logging.update_logging(nipype_config)
    # nipype's own handler (on "nipype", bound to the sys.stdout of import time) is replaced by ours
    for name in (
        "nipype",
        "nipype.workflow",
        "nipype.interface",
        "nipype.utils",
        "nipype.filemanip",
    ):
        nipype_logger = logging.getLogger(name)
        nipype_logger.handlers[:] = []
        nipype_logger.propagate = True


def _fail(message: str, code: int) -> int:
    click.echo(f"bids_vem: error: {message}", err=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    from bids_vem.cli.parser import cli, expand_list_options

    argv = list(sys.argv[1:] if argv is None else argv)
    verbosity = _verbosity(argv)
    # "bids_vem models list|verify|fetch"; "bids_vem models OUT participant" is a BIDS_DIR named models
    if argv[:1] == ["models"] and (
        len(argv) == 1 or argv[1] in ("list", "verify", "fetch", "-h", "--help")
    ):
        return _run_models(argv[1:], verbosity)
    try:
        try:
            config = cli.main(
                args=expand_list_options(argv), prog_name="bids_vem", standalone_mode=False
            )
        except click.exceptions.Exit as exit_:
            return int(exit_.exit_code)
        except click.exceptions.Abort:
            return _fail("aborted", 130)
        except click.UsageError as err:
            # click says "Try 'bids_vem -h'" on its own line; keep ours to one
            return _fail(f"{err.format_message()} (see bids_vem --help)", 64)
        if isinstance(config, int):  # --help under standalone_mode=False
            return config
        setup_logging(config.verbosity)
        # before torch, matplotlib and transformers are imported: they read HOME once
        from bids_vem.cli.environment import prepare_environment

        prepare_environment(config.resolved_work_dir, bids_dir=config.bids_dir)
        from bids_vem.cli.workflow import run

        return run(config)
    except BidsVemError as err:
        if verbosity >= 2:
            traceback.print_exc()
        return _fail(str(err), err.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except MemoryError:
        if verbosity >= 2:
            traceback.print_exc()
        return _fail("out of memory: lower --nprocs or set --mem", 75)
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if verbosity >= 2:
            traceback.print_exc()
        return _fail(
            f"unexpected {type(err).__name__}: {err} (rerun with -vv for the traceback and report it)",
            1,
        )


def _run_models(argv: list[str], verbosity: int) -> int:
    """``bids_vem models list|verify ...``: which model specs resolve on this machine."""
    from bids_vem.cli.models import models_cli

    try:
        models_cli.main(args=argv, prog_name="bids_vem models", standalone_mode=False)
    except click.exceptions.Exit as exit_:
        return int(exit_.exit_code)
    except click.UsageError as err:
        return _fail(f"{err.format_message()} (see bids_vem models --help)", 64)
    except BidsVemError as err:
        if verbosity >= 2:
            traceback.print_exc()
        return _fail(str(err), err.exit_code)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
