"""Periodic work of the training loop as hooks with a period (Levanter's `add_hook(every=n)`).

The loop only calls `hooks.after_step(step)`; logging, checkpointing, evaluation, the
watchdog and the cross-process stop agreement each decide nothing about *when* they run.
A hook runs after every step that is a multiple of its period. After the run's last step
it runs if `at_last_step`, whatever its period, and never otherwise (e.g. evaluators,
which the trainer runs once more after the final save). Hooks run in the order added.
"""
from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Hook:
  name: str
  every_steps: int
  fn: Callable[[int], None]  # called with the number of steps completed
  at_last_step: bool = True


class Hooks:

  def __init__(self, last_step: int):
    self.last_step = last_step
    self._hooks: list[Hook] = []

  def add(self, name: str, every_steps: int, fn: Callable[[int], None], *,
          at_last_step: bool = True) -> None:
    if not isinstance(every_steps, int) or every_steps < 1:
      raise ValueError(f"hook {name!r}: every_steps={every_steps!r}; need a positive integer")
    self._hooks.append(Hook(name, every_steps, fn, at_last_step))

  def due(self, step: int) -> list[Hook]:
    if step == self.last_step:
      return [h for h in self._hooks if h.at_last_step]
    return [h for h in self._hooks if step % h.every_steps == 0]

  def after_step(self, step: int) -> None:
    for hook in self.due(step):
      hook.fn(step)

  def __repr__(self) -> str:
    return "Hooks(" + ", ".join(f"{h.name}/{h.every_steps}" for h in self._hooks) + ")"
