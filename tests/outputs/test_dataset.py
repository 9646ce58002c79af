"""dataset_description.json, .bidsignore, README, descriptions.tsv, citation and run config."""

from __future__ import annotations

import csv
import json
import os
import re

import pytest

from bids_vem.errors import OutputError, UsageError
from bids_vem.outputs.dataset import (
    BIDSIGNORE_ENTRIES,
    REFERENCES,
    container_from_environment,
    new_run_id,
    source_dataset_entry,
    write_bidsignore,
    write_citation,
    write_dataset_description,
    write_descriptions,
    write_readme,
    write_run_config,
)


def test_description_fields(tmp_path, raw_dataset):
    out = tmp_path / "out"
    path = write_dataset_description(
        out,
        source_datasets=[raw_dataset],
        version="1.2.3",
        container={"Type": "docker", "Tag": "bids/vem:1.2.3"},
    )
    data = json.loads(path.read_text())
    assert data["DatasetType"] == "derivative"
    assert data["BIDSVersion"]
    assert data["GeneratedBy"][0] == {
        "Name": "bids_vem",
        "Version": "1.2.3",
        "CodeURL": "https://github.com/bids-vem/bids_vem",
        "Container": {"Type": "docker", "Tag": "bids/vem:1.2.3"},
    }
    # local datasets by their path relative to the derivative dataset: no file:// of this
    # machine, valid wherever the folders move together
    relative = os.path.relpath(raw_dataset.resolve(), out.resolve())
    assert not relative.startswith("/")
    assert data["SourceDatasets"] == [
        {
            "URL": relative,
            "DOI": "doi:10.18112/openneuro.ds000001.v2.0.1",
            "Version": "2.0.1",
        }
    ]
    # sidecars cite inputs as bids:raw:..., which needs DatasetLinks
    assert data["DatasetLinks"] == {"raw": relative}
    assert "HowToAcknowledge" in data


def test_description_is_idempotent_and_keeps_what_it_does_not_own(tmp_path, raw_dataset):
    out = tmp_path / "out"
    out.mkdir()
    (out / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "My encoding study",
                "Authors": ["A. Person"],
                "DatasetType": "derivative",
                "GeneratedBy": [
                    {"Name": "Manual", "Description": "edited"},
                    {"Name": "bids_vem", "Version": "0.0.1"},
                ],
            }
        )
    )
    first = write_dataset_description(
        out, source_datasets=[raw_dataset], version="0.2.0"
    ).read_bytes()
    second = write_dataset_description(
        out, source_datasets=[raw_dataset], version="0.2.0"
    ).read_bytes()
    assert first == second
    data = json.loads(first)
    assert data["Name"] == "My encoding study"
    assert data["Authors"] == ["A. Person"]
    assert [g["Name"] for g in data["GeneratedBy"]] == ["bids_vem", "Manual"]
    assert data["GeneratedBy"][0]["Version"] == "0.2.0"


def test_description_refuses_a_raw_dataset(tmp_path, raw_dataset):
    with pytest.raises(
        OutputError, match="dataset_description.json describes a 'raw' dataset"
    ) as info:
        (raw_dataset / "dataset_description.json").write_text(
            json.dumps({"Name": "x", "DatasetType": "raw"})
        )
        write_dataset_description(raw_dataset, source_datasets=[], version="0.1")
    assert info.value.exit_code == 73


def test_description_refuses_an_unreadable_file(tmp_path):
    (tmp_path / "dataset_description.json").write_text("{not json")
    with pytest.raises(OutputError, match="dataset_description.json"):
        write_dataset_description(tmp_path, source_datasets=[], version="0.1")


def test_source_entry_of_the_real_bold5000_skeleton(shared_fixtures):
    root = shared_fixtures / "bold5000-ds001499-skeleton"
    entry = source_dataset_entry(root)
    assert entry["DOI"] == "doi:10.18112/openneuro.ds001499.v1.3.1"
    assert entry["Version"] == "1.3.1"
    assert entry["URL"] == root.resolve().as_uri()


def test_source_entry_of_urls_and_dois():
    assert source_dataset_entry("https://openneuro.org/datasets/ds001499") == {
        "URL": "https://openneuro.org/datasets/ds001499"
    }
    assert source_dataset_entry("doi:10.1/x") == {"DOI": "doi:10.1/x"}


def test_container_from_environment():
    assert container_from_environment({}) is None
    assert container_from_environment({"BIDS_VEM_DOCKER_TAG": "bids/vem:1"}) == {
        "Type": "docker",
        "Tag": "bids/vem:1",
    }
    assert container_from_environment({"BIDS_VEM_APPTAINER_URI": "oras://x/y:1"}) == {
        "Type": "apptainer",
        "URI": "oras://x/y:1",
    }


