"""Do the findings' 95% intervals hold their level? Simulated studies with a known effect.

No store and no model: per-item scores are drawn from a known population with a fixed generator,
and the intervals come from the very code that decides the claims (``findings.ItemBootstrap`` and
``findings.estimate`` / ``Estimate``). Over 1000 simulated studies, a 95% interval must cover the
true value in 93-97% of them (the binomial spread of 1000 studies at 95% is +-0.7 points).
"""

from __future__ import annotations

import numpy as np
import pytest

from cft_helpers import findings as F

from cft_helpers import intervals as I

STUDIES = 1000
LEVELS = np.array([0.0, 1 / 3, 2 / 3, 1.0])  # a prompt's share of three stated instructions followed


def draw_items(rng: np.random.Generator, n: int, drop: float, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Two models' per-item scores on n items: A follows a uniform share of its three instructions;
    B equals A except that, with probability ``drop``, it follows one instruction fewer (not below
    0). The true mean of B - A is -drop x E[min(A, 1/3)] = -drop / 4; ``shift`` moves B's every
    item (a seed's own effect)."""
    a = rng.choice(LEVELS, size=n)
    dropped = rng.random(n) < drop
    b = np.where(dropped, np.maximum(a - 1 / 3, 0.0), a) + shift
    return a, b


class OneSeed:
    """What ``findings.estimate`` reads of a seed (its scores and abilities), without a run store."""

    def __init__(self, a: np.ndarray, b: np.ndarray, replicates: int, rng: np.random.Generator):
        self.scores = {name: {"ifeval": {"t": dict(enumerate(x))}} for name, x in (("p1", a), ("p2", b))}
        self.boot = I.ItemBootstrap(None, self.scores, replicates, rng)

    def ability(self, name, point, exclude):
        return self.boot.ability(name, point=point, exclude=exclude)


def change(seeds) -> F.Estimate:
    return F.estimate(seeds, lambda x: x["p2"]["EA"] - x["p1"]["EA"], ["p1", "p2"])


def test_one_seed_paired_item_bootstrap_covers_the_true_change():
    # 120 items, 40% of them lose one instruction: true change -0.1; 1000 replicates per study
    rng = np.random.default_rng(20261206)
    truth, covered = -0.4 / 4, 0
    for _ in range(STUDIES):
        a, b = draw_items(rng, 120, 0.4)
        est = change([OneSeed(a, b, 1000, rng)])
        lo, hi = est.interval(0.95)
        covered += lo <= truth <= hi
    assert 0.93 <= covered / STUDIES <= 0.97, covered


def test_three_seeds_t_interval_covers_the_true_change_despite_seed_spread():
    # each seed's models differ by a seed effect (sd 0.03) on top of the item noise; a bootstrap
    # over the three seeds would cover about 75% here, the t-interval (2 df) 95%
    rng = np.random.default_rng(61)
    truth, covered, percentile_covered = -0.1, 0, 0
    for _ in range(STUDIES):
        seeds = [OneSeed(*draw_items(rng, 120, 0.4, shift=rng.normal(0.0, 0.03)), 10, rng) for _ in range(3)]
        est = change(seeds)
        assert est.k == 3 and est.draws is None
        lo, hi = est.interval(0.95)
        covered += lo <= truth <= hi
        percentile_covered += min(est.values) <= truth <= max(est.values)
    assert 0.93 <= covered / STUDIES <= 0.97, covered
    assert percentile_covered / STUDIES < 0.85   # [min, max] of 3 seeds: what a seed bootstrap gives


def test_familywise_one_seed_interval_is_normal_from_the_replicates():
    # one seed: at 1 - 0.05/20 the tails would rest on ~2 of 4000 replicates; the family-wise
    # interval is value +- z(0.99875) x sd(replicates) instead
    rng = np.random.default_rng(3)
    a, b = draw_items(rng, 200, 0.4)
    est = change([OneSeed(a, b, 4000, rng)])
    lo, hi = est.interval(1 - 0.05 / 20, familywise=True)
    z = 3.0233   # normal quantile of 1 - 0.0025 / 2
    assert (hi - lo) / 2 == pytest.approx(z * float(np.std(est.draws)), rel=1e-3)
    assert (lo + hi) / 2 == pytest.approx(est.value)
