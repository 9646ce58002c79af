"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder ``epoch-NNNN/`` holding ``model.safetensors`` (every weight of the
encoder and the logit scale), ``optimizer.safetensors`` + ``state.json`` (optimizer tensors,
flattened; optimizer and scheduler scalars; RNG states; loop counters and metrics).
``latest.json`` names the newest complete checkpoint and is replaced last, atomically, so a
run killed mid-write resumes from the previous one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from bids_vem.errors import DataError
from bids_vem.outputs.atomic import atomic_path, write_text_atomic

__all__ = [
    "flatten_optimizer_state",
    "unflatten_optimizer_state",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
]

LATEST = "latest.json"


def flatten_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split a torch optimizer ``state_dict`` into flat tensors and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"scalars": scalars, "param_groups": state_dict["param_groups"]}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    """Inverse of :func:`flatten_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, values in rest["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))


def save_checkpoint(
    checkpoint_dir: Path,
    epoch: int,
    *,
    model_state: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    loop_state: dict[str, Any],
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write the checkpoint after ``epoch`` and point ``latest.json`` at it; older ones removed."""
    checkpoint_dir = Path(checkpoint_dir)
    folder = checkpoint_dir / f"epoch-{epoch:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    _save_tensors(folder / "model.safetensors", model_state)
    opt_tensors, opt_rest = flatten_optimizer_state(optimizer.state_dict())
    rng = {"rng.torch": torch.get_rng_state(), "rng.generator": generator.get_state()}
    if torch.cuda.is_available():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"rng.cuda.{i}"] = cuda_state
    _save_tensors(folder / "optimizer.safetensors", {**opt_tensors, **rng, **(extra_tensors or {})})
    state = {
        "epoch": epoch,
        "optimizer": opt_rest,
        "scheduler": scheduler.state_dict(),
        "loop": loop_state,
    }
    write_text_atomic(folder / "state.json", json.dumps(state, indent=1))
    write_text_atomic(checkpoint_dir / LATEST, json.dumps({"epoch": epoch, "folder": folder.name}))
    for old in checkpoint_dir.glob("epoch-*"):
        if old.is_dir() and old.name != folder.name:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest complete checkpoint folder in ``checkpoint_dir``, or None."""
    pointer = Path(checkpoint_dir) / LATEST
    if not pointer.is_file():
        return None
    try:
        folder = Path(checkpoint_dir) / json.loads(pointer.read_text(encoding="utf-8"))["folder"]
    except (ValueError, KeyError) as exc:
        raise DataError(f"alignment checkpoint pointer {pointer} is corrupt ({exc})") from exc
    if not (folder / "state.json").is_file():
        raise DataError(f"alignment checkpoint {folder} is incomplete (no state.json)")
    return folder


def load_checkpoint(
    folder: Path,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor]]:
    """Restore optimizer, scheduler and RNG states from ``folder``.

    Returns (model weights, loop state, extra tensors); the caller loads the weights.
    """
    try:
        model_state = load_file(str(folder / "model.safetensors"))
        tensors = load_file(str(folder / "optimizer.safetensors"))
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"alignment checkpoint {folder} is unreadable ({exc})") from exc
    opt_tensors = {k: v for k, v in tensors.items() if k.startswith("state.")}
    optimizer.load_state_dict(unflatten_optimizer_state(opt_tensors, state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.generator"])
    cuda_states = [v for k, v in sorted(tensors.items()) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    extra = {k: v for k, v in tensors.items() if k.startswith("extra.")}
    return model_state, state["loop"], extra
