"""Run a parsed configuration: check the paths, build the workflow, run it, return an exit code."""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from datetime import datetime
from pathlib import Path

from bids_vem import __version__, errors
from bids_vem._utils import inside
from bids_vem.config import RunConfig
from bids_vem.errors import (
    BIDSValidationError,
    BidsVemError,
    InputMissingError,
    OutputError,
    UsageError,
)

__all__ = ["run", "check_paths", "validate_bids_dir"]

logger = logging.getLogger(__name__)


def check_paths(config: RunConfig) -> None:
    """Refuse runs that would read nothing or write into the raw dataset."""
    bids_dir, output_dir, work_dir = config.bids_dir, config.output_dir, config.resolved_work_dir
    if not bids_dir.is_dir():
        raise InputMissingError(
            f"BIDS_DIR {bids_dir} does not exist or is not a folder (in a container, check the bind mounts)"
        )
    if output_dir.resolve() == bids_dir.resolve():
        raise UsageError(
            f"OUTPUT_DIR must differ from BIDS_DIR ({bids_dir}): e.g. {bids_dir}/derivatives/bids_vem"
        )
    derivatives = bids_dir / "derivatives"
    if inside(output_dir, bids_dir) and not inside(output_dir, derivatives):
        raise UsageError(
            f"OUTPUT_DIR {output_dir} is inside BIDS_DIR: bids_vem never writes into the raw dataset; "
            f"use {derivatives}/bids_vem or a folder outside it"
        )
    if inside(work_dir, bids_dir):
        raise UsageError(
            f"the work directory {work_dir} is inside BIDS_DIR {bids_dir}: give -w outside it"
        )
    if config.captions is not None and not config.captions.is_file():
        raise InputMissingError(f"--captions {config.captions}: no such file")


def validate_bids_dir(bids_dir: Path) -> None:
    """Run bids-validator-deno on BIDS_DIR; raise BIDSValidationError (exit 16) on errors."""
    from bids_vem.outputs.validator import find_validator, validate_raw

    try:
        find_validator()
    except InputMissingError as err:
        logger.warning("BIDS_DIR is not validated: %s", err)
        return
    logger.info(
        "validating %s with bids-validator-deno (skip with --skip-bids-validation)", bids_dir
    )
    errors = validate_raw(bids_dir)
    if errors:
        shown = "; ".join(errors[:5])
        raise BIDSValidationError(
            f"BIDS_DIR {bids_dir} failed BIDS validation with {len(errors)} error(s): {shown}"
            " (fix them, or rerun with --skip-bids-validation)"
        )


