"""Retrieval recall@k on hand-made embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from bids_vem.alignment.retrieval import retrieval_recall
from bids_vem.errors import DataError


def test_perfect_and_reversed_retrieval():
    eye = np.eye(12)
    perfect = retrieval_recall(eye, 2 * eye)
    assert all(value == 1.0 for value in perfect.values())
    assert set(perfect) == {f"{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}


def test_hand_made_ranks():
    # 4 pairs; images 0, 1 match their caption first; image 2's caption is its 2nd choice;
    # image 3 points at caption 0 and its own caption is last
    text = np.eye(4)
    image = np.array(
        [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.9, 0.5, 0.0],
            [1.0, 0.3, 0.2, 0.0],
        ]
    )
    out = retrieval_recall(image, text, ks=(1, 2, 3))
    assert out["i2t_r1"] == pytest.approx(2 / 4)
    assert out["i2t_r2"] == pytest.approx(3 / 4)
    assert out["i2t_r3"] == pytest.approx(3 / 4)  # image 3's caption has cosine 0: rank 4
    # caption -> image: caption 0's best is image 0 (cos 1) above image 3; caption 1's best is
    # image 1; caption 2's best is image 2 (0.486) above image 3 (0.191); caption 3 ties at 0
    assert out["t2i_r1"] == pytest.approx(3 / 4)


def test_constant_embeddings_get_no_credit():
    out = retrieval_recall(np.ones((5, 3)), np.ones((5, 3)), ks=(1,))
    assert out["i2t_r1"] == 0.0 and out["t2i_r1"] == 0.0


def test_shape_mismatch_is_a_data_error():
    with pytest.raises(DataError, match="one shape"):
        retrieval_recall(np.ones((3, 2)), np.ones((4, 2)))
