"""hf (transformers LMs, CLIP vision) and BridgeTower encoders against manual forward passes.

Every model is a tiny random one saved with save_pretrained and reloaded offline.
"""

from __future__ import annotations

import numpy as np
import pytest

from bids_vem.errors import InputMissingError, UsageError
from bids_vem.features.batching import read_rgb_image
from bids_vem.features.encoders import encode, encode_layers
from bids_vem.features.extract import expand_feature_space, extract_feature_spaces
from bids_vem.features.models import describe_specs, resolve_model_path
from bids_vem.features.specs import parse_feature_space

TEXTS = [
    "a dog on a couch",
    "a red bus driving down a street in the city",
    "two giraffes",
    "a plate of food on a table",
]
CORPUS = TEXTS * 5 + ["a man riding a wave on a surfboard", "the cat sat on the mat"]


@pytest.fixture(scope="module")
def bpe_tokenizer_files(tmp_path_factory):
    """A tiny byte-level BPE vocabulary (GPT-2 / RoBERTa style), trained offline on CORPUS."""
    from tokenizers import ByteLevelBPETokenizer

    folder = tmp_path_factory.mktemp("bpe")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        CORPUS,
        vocab_size=300,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.save_model(str(folder))
    bpe.save(str(folder / "tokenizer.json"))
    return folder / "vocab.json", folder / "merges.txt"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, minilm_path):
    """A 2-layer BERT with the real MiniLM WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("models") / "tiny-bert"
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory, bpe_tokenizer_files):
    import torch
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("models") / "tiny-gpt2"
    vocab, _ = bpe_tokenizer_files
    # a decoder LM's tokenizer: byte-level BPE, an end-of-text token and no pad token
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(vocab.parent / "tokenizer.json"), eos_token="</s>"
    )
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64)
    torch.manual_seed(1)
    GPT2Model(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_clip_vision(tmp_path_factory):
    """A full tiny CLIPModel checkpoint (as on the hub) with its image processor."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = tmp_path_factory.mktemp("models") / "tiny-clip-hf"
    config = CLIPConfig(
        text_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "intermediate_size": 64, "vocab_size": 99},
        vision_config={"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
                       "intermediate_size": 64, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(2)
    CLIPModel(config).eval().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_bridgetower(tmp_path_factory, bpe_tokenizer_files):
    """BridgeTower with 3 uni-modal layers per tower and 2 cross-modal layers."""
    import torch
    from transformers import (
        BridgeTowerConfig,
        BridgeTowerImageProcessor,
        BridgeTowerModel,
        BridgeTowerProcessor,
        RobertaTokenizerFast,
    )

    folder = tmp_path_factory.mktemp("models") / "tiny-bridgetower"
    vocab, merges = bpe_tokenizer_files
    tokenizer = RobertaTokenizerFast(vocab_file=str(vocab), merges_file=str(merges))
    config = BridgeTowerConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 3,
                     "num_attention_heads": 2, "intermediate_size": 64,
                     "max_position_embeddings": 64},
        vision_config={"hidden_size": 64, "num_hidden_layers": 3, "image_size": 32,
                       "patch_size": 8},
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    )  # fmt: skip
    torch.manual_seed(3)
    BridgeTowerModel(config).eval().save_pretrained(folder)
    image_processor = BridgeTowerImageProcessor(
        size={"shortest_edge": 32}, crop_size={"shortest_edge": 32}, size_divisor=8
    )
    BridgeTowerProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(
        folder
    )
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from tests.features.conftest import write_image

    folder = tmp_path_factory.mktemp("images")
    return [
        write_image(folder / "rgb.jpg", "RGB", (64, 48), 0),
        write_image(folder / "gray.png", "L", (40, 90), 1),
        write_image(folder / "alpha.png", "RGBA", (33, 70), 2),
        write_image(folder / "big.png", "RGB", (120, 100), 3),
        write_image(folder / "palette.png", "P", (50, 50), 4),
    ]


