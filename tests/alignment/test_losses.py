"""Alignment losses against direct formulas and open_clip's ClipLoss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bids_vem.alignment.losses import (
    LogitScale,
    alignment_objective,
    cosine_regression_loss,
    infonce_loss,
    preservation_loss,
)
from bids_vem.errors import UsageError


def _direct_infonce(image: np.ndarray, text: np.ndarray, scale: float) -> float:
    image = image / np.linalg.norm(image, axis=1, keepdims=True)
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    logits = scale * image @ text.T

    def ce(rows: np.ndarray) -> float:
        log_softmax = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
        return float(-np.mean(np.diag(log_softmax)))

    return 0.5 * (ce(logits) + ce(logits.T))


def test_infonce_matches_direct_formula_and_open_clip():
    from open_clip.loss import ClipLoss

    rng = np.random.default_rng(0)
    image, text = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    scale = torch.tensor(12.5)
    ours = infonce_loss(torch.tensor(image), torch.tensor(text), scale)
    assert float(ours) == pytest.approx(_direct_infonce(image, text, 12.5), rel=1e-5)
    norm = torch.nn.functional.normalize
    reference = ClipLoss()(
        norm(torch.tensor(image, dtype=torch.float32), dim=-1),
        norm(torch.tensor(text, dtype=torch.float32), dim=-1),
        scale,
    )
    assert float(ours) == pytest.approx(float(reference), rel=1e-5)


def test_infonce_structure_cases():
    eye = torch.eye(4)
    # orthogonal matching pairs and a large scale: loss close to zero
    assert float(infonce_loss(eye, eye * 3.0, torch.tensor(100.0))) < 1e-6
    # every embedding identical: no information, loss is log(n) with every negative kept
    same = torch.ones(4, 3)
    assert float(infonce_loss(same, 2 * same, torch.tensor(10.0), None)) == pytest.approx(
        math.log(4), rel=1e-6
    )
    # swapped pairs are worse than matched ones
    swapped = eye[[1, 0, 2, 3]]
    assert float(infonce_loss(eye, swapped, torch.tensor(10.0))) > float(
        infonce_loss(eye, eye, torch.tensor(10.0))
    )


def test_logit_scale_is_learnable_and_clamped():
    scale = LogitScale(0.07)
    assert float(scale().detach()) == pytest.approx(1 / 0.07, rel=1e-6)
    assert scale.temperature == pytest.approx(0.07, rel=1e-6)
    image, text = torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), torch.randn(6, 4)
    infonce_loss(image, text, scale()).backward()
    assert scale.log_scale.grad is not None and float(scale.log_scale.grad) != 0.0
    with torch.no_grad():
        scale.log_scale.fill_(10.0)
    assert float(scale().detach()) == pytest.approx(100.0, rel=1e-6)  # CLIP's clamp
    with pytest.raises(UsageError):
        LogitScale(0.0)


def test_cosine_regression_and_preservation():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert float(cosine_regression_loss(a, a * 5)) == pytest.approx(0.0, abs=1e-7)
    assert float(cosine_regression_loss(a, -a)) == pytest.approx(2.0)
    assert float(cosine_regression_loss(a, a[[1, 0]])) == pytest.approx(1.0)
    initial = a.clone().requires_grad_(True)
    current = a.clone().requires_grad_(True)
    preservation_loss(current, initial).sum().backward()
    assert initial.grad is None  # the frozen original never trains


def test_mixed_objective_weights_the_two_terms():
    gen = torch.Generator().manual_seed(3)
    image, text, initial = (torch.randn(5, 4, generator=gen) for _ in range(3))
    scale = torch.tensor(20.0)
    mixed = alignment_objective(
        image,
        text,
        loss="infonce",
        logit_scale=scale,
        alignment_weight=0.3,
        initial_embeddings=initial,
    )
    expected = 0.3 * infonce_loss(image, text, scale) + 0.7 * preservation_loss(image, initial)
    assert float(mixed) == pytest.approx(float(expected), rel=1e-6)
    cosine = alignment_objective(image, text, loss="cosine", alignment_weight=1.0)
    assert float(cosine) == pytest.approx(float(cosine_regression_loss(image, text)))
    # weight 0: pure preservation, zero at the start of training
    assert float(
        alignment_objective(
            image, text, loss="cosine", alignment_weight=0.0, initial_embeddings=image
        )
    ) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"loss": "mse"}, "--align-loss"),
        ({"loss": "infonce"}, "logit scale"),
        ({"loss": "cosine", "alignment_weight": 0.5}, "initial image embeddings"),
        ({"loss": "cosine", "alignment_weight": 1.5}, "[0, 1]"),
    ],
)
def test_objective_usage_errors(kwargs, fragment):
    with pytest.raises(UsageError, match=None) as info:
        alignment_objective(torch.ones(2, 2), torch.ones(2, 2), **kwargs)
    assert info.value.exit_code == 64
    assert fragment in str(info.value)


def test_images_sharing_a_caption_are_not_pushed_apart():
    """Rows 0 and 1 have the same caption (a VLM's "a close-up of a face"), row 2 one that is
    nearly the same (cosine > 0.99). With duplicates masked, a batch whose images match their
    captions has no loss left and no gradient driving the duplicates apart; CLIP's loss as
    published keeps log(2)-sized terms and pulls image 0 away from image 1's caption."""
    rng = np.random.default_rng(1)
    captions = torch.tensor(rng.normal(size=(6, 16)), dtype=torch.float32)
    captions[1] = captions[0]
    captions[2] = captions[0] + 0.01 * captions[3]  # near-identical wording
    assert float(torch.nn.functional.cosine_similarity(captions[0], captions[2], dim=0)) > 0.99
    images = captions.clone().requires_grad_(True)
    scale = torch.tensor(100.0)
    masked = infonce_loss(images, captions, scale)
    published = infonce_loss(images, captions, scale, duplicate_cosine=None)
    assert float(masked) < 1e-3
    assert float(published) > 0.5 * math.log(3) * 3 / 6  # three rows split their mass
    # the same loss as a batch without the duplicate rows
    distinct = [0, 3, 4, 5]
    alone = infonce_loss(captions[distinct], captions[distinct], scale)
    assert float(masked) == pytest.approx(float(alone), abs=1e-5)
    # no gradient pushes image 0 away from caption 1's direction
    (gradient,) = torch.autograd.grad(masked, images)
    assert float(gradient.abs().max()) < 1e-3
    (gradient,) = torch.autograd.grad(published, images)
    assert float(gradient.abs().max()) > 1e-2
    # unrelated captions are never masked: the loss equals the published one
    fresh = torch.tensor(rng.normal(size=(8, 16)), dtype=torch.float32)
    assert float(infonce_loss(fresh, fresh, torch.tensor(10.0))) == pytest.approx(
        float(infonce_loss(fresh, fresh, torch.tensor(10.0), None)), rel=1e-6
    )
