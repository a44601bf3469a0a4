"""Figures that put model families side by side (the NMM study's): from the results and a
`fit --group-by family --bootstrap B` fit.json.

  families_frontier.png  every family on one loss-vs-compute figure: its runs, its fitted
                         frontier L*(C) and the 95% band of the bootstrap refits' frontiers
  families_n_opt.png     N_opt(C) per family, with its band: where the compute-optimal model
                         sizes differ (NMM: late fusion wants a bigger model at equal C)
Compute is each family's own `flops` convention (mmjax/scaling/frontier.py), the axis that
`compare` reads its verdicts on.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from mmjax.scaling import fit as fit_lib, frontier
from mmjax.scaling.plot import loss_axis


def _band(rec: Mapping, fn, c_grid) -> tuple[np.ndarray, np.ndarray] | None:
  """2.5 and 97.5 percentiles of fn(law, C) over the bootstrap's refits, or None."""
  laws = (rec.get("ci95") or {}).get("laws")
  if not laws:
    return None
  draws = np.array([fn(frontier.law_of_theta(t), c_grid) for t in laws])
  return np.nanpercentile(draws, 2.5, axis=0), np.nanpercentile(draws, 97.5, axis=0)


def _observed(rows: Sequence[dict], column: str, family: str, flops_column: str):
  sel = [r for r in rows if r.get(column) == family]
  c = np.array([float(r.get(flops_column) or 6 * float(r["params"]) * float(r["tokens"]))
                for r in sel])
  return c, np.array([float(r["loss"]) for r in sel])


def _c_grid(fits: Mapping) -> np.ndarray:
  lo = min(r["flops_range"][0] for r in fits.values())
  hi = max(r["flops_range"][1] for r in fits.values())
  return np.logspace(np.log10(lo) - 0.3, np.log10(hi) + 0.3, 80)


def _frontier_figure(plt, rows, fits, out) -> str:
  c_grid = _c_grid(fits)
  fig, ax = plt.subplots(figsize=(6.4, 4.6))
  for i, (name, rec) in enumerate(sorted(fits.items())):
    colour, k = plt.get_cmap("tab10")(i), rec.get("flops_per_6nd", 1.0)
    c, loss = _observed(rows, rec.get("group_by") or "family", name,
                        rec.get("flops_column", "flops"))
    ax.scatter(c, loss, color=colour, s=18, alpha=0.8)
    curve = lambda law, cc, k=k: frontier.frontier_loss(law, cc, k)
    gamma = rec.get("gamma") or float("nan")
    ax.plot(c_grid, curve(rec, c_grid), color=colour,
            label=f"{name}: E={rec['E']:.3g}, γ={gamma:.3f}, R²={rec['r2_log_loss']:.3f}")
    band = _band(rec, curve, c_grid)
    if band is not None:
      ax.fill_between(c_grid, *band, color=colour, alpha=0.2, lw=0)
  ax.set(xscale="log", yscale="log", xlabel="compute C (FLOPs, each family's convention)",
         ylabel="final eval loss", title="Families: runs, fitted frontiers L*(C), 95% bands")
  return _save(plt, fig, ax, os.path.join(out, "families_frontier.png"), loss_y=True)


def _n_opt_figure(plt, fits, out) -> str:
  c_grid = _c_grid(fits)
  fig, ax = plt.subplots(figsize=(6.4, 4.6))
  for i, (name, rec) in enumerate(sorted(fits.items())):
    colour, k = plt.get_cmap("tab10")(i), rec.get("flops_per_6nd", 1.0)
    n_opt = lambda law, cc, k=k: (fit_lib.optimal_n(law, cc / k) if law["alpha"] > 0
                                  and law["beta"] > 0 else np.full(cc.shape, np.nan))
    a = rec.get("n_opt_exponent") or float("nan")
    ax.plot(c_grid, n_opt(rec, c_grid), color=colour, label=f"{name}: N_opt ∝ C^{a:.2f}")
    band = _band(rec, n_opt, c_grid)
    if band is not None:
      ax.fill_between(c_grid, *band, color=colour, alpha=0.2, lw=0)
  ax.set(xscale="log", yscale="log", xlabel="compute C (FLOPs, each family's convention)",
         ylabel="compute-optimal parameters N_opt", title="N_opt(C) per family, 95% bands")
  return _save(plt, fig, ax, os.path.join(out, "families_n_opt.png"))


def _save(plt, fig, ax, path, loss_y=False) -> str:
  if loss_y:
    loss_axis(ax.yaxis)
  ax.legend(fontsize=7)
  ax.grid(True, which="both", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def plot_families(rows: Sequence[dict], fits: Mapping, out: str) -> list[str]:
  """The two family figures; `fits` is a grouped fit.json with frontier fields."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  os.makedirs(out, exist_ok=True)
  return [_frontier_figure(plt, rows, fits, out), _n_opt_figure(plt, fits, out)]