def _hf_reference(folder, texts, layer=None):
    """Token states of each text, one text at a time (no padding), from the saved model."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    out = []
    with torch.inference_mode():
        for text in texts:
            tokens = tokenizer([text], return_tensors="pt")
            output = model(**tokens, output_hidden_states=True)
            states = output.last_hidden_state if layer is None else output.hidden_states[layer]
            out.append(states[0].numpy())
    return out


@pytest.mark.parametrize("pool", ["mean", "cls", "last"])
def test_hf_encoder_pooling_matches_manual_computation(tiny_bert, pool):
    spec = parse_feature_space(f"hf:{tiny_bert}#pool={pool}", "text")
    values = encode(spec, TEXTS, model_path=tiny_bert, batch_size=3)
    states = _hf_reference(tiny_bert, TEXTS)
    expected = {"mean": [s.mean(0) for s in states], "cls": [s[0] for s in states],
                "last": [s[-1] for s in states]}[pool]  # fmt: skip
    assert values.shape == (len(TEXTS), 32) and values.dtype == np.float32
    np.testing.assert_allclose(values, np.stack(expected), atol=2e-5)


def test_decoder_lm_last_token_and_layers_in_one_pass(tiny_gpt2):
    spec = parse_feature_space(f"gpt=hf:{tiny_gpt2}#pool=last#layers=all", "text")
    layer_specs = expand_feature_space(spec)
    assert [s.name for s in layer_specs] == ["gptL1", "gptL2"]
    # padded batches (GPT-2 has no pad token) give the unpadded last-token states
    values = encode_layers(spec, TEXTS, model_path=tiny_gpt2, layers=[0, 1, 2, None])
    for layer in (0, 1, 2):
        expected = np.stack([s[-1] for s in _hf_reference(tiny_gpt2, TEXTS, layer)])
        np.testing.assert_allclose(values[layer], expected, atol=2e-5)
    final = np.stack([s[-1] for s in _hf_reference(tiny_gpt2, TEXTS)])
    np.testing.assert_allclose(values[None], final, atol=2e-5)


def test_hf_clip_vision_tower_embeds_pooled_and_layers(tiny_clip_vision, images):
    import torch
    from transformers import CLIPImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(str(tiny_clip_vision)).eval()
    processor = CLIPImageProcessor.from_pretrained(str(tiny_clip_vision))
    pixels = processor(images=[read_rgb_image(p) for p in images], return_tensors="pt")
    with torch.inference_mode():
        vision = model.vision_model(pixel_values=pixels["pixel_values"], output_hidden_states=True)
        embeds = model.visual_projection(vision.pooler_output).numpy()

    spec = parse_feature_space(f"hf:{tiny_clip_vision}", "image")
    values = encode(spec, images, model_path=tiny_clip_vision, batch_size=2, progress=False)
    assert values.shape == (len(images), 16)
    np.testing.assert_allclose(values, embeds, atol=1e-5)

    pooled = parse_feature_space(f"hf:{tiny_clip_vision}#pool=pooled", "image")
    values = encode(pooled, images, model_path=tiny_clip_vision, progress=False)
    np.testing.assert_allclose(values, vision.pooler_output.numpy(), atol=1e-5)

    layered = parse_feature_space(f"hf:{tiny_clip_vision}#layers=1,3#pool=cls", "image")
    per_layer = encode_layers(
        layered, images, model_path=tiny_clip_vision, layers=[1, 3], num_workers=2,
        progress=False,
    )  # fmt: skip
    for layer in (1, 3):
        np.testing.assert_allclose(
            per_layer[layer], vision.hidden_states[layer][:, 0].numpy(), atol=1e-5
        )


def _bridgetower_reference(folder, text, image):
    import torch
    from PIL import Image
    from transformers import BridgeTowerModel, BridgeTowerProcessor

    model = BridgeTowerModel.from_pretrained(str(folder)).eval()
    processor = BridgeTowerProcessor.from_pretrained(str(folder))
    if image is None:
        image = Image.new("RGB", (32, 32))
    with torch.inference_mode():
        inputs = processor(images=image, text=text, return_tensors="pt")
        return model(**inputs, output_hidden_states=True)


def test_bridgetower_text_layers_one_pass(tiny_bridgetower):
    spec = parse_feature_space(f"bt=bridgetower:{tiny_bridgetower}#layers=all", "text")
    layer_specs = expand_feature_space(spec)
    # 3 RoBERTa layers then 2 cross-modal layers of the text stream; no pooler for text
    assert [s.name for s in layer_specs] == ["btL1", "btL2", "btL3", "btL4", "btL5"]
    values = encode_layers(
        spec, TEXTS, model_path=tiny_bridgetower, layers=[1, 3, 4, 5], batch_size=3
    )
    for i, text in enumerate(TEXTS):
        reference = _bridgetower_reference(tiny_bridgetower, text, None)
        text_states, _, cross = reference.hidden_states
        np.testing.assert_allclose(values[1][i], text_states[1][0].mean(0).numpy(), atol=2e-5)
        np.testing.assert_allclose(values[3][i], text_states[3][0].mean(0).numpy(), atol=2e-5)
        np.testing.assert_allclose(values[4][i], cross[0][0][0].mean(0).numpy(), atol=2e-5)
        np.testing.assert_allclose(values[5][i], cross[1][0][0].mean(0).numpy(), atol=2e-5)
    assert values[1].shape == (len(TEXTS), 32)


def test_bridgetower_image_layers_and_pooler(tiny_bridgetower, images, tmp_path):
    spec = parse_feature_space(f"bt=bridgetower:{tiny_bridgetower}#layers=all#pool=cls", "image")
    stim_ids = [p.name for p in images]
    feature_sets = extract_feature_spaces(
        spec,
        stim_ids,
        image_paths=dict(zip(stim_ids, images, strict=True)),
        cache_dir=tmp_path / "cache",
        batch_size=2,
        progress=False,
    )
    names = [fs.name for fs in feature_sets]
    assert names == ["btL1", "btL2", "btL3", "btL4", "btL5", "btPooler"]
    dims = [fs.n_features for fs in feature_sets]
    assert dims == [64, 64, 64, 32, 32, 64]  # ViT width, cross-modal width, 2 x pooled CLS
    assert [fs.metadata["layer"] for fs in feature_sets] == [1, 2, 3, 4, 5, "pooler"]
    for i, path in enumerate(images):
        reference = _bridgetower_reference(tiny_bridgetower, "", read_rgb_image(path))
        _, image_states, cross = reference.hidden_states
        np.testing.assert_allclose(
            feature_sets[1].values[i], image_states[2][0, 0].numpy(), atol=2e-5
        )  # ViT states run (tokens, batch, d)
        np.testing.assert_allclose(feature_sets[4].values[i], cross[1][1][0, 0].numpy(), atol=2e-5)
        np.testing.assert_allclose(
            feature_sets[5].values[i], reference.pooler_output[0].numpy(), atol=2e-5
        )
    # every layer space is cached on its own: a rerun of one layer loads no model
    again = extract_feature_spaces(
        parse_feature_space(f"bt=bridgetower:{tiny_bridgetower}#layers=5#pool=cls", "image"),
        stim_ids,
        image_paths=dict(zip(stim_ids, images, strict=True)),
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    assert again[0].values.tobytes() == feature_sets[4].values.tobytes()
    assert again[0].metadata["cache_key"] == feature_sets[4].metadata["cache_key"]


def test_layer_out_of_range_and_wrong_family_are_usage_errors(tiny_bridgetower, tiny_bert):
    with pytest.raises(UsageError, match="layer 9 does not exist") as info:
        expand_feature_space(
            parse_feature_space(f"bridgetower:{tiny_bridgetower}#layers=9", "text")
        )
    assert info.value.exit_code == 64
    with pytest.raises(UsageError, match="no pooler layer"):
        expand_feature_space(
            parse_feature_space(f"bridgetower:{tiny_bridgetower}#layers=pooler", "text")
        )
    with pytest.raises(UsageError, match="not BridgeTower"):
        encode(parse_feature_space(f"bridgetower:{tiny_bert}", "text"), ["a"],
                     model_path=tiny_bert)  # fmt: skip


def test_hf_model_resolution_and_describe_specs(tiny_bert, tmp_path, isolated_caches):
    by_name = parse_feature_space("hf:tiny-bert", "text")
    assert resolve_model_path(by_name, [tiny_bert.parent]) == tiny_bert.resolve()
    missing = parse_feature_space("hf:org/absent-model", "text")
    with pytest.raises(InputMissingError) as info:
        resolve_model_path(missing, [tmp_path / "models"])
    assert info.value.exit_code == 66 and str(tmp_path / "models") in str(info.value)
    assert "\n" not in str(info.value)

    rows = describe_specs([by_name, missing], [tiny_bert.parent], verify=True)
    assert rows[0]["found"] and rows[0]["path"] == str(tiny_bert.resolve())
    assert len(rows[0]["weights_sha256"]) == 64 and rows[0]["model_type"] == "bert"
    assert not rows[1]["found"] and rows[1]["exit_code"] == 66
    assert "org/absent-model" in rows[1]["error"]


def test_corrupt_image_and_missing_weights(tiny_clip_vision, images, tmp_path, isolated_caches):
    from bids_vem.errors import DataError
    from tests.helpers import extract_feature_space

    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(images[0].read_bytes()[:40])
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("a caption, not an image", encoding="utf-8")
    spec = parse_feature_space(f"hf:{tiny_clip_vision}", "image")
    for bad in (truncated, not_an_image):
        with pytest.raises(DataError) as info:
            encode(spec, [images[1], bad], model_path=tiny_clip_vision, progress=False)
        assert info.value.exit_code == 65 and str(bad) in str(info.value)
        assert "\n" not in str(info.value)
    missing = parse_feature_space(f"bridgetower:{tmp_path / 'no-bt'}", "image")
    with pytest.raises(InputMissingError) as info:
        extract_feature_space(missing, ["a"], image_paths={"a": images[0]}, progress=False)
    assert info.value.exit_code == 66 and str(tmp_path / "no-bt") in str(info.value)
