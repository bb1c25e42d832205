"""The statistics of campaign results, in pure Python (the standard library's
`math` only): the web process answering a report must not import SciPy, and
these few functions are exact enough for a report (each is checked against
SciPy in tests/campaigns/test_results_statistics.py).

- `wilson_interval`: the Wilson score interval of a proportion (no continuity
  correction), SciPy's `binomtest(...).proportion_ci(method="wilson")`.
- `two_proportion_z_test`: the pooled two-proportion z-test, two-sided.
- `sample_ratio_mismatch`: Pearson's chi-square goodness of fit of assignment
  counts against the configured shares, with the chi-square survival function
  for k - 1 degrees of freedom from the regularized upper incomplete gamma
  function (series below a + 1, Lentz's continued fraction above: Numerical
  Recipes 6.2).
- `normal_quantile`: the standard normal's inverse CDF (Acklam's rational
  approximation, polished by one Halley step on erfc), for confidences other
  than 95 %.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def normal_sf(x: float) -> float:
    """1 - CDF, computed without cancellation for large x."""
    return 0.5 * math.erfc(x / math.sqrt(2.0))


# Acklam's coefficients (relative error < 1.15e-9 before the refinement step).
_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
      -3.066479806614716e01, 2.506628277459239e00)  # fmt: skip
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
      -1.328068155288572e01)  # fmt: skip
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
      4.374664141464968e00, 2.938163982698783e00)  # fmt: skip
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)


def normal_quantile(p: float) -> float:
    """The x with normal_cdf(x) == p, for 0 < p < 1 (ValueError otherwise)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p: must be strictly between 0 and 1, got {p}")
    if p > 0.5:
        # By symmetry, so the refinement works on the small tail probability,
        # where erfc keeps its precision (cdf(x) - p near 1 would cancel).
        return -normal_quantile(1.0 - p)
    low = 0.02425
    if p < low:
        q = math.sqrt(-2 * math.log(p))
        x = (((((_C[0] * q + _C[1]) * q + _C[2]) * q + _C[3]) * q + _C[4]) * q + _C[5]) / (
            (((_D[0] * q + _D[1]) * q + _D[2]) * q + _D[3]) * q + 1
        )
    else:
        q = p - 0.5
        r = q * q
        x = (
            (((((_A[0] * r + _A[1]) * r + _A[2]) * r + _A[3]) * r + _A[4]) * r + _A[5])
            * q
            / (((((_B[0] * r + _B[1]) * r + _B[2]) * r + _B[3]) * r + _B[4]) * r + 1)
        )
    # One Halley step brings it to full double precision.
    e = normal_cdf(x) - p
    u = e * math.sqrt(2 * math.pi) * math.exp(x * x / 2)
    return x - u / (1 + x * u / 2)


def z_for_confidence(confidence: float) -> float:
    """The two-sided critical value: 1.959963... for 0.95."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: must be strictly between 0 and 1, got {confidence}")
    return normal_quantile(1 - (1 - confidence) / 2)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """The Wilson score interval (low, high) of successes / n; None when n == 0."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"successes / n: need 0 <= successes <= n, got {successes} / {n}")
    if n == 0:
        return None
    z = z_for_confidence(confidence)
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    # Clamp the rounding of the exact ends (0 successes: low is 0; all: high is 1).
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_z_test(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float] | None:
    """The pooled two-proportion z-test of s1/n1 against s2/n2: (z, two-sided p).
    None when either n is 0 (nothing to compare). When the pooled rate is 0 or
    1 both rates are equal: z = 0, p = 1."""
    for name, s, n in (("1", s1, n1), ("2", s2, n2)):
        if n < 0 or s < 0 or s > n:
            raise ValueError(f"s{name} / n{name}: need 0 <= s <= n, got {s} / {n}")
    if n1 == 0 or n2 == 0:
        return None
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (s1 / n1 - s2 / n2) / se
    return z, min(1.0, 2 * normal_sf(abs(z)))


def _gamma_lower_series(a: float, x: float) -> float:
    """P(a, x) by its series (converges fast for x < a + 1)."""
    term = 1.0 / a
    total = term
    ap = a
    for _ in range(10_000):
        ap += 1
        term *= x / ap
        total += term
        if abs(term) < abs(total) * 1e-16:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_upper_fraction(a: float, x: float) -> float:
    """Q(a, x) by its continued fraction, modified Lentz (x >= a + 1)."""
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        if abs(d) < tiny:
            d = tiny
        c = b + an / c
        if abs(c) < tiny:
            c = tiny
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-16:
            break
    return h * math.exp(-x + a * math.log(x) - math.lgamma(a))


def gamma_upper_regularized(a: float, x: float) -> float:
    """Q(a, x) = Γ(a, x) / Γ(a), for a > 0, x >= 0."""
    if a <= 0 or x < 0:
        raise ValueError(f"a > 0 and x >= 0 required, got a={a}, x={x}")
    if x == 0:
        return 1.0
    if x < a + 1:
        return max(0.0, 1.0 - _gamma_lower_series(a, x))
    return _gamma_upper_fraction(a, x)


def chi2_sf(x: float, df: int) -> float:
    """P(X > x) for X chi-square with df degrees of freedom."""
    if df < 1:
        raise ValueError(f"df: must be at least 1, got {df}")
    if x <= 0:
        return 1.0
    if math.isinf(x):
        return 0.0
    return gamma_upper_regularized(df / 2, x / 2)


@dataclass(frozen=True)
class SampleRatio:
    expected: dict[str, float]  # the counts the shares predict, of the same total
    chi2: float | None  # None: fewer than two groups with a share, or no assignments
    p_value: float | None


def sample_ratio_mismatch(observed: Mapping[str, int], shares: Mapping[str, float]) -> SampleRatio:
    """Pearson's chi-square goodness of fit of `observed` (group -> count)
    against `shares` (group -> weight; normalised here, so percents or
    fractions both do). A group missing from `observed` counts 0. A group with
    share 0 that got assignments is a mismatch outright (chi2 infinite, p 0): it
    should have none. Degrees of freedom: the groups with a share, minus one."""
    positive = {group: float(share) for group, share in shares.items() if share > 0}
    total = sum(int(observed.get(group, 0)) for group in shares) + sum(
        int(count) for group, count in observed.items() if group not in shares
    )
    weight = sum(positive.values())
    expected = {group: (total * share / weight if weight else 0.0) for group, share in shares.items()}
    for group in shares:
        expected.setdefault(group, 0.0)
    if total == 0 or len(positive) < 2:
        return SampleRatio(expected=expected, chi2=None, p_value=None)
    stray = sum(count for group, count in observed.items() if group not in positive and count > 0)
    if stray:
        return SampleRatio(expected=expected, chi2=math.inf, p_value=0.0)
    chi2 = sum((observed.get(group, 0) - expected[group]) ** 2 / expected[group] for group in positive)
    return SampleRatio(expected=expected, chi2=chi2, p_value=chi2_sf(chi2, len(positive) - 1))
