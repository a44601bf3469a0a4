"""The run's training metrics on their way to metrics.jsonl and TensorBoard.

A log step closes the open window of steps; a closed window is fetched and written once its
last step has finished -- at the next log step at the latest, while the device works on the
steps dispatched since (fetching the newest step would leave the device idle while the host
writes). So nothing waits for the device in the steady state.
"""
from __future__ import annotations

import collections
import logging
import os
import time
from typing import Callable

from mmjax.checkpoint import workdir as workdir_lib
from mmjax.perf import flops as flops_lib
from mmjax.training.metric_windows import (ClosedWindow, MetricWindow, mean_metrics,
                                           perf_metrics, task_perf_metrics,
                                           unconverged_warning)

log = logging.getLogger("mmjax.train")


class MetricLog:
  """The open window of steps, the closed windows waiting to be written, and the last row."""

  def __init__(self, run, workdir: str, writer, step_times, accounting, peak, bar,
               learning_rate, skipped: int, on_nonfinite: Callable[[], None]):
    self.run, self.workdir, self.writer, self.bar = run, workdir, writer, bar
    self.step_times, self.accounting, self.peak = step_times, accounting, peak
    self.learning_rate, self.skipped = learning_rate, skipped
    self.on_nonfinite = on_nonfinite  # raises naming the first bad step (nan_policy=halt)
    self.halt = run.experiment.trainer.nan_policy == "halt"
    self.window, self.fetched, self.logged = MetricWindow(), [], {}
    self.pending: collections.deque[ClosedWindow] = collections.deque()
    self.logged_step = None  # the step of the last row written
    # Where the last written window ended, as the device saw it (step_times' end stamps).
    self.window_end, self.window_excluded = time.perf_counter(), self.not_stepping()

  def not_stepping(self) -> float:
    """Seconds spent compiling and evaluating: one-off or not training, so throughput
    windows leave them out."""
    totals = self.run.clock.totals
    return totals.get("compile", 0.0) + totals.get("eval", 0.0)

  def add(self, step: int, task: str, dispatched: float, metrics: dict, cost) -> None:
    self.step_times.add(task, dispatched, metrics)
    self.window.add(step, task, metrics, cost)
    self.accounting.record(task, cost)

  def close_window(self, step: int) -> None:
    """A log step: the window closes. The window before ended a log period ago (its steps
    are done, or nearly): written now. This one waits, unless already done."""
    self.pending.append(ClosedWindow(step, self.window, self.step_times.added,
                                     self.not_stepping(), self.accounting.totals()))
    self.window = MetricWindow()
    while self.pending and (len(self.pending) > 1 or self.pending[0].window.ready()):
      self._write(self.pending.popleft())

  def write_pending(self) -> None:
    """Writes the closed windows, then accounting.json as of the last of them."""
    while self.pending:
      self._write(self.pending.popleft())
    # At saves and at the end only: rewriting it at every log step cost ~5 ms of host time
    # (a rename), a few % of a small model's steps.
    if self.writer.enabled and self.logged_step is not None:
      workdir_lib.write_json(os.path.join(self.workdir, "accounting.json"), dict(
          step=self.logged_step, tasks=self.accounting.summary(),
          compile=self.run.steps.summary(), peak_source=self.peak.source,
          **{k: self.logged[k] for k in ("model/params", "train/examples", "train/tokens",
                                         "perf/flops", "perf/peak_flops_per_s")}))

  def write_evals(self, step: int, results: dict) -> None:
    self.write_pending()  # rows stay in step order
    if results:
      self.writer.write(step, results)
      self.logged.update(results)

  def row_of(self, step: int) -> dict | None:
    """The metrics of `step`, if still in memory (for the non-finite message)."""
    records = self.fetched + [r for p in self.pending for r in p.window.fetch()]
    records += self.window.fetch()
    return next((r.metrics for r in records if r.step == step), None)

  def _write(self, closed: ClosedWindow) -> None:
    clock = self.run.clock
    with clock("step"):  # waiting here for the device is the steps' time
      self.fetched = closed.window.fetch()
      times = self.step_times.take(closed.steps_added)
    bad = [r.step for r in self.fetched if not r.metrics["finite"]]
    if bad and self.halt:
      self.on_nonfinite()  # raises, naming the first bad step
    if bad:
      log.warning("non-finite loss or gradient at steps %s: updates skipped (nan_policy=skip)",
                  bad)
    self.skipped += len(bad)
    unconverged = unconverged_warning(self.fetched, closed.step)
    if unconverged:
      log.warning("%s", unconverged)
    self.logged = self._row(closed, times)
    self.writer.write(closed.step, self.logged)
    self.logged_step = closed.step
    if self.bar is not None:
      self.bar.logged(self.fetched[-1].task, self.logged)
    self.window_end, self.window_excluded = times.end, closed.excluded_s

  def _row(self, closed: ClosedWindow, times) -> dict:
    run, excluded = self.run, closed.excluded_s - self.window_excluded
    dt = times.end - self.window_end - excluded
    row = mean_metrics(self.fetched)
    row.update(perf_metrics(closed.window.take_costs(), dt, self.peak.flops_per_s))
    row.update(task_perf_metrics(times.seconds, times.steps, self.accounting.cost))
    # Outside compiling and evaluating (their waits are one-off, or not training).
    waited = max(times.waited_s - excluded, 0.0)
    row["perf/device_wait_fraction"] = waited / dt if dt > 0 else 0.0
    row.update({f"perf/{t}/flops_per_step": c.flops for t, c in self.accounting.cost.items()})
    row.update({f"perf/{t}/compile_s": c.total_s for t, c in run.steps.times.items()})
    row["perf/compiles"] = float(run.steps.count)
    row.update(closed.totals)
    active = flops_lib.active_param_count(run.experiment.model, run.n_params)
    row.update({"model/params": float(run.n_params), "model/active_params": float(active),
                "train/learning_rate": self.learning_rate(closed.step - 1),
                "train/skipped_steps": float(self.skipped), **run.clock.report()})
    return row
