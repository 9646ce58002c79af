"""--decode end to end on the demo: captions identified from single-trial response patterns,
with a corpus of distractors, in the report and as a validated derivative."""

from __future__ import annotations

import csv
import json

import pytest

from bids_vem.cli.run import main
from bids_vem.outputs.validator import validate_derivatives

pytestmark = pytest.mark.slow

SPACE = "MNI152NLin2009cAsym"


def test_captions_are_decoded_from_the_demo_responses(demo_dataset, tmp_path):
    """The demo's semantic voxels respond to the caption embedding: decoding it from the
    response patterns identifies captions far above chance, also among corpus distractors."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n".join(f"a photo of {n} {thing}" for n in range(1, 11)
                  for thing in ("dogs", "cars", "bowls", "trees", "kites"))
        + "\n"
    )  # fmt: skip
    out = tmp_path / "out"
    argv = [
        str(demo_dataset.bids_dir), str(out), "participant", "--participant-label", "01", "02",
        "--skip-bids-validation", "-w", str(tmp_path / "work"), "--nprocs", "2",
        "--captions", str(demo_dataset.captions_tsv),
        "--text-encoder", "minilm=sentence:all-MiniLM-L6-v2",
        "--decode", "minilm", "--decode-corpus", str(corpus), "--decode-permutations", "20",
        "--permutations", "0",
    ]  # fmt: skip
    assert main(argv) == 0
    stem = out / "sub-01" / "func" / f"sub-01_task-shapes_space-{SPACE}_desc-minilm_decoding"
    sidecar = json.loads(stem.with_suffix(".json").read_text())
    assert sidecar["Stimuli"] == 96 and sidecar["CorpusCaptions"] == 50
    # far above chance, and significant against the refitted null
    assert sidecar["TopFiveAccuracy"] > 3 * sidecar["TopFiveChance"]
    assert sidecar["MeanRank"] < 0.6 * sidecar["MeanRankChance"]
    assert sidecar["PermutationP"]["MeanRank"] == pytest.approx(1 / 21)
    with stem.with_suffix(".tsv").open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(rows) == 96 and all(row["caption"] for row in rows)
    assert {row["top1"] for row in rows} <= {"true", "false"}
    report = (out / "sub-01.html").read_text()
    assert "Caption decoding" in report and "Best decoded" in report
    assert validate_derivatives(out) == []
    citation = (out / "logs" / "CITATION.md").read_text()
    assert "decoded from brain activity" in citation and "50 corpus captions" in citation
    # the group level: top-1 above chance across the two participants
    assert main([str(demo_dataset.bids_dir), str(out), "group", "--skip-bids-validation"]) == 0
    with (out / "group" / "summary.tsv").open() as handle:
        rows = {r["feature_space"]: r for r in csv.DictReader(handle, delimiter="\t")}
    decoding = rows["minilm decoding"]
    assert int(decoding["n_subjects"]) == 2
    assert float(decoding["mean_top1"]) > 5 * float(decoding["chance_top1"])
