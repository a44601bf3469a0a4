"""What evaluators share: the model's named predict functions, the mesh and a task's eval data."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Iterator, Mapping

import jax
import numpy as np
from flax import nnx

from mmjax.config.registry import check
from mmjax.errors import ConfigError
from mmjax.runtime import sharding


@dataclasses.dataclass(frozen=True)
class EvalContext:
  """Built by mmjax/training/predict.py (`make_eval_context`), which makes the predict
  functions; an evaluator asks for the one it needs by name (`predict`)."""
  graphdef: Any
  mesh: jax.sharding.Mesh
  data: Mapping[str, Any]             # task name -> the task's data section
  predict_fns: Mapping[str, Mapping[str, Callable]]  # task name -> {name: fn(model, batch, ...)}
  batch_size: int
  process_index: int = 0
  process_count: int = 1

  @property
  def predict_names(self) -> dict[str, tuple]:
    return {t: tuple(fns) for t, fns in self.predict_fns.items()}

  def predict(self, task: str, name: str) -> Callable:
    fns = self.predict_fns[task]
    if name not in fns:
      raise ConfigError(f"task {task!r} has no predict function {name!r} (an evaluator of "
                        f"it needs one); it has {sorted(fns)}")
    return fns[name]

  def batches(self, task: str, split: str) -> Iterator[dict]:
    """Host-local numpy batches covering the split exactly once; padded rows have _valid=False."""
    from mmjax.data import pipeline  # evaluators need the data stack only when they run
    data_cfg = self.data[task]
    yield from pipeline.iter_eval_batches(
        data_cfg, split=split or data_cfg.eval_split, batch_size=self.batch_size,
        process_index=self.process_index, process_count=self.process_count)

  def to_device(self, batch: Mapping[str, np.ndarray]) -> dict:
    return sharding.global_batch(batch, self.mesh)

  def jit(self, fn: Callable) -> Callable:
    """jit of fn(model, batch) -> pytree of arrays, taking (params, batch)."""
    graphdef = self.graphdef
    return jax.jit(lambda params, batch: fn(nnx.merge(graphdef, params), batch))


@dataclasses.dataclass(frozen=True)
class ObjectiveEvalConfig:
  """The config of an evaluator that scores one objective's predict function
  (`<prefix><objective>`); subclasses set `prefix` and `kind` (the objectives' kind, for
  messages) and add `build`."""
  prefix: ClassVar[str] = ""
  kind: ClassVar[str] = ""
  task: str = "default"
  objective: str = ""   # which objective of the task; "" = the only one with the prefix
  split: str = ""       # "" = the task's data.eval_split
  every_steps: int = 1000

  def __post_init__(self):
    check(self.every_steps > 0, "every_steps", "must be a positive integer")

  def check(self, predict_names, key: str) -> str:
    """The name of the predict function this evaluator scores; ConfigError naming the
    valid objectives unless exactly one matches."""
    candidates = [n[len(self.prefix):] for n in predict_names if n.startswith(self.prefix)]
    chosen = [o for o in candidates if not self.objective or o == self.objective]
    if len(chosen) != 1:
      raise ConfigError(f"config.{key}.objective={self.objective!r} must name one "
                        f"{self.kind} objective of task {self.task!r}; valid: {candidates}")
    return self.prefix + chosen[0]


def gather(x) -> np.ndarray:
  """The full value on every host (small eval data only): of a global jax.Array, its value;
  of a host-local numpy array, every process's rows concatenated in process order -- the row
  order of a global batch, so host data lines up with the gathered outputs of that batch."""
  if jax.process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def strip_private(batch: Mapping[str, np.ndarray]) -> dict:
  """Batch without bookkeeping keys (those starting with '_') for the model."""
  return {k: v for k, v in batch.items() if not k.startswith("_")}
