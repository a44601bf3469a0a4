"""Points drawn from a known law, for the fitter's recovery bars (tests and benchmark)."""
from __future__ import annotations

import numpy as np

from mmjax.scaling import fit

# Hoffmann et al.'s fitted Chinchilla law: a realistic target with unequal exponents.
CHINCHILLA = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
SIZES = np.logspace(5, 10, 8)    # N: 100k .. 10B parameters (wide: A and alpha separate)
TOKENS = np.logspace(7, 12, 8)   # D: 10M .. 1T tokens


def grid_points(law: dict, noise: float, seed: int = 0, sizes=None, tokens=None) -> fit.Points:
  """len(sizes) x len(tokens) points, loss x exp(noise * standard normal)."""
  sizes = SIZES if sizes is None else sizes
  tokens = TOKENS if tokens is None else tokens
  n, d = (a.ravel() for a in np.meshgrid(sizes, tokens))
  rng = np.random.default_rng(seed)
  return fit.Points(n, d, fit.predict(law, n, d) * np.exp(noise * rng.standard_normal(n.size)))


def held_out(law: dict) -> fit.Points:
  """The (7 x 7) geometric midpoints of the grid, noise-free: points the fit never saw."""
  mid = lambda a: np.sqrt(a[1:] * a[:-1])
  return grid_points(law, 0.0, sizes=mid(SIZES), tokens=mid(TOKENS))


def recovery(noise: float, law: dict = CHINCHILLA, seed: int = 0,
             delta: float = fit.DELTA) -> dict:
  """Relative errors of the fitted parameters and of held-out predictions."""
  fitted = fit.fit_law(grid_points(law, noise, seed), delta=delta)
  errors = {k: abs(fitted[k] / law[k] - 1.0) for k in fit.NAMES}
  test = held_out(law)
  rel = np.abs(fit.predict(fitted, test.n, test.d) / test.loss - 1.0)
  return dict(params=errors, heldout_max=float(rel.max()), heldout_mean=float(rel.mean()),
              fit=fitted)
