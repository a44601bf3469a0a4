"""PNG plots of a sweep's results and its fitted law(s), one colour per fusion type.

  loss_vs_compute.png     observed loss against C = 6ND, with the fitted compute-optimal
                          frontier L(N_opt(C), D_opt(C))
  isoflop.png             fitted iso-FLOP curves L(N, C/(6N)) for a few budgets (the design's
                          own when it has them), their minima, and the observed points; for
                          an iso-FLOP design also each budget's parabola (approach 2) and
                          its vertex
  fitted_vs_observed.png  the fit's prediction against each observed loss
Compute is 6ND on every axis so that points and curves share the fit's definition of C.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from mmjax.scaling import fit as fit_lib


def laws_by_group(fits: Mapping) -> tuple[str | None, dict]:
  """(group column or None, {group value or None: law}) from a fit.json object."""
  if "E" in fits:
    return None, {None: fits}
  column = next(iter(fits.values())).get("group_by")
  return column, dict(fits)


def _series(rows: Sequence[dict], column: str | None, params_column: str):
  """{group: (N, D, L)} with every row in the group its fit came from."""
  out = {}
  for r in rows:
    key = r.get(column) if column else r.get("fusion", None)
    out.setdefault(key, []).append((float(r[params_column]), float(r["tokens"]),
                                    float(r["loss"])))
  return {k: tuple(np.array(c) for c in zip(*v)) for k, v in sorted(out.items(), key=str)}


def loss_axis(axis) -> None:
  """Plain numbers at 1, 2, 3, 5 x 10^k: losses span less than a decade here."""
  from matplotlib import ticker
  axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
  axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
  axis.set_minor_formatter(ticker.NullFormatter())


class _Figures:
  """What the three figures share: the runs by group, their colours and laws, and saving."""

  def __init__(self, rows: Sequence[dict], fits: Mapping, out: str, plt):
    self.plt, self.out, self.paths = plt, out, []
    column, self.laws = laws_by_group(fits)
    self.column = column
    params_column = next(iter(self.laws.values())).get("params_column", "params")
    self.series = _series(rows, column, params_column)
    self.colours = {k: plt.get_cmap("tab10")(i) for i, k in enumerate(self.series)}
    self.all_c = np.concatenate([6 * n * d for n, d, _ in self.series.values()])

  def law_of(self, k):
    return self.laws.get(k) if self.column else self.laws[None]

  def save(self, fig, ax, name, loss_axes=("y",)):
    for a in loss_axes:
      loss_axis(getattr(ax, f"{a}axis"))
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    path = os.path.join(self.out, name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    self.plt.close(fig)
    self.paths.append(path)


def _loss_vs_compute(f: _Figures) -> None:
  all_c = f.all_c
  c_grid = np.logspace(np.log10(all_c.min()) - 0.2, np.log10(all_c.max()) + 0.2, 100)
  fig, ax = f.plt.subplots(figsize=(6.4, 4.6))
  for k, (n, d, loss) in f.series.items():
    ax.scatter(6 * n * d, loss, color=f.colours[k], s=22, label=f"{k} runs")
    law = f.law_of(k)
    if law and np.isfinite(law.get("n_opt_exponent", np.nan)):
      n_opt = fit_lib.optimal_n(law, c_grid)
      ax.plot(c_grid, fit_lib.predict(law, n_opt, c_grid / (6 * n_opt)), color=f.colours[k],
              label=f"{k} frontier: E={law['E']:.3g}, α={law['alpha']:.2f}, β={law['beta']:.2f}")
  ax.set(xscale="log", yscale="log", xlabel="compute C = 6ND (FLOPs)", ylabel="final eval loss",
         title="Loss vs compute, with the fitted compute-optimal frontier")
  f.save(fig, ax, "loss_vs_compute.png")


def _isoflop_group(f: _Figures, ax, k, n, law, budgets, n_grid) -> None:
  """One group's iso-FLOP parabolas (from the fit's isoflop record) and law curves."""
  colour = f.colours[k]
  iso = law.get("isoflop") or {}
  for c, (k2, k1, k0) in zip(iso.get("budgets", ()), iso.get("parabolas", ())):
    x = np.log(n_grid[(n_grid >= n.min() / 1.5) & (n_grid <= n.max() * 1.5)])
    ax.plot(np.exp(x), np.exp(k2 * x * x + k1 * x + k0), ":", color=colour, lw=1)
    v = -k1 / (2 * k2)
    ax.plot(np.exp(v), np.exp(k0 - k1 * k1 / (4 * k2)), "*", color=colour, ms=9,
            label=f"{k} parabola vertices" if c == iso["budgets"][0] else None)
  for i, c in enumerate(iso.get("budgets") or budgets):
    curve = fit_lib.predict(law, n_grid, c / (6 * n_grid))
    ax.plot(n_grid, curve, color=colour, alpha=min(1.0, 0.45 + 0.15 * i),
            label=f"{k} fit" if i == 0 else None)
    j = int(np.argmin(curve))
    ax.plot(n_grid[j], curve[j], "x", color=colour)
    ax.annotate(f"C={c:.1e}", (n_grid[j], curve[j]), fontsize=6, xytext=(2, -9),
                textcoords="offset points")


def _isoflop(f: _Figures) -> None:
  fig, ax = f.plt.subplots(figsize=(6.4, 4.6))
  budgets = np.logspace(np.log10(f.all_c.min()), np.log10(f.all_c.max()), 4)
  all_n = np.concatenate([n for n, _, _ in f.series.values()])
  n_grid = np.logspace(np.log10(all_n.min()) - 0.3, np.log10(all_n.max()) + 0.3, 100)
  for k, (n, d, loss) in f.series.items():
    law = f.law_of(k)
    sc = ax.scatter(n, loss, c=np.log10(6 * n * d), cmap="viridis", s=22,
                    edgecolors=f.colours[k], linewidths=1.2)
    if law:
      _isoflop_group(f, ax, k, n, law, budgets, n_grid)
  fig.colorbar(sc, ax=ax, label="log10 C of the run (observed points)")
  all_loss = np.concatenate([loss for _, _, loss in f.series.values()])
  ax.set_ylim(all_loss.min() * 0.9, all_loss.max() * 1.3)  # curves leave the data fast
  ax.set(xscale="log", yscale="log", xlabel="parameters N", ylabel="final eval loss",
         title="Iso-FLOP curves of the fit (x: their minima)")
  f.save(fig, ax, "isoflop.png")


def _fitted_vs_observed(f: _Figures) -> None:
  fig, ax = f.plt.subplots(figsize=(5.2, 5.0))
  lo, hi = np.inf, 0.0
  for k, (n, d, loss) in f.series.items():
    law = f.law_of(k)
    if not law:
      continue
    pred = fit_lib.predict(law, n, d)
    ax.scatter(loss, pred, color=f.colours[k], s=22,
               label=f"{k}: R² (log) = {law.get('r2_log_loss', float('nan')):.3f}")
    lo, hi = min(lo, loss.min(), pred.min()), max(hi, loss.max(), pred.max())
  ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="y = x")
  ax.set(xscale="log", yscale="log", xlabel="observed loss", ylabel="fitted L(N, D)",
         title="Fitted vs observed")
  f.save(fig, ax, "fitted_vs_observed.png", loss_axes=("x", "y"))


def plot(rows: Sequence[dict], fits: Mapping, out: str) -> list[str]:
  """Loss vs compute with the frontier, iso-FLOP curves, fitted vs observed: their paths."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  os.makedirs(out, exist_ok=True)
  figures = _Figures(rows, fits, out, plt)
  _loss_vs_compute(figures)
  _isoflop(figures)
  _fitted_vs_observed(figures)
  return figures.paths
