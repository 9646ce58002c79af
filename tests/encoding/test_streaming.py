"""Bounded memory: the on-disk voxel store, memory-derived chunks, GPU out-of-memory halving,
weights written chunk by chunk. Every path must give the maps of the in-memory, one-chunk fit."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import bids_vem.encoding.model as model
import bids_vem.encoding.ridge as ridge
from bids_vem.encoding.chunks import ChunkPlan, engine_bytes, voxel_chunk_for_memory
from bids_vem.encoding.model import fit_encoding_model, write_weights
from bids_vem.encoding.ridge import fit_ridge
from bids_vem.encoding.voxel_data import (
    InMemoryVoxelData,
    RunSubset,
    VoxelStore,
    write_voxel_store,
)
from bids_vem.errors import DataError, InputMissingError

ALPHAS = np.logspace(-2, 8, 21)


def _problem(n_runs=4, n_per_run=60, n_features=10, n_voxels=53, seed=0):
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((n_features, n_voxels)) * np.linspace(0, 0.7, n_voxels)
    Xs = [rng.standard_normal((n_per_run + i, n_features)) for i in range(n_runs)]
    Ys = [(X @ weights + rng.standard_normal((len(X), n_voxels))).astype("f4") for X in Xs]
    return Xs, Ys


def _store(tmp_path, Ys):
    names = [f"run-{i}" for i in range(len(Ys))]
    return write_voxel_store(
        tmp_path / "bold.json",
        zip(names, (Y for Y in Ys), strict=True),
        Ys[0].shape[1],
        [len(Y) for Y in Ys],
        metadata={"note": "test"},
    )


def _assert_same_maps(a, b, atol=1e-5):
    np.testing.assert_array_equal(a.alpha, b.alpha)
    np.testing.assert_allclose(a.cv_score, b.cv_score, atol=atol)
    np.testing.assert_allclose(a.r, b.r, atol=atol)
    np.testing.assert_allclose(a.r2, b.r2, atol=atol)


def test_store_reads_back_every_chunk_and_refuses_damage(tmp_path):
    _, Ys = _problem()
    store = _store(tmp_path, Ys)
    assert store.run_lengths == (60, 61, 62, 63) and store.n_voxels == 53
    assert store.metadata == {"note": "test"} and store.run_names[2] == "run-2"
    for run, Y in enumerate(Ys):
        np.testing.assert_array_equal(store.read(run, slice(10, 27)), Y[:, 10:27])
        np.testing.assert_array_equal(store.read_all(run), Y)
    # the data file is a plain .npy of all values
    assert np.load(store.data_path, mmap_mode="r").size == 53 * sum(store.run_lengths)
    subset = RunSubset(store, [3, 1])
    np.testing.assert_array_equal(subset.read(0, slice(0, 5)), Ys[3][:, :5])
    assert subset.run_lengths == (63, 61)

    with open(store.data_path, "r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(InputMissingError, match="wrong size"):
        VoxelStore(store.header_path)
    with pytest.raises(DataError, match=r"run-1: voxel data of shape \(61, 53\), expected"):
        write_voxel_store(tmp_path / "bad.json", [("run-0", Ys[0]), ("run-1", Ys[1])], 53, [60, 60])
    assert not (tmp_path / "bad.json").exists() and not (tmp_path / "bad.npy").exists()


def test_store_gives_the_maps_of_the_in_memory_fit(tmp_path, device):
    Xs, Ys = _problem(seed=1)
    in_memory = fit_encoding_model(Xs, Ys, ALPHAS, device=device)
    streamed = fit_encoding_model(Xs, _store(tmp_path, Ys), ALPHAS, n_voxels_chunk=7, device=device)
    _assert_same_maps(in_memory, streamed)
    explicit = fit_encoding_model(Xs, Ys, ALPHAS, test_runs=[3])
    explicit_streamed = fit_encoding_model(
        Xs, VoxelStore(tmp_path / "bold.json"), ALPHAS, test_runs=[3], n_voxels_chunk=5
    )
    _assert_same_maps(explicit, explicit_streamed)


def test_a_small_memory_budget_sets_small_chunks_and_changes_nothing(caplog):
    Xs, Ys = _problem(seed=2)
    n_samples = sum(len(X) for X in Xs)
    sizes = dict(n_samples=n_samples, n_features=10, n_alphas=len(ALPHAS), n_voxels=53)
    roomy = fit_encoding_model(Xs, Ys, ALPHAS, mem_mb=4000)
    # a budget a little above the fixed cost leaves room for a few voxels per chunk
    fixed_mb = engine_bytes(chunk=0, **sizes) / 2**20
    tight_mb = fixed_mb + 0.1
    chunk = voxel_chunk_for_memory(tight_mb, **sizes)
    assert 1 < chunk < 53
    assert engine_bytes(chunk=chunk, **sizes) <= tight_mb * 2**20
    with caplog.at_level(logging.INFO, logger="bids_vem.encoding"):
        tight = fit_encoding_model(Xs, Ys, ALPHAS, mem_mb=tight_mb)
    assert roomy.voxel_chunk == 53 and tight.voxel_chunk == chunk
    # the roomy fit's nested CV came from one decomposition, the tight one's refits each fold
    assert "nested CV refits each fold" in caplog.text
    _assert_same_maps(roomy, tight)
    assert voxel_chunk_for_memory(1, **sizes) == 1  # too small a budget: one voxel at a time
    # whole-brain sizes: chunks shrink with the budget, never below 1, never above n_voxels
    big = dict(n_samples=10_000, n_features=512, n_alphas=13, n_voxels=200_000)
    chunks = [voxel_chunk_for_memory(mb, **big) for mb in (1000, 3000, 12_000, 10**7)]
    assert chunks == sorted(chunks) and chunks[-1] == 200_000 and chunks[0] >= 1
    assert engine_bytes(chunk=chunks[1], **big) <= 3000 * 2**20


def test_cuda_out_of_memory_halves_the_chunk_once_logged_and_changes_nothing(monkeypatch, caplog):
    Xs, Ys = _problem(seed=3)
    reference = fit_encoding_model(Xs, Ys, ALPHAS, n_voxels_chunk=53)
    real_read = ridge.read_selection
    calls = {"oom": 0}

    def read(data, runs, part, device, dtype, **options):
        # a GPU that holds at most 10 voxels' worth of data
        if part.stop - part.start > 10:
            calls["oom"] += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real_read(data, runs, part, device, dtype, **options)

    # the data are read by the refits (ridge) and by the nested CV from one decomposition (model)
    monkeypatch.setattr(ridge, "read_selection", read)
    monkeypatch.setattr(model, "read_selection", read)
    with caplog.at_level(logging.WARNING, logger="bids_vem.encoding"):
        result = fit_encoding_model(Xs, Ys, ALPHAS, n_voxels_chunk=53)
    _assert_same_maps(reference, result)
    assert result.voxel_chunk == 6  # 53 -> 26 -> 13 -> 6, then kept for the rest of the fit
    assert calls["oom"] == 3
    warnings = [r for r in caplog.records if "out of memory" in r.getMessage()]
    assert len(warnings) == 1 and "halved to 26 voxels" in warnings[0].getMessage()

    plan = ChunkPlan(1)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        plan.run(5, lambda part: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("x")))
    with pytest.raises(ValueError, match="not memory"):
        ChunkPlan(8).run(5, lambda part: (_ for _ in ()).throw(ValueError("not memory")))


def test_weights_are_the_ridge_solution_written_chunk_by_chunk(tmp_path):
    Xs, Ys = _problem(seed=4)
    path = tmp_path / "weights.npy"
    result = fit_encoding_model(Xs, Ys, ALPHAS, weights_path=path, n_voxels_chunk=8)
    weights = np.load(path)
    assert weights.shape == (10, 53) and weights.dtype == np.float32
    expected = fit_ridge(np.concatenate(Xs), np.concatenate(Ys), result.alpha.astype(float))
    np.testing.assert_allclose(weights, expected, rtol=1e-4, atol=1e-5)
    # with test runs, the weights are those of the model that predicted them
    fit_encoding_model(Xs, Ys, ALPHAS, test_runs=[0], weights_path=path)
    data = InMemoryVoxelData(Ys)
    alpha = np.full(53, 10.0)
    write_weights(tmp_path / "w.npy", np.concatenate(Xs[1:]), data, [1, 2, 3], alpha)
    np.testing.assert_allclose(
        np.load(tmp_path / "w.npy"),
        fit_ridge(np.concatenate(Xs[1:]), np.concatenate(Ys[1:]), alpha),
        rtol=1e-4,
        atol=1e-5,
    )
