"""The evidence behind an accuracy change (stats.py, evaluate.EvalReport): exact numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vs2_export.evaluate import build_report
from vs2_export.stats import auroc, mcnemar_exact, paired_bootstrap_ci


def test_mcnemar_exact_matches_the_binomial_by_hand():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 2 ** 10)
    # b=3, c=7: 2 * P(X <= 3), X ~ Bin(10, 1/2) = 2 * (1 + 10 + 45 + 120) / 1024
    assert mcnemar_exact(3, 7) == pytest.approx(2 * 176 / 1024)
    assert mcnemar_exact(7, 3) == mcnemar_exact(3, 7)
    assert mcnemar_exact(5, 5) == 1.0  # capped


def test_mcnemar_exact_stays_exact_on_thousands_of_pairs():
    p = mcnemar_exact(1100, 900)  # normal approximation: z = 200 / sqrt(2000) = 4.47
    z = 200 / math.sqrt(2000)
    assert p == pytest.approx(math.erfc(z / math.sqrt(2)), rel=0.1)
    assert 0 < p < 1e-4


def test_paired_bootstrap_is_seeded_and_brackets_the_change():
    rng = np.random.default_rng(1)
    base = rng.random(500) < 0.4
    new = base.copy()
    new[rng.choice(500, 40, replace=False)] = True
    a = paired_bootstrap_ci(base, new, 500, seed=3)
    assert a == paired_bootstrap_ci(base, new, 500, seed=3)
    delta = new.mean() - base.mean()
    assert a[0] <= delta <= a[1] and a[0] > 0  # only wins: the interval excludes 0
    assert paired_bootstrap_ci(base, base, 200) == (0.0, 0.0)


def test_auroc_counts_ties_half():
    assert auroc([1, 2, 3], [4, 5, 6]) == 1.0
    assert auroc([4, 5, 6], [1, 2, 3]) == 0.0
    assert auroc([1, 2, 3], [1, 2, 3]) == 0.5
    assert auroc([0, 0], [0, 1]) == 0.75


def test_eval_report_counts_wins_losses_per_class_and_formats():
    labels = np.array([0, 0, 0, 1, 1, 1])
    plain = np.array([0, 1, 1, 1, 0, 0])   # right: 0, 3
    vs2 = np.array([0, 0, 0, 0, 0, 1])     # right: 0, 1, 2, 5
    report = build_report(labels, plain, vs2, np.ones(6, bool), ("a", "b"), bootstrap=100)
    assert (report.wins, report.losses) == (3, 1)
    assert report.p_value == pytest.approx(mcnemar_exact(3, 1))
    a, b = report.per_class
    assert (a.wins, a.losses, b.wins, b.losses) == (2, 0, 1, 1)
    assert report.delta == pytest.approx(2 / 6)
    data = json.loads(report.to_json())
    assert data["delta"] == pytest.approx(2 / 6) and data["per_class"][1]["p_value"] == 1.0
    text = report.format()
    assert "McNemar p =" in text and "3 wins, 1 losses" in text and "cannot be told" in text
