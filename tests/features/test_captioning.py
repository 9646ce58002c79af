"""Captioning with tiny random vision-language models saved with save_pretrained, loaded offline.

Models: BLIP and GIT (captioners), LLaVA and Qwen2-VL (chat VLMs through
AutoModelForImageTextToText). Qwen2-VL gives each image as many tokens as its size needs, so
a batch of differently sized images is padded: it checks that left padding keeps greedy
captions independent of the batch size. Tokenizers are the real all-MiniLM-L6-v2 WordPiece
tokenizer (offline) with the special tokens each model needs added.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bids_vem.errors import DataError, InputMissingError, UsageError
from bids_vem.features.captioning import (
    DEFAULT_PROMPT,
    Captioner,
    CaptionSettings,
    read_generated_captions,
    write_captions_tsv,
)
from bids_vem.features.families.transformers import resolve_hf_model
from bids_vem.features.weights import weights_sha256

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from tests.vlm_builders import BUILDERS  # noqa: E402

SHORT = {"max_new_tokens": 6}


@pytest.fixture(scope="session")
def caption_models(tmp_path_factory, minilm_path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("captioners")
    return {name: build(root / name, minilm_path) for name, build in BUILDERS.items()}


@pytest.fixture(scope="session")
def captioners(caption_models) -> dict[str, Captioner]:
    return {name: Captioner.from_pretrained(path) for name, path in caption_models.items()}


@pytest.fixture(scope="session")
def mixed_images():
    """Generated RGB images of different sizes and aspect ratios."""
    from PIL import Image

    rng = np.random.default_rng(0)
    sizes = [(56, 56), (112, 112), (168, 56), (80, 120), (60, 60), (140, 70)]
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB") for w, h in sizes
    ]


@pytest.fixture(scope="session")
def coco_files(shared_fixtures) -> list[Path]:
    """Real COCO images (varied sizes; grayscale ones among them when present)."""
    from PIL import Image

    files = sorted((shared_fixtures / "coco-mini" / "val2017").glob("*.jpg"))
    if not files:
        pytest.skip("coco-mini has no val2017 images")
    gray = [f for f in files if Image.open(f).mode != "RGB"][:1]
    return gray + [f for f in files if f not in gray][: 6 - len(gray)]


# --- structure, determinism, batching --------------------------------------------------------


@pytest.mark.parametrize("name", list(BUILDERS))
def test_real_images_give_n_images_by_k_captions(captioners, coco_files, name):
    settings = CaptionSettings(captions_per_image=2, batch_size=4, **SHORT)
    captions = captioners[name].caption_files(coco_files, settings, progress=False)
    assert len(captions) == len(coco_files)
    for per_image in captions:
        assert len(per_image) == 2
        assert all(
            isinstance(text, str) and "\n" not in text and "\t" not in text for text in per_image
        )
        assert per_image[0] != per_image[1]  # two different beams
    # captions depend on the image
    assert len({tuple(c) for c in captions}) > 1


@pytest.mark.parametrize("name", list(BUILDERS))
def test_same_seed_same_captions(captioners, mixed_images, name):
    settings = CaptionSettings(seed=3, batch_size=3, **SHORT)
    first = captioners[name].caption(mixed_images, settings)
    again = captioners[name].caption(mixed_images, settings)
    assert first == again
    assert all(len(c) == 1 for c in first)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_batch_size_does_not_change_greedy_captions(captioners, mixed_images, name):
    one = captioners[name].caption(mixed_images, CaptionSettings(batch_size=1, **SHORT))
    four = captioners[name].caption(mixed_images, CaptionSettings(batch_size=4, **SHORT))
    assert one == four


def test_left_padding_is_what_keeps_batched_captions_right(captioners, mixed_images):
    qwen = captioners["qwen2_vl"]
    inputs = qwen._inputs(mixed_images, DEFAULT_PROMPT)
    lengths = inputs["attention_mask"].sum(dim=1)
    assert lengths.min() < lengths.max()  # the batch is really padded
    assert (inputs["attention_mask"][:, -1] == 1).all()  # ... on the left
    single = qwen.caption(mixed_images, CaptionSettings(batch_size=1, **SHORT))
    batched = CaptionSettings(batch_size=len(mixed_images), **SHORT)
    qwen.tokenizer.padding_side = "right"
    try:
        right_padded = qwen.caption(mixed_images, batched)
    finally:
        qwen.tokenizer.padding_side = "left"
    assert right_padded != single  # the control: right padding breaks batching
    assert qwen.caption(mixed_images, batched) == single


# --- prompts ---------------------------------------------------------------------------------


def test_prompts_by_model_kind(captioners):
    default = CaptionSettings()
    assert default.prompt == DEFAULT_PROMPT
    assert captioners["blip"].prompt_for(default) is None  # BLIP would continue the request
    assert captioners["blip"].prompt_for(CaptionSettings(prompt="a photo of")) == "a photo of"
    assert captioners["llava"].prompt_for(default) == DEFAULT_PROMPT
    assert captioners["qwen2_vl"].prompt_for(CaptionSettings(prompt=None)) == DEFAULT_PROMPT
    assert captioners["llava"].is_chat and not captioners["blip"].is_chat


@pytest.mark.parametrize(
    ("name", "prompt", "echo"),
    [
        # BLIP echoes its prompt without the final [SEP]; the others echo every input token
        ("blip", "a picture of", -1),
        ("git", "a picture of", 0),
        ("llava", "Describe the scene.", 0),
        ("qwen2_vl", "Describe the scene.", 0),
    ],
)
def test_prompt_is_stripped_from_the_caption(captioners, mixed_images, name, prompt, echo):
    captioner = captioners[name]
    settings = CaptionSettings(prompt=prompt, **SHORT)
    caption = captioner.caption(mixed_images[:1], settings)[0][0]
    # the reference: generate by hand, decode all and what follows the prompt
    inputs = captioner._to_device(captioner._inputs(mixed_images[:1], prompt))
    n_prompt = inputs["input_ids"].shape[1] + echo
    with torch.inference_mode():
        full = captioner.model.generate(**inputs, **settings.generation_kwargs())
    decoded = " ".join(captioner.tokenizer.decode(full[0], skip_special_tokens=True).split())
    words = prompt.lower().rstrip(".")  # the MiniLM tokenizer is uncased
    if captioner.is_chat:
        assert words in decoded and "assistant" in decoded
    else:
        assert decoded.startswith(words)
    expected = captioner.tokenizer.decode(full[0, n_prompt:], skip_special_tokens=True)
    assert caption == " ".join(expected.split())
    assert caption and words not in caption and "assistant" not in caption


# --- errors ----------------------------------------------------------------------------------


def test_corrupt_image_is_65_naming_it(captioners, tmp_path, make_image):
    good = make_image(tmp_path / "good.png", "RGB", (40, 30), 0)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError) as info:
        captioners["blip"].caption_files([good, bad], CaptionSettings(**SHORT), progress=False)
    assert info.value.exit_code == 65
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_missing_model_is_66_listing_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("BIDS_VEM_MODEL_DIR", raising=False)
    with pytest.raises(InputMissingError) as info:
        resolve_hf_model("hf:Salesforce/blip-image-captioning-large", [tmp_path / "models"])
    message = str(info.value)
    assert info.value.exit_code == 66
    assert str(tmp_path / "models" / "Salesforce" / "blip-image-captioning-large") in message
    assert str(tmp_path / "hub" / "models--Salesforce--blip-image-captioning-large") in message


def test_incomplete_folder_is_66(caption_models, tmp_path):
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(caption_models["blip"] / "config.json", half / "config.json")
    with pytest.raises(InputMissingError) as info:
        Captioner.from_pretrained(half)
    assert info.value.exit_code == 66 and str(half) in str(info.value)


def test_not_a_captioning_model_is_64(minilm_path):
    with pytest.raises(UsageError) as info:
        Captioner.from_pretrained(minilm_path)
    assert info.value.exit_code == 64 and "'bert'" in str(info.value)


def test_corrupt_weights_are_65(caption_models, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(caption_models["git"], broken)
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(DataError) as info:
        Captioner.from_pretrained(broken)
    assert info.value.exit_code == 65 and str(broken) in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_new_tokens": 0},
        {"num_beams": 0},
        {"batch_size": -1},
        {"dtype": "int8"},
        {"prompt": " "},
    ],
)
def test_bad_settings_are_64(kwargs):
    with pytest.raises(UsageError):
        CaptionSettings(**kwargs)


def test_half_precision_needs_cuda(caption_models):
    with pytest.raises(UsageError, match="CUDA"):
        Captioner.from_pretrained(caption_models["blip"], dtype="bfloat16")


# --- provenance and files ------------------------------------------------------------------


def test_description_names_model_and_weights(captioners, caption_models):
    description = captioners["llava"].description()
    assert description["model_type"] == "llava"
    assert description["model_class"] == "LlavaForConditionalGeneration"
    assert description["kind"] == "chat"
    assert description["weights_sha256"] == weights_sha256(caption_models["llava"])
    assert description["transformers_version"] == transformers.__version__
    assert description["dtype"] == "float32"
    json.dumps(description)


def test_captions_tsv_round_trip_with_sidecar(captioners, tmp_path):
    captions = {
        "images/a.jpg": ["a dog\ton a\nsofa", "a dog"],
        "images/b.jpg": [""],
    }
    settings = CaptionSettings(num_beams=2, captions_per_image=2)
    model_spec = "hf:Salesforce/blip-image-captioning-large"
    path = tmp_path / "stimuli" / "desc-blip_captions.tsv"
    written = write_captions_tsv(
        path, captions, model_spec=model_spec, settings=settings, captioner=captioners["blip"]
    )
    assert written == path
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == [
        "stim_file",
        "caption",
        "model",
        "prompt",
        "max_new_tokens",
        "num_beams",
    ]
    assert lines[1].split("\t") == ["images/a.jpg", "a dog on a sofa", model_spec, "n/a", "60", "2"]
    assert len(lines) == 4
    assert read_generated_captions(path) == {
        "images/a.jpg": ["a dog on a sofa", "a dog"],
        "images/b.jpg": [""],
    }
    sidecar = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["model"] == model_spec
    assert sidecar["generation"]["captions_per_image"] == 2
    assert sidecar["weights_sha256"] == captioners["blip"].description()["weights_sha256"]
    assert sidecar["transformers_version"] == transformers.__version__
    assert "Description" in sidecar
    # no temporary files are left beside the outputs
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "desc-blip_captions.json",
        "desc-blip_captions.tsv",
    ]


def test_reading_a_bad_captions_file(tmp_path):
    with pytest.raises(InputMissingError):
        read_generated_captions(tmp_path / "none.tsv")
    wrong = tmp_path / "wrong.tsv"
    wrong.write_text("file\ttext\na\tb\n", encoding="utf-8")
    with pytest.raises(DataError, match="stim_file"):
        read_generated_captions(wrong)
    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("stim_file\tcaption\na.jpg\tx\ty\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2"):
        read_generated_captions(ragged)
