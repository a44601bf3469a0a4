"""The training loop, top to bottom: Mesh, Model, Shard & init, Input, Update step,
Checkpoint, Evals, Loop. `mmjax.train` is the command line around `train()`.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import time

import jax
import numpy as np
from flax import nnx

from mmjax import aot, build, distributed, evaluators, optim, perf, schedules, sharding
from mmjax import workdir as workdir_lib
from mmjax.checkpoint import Checkpointer, CheckpointError
from mmjax.config import ConfigError
from mmjax.errors import MmjaxError
from mmjax.data.prefetch import Prefetcher
from mmjax.metrics_writer import MetricsWriter
from mmjax.models import axes
from mmjax.models.model import build_model
from mmjax.objectives.base import missing_inputs
from mmjax.train_step import init_state, make_train_step
from mmjax.wallclock import WallClock
from mmjax.watchdog import StepWatchdog

log = logging.getLogger("mmjax.train")


class NonFiniteError(MmjaxError, FloatingPointError):
  """A step produced a NaN/Inf loss or gradient under nan_policy='halt'."""


class StopRequested:
  """Turns SIGTERM/SIGINT into a flag the loop checks after each step (save, then exit)."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    for s in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[s] = signal.signal(s, self._handle)
      except ValueError:  # not the main thread (e.g. called from a test runner thread)
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum

  def __exit__(self, *exc):
    for s, h in self._previous.items():
      signal.signal(s, h)

  def __bool__(self):
    return self.signum is not None


def save_failed(error: Exception, ckpt: Checkpointer) -> str:
  return (f"saving a checkpoint under {ckpt.directory} failed: {type(error).__name__}: {error}. "
          f"Training stopped; the last complete checkpoint is step {ckpt.latest_step()}. Fix the "
          f"cause (disk space, permissions) and rerun the same command to resume.")


def abstract_train_state(config, spec, optimizer):
  """(graphdef, init function, abstract TrainState) without allocating anything."""
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: build_model(spec, config.seed)))

  def init():
    return init_state(lambda: nnx.split(build_model(spec, config.seed), nnx.Param)[1], optimizer)

  return graphdef, init, jax.eval_shape(init)


