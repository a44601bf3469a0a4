"""The compute frontier L*(C) of a fitted law, in its family's own FLOPs convention.

The law L(N, D) = E + A/N^alpha + B/D^beta is fitted in (N, D); its closed-form optimum
(fit.optimal_allocation) is for C = 6ND. A family may count compute otherwise: NMM's late
fusion counts C = 6(N_enc D_enc + N_dec D_dec) (mmjax/scaling/accounting.py), which is below
6ND because the encoder sees only the image tokens. Within one sweep that ratio barely moves
from run to run, so each family carries k = median(flops / 6ND) over its runs and
    L*(C) = L*_6ND(C / k),
which puts families with different conventions on one compute axis (the NMM convention).

gamma is NMM's frontier exponent: L*(C) ~ C^-gamma, the negated least-squares slope of
log L* over log C on 64 log-spaced budgets spanning the family's observed compute. It
depends on the range (L* bends towards E), which is why it is measured where the runs are.
gamma_reducible = alpha beta / (alpha + beta) is the exact exponent of L* - E, for reference.
"""
from __future__ import annotations

import numpy as np

from mmjax.scaling import fit as fit_lib

GAMMA_BUDGETS = 64


def law_of_theta(theta) -> dict:
  """A law from fit's theta = (log A, log B, log E, alpha, beta)."""
  a, b, e, alpha, beta = (float(t) for t in theta)
  return dict(E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=alpha,
              beta=beta)


def frontier_loss(law: dict, flops, scale: float = 1.0) -> np.ndarray:
  """L*(C) for C in the family's convention (C = scale * 6ND); NaN where undefined."""
  c6 = np.asarray(flops, np.float64) / scale
  if not (law["alpha"] > 0 and law["beta"] > 0):
    return np.full(c6.shape, np.nan)  # no interior optimum: the frontier is not a curve
  n = fit_lib.optimal_n(law, c6)
  return fit_lib.predict(law, n, c6 / (6.0 * n))


def gamma(law: dict, flops_range, scale: float = 1.0) -> float:
  lo, hi = flops_range
  c = np.logspace(np.log10(lo), np.log10(hi), GAMMA_BUDGETS)
  loss = frontier_loss(law, c, scale)
  if not np.isfinite(loss).all() or hi <= lo:
    return float("nan")
  return float(-np.polyfit(np.log(c), np.log(loss), 1)[0])


def compute_of(pts: fit_lib.Points) -> tuple[np.ndarray, float]:
  """(each run's compute in its convention, k = median of compute / 6ND)."""
  six_nd = 6.0 * pts.n * pts.d
  if pts.flops is None:
    return six_nd, 1.0
  return pts.flops, float(np.median(pts.flops / six_nd))


def annotate(result: dict, pts: fit_lib.Points) -> dict:
  """Adds flops_range, flops_per_6nd, gamma, gamma_reducible (and ci95 gamma from the
  bootstrap's own refits) to a fit_all result; returns it."""
  flops, k = compute_of(pts)
  rng = [float(flops.min()), float(flops.max())]
  al, be = result["alpha"], result["beta"]
  result.update(flops_range=rng, flops_per_6nd=k, gamma=gamma(result, rng, k),
                gamma_reducible=al * be / (al + be) if al + be > 0 else float("nan"))
  ci = result.get("ci95")
  if ci and ci.get("laws"):
    draws = np.array([gamma(law_of_theta(t), rng, k) for t in ci["laws"]])
    draws = draws[np.isfinite(draws)]
    if draws.size:
      ci["gamma"] = [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]
  return result
