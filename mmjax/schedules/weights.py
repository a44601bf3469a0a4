"""The tasks' weights, as the weight-based schedules (weighted, sampled) read them."""
from __future__ import annotations

from typing import Mapping

from mmjax.errors import ConfigError


def task_weights(settings: Mapping) -> dict[str, float]:
  """{task: weight} from {task: TaskSettings} (each weight already finite and >= 0),
  refused when every weight is 0."""
  weights = {name: float(s.weight) for name, s in settings.items()}
  if not any(weights.values()):
    raise ConfigError(f"config.tasks: every task weight is 0 ({weights}); give at least one "
                      f"task a positive weight")
  return weights
