"""The model-family registry: every family is one module, found by itself, and complete."""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path

import numpy as np
import pytest

import bids_vem.features.families as families
from bids_vem.errors import UsageError
from bids_vem.features.families import Family, get_family
from bids_vem.features.specs import parse_feature_space


def test_the_four_families_are_registered_and_consistent():
    assert set(families.FAMILIES) >= {"openclip", "sentence", "hf", "bridgetower"}
    for name, family in families.FAMILIES.items():
        assert family.name == name and family.modalities <= {"text", "image"}
        assert ("text" in family.modalities) == (family.encode_texts is not None)
        assert ("image" in family.modalities) == (family.encode_images is not None)
        assert set(family.poolings) <= family.modalities
        assert family.layers == (family.depth is not None)


def test_an_unknown_family_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown model family 'nope'"):
        get_family("nope")


DUMMY = '''
"""A dummy family for the registry test: a text embedding of each text's length."""

import numpy as np

from bids_vem.features.families._base import Family


def encode_texts(request, texts):
    return {None: np.array([[len(t), 1.0] for t in texts], dtype=np.float32)}


FAMILY = Family(
    name="NAME",
    modalities=frozenset({"text"}),
    resolve=lambda spec, model_dirs, allow_downloads: __import__("pathlib").Path(spec.model),
    encode_texts=encode_texts,
)
'''


@pytest.fixture
def dummy_family(tmp_path):
    """A family added the way docs/developing.md says: one new module in the package."""
    name = "zzdummy"
    module = Path(families.__file__).parent / f"{name}.py"
    module.write_text(textwrap.dedent(DUMMY.replace("NAME", name)))
    try:
        importlib.reload(families)
        yield name
    finally:
        module.unlink()
        families.FAMILIES.pop(name, None)


def test_a_new_family_module_is_found_parsed_and_run(dummy_family, tmp_path):
    from bids_vem.features.encoders import encode
    from bids_vem.features.models import resolve_model_path

    assert isinstance(families.FAMILIES[dummy_family], Family)
    # the parser asks the registry: the new family's spec parses with no other edit
    spec = parse_feature_space(f"{dummy_family}:{tmp_path}", "text")
    assert spec.family == dummy_family and spec.name == tmp_path.name.replace("_", "")
    with pytest.raises(UsageError, match="cannot embed image"):
        parse_feature_space(f"{dummy_family}:{tmp_path}", "image")
    path = resolve_model_path(spec)
    values = encode(spec, ["a", "abc"], model_path=path)
    np.testing.assert_array_equal(values, [[1, 1], [3, 1]])


def test_parser_options_come_from_the_family():
    # #pool and #layers are accepted where the family says so, refused elsewhere
    assert parse_feature_space("hf:/m#pool=last", "text").pool == "last"
    with pytest.raises(UsageError, match="not supported for sentence text"):
        parse_feature_space("sentence:/m#pool=mean", "text")
    with pytest.raises(UsageError, match="#layers is supported for the families bridgetower, hf"):
        parse_feature_space("openclip:/m#layers=all", "image")
    with pytest.raises(UsageError, match="take no @weights"):
        parse_feature_space("hf:/m@w.safetensors", "text")
