"""Which family is better at which compute budget, with intervals (`python -m mmjax.scaling
compare --fit DIR --budgets 1e12,1e14,1e16`).

Input: the fit.json of `fit --group-by family --bootstrap B`. For each pair of families
(F1, F2) and budget C, loss_ratio = L*_F1(C) / L*_F2(C) of the full fits' frontiers
(mmjax/scaling/frontier.py: each family in its own FLOPs convention). Its 95% interval is
the percentile interval of the same ratio over the bootstrap's refits, resample i of F1
against resample i of F2: the very refits that gave the fits' own intervals, so a verdict
never disagrees with the table it sits beside. `better` is the family with the lower loss,
or "tie" when the interval holds 1.
"""
from __future__ import annotations

import itertools
import json
import os

import numpy as np

from mmjax.errors import MmjaxError
from mmjax.scaling import frontier

# Past this factor outside a family's observed compute the frontier is an extrapolation
# that the runs say little about: compare warns (it still answers).
EXTRAPOLATION_WARN = 100.0
SUMMARY_KEYS = ("E", "A", "B", "alpha", "beta", "n_opt_exponent", "d_opt_exponent")


class CompareError(MmjaxError, ValueError):
  """A fit that compare cannot use, or bad budgets; the message names the fix."""


def parse_budgets(text: str) -> list[float]:
  try:
    budgets = [float(b) for b in text.split(",") if b.strip()]
  except ValueError:
    raise CompareError(f"--budgets {text!r}: want comma-separated FLOPs, e.g. "
                       f"1e12,1e14,1e16") from None
  if not budgets or not all(np.isfinite(b) and b > 0 for b in budgets):
    raise CompareError(f"--budgets {text!r}: want one or more positive FLOPs, e.g. 1e12,1e14")
  return budgets


def load_fits(fit_dir: str) -> dict:
  """{family: fit record} from DIR/fit.json, checked to have bootstrap refits."""
  path = os.path.join(fit_dir, "fit.json")
  if not os.path.isfile(path):
    raise CompareError(f"--fit {fit_dir!r} has no fit.json; run `fit --group-by family "
                       f"--bootstrap 200 --out {fit_dir}` first")
  with open(path) as f:
    fits = json.load(f)
  if "E" in fits or len(fits) < 2:
    raise CompareError(f"{path} holds one law; compare needs one per family: fit with "
                       f"--group-by family")
  for name, rec in fits.items():
    if not (rec.get("ci95") or {}).get("laws"):
      raise CompareError(f"{path}: family {name!r} has no bootstrap refits; rerun fit with "
                         f"--bootstrap B (e.g. 200) so that compare has intervals")
    if "flops_range" not in rec:
      raise CompareError(f"{path}: family {name!r} lacks flops_range (a fit.json from before "
                         f"compare existed); rerun the fit command")
  return fits


def family_summary(rec: dict) -> dict:
  ci = rec["ci95"]
  out = dict(gamma=rec.get("gamma"), gamma_ci95=ci.get("gamma"),
             gamma_reducible=rec.get("gamma_reducible"), r2_log_loss=rec.get("r2_log_loss"),
             flops_range=rec["flops_range"], flops_per_6nd=rec.get("flops_per_6nd", 1.0),
             resamples=ci.get("resamples"))
  for k in SUMMARY_KEYS:
    out[k] = rec.get(k)
    out[f"{k}_ci95"] = ci.get(k)
  return out


def _frontiers(rec: dict, budgets) -> tuple[np.ndarray, np.ndarray]:
  """(full fit's L*(C) [budgets], each refit's L*(C) [resamples, budgets])."""
  k = rec.get("flops_per_6nd", 1.0)
  point = frontier.frontier_loss(rec, budgets, k)
  draws = np.array([frontier.frontier_loss(frontier.law_of_theta(t), budgets, k)
                    for t in rec["ci95"]["laws"]])
  return point, draws


def pair_verdicts(first: str, rec1: dict, second: str, rec2: dict, budgets) -> list[dict]:
  (p1, d1), (p2, d2) = _frontiers(rec1, budgets), _frontiers(rec2, budgets)
  m = min(len(d1), len(d2))  # resample i of one family against resample i of the other
  ratios = d1[:m] / d2[:m]
  out = []
  for j, c in enumerate(budgets):
    r = ratios[:, j][np.isfinite(ratios[:, j])]
    if not r.size:  # no refit has a frontier here (an exponent at 0): no verdict
      lo, hi, better = float("nan"), float("nan"), "unknown"
    else:
      lo, hi = float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))
      better = "tie" if lo <= 1.0 <= hi else (first if hi < 1.0 else second)
    out.append(dict(flops=float(c), loss_ratio=float(p1[j] / p2[j]), ci95=[lo, hi],
                    better=better, **{f"loss_{first}": float(p1[j]),
                                      f"loss_{second}": float(p2[j])}))
  return out


def extrapolation_warnings(fits: dict, budgets) -> list[str]:
  warnings = []
  for name, rec in fits.items():
    lo, hi = rec["flops_range"]
    for c in budgets:
      factor = max(lo / c, c / hi)
      if factor > EXTRAPOLATION_WARN:
        where = "below" if c < lo else "above"
        warnings.append(f"budget {c:.3g} is {factor:.3g}x {where} the fitted compute range of "
                        f"family {name!r} [{lo:.3g}, {hi:.3g}]: an extrapolation of its law")
  return warnings


def compare(fits: dict, budgets) -> dict:
  """The JSON object of the compare command (families, then every pair at every budget)."""
  names = sorted(fits)
  pairs = {f"{a}_vs_{b}": pair_verdicts(a, fits[a], b, fits[b], budgets)
           for a, b in itertools.combinations(names, 2)}
  return dict(families={n: family_summary(fits[n]) for n in names}, pairs=pairs,
              budgets=[float(c) for c in budgets])
