"""campaigns.results.statistics against SciPy on known inputs and the edges."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from campaigns.results.statistics import (
    chi2_sf,
    normal_quantile,
    sample_ratio_mismatch,
    two_proportion_z_test,
    wilson_interval,
)


@pytest.mark.parametrize("p", [1e-12, 1e-6, 0.001, 0.02, 0.025, 0.3, 0.5, 0.7, 0.975, 0.99, 0.999999])
def test_normal_quantile_matches_scipy(p):
    assert normal_quantile(p) == pytest.approx(stats.norm.ppf(p), rel=1e-9, abs=1e-12)


def test_normal_quantile_refuses_the_ends():
    for p in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="p: must be strictly between 0 and 1"):
            normal_quantile(p)


@pytest.mark.parametrize(
    ("k", "n", "confidence"),
    [(0, 10, 0.95), (10, 10, 0.95), (1, 1, 0.95), (37, 100, 0.95), (5, 1000, 0.99), (123, 456, 0.9), (3, 7, 0.5)],
)
def test_wilson_interval_matches_scipy(k, n, confidence):
    expected = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    low, high = wilson_interval(k, n, confidence)
    assert low == pytest.approx(expected.low, abs=1e-12)
    assert high == pytest.approx(expected.high, abs=1e-12)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) is None
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0 < high < 0.2
    low, high = wilson_interval(20, 20)
    assert high == 1.0 and 0.8 < low < 1
    with pytest.raises(ValueError, match="successes / n"):
        wilson_interval(3, 2)


@pytest.mark.parametrize(
    ("s1", "n1", "s2", "n2"),
    [(120, 1000, 100, 1000), (5, 50, 15, 60), (0, 10, 3, 10), (10, 10, 7, 10), (4500, 100000, 4300, 100000)],
)
def test_two_proportion_z_test_matches_scipy(s1, n1, s2, n2):
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z_expected = (s1 / n1 - s2 / n2) / se
    p_expected = 2 * stats.norm.sf(abs(z_expected))
    z, p = two_proportion_z_test(s1, n1, s2, n2)
    assert z == pytest.approx(z_expected, rel=1e-12)
    assert p == pytest.approx(p_expected, rel=1e-9)
    # The same test as a chi-square on the 2x2 table without continuity correction.
    chi2, p_chi2, _, _ = stats.chi2_contingency([[s1, n1 - s1], [s2, n2 - s2]], correction=False)
    assert z * z == pytest.approx(chi2, rel=1e-9)
    assert p == pytest.approx(p_chi2, rel=1e-9)


def test_two_proportion_z_test_edges():
    assert two_proportion_z_test(0, 0, 3, 10) is None
    assert two_proportion_z_test(3, 10, 0, 0) is None
    assert two_proportion_z_test(0, 10, 0, 20) == (0.0, 1.0)  # no successes at all
    assert two_proportion_z_test(10, 10, 20, 20) == (0.0, 1.0)  # all successes


@pytest.mark.parametrize(
    ("x", "df"), [(0.5, 1), (3.84, 1), (10.0, 2), (0.01, 3), (7.5, 4), (40.0, 5), (150.0, 9), (1e-6, 2), (2.0, 30)]
)
def test_chi2_sf_matches_scipy(x, df):
    assert chi2_sf(x, df) == pytest.approx(stats.chi2.sf(x, df), rel=1e-10, abs=1e-300)


def test_sample_ratio_mismatch_matches_scipy():
    observed = {"variant:1": 4_100, "variant:2": 4_020, "control": 980, "system_control": 200}
    shares = {"variant:1": 44.1, "variant:2": 44.1, "control": 9.8, "system_control": 2}
    result = sample_ratio_mismatch(observed, shares)
    total = sum(observed.values())
    weights = sum(shares.values())
    expected = [total * shares[g] / weights for g in shares]
    chi2, p = stats.chisquare([observed[g] for g in shares], expected)
    assert result.chi2 == pytest.approx(chi2, rel=1e-12)
    assert result.p_value == pytest.approx(p, rel=1e-9)
    assert result.expected == {g: pytest.approx(e) for g, e in zip(shares, expected, strict=True)}


def test_sample_ratio_mismatch_edges():
    assert sample_ratio_mismatch({}, {"a": 50, "b": 50}).chi2 is None  # nothing assigned yet
    only = sample_ratio_mismatch({"a": 10}, {"a": 100})
    assert only.chi2 is None and only.p_value is None and only.expected == {"a": 10.0}
    exact = sample_ratio_mismatch({"a": 50, "b": 50}, {"a": 1, "b": 1})
    assert exact.chi2 == 0.0 and exact.p_value == 1.0
    stray = sample_ratio_mismatch({"a": 50, "b": 50, "c": 1}, {"a": 50, "b": 50, "c": 0})
    assert stray.chi2 == math.inf and stray.p_value == 0.0
    skewed = sample_ratio_mismatch({"a": 600, "b": 400}, {"a": 50, "b": 50})
    assert skewed.chi2 == pytest.approx(40.0) and skewed.p_value == pytest.approx(stats.chi2.sf(40.0, 1))
