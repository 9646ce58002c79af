"""Permutation statistics and noise ceilings of the encoding model, against simulations."""

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import stats

from bids_vem.analysis.paired import paired_group_test, paired_sign_flip
from bids_vem.encoding.design import build_run_design
from bids_vem.encoding.evaluation import combine_fold_p
from bids_vem.encoding.model import encode_runs, fit_encoding_model
from bids_vem.encoding.noise_ceiling import ncsnr, trial_noise_ceiling
from bids_vem.encoding.stimulus_folds import samples_from_rows
from bids_vem.features.feature_set import FeatureSet
from bids_vem.inputs.runs import Run

ALPHAS = np.logspace(-1, 4, 8)


def _repeated(
    signal: float,
    seed: int = 0,
    n_voxels: int = 300,
    trialwise: bool = True,
    n_stimuli: int = 40,
    n_runs: int = 4,
):
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n_stimuli, 6))
    responses = rng.standard_normal((n_stimuli, n_voxels))  # identity-specific, feature-free
    weights = rng.standard_normal((6, n_voxels)) / 3
    Xs, Ys, rows = [], [], []
    for _ in range(n_runs):
        order = np.repeat(rng.permutation(n_stimuli), 3)
        Xs.append(features[order])
        Ys.append(
            responses[order]
            + signal * features[order] @ weights
            + rng.standard_normal((len(order), n_voxels))
        )
        rows.append([f"s{i}" for i in order])
    return Xs, Ys, samples_from_rows(rows, trialwise=trialwise)


def _valid(p: np.ndarray) -> None:
    """A p-value under the null: P(p <= a) <= a (with slack for 300 correlated voxels)."""
    for level in (0.05, 0.1, 0.2, 0.5):
        assert np.mean(p <= level) <= level + 0.03, level


def test_permutation_p_values_are_valid_under_the_null_and_fdr_is_controlled():
    Xs, Ys, samples = _repeated(signal=0.0)
    result = fit_encoding_model(
        Xs, Ys, ALPHAS, stimulus_samples=samples, n_permutations=200, permutation="permute"
    )
    assert result.evaluation == "stimulus-folds"
    assert abs(result.r.mean()) < 0.03
    _valid(result.p)
    assert np.mean(result.q < 0.05) < 0.02
    assert np.mean(result.p_fwe < 0.05) < 0.02
    # the same statistics under leaky run folds find "signal" everywhere: the test can fail
    leaky = fit_encoding_model(
        Xs, Ys, ALPHAS, stimulus_samples=samples, folds="groups", n_permutations=200,
        permutation="permute",
    )  # fmt: skip
    assert np.mean(leaky.q < 0.05) > 0.5


def test_a_single_test_set_gives_uniform_p_values():
    """One model, test stimuli it never saw: the permutation p is exact (uniform)."""
    Xs, Ys, samples = _repeated(signal=0.0)
    held = np.zeros(samples.n_stimuli, dtype=bool)
    held[::3] = True
    for trialwise in (True, False):
        Xs, Ys, samples = _repeated(signal=0.0, trialwise=trialwise)
        result = fit_encoding_model(
            Xs, Ys, ALPHAS, stimulus_samples=samples, test_stimuli=held, n_permutations=200,
            permutation="permute",
        )  # fmt: skip
        assert result.evaluation == "test-stimuli"
        assert stats.kstest(result.p, "uniform").pvalue > 0.01


def test_pooled_permutations_of_cross_validation_would_be_anti_conservative():
    """Why fold p-values are combined: each fold's model was trained on the other folds' test
    data, so the pooled cross-validated r varies more under the null than permutations of
    fixed predictions give. On pure noise the pooled null rejects far too often; the fold
    combination does not."""
    rng = np.random.default_rng(8)
    Xs = [rng.standard_normal((150, 30)) for _ in range(8)]
    Ys = [rng.standard_normal((150, 400)) for _ in range(8)]
    result = fit_encoding_model(Xs, Ys, ALPHAS, n_permutations=200)
    _valid(result.p)
    den = np.sqrt(1.0 / 1200)  # sd of a correlation over 8 x 150 independent samples
    assert result.r.std() > 1.2 * den  # the pooled r is over-dispersed under the null


def test_permutations_find_a_planted_signal():
    Xs, Ys, samples = _repeated(signal=1.5, trialwise=False, n_stimuli=80, n_runs=6)
    result = fit_encoding_model(
        Xs, Ys, ALPHAS, stimulus_samples=samples, n_permutations=200, seed=1
    )
    assert result.r.mean() > 0.2
    assert np.mean(result.q < 0.05) > 0.8
    summary = result.summary()
    assert summary["n_voxels_q_below_0.05"] == int(np.sum(result.q < 0.05))
    assert summary["n_permutations"] == 200


def test_test_runs_shift_null_is_uniform_and_trialwise_folds_are_valid():
    rng = np.random.default_rng(4)
    Xs = [rng.standard_normal((120, 6)) for _ in range(4)]  # every trial a new stimulus
    Ys = [rng.standard_normal((120, 200)) for _ in range(4)]
    result = fit_encoding_model(Xs, Ys, ALPHAS, test_runs=[3], n_permutations=200)
    assert stats.kstest(result.p, "uniform").pvalue > 0.01
    rows = [[f"run{k}_s{i}" for i in range(len(X))] for k, X in enumerate(Xs)]
    result = fit_encoding_model(
        Xs, Ys, ALPHAS, stimulus_samples=samples_from_rows(rows), n_permutations=100,
        permutation="permute",
    )  # fmt: skip
    assert result.evaluation == "loro"
    _valid(result.p)


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


