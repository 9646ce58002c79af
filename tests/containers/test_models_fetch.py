"""``bids_vem models fetch``: the folder it fills is the one the model search reads.

There is no network here: the hub downloaders are replaced by stand-ins that write what the
real ones write (a ``local_dir`` snapshot, or a hub-cache entry), and the tests check that
the offline search then finds the weights through ``BIDS_VEM_MODEL_DIR`` alone, as in the
container image.
"""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import pytest
from open_clip import pretrained

from bids_vem.cli.models import fetch_spec
from bids_vem.cli.run import main
from bids_vem.features.families.transformers import resolve_hf_model
from bids_vem.features.models import resolve_model_path
from bids_vem.features.specs import parse_feature_space


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    calls: list[tuple] = []

    def snapshot_download(repo_id, *, local_dir, ignore_patterns=None, **kwargs):
        calls.append(("snapshot", repo_id, Path(local_dir)))
        assert "*.onnx" in ignore_patterns  # other frameworks' weights stay out of the image
        folder = Path(local_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
        (folder / "modules.json").write_text("[]")
        (folder / "model.safetensors").write_bytes(b"\0" * 16)
        (folder / ".cache" / "huggingface").mkdir(parents=True)
        return str(folder)

    def hf_hub_download(repo_id, filename, *, cache_dir, **kwargs):
        calls.append(("file", repo_id, filename))
        repo = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
        snapshot = repo / "snapshots" / "0123abcd"
        snapshot.mkdir(parents=True)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0123abcd")
        (snapshot / filename).write_bytes(b"\0" * 16)
        return str(snapshot / filename)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(pretrained, "hf_hub_download", hf_hub_download)
    return calls


def test_a_sentence_model_is_found_through_bids_vem_model_dir(online, tmp_path, monkeypatch):
    dest = tmp_path / "models"
    found = fetch_spec("minilm=sentence:all-MiniLM-L6-v2", dest)
    assert online == [
        ("snapshot", "sentence-transformers/all-MiniLM-L6-v2", dest / "all-MiniLM-L6-v2")
    ]
    assert found == (dest / "all-MiniLM-L6-v2").resolve()
    monkeypatch.setenv("BIDS_VEM_MODEL_DIR", str(dest))
    spec = parse_feature_space("sentence:all-MiniLM-L6-v2", "text")
    assert resolve_model_path(spec) == found


def test_a_transformers_model_lands_in_org_name(online, tmp_path, monkeypatch):
    dest = tmp_path / "models"
    fetch_spec("hf:Salesforce/blip-image-captioning-base", dest)
    assert online[0][1:] == (
        "Salesforce/blip-image-captioning-base",
        dest / "Salesforce" / "blip-image-captioning-base",
    )
    monkeypatch.setenv("BIDS_VEM_MODEL_DIR", str(dest))
    path = resolve_hf_model("Salesforce/blip-image-captioning-base")
    assert Path(path) == (dest / "Salesforce" / "blip-image-captioning-base").resolve()


def test_an_open_clip_tag_becomes_a_hub_cache_in_the_folder(online, tmp_path, monkeypatch):
    dest = tmp_path / "models"
    found = fetch_spec("openclip:ViT-B-32@laion2b_s34b_b79k", dest)
    assert online[0][:2] == ("file", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    assert found.is_relative_to(dest)
    monkeypatch.setenv("BIDS_VEM_MODEL_DIR", str(dest))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    spec = parse_feature_space("openclip:ViT-B-32@laion2b_s34b_b79k", "image")
    assert resolve_model_path(spec) == found


def test_the_command_fetches_into_bids_vem_model_dir_by_default(
    online, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("BIDS_VEM_MODEL_DIR", str(tmp_path / "baked"))
    # a build argument passes several specs in one word
    assert main(["models", "fetch", "sentence:all-MiniLM-L6-v2 hf:org/tiny-model"]) == 0
    assert [c[1] for c in online] == ["sentence-transformers/all-MiniLM-L6-v2", "org/tiny-model"]
    assert (tmp_path / "baked" / "org" / "tiny-model" / "config.json").is_file()
    assert capsys.readouterr().out.count("fetched") == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sentence:/models/mine"], "names a local path"),
        (["openclip:ViT-B-32"], "name a pretrained tag"),
        (["openclip:ViT-B-32@no_such_tag"], "not an open_clip pretrained tag"),
        (["hf:justaname"], "expected a hub id org/name"),
    ],
)
def test_specs_with_nothing_to_download_are_usage_errors(online, tmp_path, capsys, argv, message):
    assert main(["models", "fetch", "--dest", str(tmp_path), *argv]) == 64
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert online == []


def test_offline_mode_and_a_missing_destination_are_usage_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["models", "fetch", "--dest", str(tmp_path), "sentence:all-MiniLM-L6-v2"]) == 64
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("BIDS_VEM_MODEL_DIR", raising=False)
    assert main(["models", "fetch", "sentence:all-MiniLM-L6-v2"]) == 64
    assert "--dest" in capsys.readouterr().err
