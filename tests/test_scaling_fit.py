"""The scaling-law fitter: recovery bars on synthetic laws, exponents, bad input, CLIs."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from mmjax.scaling import fit, synthetic
from tests.conftest import run_cli

SEEDS = (0, 1, 2)


@pytest.mark.parametrize("seed", SEEDS)
def test_recovers_the_law_within_2_percent_at_0p1_percent_noise(seed):
  r = synthetic.recovery(1e-3, seed=seed)
  assert max(r["params"].values()) < 0.02, r["params"]


@pytest.mark.parametrize("seed", SEEDS)
def test_predicts_held_out_points_within_1_percent_at_1_percent_noise(seed):
  r = synthetic.recovery(1e-2, seed=seed)
  assert r["heldout_max"] < 0.01, r


def test_fit_is_deterministic_and_reports_quality():
  pts = synthetic.grid_points(synthetic.CHINCHILLA, 1e-2, seed=3)
  a, b = fit.fit_law(pts), fit.fit_law(pts)
  assert a == b
  assert a["num_points"] == 64 and a["r2_log_loss"] > 0.99 and a["huber"] > 0


def test_compute_optimal_exponents_minimise_the_law_at_fixed_compute():
  law = synthetic.CHINCHILLA
  alloc = fit.optimal_allocation(law)
  assert alloc["n_opt_exponent"] == pytest.approx(0.28 / 0.62)
  assert alloc["n_opt_exponent"] + alloc["d_opt_exponent"] == pytest.approx(1.0)
  for c in (1e18, 1e21, 1e24):
    n = np.logspace(6, 13, 20001)
    best = n[np.argmin(fit.predict(law, n, c / (6 * n)))]
    assert fit.optimal_n(law, c) == pytest.approx(best, rel=2e-3)


def iso_flop_points(law, budgets=(1e18, 1e19, 1e20, 1e21)) -> fit.Points:
  """7 sizes around each budget's optimum, D = C / (6N): an iso-FLOP design."""
  n, d, budget = [], [], []
  for c in budgets:
    centre = fit.optimal_n(law, c)
    for k in np.linspace(-0.6, 0.6, 7):
      n.append(centre * 10 ** k)
      d.append(c / (6 * n[-1]))
      budget.append(c)
  n, d = np.array(n), np.array(d)
  return fit.Points(n, d, fit.predict(law, n, d), np.array(budget))


def test_iso_flop_parabolas_find_the_optimal_exponent():
  iso = fit.iso_flop(iso_flop_points(synthetic.CHINCHILLA))
  assert iso["n_opt_exponent"] == pytest.approx(0.28 / 0.62, abs=0.02)
  assert iso["d_opt_exponent"] == pytest.approx(0.34 / 0.62, abs=0.02)


# ------------------------------------------------------------------ bad input

ROWS = [dict(run=f"r{i}", params=str(1e5 * 2 ** i), tokens=str(1e7 * 3 ** (i % 3)), loss="2.5")
        for i in range(6)]


@pytest.mark.parametrize("column,value,message", [
    ("loss", "0", "row 3 column 'loss': 0.0 must be positive and finite"),
    ("params", "-5", "row 3 column 'params': -5.0 must be positive and finite"),
    ("tokens", "nan", "row 3 column 'tokens': nan must be positive and finite"),
    ("loss", "inf", "row 3 column 'loss': inf must be positive and finite"),
    ("loss", "abc", "row 3 column 'loss': 'abc' is not a number"),
    ("loss", "", "row 3 column 'loss': '' is not a number"),
])
def test_bad_values_name_row_and_column(column, value, message):
  rows = [dict(r) for r in ROWS]
  rows[2][column] = value
  with pytest.raises(fit.FitError, match=message.replace("(", r"\(")):
    fit.points_from_rows(rows)


def test_missing_column_is_named():
  rows = [{k: v for k, v in r.items() if k != "tokens"} for r in ROWS]
  with pytest.raises(fit.FitError, match="missing column 'tokens'"):
    fit.points_from_rows(rows)
  with pytest.raises(fit.FitError, match="missing column 'active_params'"):
    fit.points_from_rows(ROWS, params_column="active_params")