def _make_dir(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the {what} {path}: {err.strerror}") from err
    if not os.access(path, os.W_OK):
        raise OutputError(f"the {what} {path} is not writable (in a container, bind it read-write)")


def _remove_what_killed_runs_left(output_dir: Path) -> None:
    """Hidden temporaries of runs that were killed (on this host) are removed before anything
    is written: they were never outputs, and a resumed run writes each file anew."""
    from bids_vem.outputs.atomic import remove_stale_temporaries

    removed = remove_stale_temporaries(output_dir)
    if removed:
        logger.info(
            "removed %d unfinished file(s) of an interrupted run from %s (e.g. %s)",
            len(removed),
            output_dir,
            removed[0].name,
        )


def run(config: RunConfig) -> int:
    """Run one level of analysis; returns the exit code."""
    started = time.time()
    run_id = f"{datetime.now():%Y%m%d-%H%M%S}_{uuid.uuid4().hex[:8]}"
    check_paths(config)
    _make_dir(config.output_dir, "output directory")
    if not config.allow_downloads:  # offline unless the user allows downloads
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logger.info("bids_vem %s, run %s, %s level", __version__, run_id, config.analysis_level)
    _remove_what_killed_runs_left(config.output_dir)

    if config.analysis_level == "group":
        from bids_vem.workflows.group import run_group_level

        run_group_level(config)
        logger.info(
            "group level done in %.0f s: %s",
            time.time() - started,
            config.output_dir / "group" / "group.html",
        )
        return 0

    if not config.skip_bids_validation:
        validate_bids_dir(config.bids_dir)
    work_dir = config.resolved_work_dir
    if config.clean_workdir and work_dir.exists():
        logger.info("emptying the work directory %s (--clean-workdir)", work_dir)
        shutil.rmtree(work_dir)
    _make_dir(work_dir, "work directory")
    return _run_participant_level(config, run_id, started)


def _run_participant_level(config: RunConfig, run_id: str, started: float) -> int:
    from bids_vem.outputs.dataset import write_run_config
    from bids_vem.workflows.participant import init_participant_wf, workflow_name
    from bids_vem.workflows.plan import plan_participant_level

    # one folder per participant selection: array jobs into one work dir never collide
    name = workflow_name(config.participant_label)
    plan = plan_participant_level(config, config.resolved_work_dir / name)
    logger.info(
        "participant level: %d participant(s), %d run group(s), %d feature space(s): %s",
        len(plan.subjects),
        len(plan.run_groups),
        len(plan.feature_spaces),
        ", ".join(fs.name for fs in plan.feature_spaces),
    )
    write_run_config(config.output_dir, config.to_toml(), run_id)
    wf = init_participant_wf(config, plan, name=name)
    plugin = config.plugin.get("plugin") or ("MultiProc" if config.nprocs > 1 else "Linear")
    plugin_args = dict(config.plugin.get("plugin_args") or {})
    if plugin == "MultiProc":
        plugin_args.setdefault("n_procs", config.nprocs)
        if config.mem_mb:
            plugin_args.setdefault("memory_gb", config.mem_mb / 1024)
        plugin_args.setdefault("raise_insufficient", False)
    _name_the_job_owner()
    crash_dir = config.output_dir / "logs" / "crash" / run_id
    wf.config["execution"]["crashdump_dir"] = str(crash_dir)
    try:
        graph = wf.run(plugin=plugin, plugin_args=plugin_args)
    except RuntimeError as err:
        # nipype reports failed nodes as one RuntimeError; the crash files say why
        error = _error_from_crashes(crash_dir, err)
        _write_failure_reports(config, plan, wf, crash_dir, error, started)
        raise error from err
    n_nodes, n_reused = _count_reused(graph, started)
    if n_reused:
        logger.info(
            "reused %d of %d steps from the work directory %s",
            n_reused,
            n_nodes,
            config.resolved_work_dir,
        )
    for subject in plan.subjects:
        logger.info("report: %s", config.output_dir / f"sub-{subject}.html")
    logger.info("participant level done in %.0f s", time.time() - started)
    return 0


def _name_the_job_owner() -> None:
    """Set ``LOGNAME`` where it is missing: nipype's batch plugins (SLURM, SGE, PBS, LSF,
    Condor) name every job after it and fail with a KeyError without it, as in containers
    started with ``--cleanenv`` or ``docker run -u UID`` (a user with no passwd entry)."""
    if os.environ.get("LOGNAME"):
        return
    try:
        import getpass

        owner = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid
        owner = f"uid{os.getuid()}"
    os.environ["LOGNAME"] = owner


def _write_failure_reports(config, plan, wf, crash_dir: Path, error, started: float) -> None:
    """A report for every participant whose outputs were not written by this run: the
    error, the crash files of its steps (and of shared steps), and what finished."""
    import sys

    from bids_vem import __version__
    from bids_vem.reports.participant import write_failure_report

    crashes = sorted(crash_dir.glob("crash-*.txt")) if crash_dir.is_dir() else []
    base = Path(wf.base_dir) / wf.name
    for subject in plan.subjects:
        report = config.output_dir / f"sub-{subject}.html"
        if report.is_file() and report.stat().st_mtime >= started:
            continue  # this participant's outputs were written
        # node names carry the run group without dashes (encode_sub01_taskx_space); shared
        # steps (features_*, dataset_outputs) none
        tag = re.compile(rf"(?<![A-Za-z0-9])sub{re.escape(subject)}(?![A-Za-z0-9])")
        mine = [c for c in crashes if tag.search(c.name) or "_sub" not in c.name]
        finished = sorted(
            folder.name
            for folder in (base.iterdir() if base.is_dir() else [])
            if tag.search(folder.name) and any(folder.glob("result_*.pklz"))
        )
        try:
            path = write_failure_report(
                config.output_dir, subject, error=str(error), crash_files=mine,
                finished=finished, command_line=" ".join(["bids_vem", *sys.argv[1:]]),
                version=__version__,
            )  # fmt: skip
            logger.info("report of the failed run: %s", path)
        except OSError as exc:  # the error itself matters more than its report
            logger.warning("no report for sub-%s: %s", subject, exc)


def _count_reused(graph, started: float) -> tuple[int, int]:
    """How many computing steps ran, and how many of them came from the cache."""
    n_nodes = n_reused = 0
    for node in graph.nodes():
        outputs = getattr(node.result, "outputs", None) if node.result is not None else None
        computed_at = getattr(outputs, "computed_at", None) if outputs is not None else None
        if isinstance(computed_at, float):
            n_nodes += 1
            n_reused += computed_at < started
    return n_nodes, n_reused


_ERROR_LINE = re.compile(r"bids_vem\.errors\.(\w+): (.+)$")


def _error_from_crashes(crash_dir: Path, err: Exception) -> BidsVemError:
    """Rebuild the error of the first failed step from its crash file, with its exit code.

    Steps run in other processes; their exceptions reach us only as nipype crash files.
    """
    crashes = (
        sorted(crash_dir.glob("crash-*.txt"), key=lambda p: p.stat().st_mtime)
        if crash_dir.is_dir()
        else []
    )
    where = f" (crash file: {crashes[0]})" if crashes else ""
    for crash in crashes:
        lines = [
            line.strip() for line in crash.read_text(errors="replace").splitlines() if line.strip()
        ]
        for line in reversed(lines):
            match = _ERROR_LINE.search(line)
            if match and hasattr(errors, match.group(1)):
                return getattr(errors, match.group(1))(match.group(2))
        for line in reversed(lines):
            if "Error" in line:
                return BidsVemError(f"a step failed: {line}{where}")
    return BidsVemError(f"the workflow failed: {err}{where}")
