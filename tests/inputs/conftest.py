"""Small BIDS trees (raw + fMRIPrep derivatives) made from dict layouts, with real tiny NIfTIs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from bids_vem.outputs.names import entity_prefix


@dataclass
class RunSpec:
    """One run of a test dataset; flags switch its files off."""

    subject: str
    task: str = "scenes"
    session: str | None = None
    run: str | None = "1"
    #: (onset, duration, stim_file) rows of events.tsv
    events: list[tuple] = field(default_factory=lambda: [(0, 1, "a.png"), (4, 1, "b.png")])
    has_events: bool = True
    has_raw_bold: bool = True
    has_preproc: bool = True
    has_mask: bool = True
    has_confounds: bool = True
    #: RepetitionTime of the derivative JSON (None: no JSON)
    preproc_tr: float | None = 2.0
    n_volumes: int = 12
    #: extra space refinements written into derivative names, e.g. ("res-2",)
    space_entities: tuple[str, ...] = ()

    @property
    def prefix(self) -> str:
        return entity_prefix(
            {"sub": self.subject, "ses": self.session, "task": self.task} | {"run": self.run}
        )

    def folder(self, root: Path) -> Path:
        folder = root / f"sub-{self.subject}"
        if self.session:
            folder = folder / f"ses-{self.session}"
        return folder / "func"


def write_nifti(path: Path, n_volumes: int | None, tr: float = 2.0) -> Path:
    """A tiny real NIfTI: 3x3x2 voxels (x n_volumes when given), TR in pixdim[4]."""
    shape = (3, 3, 2) if n_volumes is None else (3, 3, 2, n_volumes)
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    img = nib.Nifti1Image(data, np.eye(4))
    if n_volumes is not None:
        img.header.set_zooms((2.0, 2.0, 2.0, tr))
        img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.to_filename(path)
    return path


def write_events(path: Path, rows: list[tuple], columns=("onset", "duration", "stim_file")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(columns)] + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_bids(
    root: Path,
    runs: list[RunSpec],
    *,
    space: str = "MNI152NLin2009cAsym",
    legacy: bool = False,
    derivative_description: bool = True,
    raw_tr: float | None = 2.0,
    stimuli: dict[str, bytes] | None = None,
) -> Path:
    """Write a raw BIDS dataset at ``root`` and fMRIPrep derivatives under ``root/derivatives``.

    ``legacy`` writes fMRIPrep 1.0/1.1 names (``*_bold_space-<s>_preproc.nii.gz``) and no
    derivative ``dataset_description.json`` (as OpenNeuro's BOLD5000 has).
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "test", "BIDSVersion": "1.8.0", "DatasetType": "raw"})
    )
    for task in sorted({r.task for r in runs}):
        meta = {"TaskName": task}
        if raw_tr is not None:
            meta["RepetitionTime"] = raw_tr
        (root / f"task-{task}_bold.json").write_text(json.dumps(meta))
    deriv = root / "derivatives" / "fmriprep"
    deriv.mkdir(parents=True, exist_ok=True)
    if derivative_description and not legacy:
        (deriv / "dataset_description.json").write_text(
            json.dumps(
                {
                    "Name": "fMRIPrep",
                    "BIDSVersion": "1.8.0",
                    "DatasetType": "derivative",
                    "GeneratedBy": [{"Name": "fMRIPrep", "Version": "23.2.0"}],
                }
            )
        )
    for spec in runs:
        raw_func = spec.folder(root)
        raw_func.mkdir(parents=True, exist_ok=True)
        if spec.has_raw_bold:
            write_nifti(raw_func / f"{spec.prefix}_bold.nii.gz", spec.n_volumes)
        if spec.has_events:
            write_events(raw_func / f"{spec.prefix}_events.tsv", spec.events)
        func = spec.folder(deriv)
        func.mkdir(parents=True, exist_ok=True)
        refine = "".join(f"_{e}" for e in spec.space_entities)
        if legacy:
            bold = func / f"{spec.prefix}_bold_space-{space}_preproc.nii.gz"
            mask = func / f"{spec.prefix}_bold_space-{space}_brainmask.nii.gz"
            confounds = func / f"{spec.prefix}_bold_confounds.tsv"
        else:
            bold = func / f"{spec.prefix}_space-{space}{refine}_desc-preproc_bold.nii.gz"
            mask = func / f"{spec.prefix}_space-{space}{refine}_desc-brain_mask.nii.gz"
            confounds = func / f"{spec.prefix}_desc-confounds_timeseries.tsv"
        if spec.has_preproc:
            write_nifti(bold, spec.n_volumes, tr=spec.preproc_tr or 1.5)
            if spec.preproc_tr is not None and not legacy:
                bold.with_name(bold.name.replace(".nii.gz", ".json")).write_text(
                    json.dumps({"RepetitionTime": spec.preproc_tr})
                )
        if spec.has_mask:
            write_nifti(mask, None)
        if spec.has_confounds:
            confounds.write_text("csf\twhite_matter\n" + "0.1\t0.2\n" * spec.n_volumes)
    if stimuli:
        for name, content in stimuli.items():
            path = root / "stimuli" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    return root


@pytest.fixture
def bids_factory(tmp_path):
    """``bids_factory(runs, **options) -> Path`` builds a dataset under a fresh tmp folder."""
    counter = iter(range(1000))

    def factory(runs: list[RunSpec], **options) -> Path:
        return make_bids(tmp_path / f"ds{next(counter)}", runs, **options)

    return factory


@pytest.fixture
def tools():
    """The helpers of this module (conftest modules cannot be imported by name)."""
    return SimpleNamespace(
        RunSpec=RunSpec, write_nifti=write_nifti, write_events=write_events, make_bids=make_bids
    )