def test_too_few_points_or_one_value_per_axis():
  with pytest.raises(fit.FitError, match="4 points cannot determine the 5 parameters"):
    fit.fit_law(fit.points_from_rows(ROWS[:4]))
  same = [dict(r, params="1e6") for r in ROWS]
  with pytest.raises(fit.FitError, match="same params"):
    fit.fit_law(fit.points_from_rows(same))


# ------------------------------------------------------------------ command lines

def write_csv(path, pts: fit.Points, **columns):
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["run", "params", "active_params", "tokens", "loss", "extra", *columns])
    for i in range(len(pts.loss)):
      w.writerow([f"r{i}", pts.n[i], pts.n[i] / 2, pts.d[i], pts.loss[i], "x",
                  *(v[i] for v in columns.values())])


def test_fit_cli_prints_one_json_object_and_writes_fit_json(tmp_path):
  pts = synthetic.grid_points(synthetic.CHINCHILLA, 1e-3, seed=0)
  write_csv(tmp_path / "r.csv", pts)
  proc = run_cli("mmjax.scaling", ["fit", "--results", str(tmp_path / "r.csv"),
                                   "--out", str(tmp_path / "fit")])
  out = json.loads(proc.stdout)
  for k in ("E", "A", "B", "alpha", "beta", "n_opt_exponent", "d_opt_exponent",
            "r2_log_loss", "huber", "num_points"):
    assert k in out
  assert out["E"] == pytest.approx(1.69, rel=0.02) and out["num_points"] == 64
  assert json.load(open(tmp_path / "fit" / "fit.json")) == out
  # The params column is a flag: halving N changes A by 2^alpha, nothing else.
  proc = run_cli("mmjax.scaling", ["fit", "--results", str(tmp_path / "r.csv"), "--out",
                                   str(tmp_path / "fit2"), "--params-column", "active_params"])
  half = json.loads(proc.stdout)
  assert half["A"] == pytest.approx(out["A"] / 2 ** out["alpha"], rel=1e-3)
  assert half["alpha"] == pytest.approx(out["alpha"], rel=1e-4)


