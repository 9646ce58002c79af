# Longer than 500 lines: one Captioner over many VLM architectures (BLIP, GIT, chat models), each a few lines.
"""Captioning stimulus images with vision-language models (transformers), behind one interface.

Two kinds of model are handled by :class:`Captioner`, both loaded through
``AutoModelForImageTextToText`` + ``AutoProcessor`` (transformers v5 maps BLIP, BLIP-2,
InstructBLIP, GIT, Florence-2 and the chat VLMs there; the ``image-to-text`` pipeline is gone):

- **captioners** (BLIP, BLIP-2, GIT, InstructBLIP, Florence-2...): the processor takes the image and,
  optionally, a text prompt. BLIP, BLIP-2 and GIT cannot follow instructions: they continue the
  prompt as the start of the caption, so they caption unconditionally unless a prompt other than
  the default is given. InstructBLIP takes the prompt as an instruction; Florence-2 a task token
  (``<MORE_DETAILED_CAPTION>`` by default).
- **chat VLMs** (LLaVA, LLaVA-NeXT, Qwen2-VL, SmolVLM, Idefics3...: any processor with a chat
  template): one user turn holding the image and the prompt, formatted with
  ``processor.apply_chat_template(..., add_generation_prompt=True)``.

Generation is batched. Decoder-only models are padded on the LEFT, so every row of a batch ends
with its last prompt token and greedy captions do not depend on the batch size; the echoed prompt
is cut from the output by token position before decoding. With ``captions_per_image > 1`` the
top beams of a beam search are returned (``num_return_sequences``; ``num_beams`` is raised to
``captions_per_image`` when lower): deterministic, no random numbers involved, and independent of
which images share a batch (sampling would tie each caption to the order of the RNG stream).
The RNG is still seeded with ``settings.seed`` before every batch, for models that draw numbers.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bids_vem._utils import first_line, tsv_cell
from bids_vem.config import option_name
from bids_vem.errors import DataError, InputMissingError, UsageError
from bids_vem.features.batching import read_rgb_image
from bids_vem.features.families.transformers import is_hf_model_dir, resolve_hf_model
from bids_vem.features.weights import offline_mode, weights_sha256
from bids_vem.outputs.atomic import write_text_atomic

__all__ = [
    "DEFAULT_PROMPT",
    "CaptionSettings",
    "Captioner",
    "write_captions_tsv",
    "read_generated_captions",
    "CaptionerSpec",
    "parse_captioner",
]

logger = logging.getLogger(__name__)

#: LLM-VEM asked MiniGPT-4 for a detailed description of every stimulus image
DEFAULT_PROMPT = "Describe this image in detail."

_DTYPES = ("auto", "float32", "bfloat16", "float16")
#: captioners that continue a text prefix rather than follow an instruction
_PREFIX_CAPTIONERS = frozenset({"blip", "blip-2", "git", "pix2struct", "kosmos-2"})
#: what a captioner is asked when the prompt is left at the default
_DEFAULT_TASK = {"florence2": "<MORE_DETAILED_CAPTION>", "instructblip": DEFAULT_PROMPT}
#: processors that take a list of images per text row
_NESTED_IMAGES = frozenset({"idefics", "idefics2", "idefics3", "smolvlm", "mllama"})
#: columns of the generated captions TSV, in order
CAPTION_COLUMNS = ("stim_file", "caption", "model", "prompt", "max_new_tokens", "num_beams")


@dataclass(frozen=True)
class CaptionSettings:
    """How captions are generated.

    Attributes
    ----------
    prompt : str or None
        The request given to the model. Default: a request for a detailed description of the
        scene (:data:`DEFAULT_PROMPT`). Prefix captioners (BLIP, BLIP-2, GIT) caption without
        text for the default or None; any other prompt is given to them as the caption's start.
    max_new_tokens : int
        Upper bound on the caption length in tokens.
    num_beams : int
        1: greedy decoding; > 1: beam search.
    captions_per_image : int
        Captions returned per image: the top ``captions_per_image`` beams of a beam search with
        ``max(num_beams, captions_per_image)`` beams.
    batch_size : int
        Images per ``generate`` call.
    dtype : str
        ``"auto"`` (bfloat16 on a CUDA device that supports it, else float32), ``"float32"``,
        ``"bfloat16"`` or ``"float16"``; half precision only on CUDA.
    seed : int
        Seed of torch's RNG, set before every batch.
    """

    prompt: str | None = DEFAULT_PROMPT
    max_new_tokens: int = 60
    num_beams: int = 1
    captions_per_image: int = 1
    batch_size: int = 8
    dtype: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "num_beams", "captions_per_image", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UsageError(f"caption setting {name} must be an integer >= 1, got {value!r}")
        if self.dtype not in _DTYPES:
            raise UsageError(
                f"caption setting dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}"
            )
        if self.prompt is not None and not self.prompt.strip():
            raise UsageError("caption setting prompt is empty (leave it out for the default)")

    @property
    def beams(self) -> int:
        """The number of beams actually searched."""
        return max(self.num_beams, self.captions_per_image)

    def generation_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``model.generate`` for these settings."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.beams,
            "num_return_sequences": self.captions_per_image,
            "do_sample": False,
        }


def _torch_dtype(dtype: str, device: str) -> Any:
    import torch

    on_cuda = str(device).startswith("cuda")
    if dtype == "auto":
        return torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float32
    if dtype in ("bfloat16", "float16") and not on_cuda:
        raise UsageError(
            f"caption dtype {dtype} needs a CUDA device (device is {device!r}); use float32 or auto"
        )
    return getattr(torch, dtype)


def _read_config(model_path: Path) -> dict:
    config_path = model_path / "config.json"
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputMissingError(f"captioning model {model_path}: no config.json") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"{config_path}: not a readable JSON file ({exc})") from exc


class Captioner:
    """A vision-language model loaded once, captioning many images.

    Build it with :meth:`Captioner.from_pretrained`; see the module docstring for the kinds of
    models and how prompts, padding and several captions per image are handled.
    """

    def __init__(
        self, model: Any, processor: Any, model_path: Path, model_type: str, device: str
    ) -> None:
        self.model = model
        self.processor = processor
        self.model_path = Path(model_path)
        self.model_type = model_type
        self.device = str(device)
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.is_chat = model_type not in _PREFIX_CAPTIONERS and bool(
            getattr(processor, "chat_template", None)
        )
        config = model.config
        text_config = getattr(config, "text_config", None)
        self.is_encoder_decoder = bool(
            getattr(config, "is_encoder_decoder", False)
            or getattr(text_config, "is_encoder_decoder", False)
        )
        if not self.is_encoder_decoder and hasattr(self.tokenizer, "padding_side"):
            # decoder-only: every row must end with its prompt, or batching changes the output
            self.tokenizer.padding_side = "left"
        self._weights_sha256: str | None = None

    # --- loading -------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls, model_path: Path | str, *, device: str = "cpu", dtype: str = "auto"
    ) -> Captioner:
        """Load a captioning model and its processor from a local ``save_pretrained`` folder.

        Parameters
        ----------
        model_path : Path
            From :func:`bids_vem.features.families.transformers.resolve_hf_model`.
        device : str
            Torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        dtype : str
            ``"auto"``, ``"float32"``, ``"bfloat16"`` or ``"float16"`` (half precision on CUDA only).

        Raises
        ------
        InputMissingError
            The folder lacks config.json or weights (exit 66).
        UsageError
            The model is not an image-to-text model, or half precision on CPU (exit 64).
        DataError
            The weights or processor files cannot be loaded (exit 65).
        """
        import transformers
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
        )

        model_path = Path(model_path)
        if dtype not in _DTYPES:
            raise UsageError(f"caption dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        if not is_hf_model_dir(model_path):
            raise InputMissingError(
                f"captioning model {model_path}: not a model folder (needs config.json and weights)"
            )
        config = _read_config(model_path)
        model_type = str(config.get("model_type", ""))
        if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
            architectures = ", ".join(config.get("architectures") or []) or "none"
            raise UsageError(
                f"captioning model {model_path}: model_type {model_type!r} (architectures: "
                f"{architectures}) is not an image-to-text model of transformers "
                f"{transformers.__version__} (remote code is never run)"
            )
        torch_dtype = _torch_dtype(dtype, device)
        with offline_mode():
            try:
                processor = transformers.AutoProcessor.from_pretrained(
                    model_path, local_files_only=True
                )
            except (OSError, ValueError, TypeError, KeyError) as exc:
                raise DataError(
                    f"captioning model {model_path}: processor/tokenizer files cannot be loaded "
                    f"({first_line(exc)})"
                ) from exc
            try:
                model = transformers.AutoModelForImageTextToText.from_pretrained(
                    model_path, dtype=torch_dtype, local_files_only=True
                )
            except Exception as exc:  # noqa: BLE001 - safetensors/torch errors: unreadable weights
                raise DataError(
                    f"captioning model {model_path}: weights cannot be loaded ({first_line(exc)})"
                ) from exc
        model = model.to(device).eval()
        return cls(model, processor, model_path, model_type, device)

    # --- prompts and inputs --------------------------------------------------------------

    def prompt_for(self, settings: CaptionSettings) -> str | None:
        """The text actually given to the model under ``settings`` (None: no text)."""
        if settings.prompt is not None and settings.prompt != DEFAULT_PROMPT:
            return settings.prompt
        if self.is_chat:
            return settings.prompt or DEFAULT_PROMPT
        return _DEFAULT_TASK.get(self.model_type)

    def _inputs(self, images: list[Any], prompt: str | None) -> Any:
        processor = self.processor
        n_images = len(images)
        if self.is_chat:
            messages = [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": prompt}],
                }
            ]
            text = processor.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            batch_images = (
                [[image] for image in images] if (self.model_type in _NESTED_IMAGES) else images
            )
            return processor(
                images=batch_images, text=[text] * n_images, padding=True, return_tensors="pt"
            )
        if prompt is None:
            return processor(images=images, return_tensors="pt")
        if self.model_type == "git":
            # GIT continues [CLS] + prompt; the processor's trailing [SEP] would end the caption
            import torch

            inputs = processor(images=images, return_tensors="pt")
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            row = [self.tokenizer.cls_token_id, *ids]
            inputs["input_ids"] = torch.tensor([row] * n_images, dtype=torch.long)
            return inputs
        return processor(images=images, text=[prompt] * n_images, padding=True, return_tensors="pt")

    def _to_device(self, inputs: Any) -> dict[str, Any]:
        import torch

        dtype = self.model.dtype
        accepted = inspect.signature(self.model.forward).parameters
        moved = {}
        for key, value in inputs.items():
            if key == "token_type_ids" and key not in accepted:
                continue  # BERT-style tokenizers add them; most VLM language models refuse them
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(dtype)
            moved[key] = value
        return moved

    # --- generation ----------------------------------------------------------------------

    def _n_echoed(self, sequences: Any, input_ids: Any) -> int:
        """How many leading tokens of each output row are the prompt, echoed back."""
        import torch

        if input_ids is None or self.is_encoder_decoder:
            return 0
        length = input_ids.shape[1]
        if sequences.shape[1] >= length and torch.equal(sequences[:, :length], input_ids):
            return length
        # BLIP replaces the prompt's first token by [DEC] and drops its final [SEP]
        if (
            length >= 3
            and sequences.shape[1] >= length - 1
            and torch.equal(sequences[:, 1 : length - 1], input_ids[:, 1 : length - 1])
        ):
            return length - 1
        return 0

    def _ensure_dtype(self, dtype: str) -> None:
        if dtype == "auto":
            return
        wanted = _torch_dtype(dtype, self.device)
        if self.model.dtype != wanted:
            self.model = self.model.to(wanted)

    def _generate(self, images: list[Any], settings: CaptionSettings) -> list[list[str]]:
        import torch

        prompt = self.prompt_for(settings)
        inputs = self._to_device(self._inputs(images, prompt))
        input_ids = inputs.get("input_ids")
        prompt_ids = None if input_ids is None else input_ids.clone()
        kwargs = settings.generation_kwargs()
        if self.model.generation_config.pad_token_id is None:
            pad = getattr(self.tokenizer, "pad_token_id", None)
            if pad is None:
                pad = getattr(self.tokenizer, "eos_token_id", None)
            if pad is not None:
                kwargs["pad_token_id"] = pad
        torch.manual_seed(settings.seed)
        with torch.inference_mode():
            sequences = self.model.generate(**inputs, **kwargs)
        if not isinstance(sequences, torch.Tensor):
            sequences = sequences.sequences
        echoed = 0
        if prompt_ids is not None:
            repeated = prompt_ids.repeat_interleave(settings.captions_per_image, dim=0)
            # BLIP edits its input_ids in place ([DEC] first): compare with what it generated from
            edited = input_ids.repeat_interleave(settings.captions_per_image, dim=0)
            echoed = max(self._n_echoed(sequences, repeated), self._n_echoed(sequences, edited))
        texts = self.tokenizer.batch_decode(sequences[:, echoed:], skip_special_tokens=True)
        texts = [" ".join(text.split()) for text in texts]
        k = settings.captions_per_image
        return [texts[i * k : (i + 1) * k] for i in range(len(images))]

    def caption(self, images: Sequence[Any], settings: CaptionSettings) -> list[list[str]]:
        """Caption images.

        Parameters
        ----------
        images : sequence of PIL.Image
            n_images RGB images.
        settings : CaptionSettings

        Returns
        -------
        list of list of str
            n_images lists of ``settings.captions_per_image`` captions, in input order.
        """
        self._ensure_dtype(settings.dtype)
        images = list(images)
        # similar sizes share a batch: less padding for models whose image token count varies
        order = sorted(range(len(images)), key=lambda i: images[i].size[0] * images[i].size[1])
        captions: list[list[str] | None] = [None] * len(images)
        for start in range(0, len(order), settings.batch_size):
            chunk = order[start : start + settings.batch_size]
            for index, texts in zip(
                chunk, self._generate([images[i] for i in chunk], settings), strict=True
            ):
                captions[index] = texts
        return [c for c in captions if c is not None]

    def caption_files(
        self, paths: Iterable[Path | str], settings: CaptionSettings, progress: bool = True
    ) -> list[list[str]]:
        """Caption image files, reading them batch by batch (a progress bar shows images/s).

        Returns
        -------
        list of list of str
            One list of ``settings.captions_per_image`` captions per path, in path order.

        Raises
        ------
        DataError
            An image cannot be decoded (exit 65); the message names the file.
        """
        from tqdm.auto import tqdm

        paths = [Path(p) for p in paths]
        captions: list[list[str]] = []
        # several batches per read: size sorting inside caption() has room to work
        chunk = settings.batch_size * 4
        with tqdm(total=len(paths), unit="img", desc="captions", disable=not progress) as bar:
            for start in range(0, len(paths), chunk):
                images = [read_rgb_image(p) for p in paths[start : start + chunk]]
                captions.extend(self.caption(images, settings))
                bar.update(len(images))
        return captions

    # --- provenance ----------------------------------------------------------------------

    def description(self) -> dict[str, Any]:
        """Model path, type, classes, weights hash and library versions (JSON-ready)."""
        if self._weights_sha256 is None:
            self._weights_sha256 = weights_sha256(self.model_path)
        return {
            "model_path": str(self.model_path),
            "model_type": self.model_type,
            "model_class": type(self.model).__name__,
            "processor_class": type(self.processor).__name__,
            "kind": "chat" if self.is_chat else "captioner",
            "weights_sha256": self._weights_sha256,
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "device": self.device,
            "transformers_version": metadata.version("transformers"),
            "torch_version": metadata.version("torch"),
        }


# --- captions files ----------------------------------------------------------------------


def write_captions_tsv(
    path: Path | str,
    captions: Mapping[str, Sequence[str]],
    *,
    model_spec: str,
    settings: CaptionSettings,
    captioner: Captioner | None = None,
) -> Path:
    """Write generated captions as a TSV (one row per caption) with a JSON sidecar, atomically.

    Columns: ``stim_file, caption, model, prompt, max_new_tokens, num_beams``. The sidecar
    (same name, ``.json``) holds a Description, the model spec, the generation settings and,
    with ``captioner``, its :meth:`Captioner.description` (weights hash, transformers version)
    and the prompt actually used.

    Parameters
    ----------
    path : Path
        The ``.tsv`` to write (``OUTPUT_DIR/stimuli/desc-<captioner>_captions.tsv``).
    captions : mapping of str to sequence of str
        Captions per stimulus file, in the order to write.
    model_spec : str
        The captioner spec as the user gave it (``hf:Salesforce/blip-image-captioning-large``).
    settings : CaptionSettings
    captioner : Captioner, optional
        The model that wrote the captions (for provenance and the prompt used).

    Returns
    -------
    Path
        The TSV path.
    """
    path = Path(path)
    prompt = captioner.prompt_for(settings) if captioner is not None else settings.prompt
    lines = ["\t".join(CAPTION_COLUMNS)]
    for stim_file, texts in captions.items():
        for text in texts:
            row = (stim_file, text, model_spec, prompt, settings.max_new_tokens, settings.beams)
            lines.append("\t".join(tsv_cell(v) for v in row))
    sidecar: dict[str, Any] = {
        "Description": "Captions of the stimulus images generated by a vision-language model.",
        "model": model_spec,
        "prompt": prompt,
        "generation": asdict(settings),
        "n_stimuli": len(captions),
        "columns": {
            "stim_file": "Stimulus file, as in the events files",
            "caption": "Generated caption (n/a: the model generated no text)",
            "model": "Captioning model spec",
            "prompt": "Text given to the model with the image (n/a: none)",
            "max_new_tokens": "Upper bound on the caption length in tokens",
            "num_beams": "Beams searched (1: greedy decoding)",
        },
    }
    if captioner is not None:
        description = captioner.description()
        sidecar["model_description"] = description
        sidecar["weights_sha256"] = description["weights_sha256"]
        sidecar["transformers_version"] = description["transformers_version"]
    write_text_atomic(path.with_suffix(".json"), json.dumps(sidecar, indent=2) + "\n")
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def read_generated_captions(path: Path | str) -> dict[str, list[str]]:
    """Read a TSV written by :func:`write_captions_tsv`: captions per stimulus file, file order.

    ``n/a`` captions (the model generated no text) are read as empty strings.

    Raises
    ------
    InputMissingError
        The file does not exist (exit 66).
    DataError
        The header lacks ``stim_file`` or ``caption``, or a row has the wrong number of cells
        (exit 65); the message names the file and the line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputMissingError(f"{path}: generated captions file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as UTF-8 text ({first_line(exc)})") from exc
    lines = text.splitlines()
    header = lines[0].split("\t") if lines else []
    if "stim_file" not in header or "caption" not in header:
        raise DataError(
            f"{path}: a generated captions file needs the columns stim_file and caption; "
            f"its columns are {', '.join(header) or 'none'}"
        )
    stim_column, caption_column = header.index("stim_file"), header.index("caption")
    captions: dict[str, list[str]] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(header):
            raise DataError(
                f"{path}: line {number} has {len(cells)} cells, the header {len(header)}"
            )
        caption = cells[caption_column]
        captions.setdefault(cells[stim_column], []).append("" if caption == "n/a" else caption)
    return captions


