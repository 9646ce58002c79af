"""Finding transformers model folders offline: explicit folders, --model-dir, hub caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bids_vem.errors import InputMissingError, UsageError
from bids_vem.features.families.transformers import is_hf_model_dir, resolve_hf_model
from bids_vem.features.weights import hf_cache_dirs
from tests.helpers import isolated_caches


def _model_folder(path: Path, weights: str = "model.safetensors") -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "blip"}', encoding="utf-8")
    (path / weights).write_bytes(b"\0")
    return path


def _cache_entry(cache: Path, repo_id: str, revision: str, ref: bool = True) -> Path:
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = _model_folder(repo / "snapshots" / revision)
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(revision, encoding="utf-8")
    return snapshot


@pytest.fixture
def hf_env(tmp_path, monkeypatch) -> dict[str, Path]:
    """Every cache the resolver knows, pointed at empty folders under tmp_path."""
    return isolated_caches(monkeypatch, tmp_path, {"hub": "HF_HUB_CACHE", "hf_home": "HF_HOME"})


def test_explicit_folder_with_and_without_prefix(tmp_path, hf_env):
    folder = _model_folder(tmp_path / "blip")
    assert resolve_hf_model(str(folder)) == folder.resolve()
    assert resolve_hf_model(f"hf:{folder}") == folder.resolve()


def test_sharded_and_bin_weights_count_as_complete(tmp_path):
    assert is_hf_model_dir(_model_folder(tmp_path / "a", "pytorch_model.bin"))
    assert is_hf_model_dir(_model_folder(tmp_path / "b", "model.safetensors.index.json"))
    config_only = tmp_path / "c"
    config_only.mkdir()
    (config_only / "config.json").write_text("{}", encoding="utf-8")
    assert not is_hf_model_dir(config_only)


def test_incomplete_explicit_folder_is_66(tmp_path, hf_env):
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(InputMissingError) as info:
        resolve_hf_model(str(folder))
    assert info.value.exit_code == 66
    assert "incomplete" in str(info.value) and str(folder) in str(info.value)


def test_search_order_model_dir_then_env_then_caches(tmp_path, hf_env, monkeypatch):
    repo_id = "Salesforce/blip-image-captioning-large"
    # HF_HOME/hub is searched (after HF_HUB_CACHE), refs/main picks the revision
    _cache_entry(hf_env["hf_home"] / "hub", repo_id, "old", ref=False)
    home_snapshot = _cache_entry(hf_env["hf_home"] / "hub", repo_id, "abc")
    assert resolve_hf_model(f"hf:{repo_id}") == home_snapshot.resolve()
    # HF_HUB_CACHE comes before HF_HOME/hub
    hub_snapshot = _cache_entry(hf_env["hub"], repo_id, "def")
    assert resolve_hf_model(repo_id) == hub_snapshot.resolve()
    # a --model-dir that is itself a hub cache comes before the caches
    dir_cache = _cache_entry(tmp_path / "dircache", repo_id, "r1")
    assert resolve_hf_model(repo_id, [tmp_path / "dircache"]) == dir_cache.resolve()
    # $BIDS_VEM_MODEL_DIR by base name
    env_model = _model_folder(tmp_path / "env" / "blip-image-captioning-large")
    monkeypatch.setenv("BIDS_VEM_MODEL_DIR", str(tmp_path / "env"))
    assert resolve_hf_model(repo_id, [tmp_path / "dircache"]) == env_model.resolve()
    # --model-dir/<org>/<name> comes first
    dir_model = _model_folder(tmp_path / "models" / "Salesforce" / "blip-image-captioning-large")
    assert resolve_hf_model(repo_id, [tmp_path / "models"]) == dir_model.resolve()


def test_default_cache_under_home(hf_env, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.delenv("HF_HOME")
    default = hf_env["home"] / ".cache" / "huggingface" / "hub"
    assert hf_cache_dirs() == [default]
    snapshot = _cache_entry(default, "org/name", "123")
    assert resolve_hf_model("org/name") == snapshot.resolve()


def test_newest_complete_snapshot_without_ref(tmp_path, hf_env):
    snapshot = _cache_entry(hf_env["hub"], "org/name", "only", ref=False)
    assert resolve_hf_model("org/name") == snapshot.resolve()


def test_missing_model_is_66_listing_every_path(tmp_path, hf_env, monkeypatch):
    monkeypatch.setenv("BIDS_VEM_MODEL_DIR", str(tmp_path / "envdir"))
    with pytest.raises(InputMissingError) as info:
        resolve_hf_model("hf:org/some-vlm", [tmp_path / "d1"])
    message = str(info.value)
    assert info.value.exit_code == 66
    assert "\n" not in message
    assert "hf:org/some-vlm" in message
    for tried in (
        tmp_path / "d1" / "org" / "some-vlm",
        tmp_path / "d1" / "some-vlm",
        tmp_path / "envdir" / "some-vlm",
        hf_env["hub"] / "models--org--some-vlm",
        hf_env["hf_home"] / "hub" / "models--org--some-vlm",
        hf_env["home"] / ".cache" / "huggingface" / "hub" / "models--org--some-vlm",
    ):
        assert str(tried) in message
    assert "--model-dir" in message


def test_missing_explicit_folder_and_empty_name(tmp_path, hf_env):
    with pytest.raises(InputMissingError, match="nowhere"):
        resolve_hf_model(str(tmp_path / "nowhere"))
    with pytest.raises(UsageError):
        resolve_hf_model("hf:")


def test_never_downloads(hf_env, monkeypatch):
    # an id that exists on the hub is still not found: nothing is fetched
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(InputMissingError):
        resolve_hf_model("Salesforce/blip-image-captioning-base")
    assert not any(Path(hf_env["hub"]).iterdir())
    assert os.environ.get("HF_HUB_OFFLINE") is None
