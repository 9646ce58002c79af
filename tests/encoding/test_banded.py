"""Banded ridge and variance partitioning: planted unique and shared components, himalaya as the
reference, random features and repeated stimuli at chance."""

from __future__ import annotations

import numpy as np
import pytest
from himalaya.backend import set_backend
from himalaya.ridge import BandedRidgeCV
from himalaya.scoring import r2_score_split

from bids_vem.analysis.variance_partitioning import partition, subsets
from bids_vem.encoding.banded import JointResult, fit_joint_model
from bids_vem.encoding.stimulus_folds import samples_from_rows
from bids_vem.errors import DataError

ALPHAS = np.logspace(-2, 5, 8)


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / x.std(0)


def _planted(n_runs=4, n_samples=120, seed=0, noise=1.0):
    """Spaces A = [S, U_A] and B = [S, U_B] sharing the latent S; voxel groups driven by U_A
    only, by S only, by U_B only, and by nothing."""
    rng = np.random.default_rng(seed)
    n = n_runs * n_samples
    S, UA, UB = (rng.standard_normal((n, 4)) for _ in range(3))
    A = np.hstack([S, UA])
    B = np.hstack([S, UB])
    per = 6

    def unit_weights() -> np.ndarray:  # signal of variance 1 per voxel: R^2 = 1 / (1 + noise^2)
        w = rng.standard_normal((4, per))
        return w / np.linalg.norm(w, axis=0)

    Y = rng.standard_normal((n, 4 * per)) * noise
    Y[:, :per] += UA @ unit_weights()
    Y[:, per : 2 * per] += S @ unit_weights()
    Y[:, 2 * per : 3 * per] += UB @ unit_weights()
    split = np.array_split(np.arange(n), n_runs)
    As = [_zscore(A[i]).astype(np.float32) for i in split]
    Bs = [_zscore(B[i]).astype(np.float32) for i in split]
    Ys = [_zscore(Y[i]).astype(np.float32) for i in split]
    groups = {
        "A": slice(0, per),
        "shared": slice(per, 2 * per),
        "B": slice(2 * per, 3 * per),
        "none": slice(3 * per, 4 * per),
    }
    return As, Bs, Ys, groups


def test_partition_of_two_spaces_is_the_textbook_formula():
    rng = np.random.default_rng(1)
    r2a, r2b, r2ab = rng.uniform(0, 0.5, (3, 10))
    atoms, values = partition(np.stack([r2a, r2b, r2ab]), 2)
    assert atoms == [(0,), (1,), (0, 1)]
    np.testing.assert_allclose(values[0], r2ab - r2b)
    np.testing.assert_allclose(values[1], r2ab - r2a)
    np.testing.assert_allclose(values[2], r2a + r2b - r2ab)


def test_partition_of_three_spaces_recovers_a_known_venn_diagram():
    """Scores built from known atoms (a model explains the atoms that meet its spaces) give
    the atoms back, and they sum to the joint R^2."""
    order = subsets(3)
    truth = {atom: 0.01 * (k + 1) for k, atom in enumerate(order)}
    scores = np.array(
        [[sum(v for atom, v in truth.items() if set(atom) & set(model))] for model in order]
    )
    atoms, values = partition(scores, 3)
    np.testing.assert_allclose(values[:, 0], [truth[a] for a in atoms])
    np.testing.assert_allclose(values.sum(0), scores[-1])
    with pytest.raises(ValueError, match="2 to 4"):
        subsets(5)


def test_planted_unique_and_shared_variance_are_recovered():
    As, Bs, Ys, g = _planted()
    result = fit_joint_model([As, Bs], Ys, spaces=["a", "b"], alphas=ALPHAS, n_iterations=12)
    atoms, values = result.atoms()
    unique_a, unique_b, shared = values
    # each planted component is found where it was planted (true R^2 0.5), and nowhere else
    for part, where in ((unique_a, "A"), (shared, "shared"), (unique_b, "B")):
        np.testing.assert_allclose(part[g[where]], 0.5, atol=0.1)
    for name, part in (("A", unique_a), ("B", unique_b), ("shared", shared)):
        for other in g:
            if other != name:
                assert np.abs(part[g[other]]).max() < 0.1, (name, other)
    # the atoms sum to the joint R^2; the split R^2 sums to it too
    np.testing.assert_allclose(values.sum(0), result.r2, atol=1e-5)
    np.testing.assert_allclose(result.split_r2.sum(0), result.r2, atol=1e-4)
    # where a component was planted, the joint model predicts; where nothing was, it does not
    assert result.r[g["none"]].max() < 0.15
    assert result.r[g["A"]].min() > 0.5
    # the band of the space that does not predict is penalised harder than the one that does
    assert np.all(result.alpha[1, g["A"]] > result.alpha[0, g["A"]])
    assert np.all(result.alpha[0, g["B"]] > result.alpha[1, g["B"]])
    assert "nested leave-one-run-out over 4 runs" in result.cross_validation


def _himalaya_by_hand(As, Bs, Ys, train: list[int], test: list[int], backend) -> np.ndarray:
    """Each space's held-out prediction of the runs ``test`` from himalaya's BandedRidgeCV
    trained on the runs ``train`` with an inner leave-one-run-out: (2, n_test, n_voxels)."""
    X = np.vstack([np.hstack([As[i], Bs[i]]) for i in train])
    Y = np.vstack([Ys[i] for i in train])
    starts = np.cumsum([0, *(len(Ys[i]) for i in train)])
    n = len(train)
    inner = [
        (
            np.concatenate([np.arange(starts[j], starts[j + 1]) for j in range(n) if j != k]),
            np.arange(starts[k], starts[k + 1]),
        )
        for k in range(n)
    ]
    model = BandedRidgeCV(
        groups=np.repeat([0, 1], 8),
        solver_params=dict(n_iter=8, alphas=ALPHAS, progress_bar=False),
        cv=inner,
        random_state=5,
    ).fit(X, Y)
    X_test = np.vstack([np.hstack([As[i], Bs[i]]) for i in test])
    return backend.to_numpy(model.predict(X_test, split=True))