def test_bidsignore_entries_have_no_trailing_slash_and_user_lines_stay(tmp_path):
    (tmp_path / ".bidsignore").write_text("mystuff\n")
    write_bidsignore(tmp_path, extra=["extra/"])
    first = (tmp_path / ".bidsignore").read_text()
    write_bidsignore(tmp_path, extra=["extra/"])
    assert (tmp_path / ".bidsignore").read_text() == first
    lines = first.splitlines()
    assert lines[0] == "mystuff"
    assert set(BIDSIGNORE_ENTRIES) | {"extra"} <= set(lines)
    assert not any(line.endswith("/") for line in lines)
    assert len(lines) == len(set(lines))


def test_readme_is_written_once(tmp_path):
    path = write_readme(tmp_path)
    assert "bids_vem" in path.read_text()
    path.write_text("my own words\n")
    assert write_readme(tmp_path).read_text() == "my own words\n"


def test_descriptions_merge_and_check_labels(tmp_path):
    write_descriptions(tmp_path, {"clip": "CLIP image features"})
    write_descriptions(
        tmp_path, {"sbert": "caption\tembeddings", "clip": "CLIP ViT-B-32 image features"}
    )
    with (tmp_path / "descriptions.tsv").open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert rows == [
        {"desc_id": "desc-clip", "description": "CLIP ViT-B-32 image features"},
        {"desc_id": "desc-sbert", "description": "caption embeddings"},
    ]
    assert json.loads((tmp_path / "descriptions.json").read_text())["Description"]
    with pytest.raises(UsageError, match="'clip-vit'"):
        write_descriptions(tmp_path, {"clip-vit": "x"})


def test_citation_text_and_bibtex(tmp_path):
    path = write_citation(
        tmp_path,
        feature_spaces=[
            {
                "name": "clip",
                "spec": "openclip:ViT-B-32@laion2b_s34b_b79k",
                "modality": "image",
                "n_features": 512,
            },
            {"name": "sbert", "spec": "sentence:/models/all-mpnet-base-v2", "modality": "text"},
        ],
        n_runs=6,
        n_subjects=2,
        params={
            "delays": [1, 2, 3, 4],
            "alphas": [0.01, 1.0, 1e12],
            "cv": "leave-one-run-out",
            "score": "correlation",
            "tr": 2.0,
        },
        version="0.1.0",
    )
    assert path == tmp_path / "logs" / "CITATION.md"
    text = path.read_text()
    for expected in (
        "bids_vem 0.1.0",
        "2 participants, 6 BOLD runs",
        "openclip:ViT-B-32@laion2b_s34b_b79k",
        "512 features",
        "delayed by 1, 2, 3, 4 TRs",
        "among 3 values from 0.01 to 1e+12",
        "leave-one-run-out",
        "TR = 2 s",
        "doi:10.1038/s42256-025-01072-0",
        "Features were computed with OpenCLIP [@ilharco2021openclip], Sentence-Transformers",
    ):
        assert expected in text, expected
    bib = (tmp_path / "logs" / "CITATION.bib").read_text()
    keys = re.findall(r"^@\w+\{([^,]+),", bib, flags=re.MULTILINE)
    body = text.split("## References")[0]
    cited = set(re.findall(r"@([a-z0-9]+)", " ".join(re.findall(r"\[(@[^\]]+)\]", body))))
    # the bibliography is what the text cites, no more: no alignment, no BridgeTower, no
    # himalaya (its ridge does not run without --joint)
    assert set(keys) == cited and cited <= {key for key, _, _ in REFERENCES}
    assert {"doerig2025llm", "ilharco2021openclip", "reimers2019sbert"} <= cited
    assert not cited & {"ma2024llmvem", "tang2023bridgetower", "dupre2022himalaya"}
    assert bib.count("{") == bib.count("}")


