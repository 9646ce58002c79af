"""Helpers shared by test files: builders and thin shortcuts over the pipeline's functions.

Import as ``from tests.helpers import ...`` (pytest runs from the repository root).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bids_vem.features.extract import extract_feature_spaces
from bids_vem.features.feature_set import FeatureSet
from bids_vem.features.specs import FeatureSpaceSpec
from bids_vem.inputs.layout import collect_runs_report
from bids_vem.inputs.runs import Run

__all__ = [
    "FakeEncodingResult",
    "Killed",
    "collect_runs",
    "derivative_differences",
    "extract_feature_space",
    "extract_images",
    "isolated_caches",
    "kill_after_checkpoint",
    "participant_argv",
    "write_example_citation",
]


def collect_runs(bids_dir: Path, **query) -> list[Run]:
    """The runs :func:`collect_runs_report` finds (the sentences of skipped runs dropped)."""
    runs, _ = collect_runs_report(bids_dir, **query)
    return runs


def extract_feature_space(spec: FeatureSpaceSpec, stim_ids, **kwargs) -> FeatureSet:
    """The one feature set of a spec without ``#layers`` (:func:`extract_feature_spaces`)."""
    (feature_set,) = extract_feature_spaces(spec, stim_ids, **kwargs)
    return feature_set


@dataclass
class FakeEncodingResult:
    """The duck type write_encoding_maps expects (EncodingResult itself is tested elsewhere)."""

    r: np.ndarray
    r2: np.ndarray
    alpha: np.ndarray
    cv_score: np.ndarray

    def summary(self) -> dict:
        return {"mean_cv_score": float(np.mean(self.cv_score))}


class Killed(Exception):
    """Raised by a test to stop a run half-way (a crash at a chosen point)."""


def kill_after_checkpoint(monkeypatch, train, epoch: int = 1) -> None:
    """Run ``train()`` and kill it right after it saved the checkpoint of ``epoch``."""
    import pytest

    from bids_vem.alignment import checkpoint

    real_save = checkpoint.save_checkpoint

    def save_then_die(*args, **kwargs):
        folder = real_save(*args, **kwargs)
        if args[1] == epoch:
            raise Killed
        return folder

    monkeypatch.setattr("bids_vem.alignment.train.save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        train()
    monkeypatch.setattr("bids_vem.alignment.train.save_checkpoint", real_save)


def participant_argv(demo, out: Path, work: Path, *extra: str, image: bool = False) -> list[str]:
    """The demo's participant-level command line for sub-01 (MiniLM captions, confounds)."""
    from bids_vem.demo.simulate import CONFOUND_COLUMNS

    image_encoder = ["--image-encoder", demo.image_model_spec] if image else []
    return [
        str(demo.bids_dir), str(out), "participant", "-w", str(work), "--nprocs", "2",
        "--participant-label", "01", "--skip-bids-validation",
        "--captions", str(demo.captions_tsv),
        "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2", *image_encoder,
        "--confounds", *CONFOUND_COLUMNS,
        *extra,
    ]  # fmt: skip


def write_example_citation(out: Path) -> Path:
    """logs/CITATION.md for one CLIP feature space over two runs."""
    from bids_vem.outputs.dataset import write_citation

    return write_citation(
        out,
        feature_spaces=[{"name": "clip", "spec": "openclip:ViT-B-32"}],
        n_runs=2,
        params={},
        version="0.1.0",
    )


def extract_images(spec: FeatureSpaceSpec, paths: list[Path], batch_size: int) -> FeatureSet:
    """The feature set of image files named by their file names (no cache, no progress bar)."""
    return extract_feature_space(
        spec,
        [p.name for p in paths],
        image_paths={p.name: p for p in paths},
        batch_size=batch_size,
        progress=False,
    )


def isolated_caches(monkeypatch, tmp_path: Path, variables: dict[str, str]) -> dict[str, Path]:
    """Point each environment variable at a new empty folder (and HOME too); no model dir."""
    paths = {name: tmp_path / name for name in (*variables, "home")}
    for path in paths.values():
        path.mkdir()
    for name, variable in variables.items():
        monkeypatch.setenv(variable, str(paths[name]))
    monkeypatch.setenv("HOME", str(paths["home"]))
    monkeypatch.delenv("BIDS_VEM_MODEL_DIR", raising=False)
    return paths


def chromium() -> str | None:
    """Debian's Chromium, when installed (scripts/setup.sh installs it where it can)."""
    import shutil

    return shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )


