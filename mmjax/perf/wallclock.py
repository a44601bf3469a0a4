"""Accounts for wall time by category (compile, data, step, checkpoint, eval, ...).

Categories are measured with `with clock("data"):`; whatever is not inside one is
reported as "other", so the parts always add up to the wall time.
"""
from __future__ import annotations

import contextlib
import time


class WallClock:

  def __init__(self):
    self._start = time.perf_counter()
    self.totals: dict[str, float] = {}

  @contextlib.contextmanager
  def __call__(self, category: str):
    t0 = time.perf_counter()
    try:
      yield
    finally:
      self.totals[category] = self.totals.get(category, 0.0) + time.perf_counter() - t0

  def elapsed(self) -> float:
    return time.perf_counter() - self._start

  def report(self) -> dict[str, float]:
    wall = self.elapsed()
    out = {f"time/{k}_s": v for k, v in sorted(self.totals.items())}
    out["time/other_s"] = wall - sum(self.totals.values())
    out["time/wall_s"] = wall
    return out

  def summary(self) -> str:
    r = self.report()
    wall = r["time/wall_s"]
    parts = [f"{k[5:-2]} {v:.1f}s ({100 * v / max(wall, 1e-9):.0f}%)"
             for k, v in r.items() if k != "time/wall_s"]
    return f"wall {wall:.1f}s = " + " + ".join(parts)
