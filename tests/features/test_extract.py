"""The feature stage: caption averaging, the content-addressed cache, derivative files, errors."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from bids_vem.errors import InputMissingError, OutputError
from bids_vem.features import extract
from bids_vem.features.cache import FeatureCache, cache_key
from bids_vem.features.encoders import encode
from bids_vem.features.extract import write_feature_derivatives
from bids_vem.features.feature_set import FeatureSet, load_feature_set
from bids_vem.features.specs import parse_feature_space
from bids_vem.inputs.stimuli import file_sha256
from tests.helpers import extract_feature_space


@pytest.fixture
def count_calls(monkeypatch):
    """Wrap the encoder used by extract.py and count its calls per modality (model loads)."""
    calls = {"text": 0, "image": 0}
    real = extract.encoders.encode_layers

    def counted(spec, *args, **kwargs):
        calls[spec.modality] += 1
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(extract.encoders, "encode_layers", counted)
    return calls


def test_text_space_is_the_mean_over_captions(tiny_clip, tmp_path):
    captions = {"b": ["a red bus", "a bus on a street", "city traffic"], "a": ["a dog"]}
    spec = parse_feature_space(f"openclip:{tiny_clip.local_dir}", "text")
    feature_set = extract_feature_space(spec, ["a", "b"], captions=captions)
    each = encode(spec, ["a dog", *captions["b"]], model_path=tiny_clip.local_dir)
    assert feature_set.stim_ids == ("a", "b")
    np.testing.assert_allclose(feature_set.values[0], each[0], atol=1e-6)
    np.testing.assert_allclose(feature_set.values[1], each[1:].mean(axis=0), atol=1e-6)
    assert feature_set.metadata["n_captions"] == [1, 3]
    assert feature_set.metadata["weights_sha256"]
    assert feature_set.metadata["quick_gelu"] is False
    assert feature_set.metadata["architecture"] == "tinyclip"


def test_second_call_is_served_from_the_cache(tiny_clip, tmp_path, make_image, count_calls):
    images = {
        f"img{i}.png": make_image(tmp_path / f"img{i}.png", "RGB", (40, 30), i) for i in range(3)
    }
    spec = parse_feature_space(f"openclip:{tiny_clip.local_dir}", "image")
    cache_dir = tmp_path / "cache"
    kwargs = dict(image_paths=images, cache_dir=cache_dir, progress=False)
    first = extract_feature_space(spec, list(images), **kwargs)
    second = extract_feature_space(spec, list(images), **kwargs)
    assert count_calls["image"] == 1
    np.testing.assert_array_equal(first.values, second.values)
    assert second.metadata["cache_key"] == first.metadata["cache_key"]
    assert len(list(cache_dir.rglob("*.npz"))) == 1

    # an explicit name is only a label: same numbers, still from the cache, under the new name
    renamed = parse_feature_space(f"clip=openclip:{tiny_clip.local_dir}", "image")
    third = extract_feature_space(renamed, list(images), **kwargs)
    assert count_calls["image"] == 1 and third.name == "clip"

    # a changed image changes the key: computed again, a second cache entry
    make_image(tmp_path / "img1.png", "RGB", (40, 30), 99)
    changed = extract_feature_space(spec, list(images), **kwargs)
    assert count_calls["image"] == 2
    assert changed.metadata["cache_key"] != first.metadata["cache_key"]
    assert len(list(cache_dir.rglob("*.npz"))) == 2
    np.testing.assert_array_equal(changed.values[[0, 2]], first.values[[0, 2]])
    assert not np.allclose(changed.values[1], first.values[1])

    # given content hashes are used as they are (no re-reading of the files)
    hashes = {s: file_sha256(p) for s, p in images.items()}
    extract_feature_space(spec, list(images), image_sha256=hashes, **kwargs)
    assert count_calls["image"] == 2


def test_text_cache_key_follows_the_captions(minilm_path, tmp_path, count_calls):
    spec = parse_feature_space("sentence:all-MiniLM-L6-v2", "text")
    cache_dir = tmp_path / "cache"
    captions = {"s1": ["a dog on a couch"], "s2": ["a plate of food", "dinner on a table"]}
    first = extract_feature_space(spec, ["s1", "s2"], captions=captions, cache_dir=cache_dir)
    extract_feature_space(spec, ["s1", "s2"], captions=captions, cache_dir=cache_dir)
    assert count_calls["text"] == 1
    assert first.values.shape == (2, 384)
    assert first.metadata["model_path"] == str(minilm_path)
    captions["s2"] = ["a plate of food"]
    extract_feature_space(spec, ["s1", "s2"], captions=captions, cache_dir=cache_dir)
    assert count_calls["text"] == 2


def test_missing_captions_are_exit_66_naming_the_stimuli(tiny_clip):
    spec = parse_feature_space(f"openclip:{tiny_clip.local_dir}", "text")
    stim_ids = [f"stim{i:02d}.jpg" for i in range(26)]
    captions = {"stim00.jpg": ["a cat"], "stim01.jpg": ["  "]}
    with pytest.raises(InputMissingError) as info:
        extract_feature_space(spec, stim_ids, captions=captions)
    message = str(info.value)
    assert info.value.exit_code == 66
    assert "25 of 26 stimuli" in message
    assert "stim01.jpg" in message and "stim20.jpg" in message
    assert "stim21.jpg" not in message and "(5 more)" in message


def test_missing_image_files_are_exit_66(tiny_clip, tmp_path, make_image):
    present = make_image(tmp_path / "a.png", "RGB", (10, 10), 0)
    spec = parse_feature_space(f"openclip:{tiny_clip.local_dir}", "image")
    with pytest.raises(InputMissingError, match=r"2 of 3 stimuli have no image file: b.png, c.png"):
        extract_feature_space(
            spec,
            ["a.png", "b.png", "c.png"],
            image_paths={"a.png": present, "b.png": tmp_path / "b.png"},
        )


def test_missing_model_is_exit_66(tmp_path, isolated_caches):
    spec = parse_feature_space("sentence:no-such-model", "text")
    with pytest.raises(InputMissingError, match="looked in") as info:
        extract_feature_space(spec, ["a"], captions={"a": ["x"]}, model_dirs=[tmp_path])
    assert str(tmp_path / "no-such-model") in str(info.value)


def test_write_feature_derivatives(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    feature_set = FeatureSet(
        name="ViTB32Image",
        spec="openclip:ViT-B-32@laion2b_s34b_b79k",
        modality="image",
        stim_ids=("images/a.jpg", "images/b.jpg", "c.png"),
        values=values,
        metadata={
            "family": "openclip",
            "weights_sha256": "ab" * 32,
            "preprocessing": {"size": 224},
            "quick_gelu": False,
            "architecture": "ViT-B-32",
        },
    )
    paths = write_feature_derivatives(feature_set, tmp_path)
    folder = tmp_path / "features"
    assert paths == [folder / f"desc-ViTB32Image_features.{ext}" for ext in ("npy", "tsv", "json")]
    loaded = np.load(paths[0])
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, values)
    assert paths[1].read_text(encoding="utf-8").splitlines() == [
        "row\tstim_id",
        "0\timages/a.jpg",
        "1\timages/b.jpg",
        "2\tc.png",
    ]
    sidecar = json.loads(paths[2].read_text(encoding="utf-8"))
    assert sidecar["ModelSpec"] == "openclip:ViT-B-32@laion2b_s34b_b79k"
    assert sidecar["WeightsSHA256"] == "ab" * 32
    assert sidecar["Modality"] == "image" and sidecar["NFeatures"] == 4
    assert sidecar["QuickGELU"] is False and sidecar["Preprocessing"] == {"size": 224}
    # without a map of where the stimuli were read: BIDS_DIR/stimuli/<stim_id>
    assert sidecar["Sources"][0] == "bids:raw:stimuli/images/a.jpg"
    assert sidecar["Description"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        p.name for p in paths
    )  # no temp files


def test_write_feature_derivatives_unwritable_is_exit_73(tmp_path):
    (tmp_path / "features").write_text("a file where the folder should be", encoding="utf-8")
    feature_set = FeatureSet("x", "s", "text", ("a",), np.zeros((1, 2), np.float32))
    with pytest.raises(OutputError) as info:
        write_feature_derivatives(feature_set, tmp_path)
    assert info.value.exit_code == 73


def test_cache_round_trip_damage_and_concurrent_writers(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    key = cache_key({"spec": "x", "stimuli": [1, 2]})
    assert key == cache_key({"stimuli": [1, 2], "spec": "x"})  # order of parts does not matter
    assert cache.get(key) is None
    feature_set = FeatureSet("x", "s", "text", ("a", "b"), np.eye(2, dtype=np.float32), {"k": 1})

    # several writers of the same entry at once: the entry is always whole
    threads = [threading.Thread(target=cache.put, args=(key, feature_set)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    loaded = cache.get(key)
    np.testing.assert_array_equal(loaded.values, feature_set.values)
    assert loaded.metadata == {"k": 1, "cache_key": key}
    assert [p.name for p in cache.path(key).parent.iterdir()] == [f"{key}.npz"]

    # a damaged entry is a miss, not a crash
    cache.path(key).write_bytes(b"not an npz")
    assert cache.get(key) is None
    assert load_feature_set(cache.put(key, feature_set)).stim_ids == ("a", "b")


def test_images_in_any_mode_decode_and_a_corrupt_one_is_named(tmp_path):
    """16-bit grey (not clipped to white), LA, CMYK, a JPEG named .png; then a corrupt file."""
    from PIL import Image

    from bids_vem.errors import DataError
    from bids_vem.features.batching import check_images, read_rgb_image

    ramp = (np.arange(24 * 24).reshape(24, 24) * 100).astype(np.uint16)  # 0 .. 57,500
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    grey = np.asarray(read_rgb_image(tmp_path / "grey16.png"))
    assert grey.shape == (24, 24, 3)
    np.testing.assert_allclose(grey[..., 0].astype(float), ramp / 257.0, atol=1)
    rgb = Image.fromarray(np.full((8, 8, 3), 90, np.uint8), "RGB")
    rgb.convert("LA").save(tmp_path / "la.png")
    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg")
    rgb.save(tmp_path / "jpeg_named.png", format="JPEG")
    paths = [tmp_path / n for n in ("grey16.png", "la.png", "cmyk.jpg", "jpeg_named.png")]
    check_images(paths)
    for path in paths[1:]:
        assert abs(float(np.asarray(read_rgb_image(path)).mean()) - 90) < 3
    (tmp_path / "broken.jpg").write_bytes((tmp_path / "cmyk.jpg").read_bytes()[:40])
    (tmp_path / "empty.png").write_bytes(b"")
    for bad, detail in (("broken.jpg", "cannot be read"), ("empty.png", ".*empty file")):
        with pytest.raises(DataError, match=f"{bad}: {detail}"):
            check_images([*paths, tmp_path / bad])
