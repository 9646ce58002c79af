"""Human captions of the stimuli (``--captions``), and conversion of COCO caption files."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from bids_vem.errors import DataError, InputMissingError
from bids_vem.inputs.events import normalise_stim_id, read_tsv, read_tsv_columns
from bids_vem.outputs.atomic import write_text_atomic

__all__ = ["read_captions", "read_caption_corpus", "coco_captions_to_tsv"]

logger = logging.getLogger(__name__)

_ID_COLUMNS = ("stim_file", "stim_id")
_MAX_LISTED = 20


def _one_line(text: str) -> str:
    # a TSV cell cannot hold tabs or newlines
    return " ".join(str(text).split())


def read_captions(path: Path, stim_ids: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Read human captions: a TSV with ``stim_file`` (or ``stim_id``) and ``caption`` columns,
    or a JSON object of stimulus -> captions (BOLD Moments).

    A stimulus may have several rows (several captions); they are kept in file order and
    averaged in embedding space later. Other columns (``model``, ``prompt``...) are ignored.

    Parameters
    ----------
    path : Path
        The captions TSV (``--captions``).
    stim_ids : sequence of str, optional
        The stimuli that need captions (normalised ``stim_id`` of the stimulus table). When
        given, every one must have a caption; captions of other stimuli are dropped.

    Returns
    -------
    dict of str to list of str
        Captions per stimulus: in ``stim_ids`` order when given, else sorted by stimulus.

    Raises
    ------
    InputMissingError
        The file does not exist, or some of ``stim_ids`` have no caption (count and the first
        20 are listed; exit 66).
    DataError
        Missing columns, or an empty caption or stimulus cell; the message names the file
        and the row (exit 65).
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        return _select(path, _json_captions(path), stim_ids)
    columns = read_tsv_columns(path)
    id_column = next((c for c in _ID_COLUMNS if c in columns), None)
    if id_column is None or "caption" not in columns:
        raise DataError(
            f"{path}: a captions file needs the columns stim_file (or stim_id) and caption; "
            f"its columns are {', '.join(columns)}"
        )
    frame = read_tsv(path, usecols=[id_column, "caption"])

    captions: dict[str, list[str]] = {}
    for row, (raw_id, raw_caption) in enumerate(
        zip(frame[id_column], frame["caption"], strict=True), start=1
    ):
        stim_id = normalise_stim_id(raw_id)
        caption = "" if pd.isna(raw_caption) else _one_line(raw_caption)
        if stim_id is None:
            raise DataError(f"{path}: empty {id_column} on data row {row}")
        if not caption or caption == "n/a":
            raise DataError(f"{path}: empty caption for {stim_id!r} on data row {row}")
        captions.setdefault(stim_id, []).append(caption)
    if not captions:
        raise DataError(f"{path}: no captions (the file has a header only)")
    return _select(path, captions, stim_ids)


def _load_json(path: Path):
    """A JSON file's content (InputMissingError when absent, DataError when not JSON)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise InputMissingError(f"{path}: no such file") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err


def _json_captions(path: Path) -> dict[str, list[str]]:
    """Captions of a JSON object: stimulus -> a caption, a list of captions, or an object
    holding one (BOLD Moments' ``annotations.json``: 5 human descriptions per clip)."""
    data = _load_json(path)
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: expected a JSON object of stimulus -> captions")
    captions: dict[str, list[str]] = {}
    for key, value in data.items():
        if isinstance(value, dict):  # the first caption or list of captions it holds
            value = next((v for v in value.values() if isinstance(v, (str, list))), None)
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise DataError(f"{path}: the captions of {key!r} are not a text or a list of texts")
        texts = [_one_line(t) for t in texts if t.strip()]
        stim_id = normalise_stim_id(key)
        if stim_id is None or not texts:
            raise DataError(f"{path}: {key!r} has no caption")
        captions[stim_id] = texts
    return captions


