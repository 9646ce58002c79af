"""Permutation statistics and noise ceilings of the encoding model, against simulations."""

import numpy as np
from scipy import stats

from bids_vem.encoding.model import fit_encoding_model
from bids_vem.encoding.noise_ceiling import ncsnr, trial_noise_ceiling
from bids_vem.encoding.stimulus_folds import samples_from_rows

ALPHAS = np.logspace(-1, 4, 8)


def _repeated(signal: float, seed: int = 0, n_voxels: int = 300, trialwise: bool = True):
    rng = np.random.default_rng(seed)
    n_stimuli = 40
    features = rng.standard_normal((n_stimuli, 6))
    responses = rng.standard_normal((n_stimuli, n_voxels))  # identity-specific, feature-free
    weights = rng.standard_normal((6, n_voxels)) / 3
    Xs, Ys, rows = [], [], []
    for _ in range(4):
        order = np.repeat(rng.permutation(n_stimuli), 3)
        Xs.append(features[order])
        Ys.append(
            responses[order]
            + signal * features[order] @ weights
            + rng.standard_normal((len(order), n_voxels))
        )
        rows.append([f"s{i}" for i in order])
    return Xs, Ys, samples_from_rows(rows, trialwise=trialwise)


def test_permutation_p_values_are_uniform_under_the_null_and_fdr_is_controlled():
    Xs, Ys, samples = _repeated(signal=0.0)
    result = fit_encoding_model(
        Xs, Ys, ALPHAS, stimulus_samples=samples, n_permutations=200, permutation="permute"
    )
    assert result.evaluation == "stimulus-folds"
    assert abs(result.r.mean()) < 0.03
    assert stats.kstest(result.p, "uniform").pvalue > 0.01
    assert np.mean(result.q < 0.05) < 0.02
    assert np.mean(result.p_fwe < 0.05) < 0.02
    # the same statistics under leaky run folds find "signal" everywhere: the test can fail
    leaky = fit_encoding_model(
        Xs, Ys, ALPHAS, stimulus_samples=samples, folds="groups", n_permutations=200,
        permutation="permute",
    )  # fmt: skip
    assert np.mean(leaky.q < 0.05) > 0.5


def test_permutations_find_a_planted_signal():
    Xs, Ys, samples = _repeated(signal=1.5, trialwise=False)  # time points: shifted nulls
    result = fit_encoding_model(
        Xs, Ys, ALPHAS, stimulus_samples=samples, n_permutations=200, seed=1
    )
    assert result.r.mean() > 0.2
    assert np.mean(result.q < 0.05) > 0.8
    summary = result.summary()
    assert summary["n_voxels_q_below_0.05"] == int(np.sum(result.q < 0.05))
    assert summary["n_permutations"] == 200


def test_trialwise_permutations_permute_stimuli():
    rng = np.random.default_rng(4)
    Xs = [rng.standard_normal((120, 6)) for _ in range(4)]  # every trial a new stimulus
    Ys = [rng.standard_normal((120, 200)) for _ in range(4)]
    rows = [[f"run{k}_s{i}" for i in range(len(X))] for k, X in enumerate(Xs)]
    samples = samples_from_rows(rows)
    result = fit_encoding_model(
        Xs, Ys, ALPHAS, stimulus_samples=samples, n_permutations=100, permutation="permute"
    )
    assert result.evaluation == "loro"
    assert stats.kstest(result.p, "uniform").pvalue > 0.01


def test_ncsnr_matches_a_simulation_with_known_snr():
    rng = np.random.default_rng(2)
    n_stimuli, n_repeats, n_voxels = 1500, 3, 40
    true_snr = np.linspace(0.2, 2.0, n_voxels)
    signal = rng.standard_normal((n_stimuli, n_voxels)) * true_snr
    trials = np.repeat(signal, n_repeats, axis=0) + rng.standard_normal(
        (n_stimuli * n_repeats, n_voxels)
    )
    ids = np.repeat([f"s{i}" for i in range(n_stimuli)], n_repeats)
    trials = (trials - trials.mean(0)) / trials.std(0)  # z-scored, as per session
    estimate = ncsnr(trials, ids)
    np.testing.assert_allclose(estimate, true_snr, rtol=0.15, atol=0.12)
    # the ceiling of a 3-trial average: the r^2 of the true signal with that average
    nc = trial_noise_ceiling(estimate, [3] * n_stimuli)
    expected = true_snr**2 / (true_snr**2 + 1 / 3)
    np.testing.assert_allclose(nc, expected, atol=0.06)
    assert ncsnr(trials[::3], ids[::3]) is None  # no repeats: no ceiling


def test_repeated_test_runs_give_the_schoppe_noise_ceiling():
    rng = np.random.default_rng(5)
    n_voxels, n = 30, 800
    X = rng.standard_normal((n, 4))
    weights = rng.standard_normal((4, n_voxels))
    snr = np.linspace(0.3, 2.0, n_voxels)
    clean = X @ weights
    clean = clean / clean.std(0) * snr
    Xs = [rng.standard_normal((n, 4)) for _ in range(3)] + [X, X, X]
    Ys = [x @ weights / 2 + rng.standard_normal((n, n_voxels)) for x in Xs[:3]]
    Ys += [clean + rng.standard_normal((n, n_voxels)) for _ in range(3)]
    result = fit_encoding_model(Xs, Ys, ALPHAS, test_runs=[3, 4, 5], repeats=[[3, 4, 5]])
    # explainable fraction of the 3-run average: snr^2 / (snr^2 + 1/3)
    expected = snr**2 / (snr**2 + 1 / 3)
    np.testing.assert_allclose(result.nc, expected, atol=0.1)
    assert result.rnorm is not None and np.all(np.isfinite(result.rnorm))
