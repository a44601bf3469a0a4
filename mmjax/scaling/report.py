"""One page for a family study: `python -m mmjax.scaling report --out DIR` writes
DIR/report.md with the per-family fit table (with 95% intervals), the compare verdicts,
the figures (mmjax/scaling/plot.py and family_plots.py, into DIR/report_plots/) and the
commands that made them. Inputs: DIR/results.csv and DIR/fit/fit.json unless named.
"""
from __future__ import annotations

import datetime
import os
import subprocess
from typing import Sequence

import numpy as np

from mmjax.scaling import compare as compare_lib, family_plots, plot as plot_lib

TABLE_KEYS = ("E", "A", "B", "alpha", "beta", "n_opt_exponent", "d_opt_exponent", "gamma")


def default_budgets(fits: dict) -> list[float]:
  """The smallest and largest compute of any family's runs and their geometric middle."""
  lo = min(r["flops_range"][0] for r in fits.values())
  hi = max(r["flops_range"][1] for r in fits.values())
  return [float(f"{c:.2g}") for c in (lo, np.sqrt(lo * hi), hi)]


def _cell(value, interval) -> str:
  if value is None:
    return "–"
  if not interval or None in interval:
    return f"{value:.4g}"
  return f"{value:.4g} [{interval[0]:.3g}, {interval[1]:.3g}]"


def family_table(summary: dict) -> str:
  names = sorted(summary)
  lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
  for k in TABLE_KEYS:
    lines.append(f"| {k} | " + " | ".join(_cell(summary[n][k], summary[n].get(f"{k}_ci95"))
                                           for n in names) + " |")
  for k in ("r2_log_loss", "resamples"):
    lines.append(f"| {k} | " + " | ".join(_cell(summary[n][k], None) for n in names) + " |")
  return "\n".join(lines)


def verdict_table(pairs: dict) -> str:
  lines = ["| pair | C (FLOPs) | loss ratio | 95% interval | better |", "|---|---|---|---|---|"]
  for pair, rows in pairs.items():
    for r in rows:
      lo, hi = r["ci95"]
      lines.append(f"| {pair.replace('_vs_', ' / ')} | {r['flops']:.3g} | "
                   f"{r['loss_ratio']:.4f} | [{lo:.4f}, {hi:.4f}] | {r['better']} |")
  return "\n".join(lines)


def _commit() -> str:
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  try:
    return subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], timeout=10,
                          capture_output=True, text=True).stdout.strip() or "unknown"
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def commands(fits: dict, results: str, fit_dir: str, out: str, budgets) -> list[str]:
  rec = next(iter(fits.values()))
  text = ",".join(f"{c:g}" for c in budgets)
  return [f"python -m mmjax.scaling fit --results {results} --out {fit_dir} --group-by "
          f"{rec.get('group_by')} --bootstrap {rec['ci95']['resamples']} --params-column "
          f"{rec.get('params_column', 'params')} --flops-column {rec.get('flops_column', 'flops')}",
          f"python -m mmjax.scaling compare --fit {fit_dir} --budgets {text}",
          f"python -m mmjax.scaling report --out {out} --results {results} --fit {fit_dir} "
          f"--budgets {text}"]


def write_report(out: str, rows: Sequence[dict], results: str, fit_dir: str,
                 budgets: Sequence[float] | None = None) -> str:
  fits = compare_lib.load_fits(fit_dir)
  budgets = list(budgets or default_budgets(fits))
  verdicts = compare_lib.compare(fits, budgets)
  plots = os.path.join(out, "report_plots")
  paths = plot_lib.plot(rows, fits, plots) + family_plots.plot_families(rows, fits, plots)
  warnings = compare_lib.extrapolation_warnings(fits, budgets)
  page = [f"# Scaling study of {len(fits)} families: {', '.join(sorted(fits))}", "",
          f"Written {datetime.date.today().isoformat()} at commit {_commit()} from "
          f"`{results}` ({len(rows)} runs) and `{fit_dir}/fit.json`.", "",
          "## Fits: L(N, D) = E + A/N^α + B/D^β per family, with 95% bootstrap intervals", "",
          family_table(verdicts["families"]), "",
          "γ: L*(C) ∝ C^-γ on each family's observed compute (mmjax/scaling/frontier.py).", "",
          "## Which family is better at which budget", "",
          verdict_table(verdicts["pairs"]), "",
          "loss ratio = the first family's frontier loss over the second's; `tie` when the "
          "interval holds 1. Intervals: the fit's own bootstrap refits, paired by resample.",
          *(["", *(f"- warning: {w}" for w in warnings)] if warnings else []), "",
          "## Figures", "", *(f"![{os.path.basename(p)}]({os.path.relpath(p, out)})"
                              for p in paths), "",
          "## Commands", "", "```bash", *commands(fits, results, fit_dir, out, budgets), "```"]
  path = os.path.join(out, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(page) + "\n")
  return path
