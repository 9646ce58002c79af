"""Procedural images, captions and image statistics."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from bids_vem.demo.stimuli import (
    COLOURS,
    SHAPES,
    ImageAttributes,
    draw_attributes,
    draw_image,
    image_statistics,
    write_captions,
)


def test_attributes_are_distinct_and_shapes_differ_from_background():
    attributes = draw_attributes(120, np.random.default_rng(0))
    keys = {(a.shape, a.colour, a.size, a.background, a.row, a.column) for a in attributes}
    assert len(keys) == 120
    assert all(a.colour != a.background for a in attributes)
    assert {a.shape for a in attributes} == set(SHAPES)
    assert draw_attributes(120, np.random.default_rng(0)) == attributes


def test_too_many_stimuli_is_refused():
    with pytest.raises(ValueError, match="n_stimuli"):
        draw_attributes(10**6, np.random.default_rng(0))


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_is_drawn_in_its_cell(shape):
    attrs = ImageAttributes(shape, "red", "large", "grey", row=0, column=2)
    image = draw_image(attrs)
    pixels = np.asarray(image)
    is_red = np.all(pixels == COLOURS["red"], axis=-1)
    ys, xs = np.nonzero(is_red)
    assert is_red.sum() > 200
    # upper-right cell of a 3x3 grid on 128 px
    assert xs.min() >= 128 * 2 / 3 - 2 and ys.max() <= 128 / 3 + 2


def test_image_statistics_against_direct_computation():
    attrs = ImageAttributes("square", "blue", "small", "white", row=2, column=0)
    image = draw_image(attrs)
    stats = image_statistics(image)
    pixels = np.asarray(image, dtype=float) / 255
    red, green, blue = pixels.reshape(-1, 3).mean(axis=0)
    luminance = pixels @ [0.2126, 0.7152, 0.0722]
    np.testing.assert_allclose(
        stats[:4], [luminance.mean(), red - green, blue - (red + green) / 2, luminance.std()]
    )
    # the square sits in the lower-left cell: centre of mass near (1/6, 5/6)
    assert stats[4] == pytest.approx(1 / 6, abs=0.04)
    assert stats[5] == pytest.approx(5 / 6, abs=0.04)


def test_uniform_image_has_no_contrast_and_a_central_centre_of_mass():
    stats = image_statistics(Image.new("RGB", (32, 32), (10, 200, 30)))
    assert stats[3] == 0
    np.testing.assert_allclose(stats[4:], [0.5, 0.5])


def test_captions_describe_the_same_content_in_different_words():
    attrs = ImageAttributes("star", "orange", "small", "light blue", row=0, column=0)
    captions = write_captions(attrs, np.random.default_rng(1), n_captions=3)
    assert len(set(captions)) == 3
    for caption in captions:
        assert "orange" in caption and "light blue" in caption
    assert re.fullmatch(
        r"a (small|little|tiny) orange (star|five-pointed star|star shape) "
        r"in the upper left of a light blue background",
        captions[0],
    )
    assert captions[1].startswith("An orange")