def test_fit_cli_groups_bootstrap_and_plot(tmp_path):
  late = dict(synthetic.CHINCHILLA, E=1.9, alpha=0.3)
  a = synthetic.grid_points(synthetic.CHINCHILLA, 1e-3, seed=0)
  b = synthetic.grid_points(late, 1e-3, seed=1)
  both = fit.Points(np.concatenate([a.n, b.n]), np.concatenate([a.d, b.d]),
                    np.concatenate([a.loss, b.loss]))
  write_csv(tmp_path / "r.csv", both, fusion=["early"] * 64 + ["late"] * 64)
  proc = run_cli("mmjax.scaling", ["fit", "--results", str(tmp_path / "r.csv"), "--out",
                                   str(tmp_path / "fit"), "--group-by", "fusion",
                                   "--bootstrap", "3"])
  out = json.loads(proc.stdout)
  assert sorted(out) == ["early", "late"]
  assert out["late"]["E"] == pytest.approx(1.9, rel=0.02)
  assert out["early"]["alpha"] == pytest.approx(0.34, rel=0.02)
  lo, hi = out["early"]["ci95"]["alpha"]
  assert lo <= hi and out["early"]["ci95"]["resamples"] == 3
  assert "early" in proc.stderr and "late" in proc.stderr and "n_opt_exponent" in proc.stderr
  proc = run_cli("mmjax.scaling", ["plot", "--results", str(tmp_path / "r.csv"), "--fit",
                                   str(tmp_path / "fit"), "--out", str(tmp_path / "plots")])
  pngs = sorted(os.listdir(tmp_path / "plots"))
  assert pngs == ["fitted_vs_observed.png", "isoflop.png", "loss_vs_compute.png"]
  for p in pngs:
    assert open(tmp_path / "plots" / p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_budget_whose_sizes_miss_the_optimum_is_left_out_of_the_iso_flop_fit():
  law = synthetic.CHINCHILLA
  pts = iso_flop_points(law, budgets=(1e18, 1e19, 1e20))
  # The 1e20 budget's sizes all lie far above its optimum: loss rises monotonically with N,
  # and a parabola through them has its vertex outside the sizes tried.
  far = pts.budget == 1e20
  n = np.where(far, pts.n * 30, pts.n)
  d = pts.budget / (6 * n)
  iso = fit.iso_flop(fit.Points(n, d, fit.predict(law, n, d), pts.budget))
  assert iso["budgets"] == [1e18, 1e19] and iso["unbracketed"] == [1e20]
  for n_opt, c in zip(iso["n_opt"], iso["budgets"]):
    assert n_opt == pytest.approx(fit.optimal_n(law, c), rel=0.1)


def test_fit_cli_takes_the_iso_flop_approach_when_the_csv_has_budgets(tmp_path):
  pts = iso_flop_points(synthetic.CHINCHILLA)
  write_csv(tmp_path / "r.csv", pts, budget=pts.budget)
  proc = run_cli("mmjax.scaling", ["fit", "--results", str(tmp_path / "r.csv"),
                                   "--out", str(tmp_path / "fit")])
  iso = json.loads(proc.stdout)["isoflop"]
  assert len(iso["budgets"]) == 4 and len(iso["parabolas"]) == 4
  assert iso["n_opt_exponent"] == pytest.approx(0.28 / 0.62, abs=0.02)
  run_cli("mmjax.scaling", ["plot", "--results", str(tmp_path / "r.csv"), "--fit",
                            str(tmp_path / "fit"), "--out", str(tmp_path / "plots")])
  assert (tmp_path / "plots" / "isoflop.png").stat().st_size > 0


def test_fit_cli_errors_name_the_problem(tmp_path):
  with open(tmp_path / "bad.csv", "w") as f:
    f.write("run,params,tokens,loss\na,1e5,1e7,2.0\nb,2e5,1e7,-1\n")
  proc = run_cli("mmjax.scaling", ["fit", "--results", str(tmp_path / "bad.csv"), "--out",
                                   str(tmp_path / "f")], check=False)
  assert proc.returncode == 2
  assert "row 2 column 'loss': -1.0 must be positive" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_an_irreducible_loss_fitted_to_zero_still_predicts():
  # Targets that a model can learn perfectly fit E ~ 0 (exp of a very negative e): predictions,
  # R^2 and bootstrap refits must not take log(0) of it.
  law = dict(E=0.0, A=50.0, B=300.0, alpha=0.5, beta=0.6)
  pred = fit.predict_log(law, [1e5, 1e6], [1e7, 1e8])
  assert np.all(np.isfinite(pred))
  pts = synthetic.grid_points(dict(law, E=1e-9), 1e-3, seed=0)
  out = fit.fit_all(fit.Points(pts.n[::4], pts.d[::4], pts.loss[::4]), bootstrap_resamples=2)
  assert np.isfinite(out["r2_log_loss"]) and out["ci95"]["resamples"] == 2


def test_a_held_out_miss_at_1_percent_noise_is_the_estimator_not_the_optimiser():
  """Seed 5 misses the held-out 1% bar (1.16%). A start at the true law (or 64 starts: see
  benchmarks/fit_recovery.py) finds the same minimum, and the true law scores worse on those
  points: the fit is right for the data it was given. A wider Huber delta (closer to least
  squares) meets the bar."""
  law = synthetic.CHINCHILLA
  pts = synthetic.grid_points(law, 1e-2, seed=5)
  truth = [np.log(law["A"]), np.log(law["B"]), np.log(law["E"]), law["alpha"], law["beta"]]
  default = fit.fit_law(pts)
  from_truth = fit.fit_law(pts, extra_starts=[truth])
  assert from_truth["huber"] == pytest.approx(default["huber"], rel=1e-6)
  logs = np.log(pts.n), np.log(pts.d), np.log(pts.loss)
  at_truth = fit._objective(np.array(truth), *logs, fit.DELTA)[0] * fit.DELTA ** 2
  assert default["huber"] < at_truth
  assert synthetic.recovery(1e-2, seed=5)["heldout_max"] > 0.01
  assert synthetic.recovery(1e-2, seed=5, delta=1e-2)["heldout_max"] < 0.01
