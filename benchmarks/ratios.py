"""Ratios that resist noise, shared by the benchmarks that compare two or more timings.

Every round times each variant once, in an order shuffled afresh per round (seeded), so a
drift of the machine's speed, or whatever runs first in a round, favours no variant. The
figure is the median of the per-round ratios, with a bootstrap 95% interval over rounds
(`ratio`, `ratio_ci95`). A bar counts as met only when the interval's far end meets it;
otherwise it is "not shown" (the median alone may sit on the right side by chance).
"""
from __future__ import annotations

import random
from typing import Sequence

import numpy as np

MIN_ROUNDS = 5


def round_orders(names: Sequence[str], rounds: int, seed: int = 0) -> list[list[str]]:
  """The order in which to time `names` in each of `rounds` rounds: a fresh shuffle each."""
  rng = random.Random(seed)
  orders = []
  for _ in range(rounds):
    order = list(names)
    rng.shuffle(order)
    orders.append(order)
  return orders


def median_ci95(values: Sequence[float], n_boot: int = 10_000, seed: int = 0) -> tuple[float, list[float]]:
  """Median of `values` and the percentile bootstrap 95% interval of the median."""
  x = np.asarray(values, dtype=np.float64)
  if x.size == 0:
    raise ValueError("no values")
  rng = np.random.default_rng(seed)
  boot = np.median(x[rng.integers(0, x.size, size=(n_boot, x.size))], axis=1)
  lo, hi = np.percentile(boot, [2.5, 97.5])
  return float(np.median(x)), [float(lo), float(hi)]


def ratio_figures(numerator: Sequence[float], denominator: Sequence[float],
                  prefix: str = "") -> dict:
  """Per-round ratios numerator[i] / denominator[i] as figures: `<prefix>ratio` (median),
  `<prefix>ratio_ci95` ([low, high]), `<prefix>ratio_rounds` (the per-round values)."""
  if len(numerator) != len(denominator):
    raise ValueError(f"{len(numerator)} numerators for {len(denominator)} denominators")
  ratios = [float(n) / float(d) for n, d in zip(numerator, denominator)]
  median, ci = median_ci95(ratios)
  return {f"{prefix}ratio": median, f"{prefix}ratio_ci95": ci, f"{prefix}ratio_rounds": ratios}


def verdict(ci95: Sequence[float], bar: float, better: str) -> str:
  """'met' when the interval's far end meets the bar, else 'not shown'.

  better="lower": the bar is an upper limit (e.g. MoE step time <= 1.3x dense): the
  interval's high end must be <= bar. better="higher": a lower limit, the low end >= bar."""
  if better == "lower":
    return "met" if ci95[1] <= bar else "not shown"
  if better == "higher":
    return "met" if ci95[0] >= bar else "not shown"
  raise ValueError(f"better must be 'lower' or 'higher', not {better!r}")
