"""A task's settings besides its data and objectives, read once from `config.tasks.<t>`.

    tasks.<t>.weight         share of steps under schedule.type=weighted|sampled (>= 0)
    tasks.<t>.interval       under schedule.type=interval: the task is due every this many
                             steps (mmjax/schedules/interval.py); ignored by other schedules
    tasks.<t>.seed_offset    the task's data order and its step randomness (masking, token
                             drop) use config.seed + seed_offset, so two tasks on one dataset
                             do not read their examples in the same order (default 0)
    tasks.<t>.lr_multiplier  scales the task's parameter update: the update AdamW computes
                             (weight decay included, after clipping), before it is added
                             to the params; the optimizer's moments are shared and see the
                             raw gradients (default 1.0, must be finite and > 0)
    tasks.<t>.token_drop     {modality: rate in [0, 1)}: in training steps only, each example
                             keeps a random N - floor(rate * N) of that modality's N tokens
                             before the trunk (IMP), drawn from (seed + seed_offset, step)

The input resolution of a task is its own `data.preprocess` (image.size, video.frames and
size, audio.samples, text.max_len); mmjax/config/task_checks.py checks it against the model.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping

from mmjax.config.registry import check, parse_dataclass

# The task section's other keys, read where they are used (data pipeline, objectives).
OTHER_KEYS = ("data", "objectives")


@dataclasses.dataclass(frozen=True)
class TaskSettings:
  batch_size: int = 0
  microbatches: int = 1
  weight: float = 1.0
  interval: int = 0  # 0: unset (only schedule.type=interval reads it)
  seed_offset: int = 0
  lr_multiplier: float = 1.0
  token_drop: Mapping[str, float] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    check(self.batch_size > 0, "batch_size", "must be a positive integer")
    check(self.microbatches > 0, "microbatches", "must be a positive integer")
    check(self.batch_size % self.microbatches == 0, "microbatches",
          f"batch_size={self.batch_size} does not split into this many microbatches")
    check(math.isfinite(self.weight) and self.weight >= 0, "weight",
          "must be a finite number >= 0")
    check(self.interval >= 0, "interval", "must be a positive integer (steps)")
    check(math.isfinite(self.lr_multiplier) and self.lr_multiplier > 0, "lr_multiplier",
          "must be a finite number > 0 (1.0 = the optimizer's own step)")
    check(isinstance(self.token_drop, Mapping), "token_drop",
          "must map modality -> rate, e.g. {'video': 0.5}")
    for m, rate in self.token_drop.items():
      ok = isinstance(rate, (int, float)) and not isinstance(rate, bool)
      check(ok and 0.0 <= rate < 1.0, "token_drop",
            f"rate of {m!r} must be a number in [0, 1), e.g. 0.5 keeps half the tokens")

  def seed(self, base_seed: int) -> int:
    return base_seed + self.seed_offset


def kept_tokens(num_tokens: int, rate: float) -> int:
  """Tokens an example keeps of `num_tokens` under token drop `rate` in [0, 1): >= 1."""
  return num_tokens - math.floor(rate * num_tokens)


def task_settings(task_cfg, name: str) -> TaskSettings:
  """The settings of task `name` (its ConfigDict section), every key checked: an unknown
  key names the valid ones."""
  values = {k: v for k, v in dict(task_cfg).items() if k not in OTHER_KEYS}
  return parse_dataclass(TaskSettings, values, f"tasks.{name}",
                         what=f"task {name!r} (besides {', '.join(OTHER_KEYS)})")


def all_task_settings(config) -> dict[str, TaskSettings]:
  return {name: task_settings(task, name) for name, task in config.tasks.items()}
