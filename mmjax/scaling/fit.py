"""Fitting L(N, D) = E + A / N^alpha + B / D^beta to (params, tokens, loss) points.

Approach 3 of Hoffmann et al. (2022), as replicated by Besiroglu et al. (2024): with
a = log A, b = log B, e = log E the prediction is
    log L^ = LSE(a - alpha log N, b - beta log D, e)
and we minimise sum_i Huber_delta(log L^_i - log L_i), delta = 1e-3, with L-BFGS started from
a grid of (a, b, e, alpha, beta); the best minimum wins. To stay fast the grid is scored
once and L-BFGS runs from its best `starts` points (all of them with starts=0, none with
starts < 0: then only `extra_starts`).

Compute-optimal allocation under C = 6 N D (minimising L at fixed C):
    N_opt = G (C/6)^(beta/(alpha+beta)),  D_opt = G^-1 (C/6)^(alpha/(alpha+beta)),
    G = (alpha A / (beta B))^(1/(alpha+beta)),
so n_opt_exponent = beta/(alpha+beta) and d_opt_exponent = alpha/(alpha+beta).

Approach 2 (iso-FLOP) where the design has budgets: per budget, a parabola of log L over
log N; its vertex is N_opt(C); a line through log N_opt vs log C gives the exponent.
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
import math
from typing import Sequence

import numpy as np
from scipy import optimize

from mmjax.errors import MmjaxError

DELTA = 1e-3
NAMES = ("E", "A", "B", "alpha", "beta")
# Hoffmann et al.'s initialisation grid (in a, b, e, alpha, beta).
GRID = dict(a=(0.0, 5.0, 10.0, 15.0, 20.0, 25.0), b=(0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
            e=(-1.0, -0.5, 0.0, 0.5, 1.0), alpha=(0.0, 0.5, 1.0, 1.5, 2.0),
            beta=(0.0, 0.5, 1.0, 1.5, 2.0))


class FitError(MmjaxError, ValueError):
  """Input the fit cannot use; the message names the row and column where it applies."""


@dataclasses.dataclass(frozen=True)
class Points:
  n: np.ndarray      # parameters
  d: np.ndarray      # tokens
  loss: np.ndarray
  budget: np.ndarray | None = None  # iso-FLOP budget of each point, when the design has one
  # Each run's compute in its family's own convention (results.csv `flops`), when known:
  # late fusion counts 6(N_enc D_enc + N_dec D_dec), not 6ND (mmjax/scaling/frontier.py).
  flops: np.ndarray | None = None


# ------------------------------------------------------------------ input

def read_rows(path: str) -> list[dict]:
  try:
    with open(path, newline="") as f:
      return list(csv.DictReader(f))
  except FileNotFoundError:
    raise FitError(f"--results {path!r}: no such file") from None


def points_from_rows(rows: Sequence[dict], params_column: str = "params",
                     tokens_column: str = "tokens", loss_column: str = "loss",
                     source: str = "results", flops_column: str = "flops") -> Points:
  """Checks and converts CSV rows. Row numbers count data rows from 1 (line = row + 1)."""
  if not rows:
    raise FitError(f"{source}: no data rows")
  header = list(rows[0].keys())
  for col in (params_column, tokens_column, loss_column):
    if col not in header:
      raise FitError(f"{source}: missing column {col!r}; columns are {header}")
  cols = {}
  for col in (params_column, tokens_column, loss_column):
    values = []
    for i, r in enumerate(rows, start=1):
      text = r.get(col)
      try:
        v = float(text)
      except (TypeError, ValueError):
        raise FitError(f"{source}: row {i} column {col!r}: {text!r} is not a number") from None
      if not math.isfinite(v) or v <= 0:
        raise FitError(f"{source}: row {i} column {col!r}: {v} must be positive and finite")
      values.append(v)
    cols[col] = np.asarray(values, np.float64)
  budget = None
  if "budget" in header and all(r.get("budget") not in (None, "") for r in rows):
    budget = np.asarray([float(r["budget"]) for r in rows])
  flops = None
  if flops_column in header:
    flops = np.asarray([_positive_or_nan(r.get(flops_column)) for r in rows])
    flops = flops if np.isfinite(flops).all() else None  # partial accounting: 6ND instead
  return Points(cols[params_column], cols[tokens_column], cols[loss_column], budget, flops)


def _positive_or_nan(text) -> float:
  try:
    v = float(text)
  except (TypeError, ValueError):
    return float("nan")
  return v if v > 0 else float("nan")


# ------------------------------------------------------------------ approach 3

def _objective(theta, log_n, log_d, log_l, delta):
  """Sum of Huber(residual) / delta^2 and its gradient (scaled so L-BFGS tolerances work)."""
  a, b, e, alpha, beta = theta
  terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
  lse = np.logaddexp(np.logaddexp(terms[0], terms[1]), e)
  r = lse - log_l
  small = np.abs(r) <= delta
  value = np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)).sum() / delta ** 2
  dr = np.where(small, r, delta * np.sign(r)) / delta ** 2
  w = np.exp(terms - lse)  # softmax weights: d lse / d term
  grad = np.array([(dr * w[0]).sum(), (dr * w[1]).sum(), (dr * w[2]).sum(),
                   -(dr * w[0] * log_n).sum(), -(dr * w[1] * log_d).sum()])
  return value, grad


def _grid_values(log_n, log_d, log_l, delta):
  g = np.array(list(itertools.product(*GRID.values())))  # [G, 5]
  a, b, e, al, be = (g[:, i:i + 1] for i in range(5))
  lse = np.logaddexp(np.logaddexp(a - al * log_n, b - be * log_d), e)
  r = np.abs(lse - log_l)
  return g, np.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta)).sum(1)


def fit_law(pts: Points, *, delta: float = DELTA, starts: int = 8,
            extra_starts: Sequence[Sequence[float]] = ()) -> dict:
  """Best-of-grid L-BFGS fit; returns the law, exponents and fit quality. Deterministic."""
  n_pts = len(pts.loss)
  if n_pts < len(NAMES):
    raise FitError(f"{n_pts} points cannot determine the {len(NAMES)} parameters "
                   f"{', '.join(NAMES)}; need at least {len(NAMES)} (and a spread of N and D)")
  for what, v in (("params", pts.n), ("tokens", pts.d)):
    if len(np.unique(v)) < 2:
      raise FitError(f"all {n_pts} points have the same {what} ({v[0]:g}): the grid needs at "
                     f"least 2 distinct values of each of params and tokens")
  log_n, log_d, log_l = np.log(pts.n), np.log(pts.d), np.log(pts.loss)
  chosen = np.asarray(extra_starts, np.float64).reshape(-1, len(NAMES))
  if starts >= 0:  # starts < 0: the extra starts alone (refits from a known minimum)
    grid, values = _grid_values(log_n, log_d, log_l, delta)
    order = np.argsort(values, kind="stable")
    chosen = np.concatenate([chosen, grid[order if starts == 0 else order[:starts]]])
  if not len(chosen):
    raise FitError("fit_law(starts < 0) needs extra_starts: there is nowhere to start")
  best, results = None, []
  bounds = [(None, None)] * 3 + [(0.0, None)] * 2  # exponents are non-negative
  for x0 in chosen:
    res = optimize.minimize(_objective, x0, args=(log_n, log_d, log_l, delta), jac=True,
                            method="L-BFGS-B", bounds=bounds,
                            options=dict(maxiter=2000, ftol=1e-15, gtol=1e-10))
    results.append(res.fun)
    if best is None or res.fun < best.fun - 1e-12:
      best = res
  a, b, e, alpha, beta = best.x
  law = dict(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=float(alpha), beta=float(beta))
  pred = predict_log(law, pts.n, pts.d)
  ss_res = float(np.sum((pred - log_l) ** 2))
  ss_tot = float(np.sum((log_l - log_l.mean()) ** 2))
  out = dict(law, **optimal_allocation(law))
  out.update(r2_log_loss=1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
             huber=float(best.fun * delta ** 2), delta=delta, num_points=n_pts,
             starts=len(chosen),
             # How many starts reached the best minimum: 1 of many hints at a rugged fit.
             starts_at_best=int(sum(f <= best.fun * (1 + 1e-6) + 1e-9 for f in results)),
             theta=[float(t) for t in best.x])
  return out


def predict_log(law: dict, n, d) -> np.ndarray:
  n, d = np.asarray(n, np.float64), np.asarray(d, np.float64)
  with np.errstate(divide="ignore"):  # a term that underflowed to 0 is log 0 = -inf: fine
    a, b, e = (np.log(np.float64(law[k])) for k in ("A", "B", "E"))
  return np.logaddexp(np.logaddexp(a - law["alpha"] * np.log(n), b - law["beta"] * np.log(d)), e)


def predict(law: dict, n, d) -> np.ndarray:
  return np.exp(predict_log(law, n, d))


def optimal_allocation(law: dict) -> dict:
  al, be = law["alpha"], law["beta"]
  if al + be <= 0 or al <= 0 or be <= 0:
    return dict(n_opt_exponent=float("nan"), d_opt_exponent=float("nan"), G=float("nan"))
  g = (al * law["A"] / (be * law["B"])) ** (1.0 / (al + be))
  return dict(n_opt_exponent=be / (al + be), d_opt_exponent=al / (al + be), G=g)


def optimal_n(law: dict, flops) -> np.ndarray:
  """N_opt(C) under C = 6 N D."""
  alloc = optimal_allocation(law)
  return alloc["G"] * (np.asarray(flops, np.float64) / 6.0) ** alloc["n_opt_exponent"]


def bootstrap(pts: Points, law_fit: dict, resamples: int, *, seed: int = 0,
              delta: float = DELTA, grid_starts: int = 4) -> dict:
  """Percentile 95% intervals from refits on points resampled with replacement.

  Each refit starts from the full fit's minimum and the `grid_starts` best grid points (0:
  the full fit's minimum only, for fast synthetic checks). `laws` keeps every refit's theta
  so that quantities derived later (frontiers, family comparisons) use the same resamples.
  """
  rng = np.random.default_rng(seed)
  keys = NAMES + ("n_opt_exponent", "d_opt_exponent")
  draws = {k: [] for k in keys}
  thetas = []
  m = len(pts.loss)
  for _ in range(resamples):
    idx = rng.integers(0, m, m)
    sub = Points(pts.n[idx], pts.d[idx], pts.loss[idx])
    if len(np.unique(sub.n)) < 2 or len(np.unique(sub.d)) < 2:
      continue
    f = fit_law(sub, delta=delta, starts=grid_starts if grid_starts > 0 else -1,
                extra_starts=[law_fit["theta"]])
    for k in keys:
      draws[k].append(f[k])
    thetas.append(f["theta"])
  return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]
          for k, v in draws.items() if v} | {"resamples": len(draws["E"]), "laws": thetas}


# ------------------------------------------------------------------ approach 2

def iso_flop(pts: Points) -> dict | None:
  """Parabola per budget (log L over log N) -> N_opt(C); None if the design has no budgets."""
  if pts.budget is None:
    return None
  budgets, n_opts, parabolas, skipped = [], [], [], []
  for c in np.unique(pts.budget):
    sel = pts.budget == c
    x, y = np.log(pts.n[sel]), np.log(pts.loss[sel])
    if len(np.unique(x)) < 3:
      continue
    k2, k1, k0 = np.polyfit(x, y, 2)
    # No minimum, or one outside the sizes tried (a convex fit to a monotone series puts its
    # vertex far away): this budget's sizes do not bracket the optimum, so it says nothing.
    if k2 <= 0 or not x.min() <= -k1 / (2 * k2) <= x.max():
      skipped.append(float(c))
      continue
    budgets.append(float(c))
    n_opts.append(float(np.exp(-k1 / (2 * k2))))
    parabolas.append([float(k2), float(k1), float(k0)])  # log L = k2 x^2 + k1 x + k0, x = log N
  found = dict(budgets=budgets, n_opt=n_opts, parabolas=parabolas, unbracketed=skipped)
  if len(budgets) < 2:
    return dict(found, n_opt_exponent=float("nan"), d_opt_exponent=float("nan"),
                note="needs >= 2 budgets, each with >= 3 sizes around a minimum inside them")
  slope = float(np.polyfit(np.log(budgets), np.log(n_opts), 1)[0])
  # D_opt = C / (6 N_opt), so its exponent is 1 - a.
  return dict(found, n_opt_exponent=slope, d_opt_exponent=1.0 - slope)


def fit_all(pts: Points, *, bootstrap_resamples: int = 0, delta: float = DELTA,
            bootstrap_grid_starts: int = 4) -> dict:
  """Approach 3 (+ bootstrap intervals) and, when the design has budgets, approach 2."""
  out = fit_law(pts, delta=delta)
  if bootstrap_resamples:
    out["ci95"] = bootstrap(pts, out, bootstrap_resamples, delta=delta,
                            grid_starts=bootstrap_grid_starts)
  iso = iso_flop(pts)
  if iso is not None:
    out["isoflop"] = iso
  return out


def json_safe(obj):
  """NaN/Inf -> None, so fit.json and stdout are strict JSON."""
  if isinstance(obj, dict):
    return {k: json_safe(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [json_safe(v) for v in obj]
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj
