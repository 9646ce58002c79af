"""Text and image encoders give the numbers open_clip / sentence-transformers give directly."""

from __future__ import annotations

import numpy as np
import pytest

from bids_vem.errors import DataError
from bids_vem.features.batching import read_rgb_image
from bids_vem.features.encoders import encode
from bids_vem.features.specs import parse_feature_space

TEXTS = [
    "A man riding a wave on top of a surfboard.",
    "dog",
    "Two giraffes standing next to each other in a grassy field near some trees.",
    "a plate of food",
    "A red double decker bus driving down a city street.",
]


def test_sentence_encoder_matches_sentence_transformers(minilm_path):
    from sentence_transformers import SentenceTransformer

    spec = parse_feature_space(f"sentence:{minilm_path}", "text")
    values = encode(spec, TEXTS, model_path=minilm_path, batch_size=2)
    assert values.shape == (len(TEXTS), 384)
    assert values.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(values, axis=1), 1.0, atol=1e-5)
    reference = SentenceTransformer(str(minilm_path), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(values, reference, atol=1e-5)


def _reference_clip(local_dir):
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{local_dir}")
    return model.eval(), preprocess, open_clip.get_tokenizer(f"local-dir:{local_dir}")


@pytest.mark.parametrize("form", ["local_dir", "weights_file"])
def test_openclip_text_encoder_matches_open_clip(tiny_clip, form):
    import torch

    if form == "local_dir":
        spec = parse_feature_space(f"openclip:{tiny_clip.local_dir}", "text")
        path = tiny_clip.local_dir
    else:
        spec = parse_feature_space(f"openclip:tiny-clip@{tiny_clip.weights_file}", "text")
        path = tiny_clip.weights_file
    values = encode(spec, TEXTS, model_path=path, batch_size=2)
    _, _, tokenizer = _reference_clip(tiny_clip.local_dir)
    with torch.inference_mode():
        # the model object that was saved: the weights were really loaded, not re-initialised
        reference = tiny_clip.model.encode_text(tokenizer(TEXTS), normalize=True).numpy()
    assert values.shape == (len(TEXTS), tiny_clip.config["embed_dim"])
    np.testing.assert_allclose(values, reference, atol=1e-5)


def test_openclip_image_encoder_matches_open_clip(tiny_clip, tmp_path, make_image):
    import torch

    paths = [
        make_image(tmp_path / "rgb.jpg", "RGB", (64, 48), 0),
        make_image(tmp_path / "gray.png", "L", (40, 90), 1),
        make_image(tmp_path / "palette.png", "P", (50, 50), 2),
        make_image(tmp_path / "alpha.png", "RGBA", (33, 70), 3),
        make_image(tmp_path / "rgb2.bmp", "RGB", (128, 128), 4),
    ]
    spec = parse_feature_space(f"openclip:{tiny_clip.local_dir}", "image")
    values = encode(spec, paths, model_path=tiny_clip.local_dir, batch_size=2, progress=False)
    _, preprocess, _ = _reference_clip(tiny_clip.local_dir)
    pixels = torch.stack([preprocess(read_rgb_image(p)) for p in paths])
    with torch.inference_mode():
        reference = tiny_clip.model.encode_image(pixels, normalize=True).numpy()
    assert values.shape == (len(paths), tiny_clip.config["embed_dim"])
    np.testing.assert_allclose(values, reference, atol=1e-5)
    # decoding in worker processes gives the same rows in the same order
    workers = encode(
        spec, paths, model_path=tiny_clip.local_dir, batch_size=2, num_workers=2, progress=False
    )
    np.testing.assert_allclose(workers, values, atol=1e-6)


def test_read_rgb_image_converts_modes(tmp_path, make_image):
    for mode in ("L", "P", "RGBA"):
        image = read_rgb_image(make_image(tmp_path / f"{mode}.png", mode, (8, 6), 0))
        assert image.mode == "RGB" and image.size == (8, 6)


def test_unreadable_image_is_a_data_error_naming_the_file(tiny_clip, tmp_path, make_image):
    good = make_image(tmp_path / "good.png", "RGB", (20, 20), 0)
    empty = tmp_path / "empty.bmp"
    empty.write_bytes(b"")
    spec = parse_feature_space(f"openclip:{tiny_clip.local_dir}", "image")
    for workers in (0, 1):
        with pytest.raises(DataError) as info:
            encode(
                spec,
                [good, empty],
                model_path=tiny_clip.local_dir,
                num_workers=workers,
                progress=False,
            )
        assert info.value.exit_code == 65
        assert str(empty) in str(info.value) and "0 bytes" in str(info.value)
        assert "\n" not in str(info.value)


@pytest.mark.fixtures
def test_empty_bids_stimulus_bmp_is_a_data_error(shared_fixtures, tiny_clip):
    bmp = shared_fixtures / "bids-examples" / "ds000117" / "stimuli" / "func" / "f001.bmp"
    spec = parse_feature_space(f"openclip:{tiny_clip.local_dir}", "image")
    with pytest.raises(DataError, match="f001.bmp"):
        encode(spec, [bmp], model_path=tiny_clip.local_dir, progress=False)


def test_texts_longer_than_the_clip_tower_are_counted_and_chunked(tiny_clip, caplog):
    """The tiny tower takes 16 tokens (CLIP: 77). A long text is truncated by default, with a
    warning that counts it; ``#long=chunks`` embeds every 14-token chunk and averages them."""
    import torch

    long_text = " ".join(["a small brown dog runs across a green park near the lake"] * 3)
    texts = ["dog", long_text, TEXTS[0]]
    _, _, tokenizer = _reference_clip(tiny_clip.local_dir)
    ids = tokenizer.encode(long_text)
    assert len(ids) > 14 * 2  # three chunks
    model = tiny_clip.model

    def embed(token_lists):
        tokens = torch.zeros((len(token_lists), 16), dtype=torch.long)
        for row, chunk in enumerate(token_lists):
            tokens[row, : len(chunk) + 2] = torch.tensor(
                [tokenizer.sot_token_id, *chunk, tokenizer.eot_token_id]
            )
        with torch.inference_mode():
            return model.encode_text(tokens, normalize=True).numpy()

    truncate = parse_feature_space(f"openclip:{tiny_clip.local_dir}", "text")
    with caplog.at_level("WARNING"):
        truncated = encode(truncate, texts, model_path=tiny_clip.local_dir, batch_size=2)
    assert "1 of 3 text(s) are longer than the text tower's 16 tokens" in caplog.text
    with torch.inference_mode():
        reference = model.encode_text(tokenizer(texts), normalize=True).numpy()
    np.testing.assert_allclose(truncated, reference, atol=1e-5)  # open_clip's own truncation

    chunks = parse_feature_space(f"openclip:{tiny_clip.local_dir}#long=chunks", "text")
    assert chunks.options == {"long": "chunks"}
    chunked = encode(chunks, texts, model_path=tiny_clip.local_dir, batch_size=2)
    pieces = embed([ids[i : i + 14] for i in range(0, len(ids), 14)])
    expected = pieces.mean(axis=0) / np.linalg.norm(pieces.mean(axis=0))
    np.testing.assert_allclose(chunked[1], expected, atol=1e-5)
    # short texts are embedded as before; the long one differs from its truncation
    np.testing.assert_allclose(chunked[[0, 2]], truncated[[0, 2]], atol=1e-5)
    assert float(chunked[1] @ truncated[1]) < 0.9999


@pytest.mark.parametrize(
    "spec, modality, fragment",
    [
        ("sentence:/m#long=chunks", "text", "open_clip text spaces"),
        ("openclip:ViT-B-32@x.safetensors#long=chunks", "image", "open_clip text spaces"),
        ("openclip:ViT-B-32@x.safetensors#long=all", "text", "truncate or chunks"),
    ],
)
def test_long_option_errors(spec, modality, fragment):
    from bids_vem.errors import UsageError

    with pytest.raises(UsageError, match=fragment):
        parse_feature_space(spec, modality)