def _select(
    path: Path, captions: dict[str, list[str]], stim_ids: Sequence[str] | None
) -> dict[str, list[str]]:
    """The captions of ``stim_ids`` (all, sorted, when None); a stimulus whose name is not a
    key takes the captions of its file name or of its name without extension, when one key
    is that (``train/0112.mp4`` <- ``0112.mp4`` or ``0112``)."""
    if stim_ids is None:
        return {stim_id: captions[stim_id] for stim_id in sorted(captions)}

    wanted = list(dict.fromkeys(stim_ids))
    for stim_id in wanted:
        if stim_id not in captions:
            name = stim_id.rsplit("/", 1)[-1]
            for key in (name, name.split(".", 1)[0]):
                if key in captions:
                    captions[stim_id] = captions[key]
                    break
    lacking = [s for s in wanted if s not in captions]
    if lacking:
        shown = ", ".join(lacking[:_MAX_LISTED])
        if len(lacking) > _MAX_LISTED:
            shown += f", ... (first {_MAX_LISTED} shown)"
        raise InputMissingError(
            f"{path}: {len(lacking)} of {len(wanted)} stimuli have no caption: {shown}"
        )
    named = set(wanted) | {n.rsplit("/", 1)[-1] for n in wanted}
    named |= {n.rsplit("/", 1)[-1].split(".", 1)[0] for n in wanted}
    extra = set(captions) - named
    if extra:
        logger.info(
            "%s: ignoring captions of %d stimuli that no selected run shows", path, len(extra)
        )
    return {stim_id: captions[stim_id] for stim_id in wanted}


def coco_captions_to_tsv(annotations_json: Path, out_tsv: Path, prefix: str = "") -> Path:
    """Convert a COCO ``captions_*.json`` file into a captions TSV.

    Parameters
    ----------
    annotations_json : Path
        COCO caption annotations (``images`` with ``id``/``file_name``, ``annotations`` with
        ``image_id``/``caption``).
    out_tsv : Path
        TSV to write (columns ``stim_file``, ``caption``), atomically.
    prefix : str
        Prepended to each ``file_name`` so that ``stim_file`` matches the events, e.g.
        ``"coco/val2017/"`` when the images live in ``stimuli/coco/val2017``.

    Returns
    -------
    Path
        ``out_tsv``. Rows are sorted by ``stim_file`` then annotation id; images without a
        caption are left out.

    Raises
    ------
    InputMissingError
        ``annotations_json`` does not exist (exit 66).
    DataError
        Not JSON, or not in the COCO caption layout (exit 65).
    """
    annotations_json = Path(annotations_json)
    data = _load_json(annotations_json)
    try:
        file_names = {image["id"]: image["file_name"] for image in data["images"]}
        rows = sorted(
            (prefix + file_names[ann["image_id"]], ann.get("id", 0), _one_line(ann["caption"]))
            for ann in data["annotations"]
        )
    except (KeyError, TypeError) as err:
        raise DataError(
            f"{annotations_json}: not a COCO captions file (needs images[id, file_name] and "
            f"annotations[image_id, caption]; failed on {err})"
        ) from err
    lines = ["stim_file\tcaption"]
    lines += [f"{stim_file}\t{caption}" for stim_file, _, caption in rows if caption]
    return write_text_atomic(out_tsv, "\n".join(lines) + "\n")


def read_caption_corpus(path: Path) -> list[str]:
    """Captions of a decoding corpus (``--decode-corpus``): a COCO captions JSON
    (``annotations[].caption``), a TSV with a ``caption`` column, or a text file of one caption
    per line. Empty captions are dropped, duplicates kept once (in file order).

    Raises
    ------
    InputMissingError
        No such file.
    DataError
        A file with no caption, or a JSON or TSV without the expected field (named).
    """
    path = Path(path)
    if not path.is_file():
        raise InputMissingError(f"{path}: no such caption corpus")
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = _load_json(path)
        annotations = data.get("annotations") if isinstance(data, dict) else None
        if not isinstance(annotations, list):
            raise DataError(f"{path}: expected a COCO captions file (an 'annotations' list)")
        texts = [a.get("caption") for a in annotations if isinstance(a, dict)]
        texts = [t for t in texts if isinstance(t, str)]
    elif suffix == ".tsv":
        if "caption" not in read_tsv_columns(path):
            raise DataError(f"{path}: no 'caption' column")
        from bids_vem.inputs.events import MISSING_VALUES

        cells = read_tsv(path)["caption"].dropna()
        texts = [str(t) for t in cells if str(t).strip() not in MISSING_VALUES]
    else:
        try:
            texts = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: not a UTF-8 text file of captions ({err})") from err
    texts = list(dict.fromkeys(_one_line(t) for t in texts if str(t).strip()))
    if not texts:
        raise DataError(f"{path}: no caption in this corpus")
    return texts
