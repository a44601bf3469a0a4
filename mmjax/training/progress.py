"""The progress bar on stderr: the task training now, every task's step count, and the
last log step's loss and throughput.

Updated after every step without a redraw (tqdm redraws at most every 0.1 s), so it costs
microseconds a step; it reads only host values (no device sync).
"""
from __future__ import annotations

from typing import Mapping


def task_counts(steps: Mapping[str, int]) -> str:
  return " ".join(f"{t}:{n}" for t, n in steps.items())


class ProgressBar:

  def __init__(self, total: int, initial: int, tasks: list[str]):
    from tqdm import tqdm  # only the main process of a job with progress on draws one
    self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
    self._multi = len(tasks) > 1
    self._logged = ""

  def step_done(self, task: str, steps: Mapping[str, int]) -> None:
    if self._multi:
      self._bar.set_description_str(task, refresh=False)
      self._bar.set_postfix_str(f"{task_counts(steps)} {self._logged}", refresh=False)
    self._bar.update(1)

  def logged(self, task: str, logged: Mapping[str, float]) -> None:
    """The last log step's figures: the loss of the task trained last, examples/s, MFU."""
    self._logged = (f"loss={logged.get(f'train/{task}/loss', float('nan')):.3f} "
                    f"ex_s={logged['perf/examples_per_s']:.0f} mfu={logged['perf/mfu']:.0%}")
    if not self._multi:
      self._bar.set_postfix_str(self._logged, refresh=False)

  def close(self) -> None:
    self._bar.close()
