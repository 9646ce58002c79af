"""Per-TR resampling: averages within TRs and Lanczos interpolation (Huth lab formula)."""

from __future__ import annotations

import numpy as np
import pytest

from bids_vem.encoding.resample import average_in_bins, lanczos_kernel, lanczos_resample


def _huth_lanczosfun(cutoff: float, t: np.ndarray, window: int = 3) -> np.ndarray:
    """The Huth lab's ``lanczosfun`` as published (interpdata.py), written out directly."""
    t = t * cutoff
    with np.errstate(divide="ignore", invalid="ignore"):
        val = window * np.sin(np.pi * t) * np.sin(np.pi * t / window) / (np.pi**2 * t**2)
    val[t == 0] = 1.0
    val[np.abs(t) > window] = 0.0
    return val


def _huth_lanczosinterp2d(data, oldtime, newtime, window=3, cutoff_mult=1.0):
    """Dense reference: one row of the sinc matrix per new time, then a matrix product."""
    cutoff = 1 / np.mean(np.diff(newtime)) * cutoff_mult
    sincmat = np.zeros((len(newtime), len(oldtime)))
    for i in range(len(newtime)):
        sincmat[i, :] = _huth_lanczosfun(cutoff, newtime[i] - oldtime, window)
    return sincmat @ data


@pytest.mark.parametrize(("window", "cutoff_mult", "onset"), [(3, 1.0, 0.0), (2, 0.8, 3.3)])
def test_lanczos_matches_the_dense_huth_formula(window, cutoff_mult, onset):
    rng = np.random.default_rng(0)
    tr, n_volumes = 2.0, 40
    times = np.sort(rng.uniform(-5, 85, 300))
    times[10] = onset + 5 * tr + tr / 2  # one sample exactly on a TR centre (kernel value 1)
    values = rng.standard_normal((300, 4))
    shuffled = rng.permutation(300)  # the order of the samples does not matter
    out = lanczos_resample(
        times[shuffled], values[shuffled], n_volumes, tr, window, cutoff_mult, onset=onset
    )
    centres = onset + (np.arange(n_volumes) + 0.5) * tr
    expected = _huth_lanczosinterp2d(values, times, centres, window, cutoff_mult)
    assert out.shape == (n_volumes, 4)
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_lanczos_kernel_shape():
    x = np.array([0.0, 1.0, 2.0, -3.0, 0.5, 3.01, -7.0])
    k = lanczos_kernel(x, window=3)
    np.testing.assert_allclose(k[:4], [1.0, 0.0, 0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(k[4], 3 * np.sin(np.pi / 2) * np.sin(np.pi / 6) / (np.pi**2 / 4))
    assert k[5] == 0 and k[6] == 0


def _dense_cosine(frequency: float, n_volumes: int, tr: float, rate: float):
    times = np.arange(0, n_volumes * tr, 1 / rate)
    return times, np.cos(2 * np.pi * frequency * times)


def test_lanczos_keeps_a_constant_constant_away_from_the_edges():
    tr, n_volumes, rate = 2.0, 50, 10.0
    times, _ = _dense_cosine(0.0, n_volumes, tr, rate)
    out = lanczos_resample(times, np.full((len(times), 2), 3.0), n_volumes, tr)
    interior = out[4:-4]
    # unnormalised kernel: a sum over rate * tr samples per TR, each weighing about 1 / (rate * tr)
    np.testing.assert_allclose(interior, 3.0 * rate * tr, rtol=0.01)
    assert np.ptp(interior) < 1e-6 * interior.mean()
    assert out[0, 0] < interior[0, 0]  # the edge sees half of the kernel


def test_lanczos_keeps_a_slow_sine_and_removes_energy_above_the_tr_nyquist():
    tr, n_volumes, rate = 2.0, 60, 10.0
    centres = (np.arange(n_volumes) + 0.5) * tr
    interior = slice(5, -5)

    times, slow = _dense_cosine(0.02, n_volumes, tr, rate)  # well below 1 / (2 tr) = 0.25 Hz
    out = lanczos_resample(times, slow, n_volumes, tr)[:, 0] / (rate * tr)
    np.testing.assert_allclose(
        out[interior], np.cos(2 * np.pi * 0.02 * centres)[interior], atol=0.01
    )

    # 0.6 Hz: sampled at the TR centres without filtering it aliases to 0.1 Hz at full amplitude
    times, fast = _dense_cosine(0.6, n_volumes, tr, rate)
    aliased = np.cos(2 * np.pi * 0.6 * centres)
    assert np.abs(aliased[interior]).max() > 0.9
    out = lanczos_resample(times, fast, n_volumes, tr)[:, 0] / (rate * tr)
    assert np.abs(out[interior]).max() < 0.01


def test_lanczos_of_an_impulse_peaks_in_its_tr():
    tr, n_volumes = 2.0, 20
    out = lanczos_resample(np.array([13.0]), np.array([[1.0]]), n_volumes, tr)[:, 0]
    assert int(np.argmax(out)) == 6  # TR 6 is [12, 14) s, centred on 13 s
    assert out[6] == pytest.approx(1.0)
    assert np.all(out[:3] == 0) and np.all(out[10:] == 0)  # support: 3 TRs either side


def test_average_in_bins_matches_a_loop_and_leaves_empty_trs_at_zero():
    rng = np.random.default_rng(1)
    tr, n_volumes, onset = 1.5, 12, 0.7
    times = rng.uniform(-2, 22, 200)
    times = times[(times < onset + 4 * tr) | (times >= onset + 6 * tr)]  # TRs 4 and 5 empty
    values = rng.standard_normal((len(times), 3))
    out = average_in_bins(times, values, n_volumes, tr, onset=onset)
    expected = np.zeros((n_volumes, 3))
    for k in range(n_volumes):
        inside = (times >= onset + k * tr) & (times < onset + (k + 1) * tr)
        if inside.any():
            expected[k] = values[inside].mean(0)
    np.testing.assert_allclose(out, expected, atol=1e-12)
    assert np.all(out[4:6] == 0)


def test_average_in_bins_puts_times_on_a_boundary_up_to_rounding_in_the_later_tr():
    # 0.1 + 1.9 and 3.9999999999999996 are TR boundaries (2 s, 4 s) up to rounding
    times = np.array([0.0, 0.1 + 1.9, 1.999999999, 3.9999999999999996, 1.99])
    out = average_in_bins(times, np.array([1000.0, 1.0, 10.0, 100.0, 7.0]), 3, 2.0)
    np.testing.assert_allclose(out[:, 0], [(1000.0 + 7.0) / 2, (1.0 + 10.0) / 2, 100.0])


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="n_samples"):
        average_in_bins(np.zeros(3), np.zeros((4, 2)), 5, 2.0)
    with pytest.raises(ValueError, match="tr > 0"):
        lanczos_resample(np.zeros(3), np.zeros((3, 2)), 5, 0.0)