def test_methods_text_names_what_the_run_used(tmp_path):
    """Alignment settings, BridgeTower, confounds, permutations and --joint: each described
    and cited only when used."""
    alignment = {
        "name": "aligned", "base": "clip", "target": "minilm", "corpus": None,
        "settings": {"loss": "infonce", "alignment_weight": 0.1, "method": "partial",
                     "unfreeze_blocks": 2, "lr": 1e-05, "batch_size": 256, "epochs": 10,
                     "seed": 7},
        "folds": {},
    }  # fmt: skip
    path = write_citation(
        tmp_path,
        feature_spaces=[
            {"name": "clip", "spec": "openclip:ViT-B-32@/m/w.safetensors", "modality": "image",
             "family": "openclip", "weights_sha256": "ab" * 32},
            {"name": "bt", "spec": "bridgetower:/m/bt", "modality": "text", "family": "bridgetower"},
        ],  # fmt: skip
        n_runs=4,
        params={"delays": [1, 2], "alphas": [1.0, 10.0], "cv": "leave-one-run-out",
                "score": "correlation", "confounds": ["trans_x", "csf"], "high_pass": 0.01,
                "confound_regression": "bold-and-design", "word_rate": "regress",
                "permutations": 1000, "alignment": alignment, "joint": [["clip", "bt"]]},
        version="0.1.0",
    )  # fmt: skip
    text = path.read_text()
    for expected in (
        "weights sha256 abababababab",
        "- `aligned`: the image encoder of `clip` aligned to the `minilm` caption embeddings",
        "alignment weight 0.1",
        "the last 2 block(s) unfrozen",
        "learning rate 1e-05",
        "random seed 7",
        "confounds trans_x, csf",
        "high-pass filter at 0.01 Hz",
        "projected out of the run's design matrix as well",
        "the word rate (words per TR, resampled alike, at the same FIR delays) was projected out",
        "1000 permutations",
        "[@benjamini1995fdr]",
        "BridgeTower [@xu2023bridgetower]",
        "[@ma2024llmvem]",
        "[@tang2023bridgetower]",
        "[@nunezelizalde2019banded; @dupre2022himalaya]",
    ):
        assert expected in text, expected


def test_run_config(tmp_path):
    run_id = new_run_id()
    assert re.fullmatch(r"\d{8}-\d{6}_[0-9a-f]{8}", run_id)
    path = write_run_config(tmp_path, 'space = "MNI152NLin2009cAsym"\n', run_id)
    assert path == tmp_path / "logs" / f"config-{run_id}.toml"
    assert path.read_text() == 'space = "MNI152NLin2009cAsym"\n'
    with pytest.raises(UsageError, match="run id"):
        write_run_config(tmp_path, "", "../escape")


def test_nesting_under_derivatives_with_another_name_warns(tmp_path, raw_dataset, caplog):
    # BIDS: nested under derivatives/<dir>, GeneratedBy[0].Name must be part of <dir>
    with caplog.at_level("WARNING", logger="bids_vem.outputs.dataset"):
        write_dataset_description(
            raw_dataset / "derivatives" / "bids_vem-v1", source_datasets=[raw_dataset], version="1"
        )
    assert not caplog.records
    with caplog.at_level("WARNING", logger="bids_vem.outputs.dataset"):
        write_dataset_description(
            raw_dataset / "derivatives" / "encoding", source_datasets=[raw_dataset], version="1"
        )
    assert "derivatives/bids_vem[-<variant>]" in caplog.text


def _citation_for(out, subject: str, n_runs: int) -> None:
    write_citation(
        out,
        feature_spaces=[
            {"name": "minilm", "spec": "sentence:all-MiniLM-L6-v2", "modality": "text"}
        ],
        n_runs=n_runs,
        params={"delays": [1, 2], "alphas": [1.0], "cv": "leave-one-run-out", "tr": 2.0},
        version="0.1.0",
        runs_by_subject={subject: n_runs},
    )


def test_citation_counts_every_participant_of_separate_jobs(tmp_path):
    """Participants run as separate jobs into one OUTPUT_DIR: the text written last counts
    them all (not only its own job's participant), at once or one after another."""
    import multiprocessing

    out = tmp_path / "out"
    _citation_for(out, "01", 3)
    assert "1 participant, 3 BOLD runs" in (out / "logs" / "CITATION.md").read_text()
    _citation_for(out, "02", 4)
    assert "2 participants, 7 BOLD runs" in (out / "logs" / "CITATION.md").read_text()
    _citation_for(out, "01", 2)  # a participant rerun with fewer runs replaces its record
    assert "2 participants, 6 BOLD runs" in (out / "logs" / "CITATION.md").read_text()
    # eight jobs at once
    context = multiprocessing.get_context("fork")
    jobs = [context.Process(target=_citation_for, args=(out, f"{i:02d}", 2)) for i in range(3, 11)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(60)
    assert [job.exitcode for job in jobs] == [0] * 8
    assert "10 participants, 22 BOLD runs" in (out / "logs" / "CITATION.md").read_text()
    assert sorted(p.name for p in (out / "logs").rglob(".*tmp*")) == []
