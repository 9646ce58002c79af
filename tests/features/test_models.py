"""Model resolution (search order, offline, errors), hashing and open_clip config inspection."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from bids_vem.errors import DataError, InputMissingError, UsageError
from bids_vem.features.families.openclip import inspect_openclip, load_openclip
from bids_vem.features.models import resolve_model_path
from bids_vem.features.specs import parse_feature_space
from bids_vem.features.weights import offline_mode, weights_sha256


def _fake_sentence_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "modules.json").write_text("[]", encoding="utf-8")
    return path


def test_explicit_sentence_folder(minilm_path):
    spec = parse_feature_space(f"sentence:{minilm_path}", "text")
    assert resolve_model_path(spec) == minilm_path.resolve()


def test_search_order_model_dirs_then_env_then_hf_cache_then_package(
    tmp_path, isolated_caches, monkeypatch, minilm_path
):
    spec = parse_feature_space("sentence:all-MiniLM-L6-v2", "text")
    # nothing local but the installed package
    assert resolve_model_path(spec, [tmp_path / "empty"]) == minilm_path

    # the Hugging Face cache comes before the package
    repo = isolated_caches["hf"] / "models--sentence-transformers--all-MiniLM-L6-v2"
    snapshot = _fake_sentence_folder(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123", encoding="utf-8")
    assert resolve_model_path(spec, [tmp_path / "empty"]) == snapshot

    # $BIDS_VEM_MODEL_DIR comes before the caches
    env_model = _fake_sentence_folder(tmp_path / "env" / "all-MiniLM-L6-v2")
    monkeypatch.setenv("BIDS_VEM_MODEL_DIR", str(tmp_path / "env"))
    assert resolve_model_path(spec, [tmp_path / "empty"]) == env_model.resolve()

    # --model-dir comes first; the hub-style name is found by its base name too
    dir_model = _fake_sentence_folder(tmp_path / "models" / "all-MiniLM-L6-v2")
    assert resolve_model_path(spec, [tmp_path / "models"]) == dir_model.resolve()
    hub_style = parse_feature_space("sentence:sentence-transformers/all-MiniLM-L6-v2", "text")
    assert resolve_model_path(hub_style, [tmp_path / "models"]) == dir_model.resolve()


def test_sentence_transformers_cache_is_searched(tmp_path, isolated_caches):
    model = _fake_sentence_folder(isolated_caches["st"] / "sentence-transformers_all-mpnet-base-v2")
    spec = parse_feature_space("sentence:all-mpnet-base-v2", "text")
    assert resolve_model_path(spec) == model.resolve()


def test_missing_sentence_model_is_exit_66_listing_every_path(
    tmp_path, isolated_caches, monkeypatch
):
    monkeypatch.setenv("BIDS_VEM_MODEL_DIR", str(tmp_path / "envdir"))
    spec = parse_feature_space("sentence:all-mpnet-base-v2", "text")
    with pytest.raises(InputMissingError) as info:
        resolve_model_path(spec, [tmp_path / "d1", tmp_path / "d2"])
    message = str(info.value)
    assert info.value.exit_code == 66
    assert "\n" not in message
    assert "sentence:all-mpnet-base-v2" in message
    for tried in (
        tmp_path / "d1" / "all-mpnet-base-v2",
        tmp_path / "d2" / "all-mpnet-base-v2",
        tmp_path / "envdir" / "all-mpnet-base-v2",
        isolated_caches["hf"] / "models--sentence-transformers--all-mpnet-base-v2",
        isolated_caches["st"] / "sentence-transformers_all-mpnet-base-v2",
    ):
        assert str(tried) in message
    assert "huggingface-cli download" in message and "--model-dir" in message


def test_explicit_path_that_is_not_a_model_is_exit_66(tmp_path):
    (tmp_path / "notamodel").mkdir()
    spec = parse_feature_space(f"sentence:{tmp_path / 'notamodel'}", "text")
    with pytest.raises(InputMissingError, match="modules.json") as info:
        resolve_model_path(spec)
    assert str(tmp_path / "notamodel") in str(info.value)


def test_openclip_local_dir_and_weights_file(tiny_clip, tmp_path, isolated_caches):
    spec = parse_feature_space(f"openclip:{tiny_clip.local_dir}", "image")
    assert resolve_model_path(spec) == tiny_clip.local_dir.resolve()
    spec = parse_feature_space(f"openclip:tiny-clip@{tiny_clip.weights_file}", "image")
    assert resolve_model_path(spec) == tiny_clip.weights_file.resolve()
    # a bare file name is looked up in the model dirs; a bare architecture as a local-dir folder
    spec = parse_feature_space("openclip:tiny-clip@tiny-clip.safetensors", "image")
    assert resolve_model_path(spec, [tiny_clip.weights_file.parent]) == tiny_clip.weights_file
    spec = parse_feature_space("openclip:tinyclip", "image")
    assert resolve_model_path(spec, [tiny_clip.local_dir.parent]) == tiny_clip.local_dir.resolve()
    with pytest.raises(InputMissingError, match="open_clip_config.json") as info:
        resolve_model_path(spec, [tmp_path])
    assert str(tmp_path / "tinyclip") in str(info.value)


def test_openclip_pretrained_tag_only_from_the_local_cache(tmp_path, isolated_caches):
    spec = parse_feature_space("openclip:ViT-B-32@laion2b_s34b_b79k", "image")
    with pytest.raises(InputMissingError) as info:
        resolve_model_path(spec, [tmp_path / "models"])
    message = str(info.value)
    assert info.value.exit_code == 66
    assert str(isolated_caches["hf"] / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K") in message
    assert str(tmp_path / "models" / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K") in message

    # a populated hub cache (as huggingface-cli download leaves it) is found without network
    repo = isolated_caches["hf"] / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"weights")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd", encoding="utf-8")
    found = resolve_model_path(spec, [tmp_path / "models"])
    assert Path(found).read_bytes() == b"weights"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("openclip:ViT-B-32@not_a_tag", "neither a weights file"),
        ("openclip:NoSuchArch@laion2b_s34b_b79k", "not an open_clip architecture"),
    ],
)
def test_unknown_tag_or_architecture_is_usage_error(text, fragment):
    with pytest.raises(UsageError, match=fragment) as info:
        resolve_model_path(parse_feature_space(text, "image"))
    assert info.value.exit_code == 64


def test_inspect_openclip_records_quick_gelu_and_tag_preprocessing(tmp_path):
    dummy = tmp_path / "w.bin"
    dummy.write_bytes(b"")
    # the OpenAI weights were trained with QuickGELU: the model must be built with it (#771)
    openai = inspect_openclip(parse_feature_space("openclip:ViT-B-32@openai", "image"), dummy)
    assert openai.quick_gelu is True
    assert openai.config_source == "open_clip registry: ViT-B-32"
    assert openai.preprocessing["size"] == 224
    assert openai.preprocessing["interpolation"] == "bicubic"
    laion = inspect_openclip(
        parse_feature_space("openclip:ViT-B-32@laion2b_s34b_b79k", "image"), dummy
    )
    assert laion.quick_gelu is False
    # a weights file with a registered name: the registry config, as written
    named = inspect_openclip(
        parse_feature_space(f"openclip:ViT-B-32-quickgelu@{dummy}", "image"), dummy
    )
    assert named.quick_gelu is True and named.architecture == "ViT-B-32-quickgelu"


def test_architecture_config_missing_is_exit_66(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    spec = parse_feature_space(f"openclip:MyArch@{weights}", "image")
    with pytest.raises(InputMissingError, match="architecture config") as info:
        inspect_openclip(spec, weights)
    assert str(tmp_path / "open_clip_config.json") in str(info.value)


def test_local_dir_config_is_authoritative(tiny_clip):
    info = inspect_openclip(
        parse_feature_space(f"openclip:{tiny_clip.local_dir}", "image"), tiny_clip.local_dir
    )
    assert info.model_cfg == tiny_clip.config
    assert info.config_source == str(tiny_clip.local_dir / "open_clip_config.json")
    assert info.preprocessing["size"] == 32
    model, _, _ = load_openclip(info)
    assert tuple(model.visual.preprocess_cfg["size"]) == (32, 32)


def test_weights_that_do_not_fit_the_architecture_are_a_data_error(
    tmp_path, tiny_clip, make_tiny_clip
):
    other_cfg = {**tiny_clip.config, "embed_dim": 16}
    make_tiny_clip(tmp_path / "other", seed=1, cfg=other_cfg)
    folder = tmp_path / "mismatch"
    shutil.copytree(tiny_clip.local_dir, folder)
    shutil.copy(
        tmp_path / "other" / "open_clip_model.safetensors", folder / "open_clip_model.safetensors"
    )
    info = inspect_openclip(parse_feature_space(f"openclip:{folder}", "image"), folder)
    with pytest.raises(DataError, match="do not fit architecture") as info_error:
        load_openclip(info)
    assert info_error.value.exit_code == 65
    assert str(folder / "open_clip_model.safetensors") in str(info_error.value)


def test_weights_sha256_of_file_and_folder(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"abc")
    (folder / "config.json").write_text("{}", encoding="utf-8")
    assert weights_sha256(weights) == hashlib.sha256(b"abc").hexdigest()
    before = weights_sha256(folder)
    assert before == weights_sha256(folder)
    # same size, new content and mtime: the memo must not return the old hash
    weights.write_bytes(b"abd")
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert weights_sha256(weights) == hashlib.sha256(b"abd").hexdigest()
    assert weights_sha256(folder) != before
    with pytest.raises(InputMissingError):
        weights_sha256(tmp_path / "absent")


def test_offline_mode_sets_and_restores(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    before = constants.HF_HUB_OFFLINE
    with offline_mode():
        assert os.environ["HF_HUB_OFFLINE"] == "1"
        assert os.environ["TRANSFORMERS_OFFLINE"] == "1"
        assert constants.HF_HUB_OFFLINE is True
    assert "HF_HUB_OFFLINE" not in os.environ
    assert os.environ["TRANSFORMERS_OFFLINE"] == "0"
    assert constants.HF_HUB_OFFLINE == before
    with offline_mode(allow_downloads=True):
        assert "HF_HUB_OFFLINE" not in os.environ
