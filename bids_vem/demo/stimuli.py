"""Procedural stimuli of the demo dataset: coloured shapes on a 3x3 grid, with captions.

Every image shows one shape of a given colour and size in one cell of a 3x3 grid over
a plain background. The attributes are drawn at random (seeded); the images are drawn
with PIL without anti-aliasing, so the same attributes give the same pixels everywhere.
Captions are written from the attributes with a few templates and synonyms, so that the
captions of one image describe the same content in different words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "SHAPES",
    "COLOURS",
    "BACKGROUNDS",
    "SIZES",
    "LOWLEVEL_FEATURE_NAMES",
    "ImageAttributes",
    "draw_attributes",
    "draw_image",
    "write_captions",
    "image_statistics",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross", "hexagon")
#: name -> RGB
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 70, 220),
    "yellow": (240, 220, 30),
    "orange": (245, 140, 20),
    "purple": (140, 50, 170),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "white": (245, 245, 245),
    "black": (10, 10, 10),
    "light blue": (170, 200, 235),
}
#: name -> radius as a fraction of the image width
SIZES: dict[str, float] = {"small": 0.09, "large": 0.16}
ROWS: tuple[str, ...] = ("upper", "middle", "lower")
COLUMNS: tuple[str, ...] = ("left", "centre", "right")

#: names of the columns of :func:`image_statistics`
LOWLEVEL_FEATURE_NAMES: tuple[str, ...] = (
    "luminance",
    "red_green",
    "blue_yellow",
    "contrast",
    "centre_of_mass_x",
    "centre_of_mass_y",
)

_SHAPE_WORDS = {
    "circle": ("circle", "disc", "round dot"),
    "square": ("square", "box", "square block"),
    "triangle": ("triangle", "triangular shape", "three-sided shape"),
    "star": ("star", "five-pointed star", "star shape"),
    "diamond": ("diamond", "rhombus", "diamond shape"),
    "cross": ("cross", "plus sign", "cross shape"),
    "hexagon": ("hexagon", "six-sided shape", "hexagonal tile"),
}
_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
_TEMPLATES = (
    "a {size} {colour} {shape} in the {where} of a {background} background",
    "{article} {colour} {shape}, {size}, placed {where2} on {background}",
    "a plain {background} picture with a {size} {colour} {shape} {where2}",
)


@dataclass(frozen=True)
class ImageAttributes:
    """What one stimulus image shows.

    Attributes
    ----------
    shape, colour, size, background : str
        Keys of :data:`SHAPES`, :data:`COLOURS`, :data:`SIZES`, :data:`BACKGROUNDS`.
    row, column : int
        Grid cell, 0..2 from the top and from the left.
    jitter_x, jitter_y : int
        Offset of the shape from the cell centre in pixels (at 128 x 128).
    """

    shape: str
    colour: str
    size: str
    background: str
    row: int
    column: int
    jitter_x: int = 0
    jitter_y: int = 0

    @property
    def position(self) -> str:
        """Position in words, e.g. ``"upper left"``, ``"centre"``, ``"lower centre"``."""
        row, column = ROWS[self.row], COLUMNS[self.column]
        if row == "middle" and column == "centre":
            return "centre"
        if row == "middle":
            return f"middle {column}"
        return f"{row} {column}"


def draw_attributes(n_stimuli: int, rng: np.random.Generator) -> list[ImageAttributes]:
    """Draw ``n_stimuli`` distinct attribute combinations.

    Parameters
    ----------
    n_stimuli : int
        Number of images (at most the number of distinct combinations).
    rng : numpy.random.Generator

    Returns
    -------
    list of ImageAttributes
        Colours always differ from the background colour.
    """
    combos = [
        (shape, colour, size, background, row, column)
        for shape in SHAPES
        for colour in COLOURS
        for size in SIZES
        for background in BACKGROUNDS
        for row in range(3)
        for column in range(3)
        if colour != background
    ]
    if not 1 <= n_stimuli <= len(combos):
        raise ValueError(f"n_stimuli must be within 1..{len(combos)}, got {n_stimuli}")
    chosen = rng.choice(len(combos), size=n_stimuli, replace=False)
    out = []
    for index in chosen:
        shape, colour, size, background, row, column = combos[int(index)]
        jitter = rng.integers(-4, 5, size=2)
        out.append(
            ImageAttributes(
                shape, colour, size, background, row, column, int(jitter[0]), int(jitter[1])
            )
        )
    return out


def _polygon(n_points: int, cx: float, cy: float, radius: float, inner: float | None = None):
    """Vertices of a regular polygon (or a star when ``inner`` is given), pointing up."""
    points = []
    steps = n_points * 2 if inner is not None else n_points
    for k in range(steps):
        angle = -math.pi / 2 + 2 * math.pi * k / steps
        r = radius if inner is None or k % 2 == 0 else radius * inner
        points.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
    return points


def draw_image(attributes: ImageAttributes, image_size: int = 128) -> Image.Image:
    """Draw the image that ``attributes`` describe.

    Parameters
    ----------
    attributes : ImageAttributes
    image_size : int
        Width and height in pixels.

    Returns
    -------
    PIL.Image.Image
        RGB image of shape (image_size, image_size).
    """
    image = Image.new("RGB", (image_size, image_size), BACKGROUNDS[attributes.background])
    draw = ImageDraw.Draw(image)
    scale = image_size / 128
    cell = image_size / 3
    cx = cell * (attributes.column + 0.5) + attributes.jitter_x * scale
    cy = cell * (attributes.row + 0.5) + attributes.jitter_y * scale
    r = SIZES[attributes.size] * image_size
    fill = COLOURS[attributes.colour]
    shape = attributes.shape
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        half = r * 0.85
        draw.rectangle((cx - half, cy - half, cx + half, cy + half), fill=fill)
    elif shape == "triangle":
        draw.polygon(_polygon(3, cx, cy + r * 0.2, r * 1.1), fill=fill)
    elif shape == "star":
        draw.polygon(_polygon(5, cx, cy, r * 1.1, inner=0.45), fill=fill)
    elif shape == "diamond":
        draw.polygon(
            [(cx, cy - r), (cx + r * 0.7, cy), (cx, cy + r), (cx - r * 0.7, cy)], fill=fill
        )
    elif shape == "cross":
        arm = r * 0.35
        draw.rectangle((cx - r, cy - arm, cx + r, cy + arm), fill=fill)
        draw.rectangle((cx - arm, cy - r, cx + arm, cy + r), fill=fill)
    elif shape == "hexagon":
        draw.polygon(_polygon(6, cx, cy, r), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return image


def _where_phrase(attributes: ImageAttributes, rng: np.random.Generator) -> str:
    """A second wording of the position (``"near the top-left corner"``, ``"in the middle"``)."""
    row = ("top", "middle", "bottom")[attributes.row]
    column = ("left", "centre", "right")[attributes.column]
    if row == "middle" and column == "centre":
        return str(rng.choice(["in the middle", "right in the centre", "at the centre"]))
    if row == "middle":
        return str(rng.choice([f"on the {column} side", f"at the middle {column}"]))
    if column == "centre":
        return str(rng.choice([f"at the {row}", f"near the {row} edge"]))
    return str(rng.choice([f"near the {row}-{column} corner", f"in the {row} {column}"]))


def write_captions(
    attributes: ImageAttributes, rng: np.random.Generator, n_captions: int = 3
) -> list[str]:
    """Captions of one image: the same content in ``n_captions`` different wordings.

    Parameters
    ----------
    attributes : ImageAttributes
    rng : numpy.random.Generator
        Picks the synonyms.
    n_captions : int
        1 to 3; each caption uses a different template.

    Returns
    -------
    list of str
        E.g. ``"a small red circle in the upper left of a grey background"``.
    """
    if not 1 <= n_captions <= len(_TEMPLATES):
        raise ValueError(f"n_captions must be within 1..{len(_TEMPLATES)}, got {n_captions}")
    captions = []
    for template in _TEMPLATES[:n_captions]:
        size = str(rng.choice(_SIZE_WORDS[attributes.size]))
        captions.append(
            template.format(
                size=size,
                colour=attributes.colour,
                shape=str(rng.choice(_SHAPE_WORDS[attributes.shape])),
                where=attributes.position,
                where2=_where_phrase(attributes, rng),
                background=attributes.background,
                article="An" if attributes.colour[0] in "aeiou" else "A",
            )
        )
    return captions


def image_statistics(image: Image.Image) -> np.ndarray:
    """Low-level statistics of an image (the demo's low-level feature space).

    Parameters
    ----------
    image : PIL.Image.Image
        RGB image.

    Returns
    -------
    ndarray of shape (6,), float64
        Mean luminance (Rec. 709, 0..1), mean red-green and blue-yellow opponency
        (``R - G`` and ``B - (R + G) / 2``), contrast (standard deviation of luminance),
        and the centre of mass (x, y in 0..1 from the left and the top) of the pixels that
        differ from the background (the most common colour). Names in
        :data:`LOWLEVEL_FEATURE_NAMES`. The three colour means are an invertible map of
        the mean RGB; listing both would make the features collinear.
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    height, width = pixels.shape[:2]
    red, green, blue = pixels.reshape(-1, 3).mean(axis=0)
    # Rec. 709 luma weights
    luminance = pixels @ np.array([0.2126, 0.7152, 0.0722])
    flat = pixels.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    background = colours[np.argmax(counts)]
    foreground = np.any(np.abs(pixels - background) > 1e-6, axis=-1).astype(np.float64)
    if foreground.sum() == 0:
        com_x = com_y = 0.5
    else:
        ys, xs = np.mgrid[0:height, 0:width]
        com_x = float((foreground * (xs + 0.5)).sum() / foreground.sum() / width)
        com_y = float((foreground * (ys + 0.5)).sum() / foreground.sum() / height)
    return np.array(
        [luminance.mean(), red - green, blue - (red + green) / 2, luminance.std(), com_x, com_y]
    )
