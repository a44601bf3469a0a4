"""`compare`: families' frontiers against each other at compute budgets, with intervals from
the fit's own bootstrap refits. Families are drawn from known laws whose frontiers cross at
1e17 FLOPs: early is better below it, late above it, and they tie at it."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from mmjax.scaling import compare, fit, frontier, synthetic
from tests.conftest import run_cli

EARLY = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
# A and B scaled (by a root-find) so that late's frontier meets early's exactly at 1e17.
CROSSING = 3.371761651422925
LATE = dict(E=1.45, A=406.4 * CROSSING, B=410.7 * CROSSING, alpha=0.40, beta=0.34)
BUDGETS = (1e15, 1e17, 1e19)
WINNERS = ["early", "tie", "late"]
SIZES, TOKENS = np.logspace(6, 9, 6), np.logspace(8, 11, 6)  # 6ND spans 6e14 .. 6e20


def test_the_laws_cross_where_the_test_says():
  ratio = frontier.frontier_loss(EARLY, BUDGETS) / frontier.frontier_loss(LATE, BUDGETS)
  assert ratio[1] == pytest.approx(1.0, abs=1e-9)
  assert ratio[0] < 0.9 and ratio[2] > 1.1  # far from 1 next to a 1% noise


def _fitted(law: dict, seed: int, resamples: int) -> dict:
  """A family's fit with bootstrap, as the fit command makes it. The fitter's search from
  its grid is tested in test_scaling_fit.py; here it starts at the truth's basin so that 10
  seeds x 2 families take seconds, and the bootstrap refits start from the full fit."""
  pts = synthetic.grid_points(law, 0.01, seed, sizes=SIZES, tokens=TOKENS)
  truth = [np.log(law["A"]), np.log(law["B"]), np.log(law["E"]), law["alpha"], law["beta"]]
  out = fit.fit_law(pts, starts=-1, extra_starts=[truth])
  out["ci95"] = fit.bootstrap(pts, out, resamples, seed=seed, grid_starts=0)
  return frontier.annotate(out, pts)


@pytest.mark.slow  # ~13 s: 10 seeds x 2 families x 20 L-BFGS refits
def test_verdicts_are_right_and_gamma_intervals_hold_the_truth_over_10_seeds():
  covered = dict(early=0, late=0)
  for seed in range(10):
    fits = dict(early=_fitted(EARLY, seed, 20), late=_fitted(LATE, 100 + seed, 20))
    out = compare.compare(fits, BUDGETS)
    verdicts = out["pairs"]["early_vs_late"]
    assert [v["better"] for v in verdicts] == WINNERS, (seed, verdicts)
    for name, law in (("early", EARLY), ("late", LATE)):
      lo, hi = out["families"][name]["gamma_ci95"]
      covered[name] += lo <= frontier.gamma(law, fits[name]["flops_range"]) <= hi
  # 95% percentile intervals from 20 refits: 9.5 of 10 expected; measured 10 and 9.
  assert min(covered.values()) >= 9, covered


def _write(path, rows):
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)


def _rows(law, family, seed, flops_per_6nd):
  pts = synthetic.grid_points(law, 0.002, seed, sizes=SIZES, tokens=TOKENS)
  return [dict(run=f"{family}{i}", family=family, params=n, tokens=d, loss=l,
               flops=flops_per_6nd * 6 * n * d)
          for i, (n, d, l) in enumerate(zip(pts.n, pts.d, pts.loss))]


@pytest.mark.slow  # ~15 s: four fits in three CLI processes
def test_compare_cli_prints_verdicts_warns_on_extrapolation_and_needs_a_bootstrap(tmp_path):
  # late counts its compute as 0.8 x 6ND (as NMM's encoder accounting does): at a budget C
  # in its convention its frontier is the law's at 6ND = C / 0.8.
  _write(tmp_path / "r.csv", _rows(EARLY, "early", 0, 1.0) + _rows(LATE, "late", 1, 0.8))
  fit_args = ["fit", "--results", str(tmp_path / "r.csv"), "--group-by", "family"]
  run_cli("mmjax.scaling", fit_args + ["--out", str(tmp_path / "fit"), "--bootstrap", "6"])
  proc = run_cli("mmjax.scaling", ["compare", "--fit", str(tmp_path / "fit"),
                                   "--budgets", "1e15,1e23"])
  out = json.loads(proc.stdout)
  assert sorted(out["families"]) == ["early", "late"]
  early = out["families"]["early"]
  lo, hi = early["gamma_ci95"]
  lo_n, hi_n = early["n_opt_exponent_ci95"]
  assert lo <= early["gamma"] <= hi and lo_n <= 0.28 / (0.34 + 0.28) <= hi_n
  assert out["families"]["late"]["flops_per_6nd"] == pytest.approx(0.8)
  first = out["pairs"]["early_vs_late"][0]
  truth = frontier.frontier_loss(EARLY, [1e15]) / frontier.frontier_loss(LATE, [1e15], 0.8)
  assert first["loss_ratio"] == pytest.approx(truth[0], rel=0.01)
  assert first["better"] == "early" and first["ci95"][1] < 1.0
  # 1e23 is 167 x above early's largest run (6e20): a warning naming the factor.
  assert "budget 1e+23 is 167x above the fitted compute range of family 'early'" in proc.stderr
  run_cli("mmjax.scaling", fit_args + ["--out", str(tmp_path / "plain")])
  bad = run_cli("mmjax.scaling", ["compare", "--fit", str(tmp_path / "plain"), "--budgets",
                                  "1e15"], check=False)
  assert bad.returncode == 2 and "--bootstrap" in bad.stderr and bad.stdout == ""
  bad = run_cli("mmjax.scaling", ["compare", "--fit", str(tmp_path / "fit"), "--budgets",
                                  "1e15,lots"], check=False)
  assert bad.returncode == 2 and "--budgets" in bad.stderr
