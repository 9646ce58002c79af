"""``python -m bids_vem.demo ROOT``: write the demo dataset and say where everything is."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from bids_vem.errors import BidsVemError, UsageError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 64, one line) instead of exiting with 2."""

    def error(self, message: str):
        raise UsageError(f"python -m bids_vem.demo: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m bids_vem.demo",
        description=(
            "Write a small simulated BIDS dataset (images, captions, BOLD with fMRIPrep-style "
            "derivatives), a random-weight image model and the ground truth under ROOT."
        ),
    )
    parser.add_argument("root", type=Path, metavar="ROOT", help="folder to write")
    parser.add_argument("--subjects", type=int, default=2, help="participants (default 2)")
    parser.add_argument("--runs", type=int, default=4, help="runs per participant (default 4)")
    parser.add_argument("--stimuli", type=int, default=96, help="distinct images (default 96)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a previous demo under ROOT"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    # a terminal user wants the summary, not the model-loading progress bars
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from bids_vem.demo.simulate import make_demo_dataset

    try:
        args = _parser().parse_args(argv)
        started = time.perf_counter()
        paths = make_demo_dataset(
            args.root,
            n_subjects=args.subjects,
            n_runs=args.runs,
            n_stimuli=args.stimuli,
            seed=args.seed,
            overwrite=args.overwrite,
            verbose=not args.quiet,
        )
    except BidsVemError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    seconds = time.perf_counter() - started
    output = paths.root / "out"
    print(f"demo written in {seconds:.1f} s")
    print(f"  BIDS dataset:     {paths.bids_dir}")
    print(f"  derivatives:      {paths.fmriprep_dir}")
    print(f"  captions:         {paths.captions_tsv}")
    print(f"  image model:      {paths.image_model_dir} (random weights)")
    print(f"  text model:       {paths.text_model_path}")
    print(f"  ground truth:     {paths.ground_truth_dir}")
    print("analyse it with:")
    print("  " + shlex.join(paths.bids_vem_command(output, "participant")))
    print("  " + shlex.join(paths.bids_vem_command(output, "group")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
