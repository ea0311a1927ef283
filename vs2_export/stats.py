"""The evidence behind an accuracy change: paired tests on per-image correctness (numpy and math
only; scipy is not a dependency).

Zero-shot and VS2 are evaluated on the SAME images, so the comparison is paired: only the
images where the two disagree on correctness (wins: VS2 right, zero-shot wrong; losses: the
reverse) carry information about the difference. On 600 images a +2 point change can be noise;
these numbers say whether it is.
"""

from __future__ import annotations

import math

import numpy as np


def mcnemar_exact(wins: int, losses: int) -> float:
    """Exact two-sided McNemar p value: under 'no difference' each discordant pair is a win with
    probability 1/2, so min(wins, losses) is Binomial(wins + losses, 1/2) in the lower tail.

        p = min(1, 2 * sum_{i <= min(b, c)} C(b + c, i) / 2^(b + c))

    Exact integer arithmetic (math.comb), so thousands of discordant pairs lose no precision;
    the ratio of two big integers rounds to the nearest float (tiny p underflows to 0.0).
    """
    if wins < 0 or losses < 0:
        raise ValueError(f"wins and losses: expected counts >= 0, got {wins}, {losses}")
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def paired_bootstrap_ci(base_correct: np.ndarray, new_correct: np.ndarray, resamples: int = 2000,
                        seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(new_correct - base_correct) over images resampled with
    replacement, the same images for both (paired). base_correct, new_correct: [N] bool.
    Returns (low, high) as fractions (0.031 = +3.1 points). Seeded: same inputs, same interval."""
    diff = np.asarray(new_correct, np.int8) - np.asarray(base_correct, np.int8)
    if diff.ndim != 1 or len(diff) == 0:
        raise ValueError(f"expected two equal-length non-empty [N] arrays, got {diff.shape}")
    if resamples < 1:
        raise ValueError(f"resamples: expected >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 4_000_000 // len(diff))  # bounded memory: chunk x N indices at a time
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, len(diff), size=(stop - start, len(diff)))
        means[start:stop] = diff[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def auroc(in_domain: np.ndarray, out_of_domain: np.ndarray) -> float:
    """Probability that a random out-of-domain score exceeds a random in-domain one (ties count
    half): the threshold-free quality of a gate score where higher means 'less in-domain'."""
    a, b = np.asarray(in_domain, np.float64), np.asarray(out_of_domain, np.float64)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("auroc: expected scores on both sides, got an empty set")
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    # Average ranks over ties: every member of a run of equal values gets the run's mean rank.
    sorted_vals = both[order]
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], len(both)]
    for s, e in zip(starts, ends, strict=True):
        if e - s > 1:
            ranks[order[s:e]] = (s + 1 + e) / 2
    u = ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2
    return float(u / (len(a) * len(b)))