def with_shardings(abstract, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


def batch_signature(batch) -> tuple:
  return tuple(sorted((k, tuple(v.shape), str(v.dtype)) for k, v in batch.items()))


def _mean_metrics(rows: list[dict]) -> dict:
  keys = rows[0].keys()
  return {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}


def train(config, workdir: str, *, compile_only: bool = False) -> dict:
  """Trains (or resumes) into `workdir`; returns the last logged and eval metrics."""
  clock = WallClock()
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)

  # ------------------------------------------------------------------ Mesh
  try:
    mesh = sharding.make_mesh(config.mesh)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  tensor = mesh.shape["tensor"]
  for key, n in (("num_heads", config.model.num_heads), ("mlp_dim", config.model.mlp_dim)):
    if n % tensor:
      raise ConfigError(f"config.model.{key}={n} is not divisible by the tensor-parallel size "
                        f"{tensor} (mesh {dict(mesh.shape)}); pick a multiple of {tensor}")
  data_parallel = sharding.data_parallel_size(mesh)
  for name, task in config.tasks.items():
    if task.batch_size % data_parallel:
      raise ConfigError(f"config.tasks.{name}.batch_size={task.batch_size} is not divisible by "
                       f"the data-parallel size {data_parallel} (mesh {dict(mesh.shape)})")

  # ------------------------------------------------------------------ Model
  objectives = build.task_objectives(config)
  spec = build.model_spec(config, objectives)
  optimizer = optim.make_optimizer(config.optim, config.total_steps)
  schedule_fn = optim.learning_rate_schedule(config.optim, config.total_steps)
  graphdef, init_fn, abstract = abstract_train_state(config, spec, optimizer)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))

  # ------------------------------------------------------------------ Shard & init
  try:
    rules = sharding.rules_from_config(config.sharding.rules)
    sharding.check_experts_divide(abstract.params, mesh, rules)
    state_sh = sharding.state_shardings(abstract, mesh, rules)
    sharding.check_sufficiently_sharded(abstract.params, state_sh.params, mesh,
                                        config.sharding.max_replicated_params)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  abstract_sh = with_shardings(abstract, state_sh)

  # ------------------------------------------------------------------ Input
  from mmjax.data import pipeline  # the data stack is only needed once training starts
  iterators = {}
  with clock("data"):
    for name, task in config.tasks.items():
      iterators[name] = pipeline.make_train_iterator(
          task.data, batch_size=task.batch_size, seed=config.seed,
          process_index=jax.process_index(), process_count=jax.process_count())
  schedule = schedules.make_schedule(config)

  # ------------------------------------------------------------------ Update step
  compiled_steps: dict = {}
  step_flops: dict = {}

  def compiled_step(task: str, batch):
    key = (task, batch_signature(batch))
    if key not in compiled_steps:
      for o in objectives[task]:
        problem = missing_inputs(o.batch_keys(), batch.keys(), o.name, task)
        if problem:
          raise ConfigError(problem)
      fn = make_train_step(graphdef, objectives[task], optimizer, config.seed,
                           config.tasks[task].microbatches)
      with clock("compile"), axes.activation_sharding(sharding.activation_sharder(mesh, rules)):
        jitted = jax.jit(fn, donate_argnums=0, out_shardings=(state_sh, sharding.replicated(mesh)))
        compiled_steps[key] = jitted.lower(abstract_sh, batch).compile()
      step_flops[key] = perf.compiled_flops(compiled_steps[key])
      log.info("compiled the step of task %r for %s", task, dict((k, s) for k, s, _ in key[1]))
    return compiled_steps[key], step_flops[key]

  if compile_only:
    out = {}
    for name in config.tasks:
      batch = sharding.global_batch(next(iterators[name]), mesh)
      compiled, flops = compiled_step(name, batch)
      out[name] = dict(aot.memory_report(abstract_sh, compiled), flops=flops)
      if is_main:
        print(aot.format_report(name, out[name], flops), file=sys.stderr)
    return out

  # ------------------------------------------------------------------ Checkpoint
  ckpt = Checkpointer(workdir_lib.checkpoint_dir(workdir), keep=config.checkpoint.keep,
                      async_save=config.checkpoint.async_save)
  start_step = ckpt.latest_step()
  with clock("restore" if start_step is not None else "init"):
    if start_step is not None:
      state, data_states = ckpt.restore(start_step, abstract_sh)
      log.info("resumed from %s/%d", ckpt.directory, start_step)
    else:
      # Created directly with its final shardings: never materialised on one device.
      state = jax.jit(init_fn, out_shardings=state_sh)()
      data_states = {}
  if is_main:
    workdir_lib.write_config(workdir, config)

  with clock("data"):
    for name, it in iterators.items():
      if name in data_states:
        it.set_state(data_states[name])
      elif start_step is not None:
        log.warning("task %r has no input state in the checkpoint; its data starts over", name)
    if config.prefetch_batches:
      iterators = {n: Prefetcher(it, config.prefetch_batches) for n, it in iterators.items()}

  # ------------------------------------------------------------------ Evals
  ctx = evaluators.EvalContext(graphdef=graphdef, mesh=mesh, tasks=config.tasks,
                               objectives=objectives, batch_size=config.eval_batch_size,
                               process_index=jax.process_index(),
                               process_count=jax.process_count())
  evals = evaluators.make_evaluators(config.evals, ctx)

  def run_evals(step: int, final: bool) -> dict:
    results = {}
    for ev in evals:
      if final or step % ev.every_steps == 0:
        with clock("eval"), watchdog.paused():
          results.update(ev.run(state.params))
    return results

  # ------------------------------------------------------------------ Loop
  writer = MetricsWriter(workdir, enabled=is_main)
  peak = perf.matmul_flops_per_s(seconds=0.5) * jax.local_device_count() if is_main else 0.0
  step = int(start_step or 0)
  last_saved = start_step
  window: list[dict] = []
  window_start, window_steps, window_examples, window_flops = time.perf_counter(), 0, 0, 0.0
  logged: dict = {}
  bar = None
  if is_main and config.progress:
    from tqdm import tqdm
    bar = tqdm(total=config.total_steps, initial=step, unit="step", dynamic_ncols=True)

  def save(at_step: int):
    if int(state.first_bad_step) >= 0 and config.nan_policy == "halt":
      return  # never write a checkpoint after a bad step (it is not reached; defensive)
    with clock("checkpoint"), watchdog.paused():
      try:
        ckpt.save(at_step, state, {n: it.get_state() for n, it in iterators.items()})
      except Exception as e:  # includes the error of an earlier background save
        raise CheckpointError(save_failed(e, ckpt)) from e

  log.info("model: %s params; mesh %s; %d tasks; from step %d to %d", f"{n_params:,}",
           dict(mesh.shape), len(config.tasks), step, config.total_steps)
  stop = StopRequested()
  watchdog = StepWatchdog(config.watchdog_timeout_s, jax.process_index(),
                          jax.process_count()).start()
  try:
    with stop:
      stopping = False
      while step < config.total_steps:
        # A signal reaches the processes at slightly different steps; all must stop at the
        # same one, or one would wait forever in a collective the others never enter.
        stopping = distributed.any_process(bool(stop))
        if stopping:
          break
        task = schedule.task_at(step)
        with clock("data"):
          local = next(iterators[task])
          batch = sharding.global_batch(local, mesh)
        with watchdog.paused():
          compiled, flops = compiled_step(task, batch)
        with clock("step"):
          state, metrics = compiled(state, batch)
          metrics = jax.device_get(metrics)
        step += 1
        watchdog.step_done(step)
        if not metrics["finite"]:
          bad = f"non-finite loss or gradient at step {step - 1} (task {task!r}, " \
                f"loss={metrics['loss']}, grad_norm={metrics['grad_norm']})"
          if config.nan_policy == "halt":
            raise NonFiniteError(
                f"{bad}; the update was not applied and no checkpoint was written after it "
                f"(last good: step {last_saved}). Lower optim.learning_rate, or set "
                f"--config.nan_policy=skip to drop such steps.")
          log.warning("%s: update skipped (nan_policy=skip)", bad)
        window.append({f"train/{task}/{k}": v for k, v in metrics.items()})
        window_steps += 1
        window_examples += config.tasks[task].batch_size
        window_flops += flops
        if bar is not None:
          bar.update(1)

        if step % config.log_every_steps == 0 or step == config.total_steps:
          dt = time.perf_counter() - window_start
          logged = _mean_metrics(window)
          logged.update({
              "train/learning_rate": float(schedule_fn(step - 1)),
              "perf/steps_per_s": window_steps / dt,
              "perf/examples_per_s": window_examples / dt,
              "perf/mfu": (window_flops / dt / peak) if peak else 0.0,
              "train/skipped_steps": float(state.skipped_steps),
              **clock.report()})
          writer.write(step, logged)
          if bar is not None:
            bar.set_postfix(loss=f"{logged.get(f'train/{task}/loss', float('nan')):.3f}",
                            ex_s=f"{logged['perf/examples_per_s']:.0f}",
                            mfu=f"{logged['perf/mfu']:.0%}", refresh=False)
          window, window_steps, window_examples, window_flops = [], 0, 0, 0.0
          window_start = time.perf_counter()
        if step % config.checkpoint.every_steps == 0 or step == config.total_steps:
          save(step)
          last_saved = step
        if step < config.total_steps:
          results = run_evals(step, final=False)
          if results:
            writer.write(step, results)
            logged.update(results)
      if stopping:
        log.warning("signal %s: saving step %d and exiting; rerun the same command to resume",
                    stop.signum or "(received by another process)", step)
        if last_saved != step:
          save(step)
          last_saved = step
    with clock("checkpoint"):
      try:
        ckpt.wait()  # a failed background save raises here, never silently
      except Exception as e:
        raise CheckpointError(save_failed(e, ckpt)) from e
    if step >= config.total_steps and not stopping:
      results = run_evals(step, final=True)
      writer.write(step, results)
      logged.update(results)
    if is_main:
      log.info("time: %s", clock.summary())
    writer.write(step, clock.report())
    logged.update(clock.report())
    logged["step"] = step
    return logged
  finally:
    watchdog.stop()
    log.info("process %d: last completed step %d", jax.process_index(), step)
    if bar is not None:
      bar.close()
    writer.close()
    for it in iterators.values():
      if isinstance(it, Prefetcher):
        it.close()
    try:
      ckpt.close()
    except Exception:  # already reported above; do not mask the original error
      pass
