"""Group level inputs: participants' r maps found, grouped, and refused when they mislead."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from bids_vem.analysis.group import find_participant_r_maps
from bids_vem.errors import DataError


def _r_map(out, subject, spec):
    folder = out / f"sub-{subject}" / "func"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"sub-{subject}_task-x_space-MNI152NLin2009cAsym_desc-x_stat-r_statmap"
    nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)).to_filename(
        folder / f"{stem}.nii.gz"
    )
    (folder / f"{stem}.json").write_text(json.dumps({"ModelSpec": spec, "Modality": "text"}))


def test_maps_of_one_model_are_pooled_and_of_two_models_refused(tmp_path):
    _r_map(tmp_path, "01", "x=sentence:all-MiniLM-L6-v2")
    _r_map(tmp_path, "02", "x=sentence:all-MiniLM-L6-v2")
    (found,) = find_participant_r_maps(tmp_path)
    assert found.subjects == ["01", "02"] and found.feature_space == "x"
    # a text model for one participant and an image model for another, both named x
    _r_map(tmp_path, "03", "x=openclip:ViT-B-32")
    with pytest.raises(DataError) as info:
        find_participant_r_maps(tmp_path)
    message = str(info.value)
    assert info.value.exit_code == 65 and "\n" not in message
    assert "feature space 'x' (task-x, space-MNI152NLin2009cAsym) names different models" in message
    assert "sub-01 'x=sentence:all-MiniLM-L6-v2', sub-03 'x=openclip:ViT-B-32'" in message
    # selecting the participants of one model works
    assert find_participant_r_maps(tmp_path, participant_label=("01", "02"))