def _block_design_runs(root, n_runs: int = 4, seed: int = 0, spacing: float = 4.0):
    """Runs that show the same 12 images in every run (Haxby-style), each image evoking its own
    response pattern that no feature explains; written as BIDS-like files for encode_runs."""
    rng = np.random.default_rng(seed)
    images = tuple(f"images/img{i}.png" for i in range(12))
    identity = FeatureSet("identity", "t", "image", images, np.eye(12, dtype="f4"))
    shape, tr, n_volumes = (8, 8, 4), 2.0, 100
    patterns = rng.standard_normal((12, int(np.prod(shape))))  # per image, per voxel
    runs = []
    for index in range(1, n_runs + 1):
        onsets = np.arange(0, n_volumes * tr - 8, spacing)
        stims = np.resize(rng.permutation(images), len(onsets))
        events = pd.DataFrame({"onset": onsets, "duration": 3.0, "stim_file": stims})
        events_path = root / f"sub-01_task-x_run-{index}_events.tsv"
        events.to_csv(events_path, sep="\t", index=False)
        table = events.rename(columns={"stim_file": "stim_id"})
        X = build_run_design(table, identity, n_volumes, tr, (2,)).astype(float)
        data = 100 + X @ patterns + rng.standard_normal((n_volumes, patterns.shape[1]))
        bold = root / f"sub-01_task-x_run-{index}_bold.nii.gz"
        nib.Nifti1Image(data.T.reshape(*shape, n_volumes).astype("f4"), np.eye(4)).to_filename(bold)
        mask = root / f"sub-01_task-x_run-{index}_mask.nii.gz"
        nib.Nifti1Image(np.ones(shape, np.uint8), np.eye(4)).to_filename(mask)
        runs.append(
            Run(
                "01",
                None,
                "x",
                str(index),
                None,
                "T1w",
                bold,
                mask,
                events_path,
                None,
                tr,
                n_volumes,
            )
        )
    random = FeatureSet("random", "t", "image", images, rng.standard_normal((12, 8)).astype("f4"))
    return runs, random


def test_relabelling_null_of_a_block_design_is_valid_and_leakage_is_caught(tmp_path):
    """Continuous FIR designs whose images repeat in every run: random image features are at
    chance under the default stimulus folds, their permutation p-values (images relabelled)
    valid; under run folds the same features 'predict' the images they were trained on."""
    runs, random = _block_design_runs(tmp_path)
    options = dict(stim_column="stim_file", delays=(1, 2, 3), alphas=ALPHAS, n_permutations=200)
    result = encode_runs(runs, random, **options)
    assert result.evaluation == "stimulus-folds"
    assert abs(result.r.mean()) < 0.03
    _valid(result.p)
    assert np.mean(result.q < 0.05) < 0.02
    leaky = encode_runs(runs, random, cv_groups="run", **options)
    assert leaky.r.mean() > 0.2 and np.mean(leaky.q < 0.05) > 0.5


def test_combined_fold_p_values_keep_their_level_under_correlated_folds():
    rng = np.random.default_rng(0)
    n_folds, n_voxels = 6, 20000
    for rho in (0.0, 0.3, 0.6):
        shared = rng.standard_normal(n_voxels)
        z = np.sqrt(rho) * shared + np.sqrt(1 - rho) * rng.standard_normal((n_folds, n_voxels))
        p = combine_fold_p(stats.norm.sf(z))
        for level in (0.01, 0.05):
            assert abs(np.mean(p < level) - level) < 0.25 * level + 0.002, (rho, level)
        # assuming independent folds would reject far too often
        naive = stats.norm.sf(z.sum(0) / np.sqrt(n_folds))
        if rho >= 0.3:
            assert np.mean(naive < 0.05) > 0.08


def test_paired_sign_flip_finds_a_planted_difference_and_not_a_null_one():
    Xs, Ys, samples = _repeated(signal=1.5, trialwise=False, n_stimuli=80, n_runs=6)
    rng = np.random.default_rng(5)
    noisy = [X + 1.5 * rng.standard_normal(X.shape) for X in Xs]  # the same features, blurred
    # two feature spaces unrelated to the data: the same expected r (0), whatever the data
    random = [rng.standard_normal(X.shape) for X in Xs]
    also = [rng.standard_normal(X.shape) for X in Xs]
    fits = {
        name: fit_encoding_model(designs, Ys, ALPHAS, stimulus_samples=samples)
        for name, designs in (("true", Xs), ("noisy", noisy), ("random", random), ("also", also))
    }

    def paired(a, b):
        return paired_sign_flip(fits[a].block_moments, fits[b].block_moments, fits[a].block_folds)

    better = paired("true", "noisy")
    np.testing.assert_allclose(better["diff"], fits["true"].r - fits["noisy"].r, atol=1e-5)
    assert np.mean(better["q"] < 0.05) > 0.8 and np.all(better["diff"] > 0)
    same = paired("random", "also")
    _valid(same["p"])
    assert np.mean(same["q"] < 0.05) < 0.05


def test_paired_group_test_of_fisher_z_differences():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.05, 0.3, size=(12, 500))
    gain = np.where(np.arange(500) < 100, 0.1, 0.0)
    aligned = base + gain + 0.02 * rng.standard_normal(base.shape)
    out = paired_group_test(aligned, base)
    assert np.mean(out["q"][:100] < 0.05) > 0.95 and np.mean(out["q"][100:] < 0.05) < 0.05
    np.testing.assert_allclose(out["meandiff"][:100], 0.1, atol=0.02)
    expected = stats.ttest_rel(np.arctanh(aligned), np.arctanh(base), axis=0)
    np.testing.assert_allclose(out["t"], expected.statistic, rtol=1e-8)
    np.testing.assert_allclose(out["p"], expected.pvalue, rtol=1e-8)