def render_in_chromium(
    page: Path, tmp_path: Path, size: str = "1200,1600", budget_ms: int | None = None
):
    """Open ``page`` in headless Chromium with no network: its screenshot (RGB array) and
    the messages its scripts wrote to the console. ``budget_ms``: virtual time the page's
    scripts get before the screenshot (a WebGL viewer draws after it loads)."""
    import subprocess

    from matplotlib.image import imread

    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed")
    shot = tmp_path / f"{page.stem}.png"
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
        f"--window-size={size}", f"--screenshot={shot}",
        *([f"--virtual-time-budget={budget_ms}"] if budget_ms else []),
        Path(page).resolve().as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert shot.is_file(), f"chromium wrote no screenshot: {done.stderr[-2000:]}"
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return imread(shot)[..., :3], console


def broken_links(page: Path) -> list[str]:
    """Every ``src`` and ``href`` of ``page`` that does not resolve: relative links must name
    an existing file, anchors an existing id; nothing may point at the network."""
    import re
    from urllib.parse import unquote

    text = Path(page).read_text(encoding="utf-8")
    ids = set(re.findall(r'\bid="([^"]+)"', text))
    broken = []
    for target in re.findall(r'\b(?:src|href)="([^"]*)"', text):
        if target.startswith("#"):
            if target[1:] not in ids:
                broken.append(target)
        elif re.match(r"^([a-z]+:)?//", target) or target.startswith(("/", "file:")):
            broken.append(target)
        elif not (Path(page).parent / unquote(target.split("#")[0])).exists():
            broken.append(target)
    return broken


def derivative_differences(expected: Path, actual: Path) -> list[str]:
    """What differs between two OUTPUT_DIRs of the same analysis, file by file (bytes).

    Left out: ``logs/config-<run id>.toml`` and ``logs/crash`` (one per run), and the HTML
    pages, which carry the run id and times; the alignment's ``metrics`` files are compared
    without their timing columns (``train_seconds``, ``images_per_s``). Everything else
    (maps, sidecars, tables, features, figures, weights, CITATION.md) must be identical.
    Hidden temporaries count as differences.
    """
    import json

    import pandas as pd

    timing = ["train_seconds", "images_per_s"]

    def same(a: Path, b: Path) -> bool:
        if a.read_bytes() == b.read_bytes():
            return True
        if a.name == "metrics.tsv":
            read = [pd.read_csv(p, sep="\t").drop(columns=timing, errors="ignore") for p in (a, b)]
            return read[0].equals(read[1])
        if a.name == "metrics.json":
            read = [
                [
                    {k: v for k, v in row.items() if k not in timing}
                    for row in json.loads(p.read_text())
                ]
                for p in (a, b)
            ]
            return read[0] == read[1]
        return False

    def files(root: Path) -> dict[str, Path]:
        return {
            str(p.relative_to(root)): p
            for p in root.rglob("*")
            if p.is_file()
            and p.suffix != ".html"
            and not p.relative_to(root).parts[:2] == ("logs", "crash")
            and not (p.parent == root / "logs" and p.name.startswith("config-"))
            and p.name != ".citation.lock"
        }

    want, got = files(expected), files(actual)
    differences = [f"only in {expected.name}: {k}" for k in sorted(want.keys() - got.keys())]
    differences += [f"only in {actual.name}: {k}" for k in sorted(got.keys() - want.keys())]
    differences += [
        f"differs: {k}" for k in sorted(want.keys() & got.keys()) if not same(want[k], got[k])
    ]
    return differences
