"""The typed sections of an experiment besides its model and tasks. Each field's default
here is its only default: a recipe that leaves a key out gets this value.

The messages of the value checks live in mmjax/experiment/checks.py, which runs before
these are built, so a bad value is named once, as `config.<key>=<value>: <why>`."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from mmjax.config.registry import did_you_mean, parse_dataclass
from mmjax.errors import ConfigError
from mmjax.runtime import sharding

# The top level's sections; every other top-level key is a TrainerConfig field.
SECTIONS = ("model", "tasks", "schedule", "optim", "checkpoint", "mesh", "sharding", "evals")


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
  """How long the run is, how often it logs, and what it does when something goes wrong."""
  total_steps: int = 1000
  seed: int = 0
  log_every_steps: int = 50
  nan_policy: str = "halt"          # "halt": stop naming the step; "skip": drop the update
  eval_batch_size: int = 256
  progress: bool = True             # a progress bar on stderr (process 0)
  watchdog_timeout_s: float = 600.0  # end the job if no step completes this long (0 = off)
  prefetch_batches: int = 2         # batches read ahead and placed by a thread (0 = off)
  stop_check_every_steps: int = 10  # processes agree on a stop signal every this many steps
  compile_threads: int = 0          # start-up compiles: 0 = a thread per task


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """AdamW with warmup + cosine decay and global-norm clipping (mmjax/training/optimizer.py)."""
  learning_rate: float = 1e-3
  warmup_steps: int = 0
  end_lr_fraction: float = 0.0
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.999
  clip_norm: float = 1.0


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  every_steps: int = 1000
  keep: int = 3
  async_save: bool = True


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Mesh axis sizes (in-slice, and `dcn_*` across slices or nodes; -1 = the rest) and the
  logical-axis rules that place parameters and activations on them (mmjax/runtime/sharding.py's
  RULES with the recipe's `sharding.rules` over them)."""
  axes: Mapping[str, int] = dataclasses.field(default_factory=lambda: {"data": -1})
  rules: Any = sharding.RULES
  max_replicated_params: int = 1 << 20  # on an fsdp mesh, larger params must be sharded


def trainer_config(config) -> TrainerConfig:
  """The top level's scalar keys; a key that is neither one nor a section is refused."""
  values = {k: v for k, v in config.items() if k not in SECTIONS}
  valid = [f.name for f in dataclasses.fields(TrainerConfig)]
  for k in values:
    if k not in valid:
      raise ConfigError(f"unknown config key {k!r}: the top level has no {k!r}"
                        f"{did_you_mean(k, valid + list(SECTIONS))}; valid: "
                        f"{', '.join(sorted(valid + list(SECTIONS)))}")
  return parse_dataclass(TrainerConfig, values, "<top level>", what="the top level")


def mesh_config(config) -> MeshConfig:
  sharding_cfg = dict(config.get("sharding", {}))
  unknown = set(sharding_cfg) - {"rules", "max_replicated_params"}
  if unknown:
    raise ConfigError(f"unknown config key 'sharding.{sorted(unknown)[0]}'; valid: "
                      f"max_replicated_params, rules")
  try:
    rules = sharding.rules_from_config(sharding_cfg.get("rules", {}))
  except ValueError as e:
    raise ConfigError(str(e)) from None
  unknown = set(config.mesh.keys()) - set(sharding.MESH_AXES) - {f"dcn_{a}" for a in sharding.MESH_AXES}
  if unknown:
    raise ConfigError(f"config.mesh has unknown axes {sorted(unknown)}")
  return MeshConfig(axes=dict(config.mesh), rules=rules,
                    **{k: v for k, v in sharding_cfg.items() if k != "rules"})


def optim_config(config) -> OptimConfig:
  return parse_dataclass(OptimConfig, config.optim, "optim")


def checkpoint_config(config) -> CheckpointConfig:
  return parse_dataclass(CheckpointConfig, config.checkpoint, "checkpoint")
