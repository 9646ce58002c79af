"""LoRA: low-rank trainable deltas on the frozen weights of an open_clip vision transformer.

Each adapted weight ``W`` (d_out, d_in) becomes ``W + (alpha / rank) * B @ A`` with ``A``
(rank, d_in) and ``B`` (d_out, rank) trainable and ``W`` frozen (Hu et al. 2021). The delta is a
``torch.nn.utils.parametrize`` parametrization of the weight itself, which covers
``nn.Linear`` and ``nn.MultiheadAttention`` alike (the attention's fused ``in_proj_weight`` is a
bare Parameter that ``F.multi_head_attention_forward`` reads directly). ``B`` starts at zero, so
before the first step the adapted model computes exactly what the base model does.

Adapted in every block of ``visual.transformer.resblocks``: the attention input projection
(q, k and v share one rank-``rank`` delta over the fused (3 d, d) matrix, as peft does for
``MultiheadAttention``), the attention output projection and both MLP linears.

The merged weight is recomputed at each access; :func:`merged_state_dict` gives the plain
weights (base + delta) under the module's original state-dict keys, for export.
"""

from __future__ import annotations

import math

import torch
from torch.nn.utils import parametrize

from bids_vem.errors import UsageError

__all__ = ["LoRADelta", "add_lora", "has_lora", "lora_parameters", "merged_state_dict"]

#: (module path inside a resblock, weight name) of the adapted weights
LORA_TARGETS = (
    ("attn", "in_proj_weight"),
    ("attn.out_proj", "weight"),
    ("mlp.c_fc", "weight"),
    ("mlp.c_proj", "weight"),
)


class LoRADelta(torch.nn.Module):
    """Parametrization ``W -> W + (alpha / rank) * B @ A`` of a (d_out, d_in) weight.

    Parameters
    ----------
    d_out, d_in
        Shape of the adapted weight.
    rank
        Rank of the delta.
    alpha
        Scale numerator: the delta is multiplied by ``alpha / rank``.
    """

    def __init__(self, d_out: int, d_in: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.rank, self.alpha = int(rank), float(alpha)
        self.scale = self.alpha / self.rank
        self.lora_A = torch.nn.Parameter(torch.empty(rank, d_in))
        self.lora_B = torch.nn.Parameter(torch.zeros(d_out, rank))
        # A as nn.Linear initialises its weight (and as the LoRA paper does); B = 0: no change
        torch.nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """The adapted weight, in ``weight``'s dtype (the delta is computed outside autocast)."""
        with torch.autocast(device_type=weight.device.type, enabled=False):
            delta = self.lora_B.to(weight.dtype) @ self.lora_A.to(weight.dtype)
        return weight + self.scale * delta


def _vit_blocks(visual: torch.nn.Module) -> list[torch.nn.Module]:
    transformer = getattr(visual, "transformer", None)
    if transformer is None or not hasattr(transformer, "resblocks"):
        raise UsageError(
            f"LoRA alignment needs an open_clip VisionTransformer image tower, "
            f"not {type(visual).__name__}: use partial fine-tuning (method 'partial') instead"
        )
    return list(transformer.resblocks)


def add_lora(
    visual: torch.nn.Module, rank: int = 8, alpha: float = 16.0
) -> list[torch.nn.Parameter]:
    """Add LoRA deltas to every transformer block of ``visual`` and freeze its own weights.

    Parameters
    ----------
    visual
        An open_clip ``VisionTransformer`` (modified in place).
    rank, alpha
        LoRA rank and scale numerator (delta scaled by ``alpha / rank``).

    Returns
    -------
    The LoRA factors (the only parameters of ``visual`` left trainable). Calling it again on
    a tower that already has LoRA with the same rank and alpha returns the existing factors.

    Raises
    ------
    UsageError
        The tower is not a VisionTransformer (e.g. ModifiedResNet), or a bad rank/alpha, or the
        tower already carries LoRA of another rank/alpha.
    """
    if rank < 1:
        raise UsageError(f"alignment LoRA rank must be >= 1, got {rank}")
    if not alpha > 0:
        raise UsageError(f"alignment LoRA alpha must be > 0, got {alpha}")
    blocks = _vit_blocks(visual)
    for param in visual.parameters():
        param.requires_grad_(False)
    for block in blocks:
        for path, name in LORA_TARGETS:
            module = block.get_submodule(path)
            if parametrize.is_parametrized(module, name):
                delta = module.parametrizations[name][0]
                if not isinstance(delta, LoRADelta) or (delta.rank, delta.alpha) != (rank, alpha):
                    raise UsageError(
                        f"the image tower already has LoRA of rank {delta.rank} and alpha "
                        f"{delta.alpha}, not rank {rank} and alpha {alpha}"
                    )
                continue
            weight = getattr(module, name)
            delta = LoRADelta(weight.shape[0], weight.shape[1], rank, alpha)
            delta.to(device=weight.device, dtype=weight.dtype)
            parametrize.register_parametrization(module, name, delta, unsafe=False)
    params = lora_parameters(visual)
    for param in params:
        param.requires_grad_(True)
    return params


def has_lora(module: torch.nn.Module) -> bool:
    """True when some submodule of ``module`` carries a :class:`LoRADelta`."""
    return any(isinstance(m, LoRADelta) for m in module.modules())


def lora_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The LoRA factors (A and B of every delta) inside ``module``, in module order."""
    return [p for m in module.modules() if isinstance(m, LoRADelta) for p in (m.lora_A, m.lora_B)]


def merged_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state dict with every parametrized weight merged, under its plain key.

    ``blocks.0.attn.parametrizations.in_proj_weight.original`` and the LoRA factors become
    ``blocks.0.attn.in_proj_weight = W + (alpha / rank) B A``: the keys a model without LoRA
    has. The module itself is not changed. Tensors are detached.
    """
    state = {
        key: value.detach()
        for key, value in module.state_dict().items()
        if not (key.startswith("parametrizations.") or ".parametrizations." in key)
    }
    with torch.no_grad():
        for path, sub in module.named_modules():
            if not parametrize.is_parametrized(sub):
                continue
            prefix = f"{path}." if path else ""
            for name in sub.parametrizations:
                state[prefix + name] = getattr(sub, name).detach().clone()
    return state
