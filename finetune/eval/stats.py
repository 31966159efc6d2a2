"""Statistics for ``finetune eval``: how sure can we be that one contender is better than another?

An evaluation is a few hundred tasks, so every accuracy comes with sampling noise; these helpers
put a 95% interval on each number and a p-value on each comparison, so the report can say "not
significantly different" instead of ranking noise.

* :func:`wilson`: the Wilson score interval for a proportion (0/1 scores). Unlike the normal
  approximation it stays inside [0, 1] and behaves at 0/n and n/n.
* :func:`bootstrap_mean`: the mean of per-task scores in [0, 1] (code tasks score c/n) with a
  percentile-bootstrap interval; seeded, so a report is the same on every run.
* :func:`paired_difference`: contender A minus contender B on the same tasks. Pairing matters:
  both contenders see the same easy and hard tasks, so the per-task differences are far less
  noisy than two independent accuracies. The interval is a paired bootstrap; the p-value is
  McNemar's exact test (a binomial on the discordant tasks) when both score vectors are 0/1,
  else the bootstrap's own.
* :func:`pass_at_k`: the unbiased pass@k estimator of Chen et al. (2021) from n samples with c
  correct; :func:`percentiles` for p50/p95 latency.

Example::

    >>> [round(x, 4) for x in wilson(8, 10)]
    [0.4902, 0.9433]
    >>> round(mcnemar_exact(9, 1), 4)
    0.0215
    >>> pass_at_k(5, 2, 1)
    0.4
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval
RESAMPLES = 10_000
SEED = 0
_CELLS = 4_000_000  # at most this many resampled indices in memory at once (~32 MB)


def is_binary(scores: Sequence[float]) -> bool:
    """True when every score is exactly 0 or 1 (tool tasks, or code tasks with one sample)."""
    return all(s in (0, 1) for s in scores)


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (default 95%) for ``successes`` out of ``n``: the proportions p
    whose normal test would not reject the observed share, which keeps the interval inside [0, 1]
    and honest for shares near 0 or 1 and for small n."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson needs 0 <= successes <= n and n > 0, got {successes}/{n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0/n and n/n the bound is exactly 0 or 1 in theory; rounding would leave 0.9999999999999999.
    return (0.0 if successes == 0 else centre - half), (1.0 if successes == n else centre + half)


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The mean of ``resamples`` bootstrap resamples of ``values``, drawn in chunks so a long
    evaluation never holds a resamples x tasks index matrix at once. The chunk size depends only
    on the number of values, so the same seed gives the same means."""
    rng = np.random.default_rng(seed)
    n = len(values)
    out = np.empty(resamples)
    step = max(1, _CELLS // n)
    for start in range(0, resamples, step):
        m = min(step, resamples - start)
        out[start:start + m] = values[rng.integers(0, n, size=(m, n))].mean(axis=1)
    return out


def bootstrap_mean(scores: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float, float]:
    """Mean of per-task scores with a 95% percentile-bootstrap interval: ``(mean, low, high)``.
    Used for scores that are not all 0/1 (code pass@1 = c/n), where Wilson does not apply."""
    values = np.asarray(scores, dtype=float)
    if values.size == 0:
        raise ValueError("bootstrap_mean needs at least one score")
    means = _resampled_means(values, resamples, seed)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(values.mean()), float(low), float(high)


def mean_interval(scores: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """Accuracy with its 95% interval: Wilson when all scores are 0/1, else the bootstrap.
    Returns ``{"mean", "low", "high", "method"}`` with method ``"wilson"`` or ``"bootstrap"``."""
    if not len(scores):
        raise ValueError("mean_interval needs at least one score")
    if is_binary(scores):
        k = int(sum(scores))
        low, high = wilson(k, len(scores))
        return {"mean": k / len(scores), "low": low, "high": high, "method": "wilson"}
    mean, low, high = bootstrap_mean(scores, resamples, seed)
    return {"mean": mean, "low": low, "high": high, "method": "bootstrap"}


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` tasks only A got right and ``c`` only B got right:
    under "equally good" each discordant task is a fair coin, so p = 2 P(X <= min(b, c)) for
    X ~ Binomial(b + c, 1/2), capped at 1. Tasks both got right (or wrong) carry no evidence."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    # Exact integer arithmetic until the one division: no underflow for thousands of pairs.
    return min(1.0, 2 * tail / 2**n)


def paired_difference(a: Sequence[float], b: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """Mean of ``a - b`` over the same tasks (as fractions, not points), with a 95% paired-bootstrap
    interval (tasks resampled, each keeping both its scores) and a two-sided p-value: McNemar's
    exact test when both vectors are 0/1, else the bootstrap p, twice the smaller share of
    resampled differences on either side of 0 (so p < 0.05 goes with an interval that excludes 0).
    Returns ``{"diff", "low", "high", "p", "test", "tasks"}`` plus ``"discordant": [b, c]`` for McNemar."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired_difference needs two score vectors of the same length, got {x.shape} and {y.shape}")
    if x.size == 0:
        raise ValueError("paired_difference needs at least one common task")
    d = x - y
    means = _resampled_means(d, resamples, seed)
    low, high = np.quantile(means, [0.025, 0.975])
    out = {"diff": float(d.mean()), "low": float(low), "high": float(high), "tasks": int(x.size)}
    if is_binary(x) and is_binary(y):
        only_a, only_b = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
        out |= {"p": mcnemar_exact(only_a, only_b), "test": "McNemar exact", "discordant": [only_a, only_b]}
    else:
        # +1 on both sides: a bootstrap never shows p = 0, only "below 1 / resamples".
        below = (np.count_nonzero(means <= 0) + 1) / (resamples + 1)
        above = (np.count_nonzero(means >= 0) + 1) / (resamples + 1)
        out |= {"p": min(1.0, 2 * min(below, above)), "test": "paired bootstrap"}
    return out


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` passed: 1 - C(n-c, k) / C(n, k), the chance
    that k samples drawn without replacement include a passing one. Computed as the product
    1 - prod_{i=n-c+1..n} (1 - k / i), which never forms the huge binomials. Raises ValueError
    when n < k (k samples cannot be drawn from fewer)."""
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, got k={k}")
    if n < k:
        raise ValueError(f"pass@{k} needs at least {k} samples, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got c={c}, n={n}")
    if n - c < k:
        return 1.0  # every draw of k includes a passing sample
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95)) -> list[float]:
    """The given percentiles (default p50 and p95) of ``values``, linearly interpolated."""
    if not len(values):
        raise ValueError("percentiles needs at least one value")
    return [float(v) for v in np.percentile(np.asarray(values, dtype=float), list(qs))]
