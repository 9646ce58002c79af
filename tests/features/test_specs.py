"""Feature-space spec parsing."""

from __future__ import annotations

import pytest

from bids_vem.errors import UsageError
from bids_vem.features.specs import check_unique_names, expand_layers, parse_feature_space


@pytest.mark.parametrize(
    ("text", "modality", "expected"),
    [
        (
            "sentence:/models/all-MiniLM-L6-v2",
            "text",
            ("allMiniLML6v2", "sentence", "/models/all-MiniLM-L6-v2", None),
        ),
        (
            "sentence:all-MiniLM-L6-v2",
            "text",
            ("allMiniLML6v2", "sentence", "all-MiniLM-L6-v2", None),
        ),
        (
            "sentence:sentence-transformers/all-mpnet-base-v2",
            "text",
            ("allmpnetbasev2", "sentence", "sentence-transformers/all-mpnet-base-v2", None),
        ),
        (
            "openclip:ViT-B-32@/models/vit-b-32.safetensors",
            "image",
            ("ViTB32Image", "openclip", "ViT-B-32", "/models/vit-b-32.safetensors"),
        ),
        (
            "openclip:ViT-B-32@laion2b_s34b_b79k",
            "text",
            ("ViTB32Text", "openclip", "ViT-B-32", "laion2b_s34b_b79k"),
        ),
        (
            "openclip:/models/my-clip/",
            "image",
            ("myclipImage", "openclip", "/models/my-clip/", None),
        ),
        (
            "minilm=sentence:/m/all-MiniLM-L6-v2",
            "text",
            ("minilm", "sentence", "/m/all-MiniLM-L6-v2", None),
        ),
        (
            "clip2=OpenCLIP:ViT-B-32@x.safetensors",
            "image",
            ("clip2", "openclip", "ViT-B-32", "x.safetensors"),
        ),
    ],
)
def test_parse_feature_space(text, modality, expected):
    spec = parse_feature_space(text, modality)
    assert (spec.name, spec.family, spec.model, spec.weights) == expected
    assert spec.modality == modality
    assert spec.text == text


def test_text_and_image_spaces_of_one_clip_model_get_different_names():
    text = parse_feature_space("openclip:ViT-B-32@laion2b_s34b_b79k", "text")
    image = parse_feature_space("openclip:ViT-B-32@laion2b_s34b_b79k", "image")
    assert text.name != image.name
    check_unique_names([text, image])  # no error


@pytest.mark.parametrize(
    ("text", "modality", "fragment"),
    [
        ("all-MiniLM-L6-v2", "text", "expected [name=]family:model"),
        ("bert:/models/bert", "text", "unknown model family 'bert'"),
        ("sentence:/models/minilm", "image", "cannot embed image"),
        ("mini-lm=sentence:/models/minilm", "text", "letters and digits only"),
        ("mini_lm=sentence:/models/minilm", "text", "letters and digits only"),
        ("=sentence:/models/minilm", "text", "letters and digits only"),
        ("openclip:ViT-B-32@", "image", "nothing after '@'"),
        ("openclip:@weights.safetensors", "image", "model part"),
        ("sentence:/models/minilm@v2", "text", "take no @weights"),
        ("sentence:---", "text", "cannot derive a name"),
        ("sentence:/models/minilm", "audio", "modality must be one of"),
    ],
)
def test_bad_specs_are_usage_errors_naming_the_spec(text, modality, fragment):
    with pytest.raises(UsageError) as info:
        parse_feature_space(text, modality)
    assert info.value.exit_code == 64
    assert fragment in str(info.value)
    assert repr(text.strip()) in str(info.value)
    assert "\n" not in str(info.value)


def test_duplicate_names_are_a_usage_error():
    first = parse_feature_space("sentence:/a/all-MiniLM-L6-v2", "text")
    second = parse_feature_space("sentence:/b/all-MiniLM-L6-v2", "text")
    with pytest.raises(UsageError, match="share the name 'allMiniLML6v2'") as info:
        check_unique_names([first, second])
    assert info.value.exit_code == 64


def test_options_pool_and_layers():
    spec = parse_feature_space("hf:/models/roberta-base#pool=cls", "text")
    assert (spec.name, spec.family, spec.model, spec.pool) == (
        "robertabaseText",
        "hf",
        "/models/roberta-base",
        "cls",
    )
    spec = parse_feature_space("bt=bridgetower:/m/bt-base#layers=4,8,pooler#pool=mean", "image")
    assert spec.layers == (4, 8, "pooler") and spec.pool == "mean" and spec.model == "/m/bt-base"
    assert parse_feature_space("bridgetower:/m/bt#layers=all", "text").layers == ("all",)
    expanded = expand_layers(spec, n_layers=18, has_pooler=True)
    assert [(s.name, s.layer, s.layers) for s in expanded] == [
        ("btL4", 4, None),
        ("btL8", 8, None),
        ("btPooler", "pooler", None),
    ]
    everything = expand_layers(parse_feature_space("x=hf:/m/vit#layers=all", "image"), 3)
    assert [s.name for s in everything] == ["xL1", "xL2", "xL3"]
    with pytest.raises(UsageError, match="layer 19 does not exist"):
        expand_layers(parse_feature_space("bridgetower:/m/bt#layers=19", "text"), 18)


@pytest.mark.parametrize(
    ("text", "modality", "message"),
    [
        ("hf:/m/x#pool=max", "text", "#pool=max is not supported"),
        ("hf:/m/x#pool=embeds", "text", "not supported for hf text"),
        ("hf:/m/x#layers=1,x", "text", "'x' is not a layer number"),
        ("hf:/m/x#layers=2,2", "text", "repeats a layer"),
        ("hf:/m/x#depth=3", "text", "bad option"),
        ("hf:/m/x#layers=2#pool=embeds", "image", "layer spaces pool with"),
        ("openclip:/m/clip#layers=2", "image", "#layers is supported for the families"),
        ("sentence:/m/minilm#pool=mean", "text", "not supported for sentence"),
        ("hf:bert@w.safetensors", "text", "take no @weights"),
    ],
)
def test_bad_options_are_usage_errors(text, modality, message):
    with pytest.raises(UsageError, match=message) as info:
        parse_feature_space(text, modality)
    assert info.value.exit_code == 64 and "\n" not in str(info.value)