def test_joint_model_matches_himalaya_fold_by_fold():
    """The same nested leave-one-run-out written directly with himalaya: equal held-out R^2
    and split R^2."""
    As, Bs, Ys, _ = _planted(seed=3)
    result = fit_joint_model([As, Bs], Ys, spaces=["a", "b"], alphas=ALPHAS, n_iterations=8, seed=5)
    backend = set_backend("torch")
    n_runs = len(Ys)
    preds, ys = [], []
    for test in range(n_runs):
        train = [i for i in range(n_runs) if i != test]
        preds.append(_himalaya_by_hand(As, Bs, Ys, train, [test], backend))
        ys.append(Ys[test])
    y = np.vstack(ys)
    y = y - y.mean(0)
    P = np.concatenate(preds, axis=1)
    split = backend.to_numpy(r2_score_split(y, P))
    np.testing.assert_allclose(result.split_r2, split, atol=2e-4)
    sse = ((y - P.sum(0)) ** 2).sum(0)
    np.testing.assert_allclose(result.r2, 1 - sse / (y**2).sum(0), atol=2e-4)


def test_random_features_add_no_unique_variance():
    """A second space of random numbers: no unique variance, no shared variance."""
    As, _, Ys, g = _planted(seed=4)
    rng = np.random.default_rng(9)
    noise = [rng.standard_normal(A.shape).astype(np.float32) for A in As]
    result = fit_joint_model([As, noise], Ys, spaces=["a", "random"], alphas=ALPHAS,
                             n_iterations=8)  # fmt: skip
    _, (unique_a, unique_random, shared) = result.atoms()
    assert np.abs(unique_random).max() < 0.03
    assert np.abs(shared).max() < 0.05
    assert unique_a[g["A"]].min() > 0.3


def test_repeated_stimuli_give_stimulus_folds_and_chance_for_features_that_only_name_them():
    """Trial-wise rows that repeat the same 40 stimuli in every run. Features that are a
    random code per stimulus can memorise each stimulus's response: with folds of runs they
    would predict; stimulus-disjoint folds (chosen automatically) leave them at chance."""
    rng = np.random.default_rng(2)
    n_stimuli, n_runs, n_voxels = 40, 4, 30
    ids = [f"im{i:02d}" for i in range(n_stimuli)]
    code = rng.standard_normal((n_stimuli, 20)).astype(np.float32)
    other = rng.standard_normal((n_stimuli, 20)).astype(np.float32)
    response = rng.standard_normal((n_stimuli, n_voxels))  # stimulus-specific, not in the features
    rows, Xa, Xb, Ys = [], [], [], []
    for _ in range(n_runs):
        order = rng.permutation(n_stimuli)
        rows.append([ids[i] for i in order])
        Xa.append(code[order])
        Xb.append(other[order])
        Ys.append(
            (response[order] + 0.5 * rng.standard_normal((n_stimuli, n_voxels))).astype(np.float32)
        )
    samples = samples_from_rows(rows)
    result = fit_joint_model(
        [Xa, Xb], Ys, spaces=["code", "other"], alphas=ALPHAS, samples=[samples, samples],
        n_iterations=6,
    )  # fmt: skip
    assert "stimulus-disjoint" in result.cross_validation
    assert result.test_stimuli_in_training == (0,) * result.n_folds
    assert np.median(result.r) < 0.1
    assert np.median(result.r2) < 0.02


def test_result_round_trips_through_npz(tmp_path):
    As, Bs, Ys, _ = _planted(n_runs=3, n_samples=60)
    result = fit_joint_model([As, Bs], Ys, spaces=["a", "b"], alphas=ALPHAS, n_iterations=4)
    back = JointResult.load(result.save(tmp_path / "joint.npz"))
    assert back.spaces == ("a", "b")
    np.testing.assert_array_equal(back.subset_r2, result.subset_r2)
    assert back.cross_validation == result.cross_validation


def test_test_runs_are_held_out_of_all_fitting_as_himalaya_by_hand():
    """``--test-runs``: one model trained on the other runs (inner leave-one-run-out), scored on
    the test runs; the same written directly with himalaya."""
    As, Bs, Ys, _ = _planted(n_runs=5, seed=4)
    test = [1, 3]
    names = [f"run-{i + 1}" for i in range(5)]
    result = fit_joint_model(
        [As, Bs], Ys, spaces=["a", "b"], alphas=ALPHAS, n_iterations=8, seed=5, test_runs=test,
        run_names=names,
    )  # fmt: skip
    assert result.n_folds == 1
    assert result.cross_validation.startswith("test runs run-2, run-4 held out of all fitting")
    backend = set_backend("torch")
    train = [i for i in range(5) if i not in test]
    P = _himalaya_by_hand(As, Bs, Ys, train, test, backend)
    y = np.vstack([Ys[i] for i in test])
    y = y - y.mean(0)
    np.testing.assert_allclose(result.split_r2, backend.to_numpy(r2_score_split(y, P)), atol=2e-4)
    sse = ((y - P.sum(0)) ** 2).sum(0)
    np.testing.assert_allclose(result.r2, 1 - sse / (y**2).sum(0), atol=2e-4)
    with pytest.raises(DataError, match="at least 2 CV groups among the training runs"):
        fit_joint_model([As[:3], Bs[:3]], Ys[:3], spaces=["a", "b"], alphas=ALPHAS,
                        n_iterations=2, test_runs=[0, 1])  # fmt: skip
