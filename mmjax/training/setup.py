"""Set-up of a run, top to bottom: Mesh, Model, Shard, Input, Update step. Returns a `Run`:
everything the loop needs, compiled and placed, with nothing yet written to the workdir."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from mmjax.errors import ConfigError
from mmjax.experiment import Experiment
from mmjax.experiment.mesh import checked_mesh
from mmjax.models import logical_axes
from mmjax.perf import flops as flops_lib
from mmjax.perf.wallclock import WallClock
from mmjax.runtime import sharding
from mmjax.training import optimizer as optim
from mmjax.training.compiled_steps import CompiledSteps, peek
from mmjax.training.metric_windows import StepCost
from mmjax.training.step import abstract_train_state, make_train_step, with_shardings


@dataclasses.dataclass
class Run:
  """A run, set up: its experiment, mesh, abstract state, compiled steps and input."""
  experiment: Experiment
  mesh: jax.sharding.Mesh
  graphdef: Any
  init_fn: Callable  # () -> TrainState, jitted with the state's shardings by the caller
  abstract: Any      # the TrainState's ShapeDtypeStructs, with their shardings
  shardings: Any     # the TrainState's NamedShardings
  steps: CompiledSteps
  iterators: dict    # task -> iterator of host-local numpy batches
  first: dict        # task -> its first batch, on the devices (what warmed the steps up)
  clock: WallClock
  n_params: int


def _shardings(exp: Experiment, mesh, abstract):
  try:
    rules = exp.mesh.rules
    sharding.check_experts_divide(abstract.params, mesh, rules)
    state_sh = sharding.state_shardings(abstract, mesh, rules)
    sharding.check_sufficiently_sharded(abstract.params, state_sh.params, mesh,
                                        exp.mesh.max_replicated_params)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  return state_sh


def _iterators(exp: Experiment) -> dict:
  from mmjax.data import pipeline  # the data stack is only needed once training starts
  seed = exp.trainer.seed
  return {name: pipeline.make_train_iterator(
      task.data, batch_size=task.batch_size, seed=task.seed(seed),
      process_index=jax.process_index(), process_count=jax.process_count())
      for name, task in exp.tasks.items()}


def compiled_steps(exp: Experiment, mesh, graphdef, optimizer, abstract_sh, state_sh
                   ) -> CompiledSteps:
  """One compiled update step per (task, batch shapes), each task's cost counted on the host."""
  halt, rules = exp.trainer.nan_policy == "halt", exp.mesh.rules

  def lower(name: str, batch):
    task = exp.tasks[name]
    fn = make_train_step(graphdef, task.objectives, optimizer, task.seed(exp.trainer.seed),
                         task.microbatches, freeze_after_nonfinite=halt,
                         lr_multiplier=task.settings.lr_multiplier,
                         token_drop=task.settings.token_drop, modalities=exp.model.modalities)
    with logical_axes.activation_sharding(sharding.activation_sharder(mesh, rules)):
      jitted = jax.jit(fn, donate_argnums=0, out_shardings=(state_sh, sharding.replicated(mesh)))
      return jitted.lower(abstract_sh, batch)

  def step_cost(name: str, batch) -> StepCost:
    task, shapes = exp.tasks[name], {k: v.shape for k, v in batch.items()}
    drop = task.settings.token_drop
    return StepCost(examples=task.batch_size,
                    tokens=flops_lib.tokens_per_step(exp.model, task.objectives, shapes, drop),
                    flops=flops_lib.train_step_flops(exp.model, task.objectives, shapes,
                                                     task.microbatches, drop))

  return CompiledSteps(exp.objectives, lower, step_cost, exp.trainer.compile_threads)


def set_up(exp: Experiment, iterators: dict | None = None) -> Run:
  """Builds the run; `iterators` ({task: iterator}) replace the tasks' data pipelines."""
  clock = WallClock()
  # ------------------------------------------------------------------ Mesh
  mesh = checked_mesh(exp)
  # ------------------------------------------------------------------ Model
  optimizer = optim.make_optimizer(exp.optim, exp.total_steps)
  graphdef, init_fn, abstract = abstract_train_state(exp.model, exp.trainer.seed, optimizer)
  # ------------------------------------------------------------------ Shard
  state_sh = _shardings(exp, mesh, abstract)
  abstract_sh = with_shardings(abstract, state_sh)
  # ------------------------------------------------------------------ Input
  if iterators is None:
    with clock("data"):
      iterators = _iterators(exp)
  # ------------------------------------------------------------------ Update step
  steps = compiled_steps(exp, mesh, graphdef, optimizer, abstract_sh, state_sh)
  # Every task's step is compiled now, from one batch of each (read, then put back), so
  # no step compiles once the loop runs.
  with clock("data"):
    first = {name: sharding.global_batch(peek(it), mesh) for name, it in iterators.items()}
  with clock("compile"):
    steps.warm_up(first)
  return Run(exp, mesh, graphdef, init_fn, abstract_sh, state_sh, steps, iterators, first,
             clock, flops_lib.param_count(abstract.params))