@dataclass(frozen=True)
class CaptionerSpec:
    """A vision-language model that captions the stimulus images (``[name=]hf:MODEL``)."""

    name: str
    text: str
    model: str
    path: Path


def parse_captioner(text: str, model_dirs: Sequence[Path | str] = ()) -> CaptionerSpec:
    """Parse ``--captioner`` (``[name=]hf:MODEL``) and find its weights.

    Raises
    ------
    UsageError
        Bad syntax or name (exit 64).
    InputMissingError
        The weights are not on this machine (exit 66, listing the paths tried).
    """
    name, eq, rest = text.partition("=")
    if not eq or ":" in name:
        name, rest = "", text
    family, colon, model = rest.partition(":")
    if not colon or family != "hf" or not model:
        raise UsageError(
            f"{option_name('captioner')} {text!r}: expected hf:MODEL, a transformers folder or a hub id "
            "(e.g. hf:/models/blip-image-captioning-large or hf:Salesforce/blip-image-captioning-large)"
        )
    name = name or re.sub(r"[^0-9A-Za-z]", "", Path(model.rstrip("/")).name)
    if not re.fullmatch(r"[0-9A-Za-z]+", name or ""):
        raise UsageError(
            f"{option_name('captioner')} {text!r}: the name must be letters and digits, got {name!r}"
        )
    return CaptionerSpec(
        name=name, text=text, model=model, path=resolve_hf_model(model, model_dirs)
    )
