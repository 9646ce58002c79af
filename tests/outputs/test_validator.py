"""The whole output dataset passes the real bids-validator-deno; a stray file does not."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bids_vem.errors import InputMissingError, IOFailure
from bids_vem.outputs.dataset import (
    new_run_id,
    write_bidsignore,
    write_dataset_description,
    write_descriptions,
    write_readme,
    write_run_config,
)
from bids_vem.outputs.group import write_group_maps, write_group_summary
from bids_vem.outputs.statmaps import (
    bids_uri,
    encoding_summary_row,
    summary_tsv_path,
    write_encoding_maps,
    write_summary_tsv,
)
from bids_vem.outputs.validator import find_validator, validate_derivatives
from tests.helpers import write_example_citation


@pytest.fixture
def validator():
    try:
        return find_validator()
    except InputMissingError as exc:
        pytest.skip(str(exc))


def build_outputs(out: Path, raw: Path, mask_img, result) -> None:
    """Everything a participant + group run writes, except reports' figures (tested in tests/reports)."""
    write_dataset_description(out, source_datasets=[raw], version="0.1.0")
    write_bidsignore(out)
    write_readme(out)
    write_descriptions(
        out, {"clip": "CLIP ViT-B-32 image features", "sbert": "MPNet caption embeddings"}
    )
    write_example_citation(out)
    write_run_config(out, 'analysis_level = "participant"\n', new_run_id())
    rows = []
    for subject, session in (("01", None), ("02", "A")):
        for feature_space in ("clip", "sbert"):
            write_encoding_maps(
                out,
                result,
                mask_img,
                subject=subject,
                session=session,
                task="scenes",
                space="MNI152NLin2009cAsym",
                feature_space=feature_space,
                sources=[
                    bids_uri(
                        "raw", f"sub-{subject}/func/sub-{subject}_task-scenes_run-1_bold.nii.gz"
                    )
                ],
                parameters={
                    "Delays": [1, 2, 3, 4],
                    "Alphas": [1.0, 10.0, 100.0],
                    "CrossValidation": "leave-one-run-out",
                },
            )
            rows.append(
                encoding_summary_row(
                    result,
                    subject=subject,
                    session=session,
                    task="scenes",
                    space="MNI152NLin2009cAsym",
                    feature_space=feature_space,
                )
            )
        write_summary_tsv(summary_tsv_path(out, subject, session), rows[-2:])
    write_group_maps(
        out,
        {"meanr": result.r, "t": result.r * 4, "p": result.cv_score, "q": result.cv_score},
        mask_img,
        task="scenes",
        space="MNI152NLin2009cAsym",
        feature_space="clip",
        n_subjects=2,
        sources=[
            bids_uri(
                "",
                "sub-01/func/sub-01_task-scenes_space-MNI152NLin2009cAsym_desc-clip_stat-r_statmap.nii.gz",
            )
        ],
    )
    write_group_summary(out, rows)
    # what other packages write: captions (stimuli/), features and models (ignored), reports
    (out / "stimuli").mkdir()
    (out / "stimuli" / "desc-blip_captions.tsv").write_text(
        "stim_file\tcaption\nimages/a.jpg\ta cat\n"
    )
    (out / "features").mkdir()
    (out / "features" / "desc-clip_features.npy").write_bytes(b"\x93NUMPY")
    (out / "models").mkdir()
    (out / "models" / "desc-aligned_model.safetensors").write_bytes(b"0")
    (out / "sub-01.html").write_text("<html></html>")
    (out / "sub-01" / "figures").mkdir()
    (out / "sub-01" / "figures" / "sub-01_desc-clip_rmap.png").write_bytes(b"png")
    (out / "sub-01" / "log" / "20260101-000000_abcd").mkdir(parents=True)
    (out / "sub-01" / "log" / "20260101-000000_abcd" / "crash-node.txt").write_text("trace")


def test_outputs_pass_the_bids_validator(tmp_path, raw_dataset, mask_img, result, validator):
    out = tmp_path / "out"
    build_outputs(out, raw_dataset, mask_img, result)
    assert validate_derivatives(out) == []


def test_a_stray_file_is_reported(tmp_path, raw_dataset, mask_img, result, validator):
    out = tmp_path / "out"
    build_outputs(out, raw_dataset, mask_img, result)
    (out / "sub-01" / "func" / "sub-01_notes.txt").write_text("x")
    errors = validate_derivatives(out)
    assert errors
    assert any("sub-01_notes.txt" in e for e in errors)


def test_a_broken_description_is_reported(tmp_path, raw_dataset, mask_img, result, validator):
    out = tmp_path / "out"
    build_outputs(out, raw_dataset, mask_img, result)
    description = json.loads((out / "dataset_description.json").read_text())
    description["GeneratedBy"] = [{"Version": "0.1.0"}]  # Name is required
    (out / "dataset_description.json").write_text(json.dumps(description))
    errors = validate_derivatives(out)
    assert any(
        e.startswith("JSON_SCHEMA_VALIDATION_ERROR /dataset_description.json") for e in errors
    ), errors


def test_missing_validator_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InputMissingError, match="pip install bids-validator-deno") as info:
        validate_derivatives(tmp_path)
    assert info.value.exit_code == 66


def test_a_raw_dataset_type_is_not_accepted(tmp_path, raw_dataset, mask_img, result, validator):
    out = tmp_path / "out"
    build_outputs(out, raw_dataset, mask_img, result)
    description = json.loads((out / "dataset_description.json").read_text())
    description["DatasetType"] = "raw"
    (out / "dataset_description.json").write_text(json.dumps(description))
    # bids-validator-deno 3.0.2 crashes on this (UNSUPPORTED_DATASET_TYPE is undefined there):
    # either way the dataset must not come out valid
    try:
        errors = validate_derivatives(out)
    except IOFailure as exc:
        assert exc.exit_code == 74
        assert "bids-validator-deno failed" in str(exc)
    else:
        assert errors
