"""The training loop, top to bottom: Mesh, Model, Shard & init, Input, Update step,
Checkpoint, Evals, Loop. `mmjax.train` is the command line around `train()`.

The loop itself only takes a batch, runs the compiled step and calls the hooks; periodic
work (logging, checkpointing, evaluation, the watchdog, the cross-process stop agreement)
is registered as hooks with a period (mmjax/training/hooks.py). Nothing waits for the device in
the steady state: a log step closes its window of metrics, and a window is fetched and
written once its last step has finished -- at the next log step at the latest, while the
device works on the steps dispatched since (a fetch of the newest step would leave the
device idle while the host writes). A non-finite step is found in the written windows
(then named exactly from the state's `first_bad_step`) and before every save.
"""
from __future__ import annotations

import collections
import logging
import os
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

from mmjax import evaluators, schedules
from mmjax.perf import memory as aot
from mmjax.experiment import build
from mmjax.runtime import distributed
from mmjax.training import optimizer as optim
from mmjax.perf import peak as perf
from mmjax.runtime import sharding
from mmjax.checkpoint import write_errors
from mmjax.checkpoint import workdir as workdir_lib
from mmjax.checkpoint import workdir_lock
from mmjax.checkpoint.checkpointer import Checkpointer, CheckpointError
from mmjax.training.compiled_steps import CompiledSteps, peek
from mmjax.config.recipe import ConfigError
from mmjax.errors import MmjaxError
from mmjax.data.prefetch import Prefetcher
from mmjax.training.hooks import Hooks
from mmjax.training.metrics_writer import MetricsWriter
from mmjax.models import logical_axes as axes
from mmjax.models.model import build_model, dtype_from_name
from mmjax.perf import flops as flops_lib
from mmjax.training.progress import ProgressBar
from mmjax.perf.step_times import StepTimes
from mmjax.config.task_settings import all_task_settings
from mmjax.runtime.signals import StopRequested
from mmjax.training.metric_windows import (Accounting, ClosedWindow, MetricWindow, StepCost, mean_metrics,
                                 perf_metrics, task_perf_metrics)
from mmjax.experiment.mesh import checked_mesh
from mmjax.training.step import abstract_train_state, make_train_step, with_shardings
from mmjax.perf.wallclock import WallClock
from mmjax.runtime.watchdog import StepWatchdog

log = logging.getLogger("mmjax.train")

STOP_CHECK_EVERY_STEPS = 10  # default of config.stop_check_every_steps (older configs lack it)


class NonFiniteError(MmjaxError, FloatingPointError):
  """A step produced a NaN/Inf loss or gradient under nan_policy='halt'."""


def save_failed(error: Exception, ckpt: Checkpointer) -> str:
  return write_errors.stopped(f"saving a checkpoint under {ckpt.directory}", error,
                              ckpt.latest_step())


def nonfinite_message(step: int, task: str, metrics: dict | None, last_good: int | None) -> str:
  values = f", loss={metrics['loss']}, grad_norm={metrics['grad_norm']}" if metrics else ""
  saved = (f"last good checkpoint: step {last_good}" if last_good is not None
           else "no checkpoint exists yet")
  return (f"non-finite loss or gradient at step {step} (task {task!r}{values}); no update was "
          f"applied from it on and no checkpoint was written after it ({saved}). Lower "
          f"optim.learning_rate, or set --config.nan_policy=skip to drop such steps.")


def train(config, workdir: str, *, compile_only: bool = False, iterators: dict | None = None
          ) -> dict:
  """Trains (or resumes) into `workdir`; returns the last logged and eval metrics.

  iterators: optional {task: iterator of host-local numpy batches} to train on instead of
  the tasks' data pipelines (benchmarks, tests); each needs get_state()/set_state() for
  checkpoints (mmjax.data.memory.InMemoryIterator has them).
  """
  clock = WallClock()
  is_main = jax.process_index() == 0

  # ------------------------------------------------------------------ Mesh
  mesh = checked_mesh(config)

  # ------------------------------------------------------------------ Model
  objectives = build.task_objectives(config)
  spec = build.model_spec(config, objectives)
  settings = all_task_settings(config)  # per task: seed offset, lr multiplier, token drop
  optimizer = optim.make_optimizer(config.optim, config.total_steps)
  learning_rate = optim.HostSchedule(optim.learning_rate_schedule(config.optim,
                                                                   config.total_steps))
  graphdef, init_fn, abstract = abstract_train_state(config, spec, optimizer)
  n_params = flops_lib.param_count(abstract.params)

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
  if iterators is None:
    from mmjax.data import pipeline  # the data stack is only needed once training starts
    with clock("data"):
      iterators = {name: pipeline.make_train_iterator(
          task.data, batch_size=task.batch_size, seed=settings[name].seed(config.seed),
          process_index=jax.process_index(), process_count=jax.process_count())
          for name, task in config.tasks.items()}
  schedule = schedules.make_schedule(config)

  # ------------------------------------------------------------------ Update step
  halt = config.nan_policy == "halt"

  def lower(task: str, batch):
    s = settings[task]
    fn = make_train_step(graphdef, objectives[task], optimizer, s.seed(config.seed),
                         config.tasks[task].microbatches, freeze_after_nonfinite=halt,
                         lr_multiplier=s.lr_multiplier, token_drop=s.token_drop,
                         modalities=spec.modalities)
    with axes.activation_sharding(sharding.activation_sharder(mesh, rules)):
      jitted = jax.jit(fn, donate_argnums=0, out_shardings=(state_sh, sharding.replicated(mesh)))
      return jitted.lower(abstract_sh, batch)

  def step_cost(task: str, batch) -> StepCost:
    shapes = {k: v.shape for k, v in batch.items()}
    drop = settings[task].token_drop
    return StepCost(
        examples=int(config.tasks[task].batch_size),
        tokens=flops_lib.tokens_per_step(spec, objectives[task], shapes, drop),
        flops=flops_lib.train_step_flops(spec, objectives[task], shapes,
                                         config.tasks[task].microbatches, drop))

  steps = CompiledSteps(objectives, lower, step_cost, config.get("compile_threads", 0))
  # Every task's step is compiled now, from one batch of each (read, then put back), so
  # no step compiles once the loop runs.
  with clock("data"):
    first = {name: sharding.global_batch(peek(it), mesh) for name, it in iterators.items()}
  with clock("compile"):
    steps.warm_up(first)

  if compile_only:
    out = {}
    try:
      for name in config.tasks:
        compiled, cost = steps.get(name, first[name])
        xla_flops = perf.compiled_flops(compiled)  # per device, as XLA counts it
        out[name] = dict(aot.memory_report(abstract_sh, compiled), flops=xla_flops,
                         analytic_flops=cost.flops, compile_s=steps.times[name].total_s)
        if is_main:
          print(aot.format_report(name, out[name], xla_flops), file=sys.stderr)
    finally:  # grain workers and threads stop here, as after training
      for it in iterators.values():
        it.close()
    return out

  del first  # no device memory held for the run's length

  # ------------------------------------------------------------------ Checkpoint
  # Nothing is written into the workdir before this point, so a bad config leaves none.
  lock = workdir_lock.acquire_for_job(workdir, jax.process_index(), jax.process_count())
  ckpt = Checkpointer(workdir_lib.checkpoint_dir(workdir), keep=config.checkpoint.keep,
                      async_save=config.checkpoint.async_save)
  try:
    with clock("restore"):  # verified; damaged newer steps are named and moved aside
      start_step, state, data_states = ckpt.restore_latest_good(abstract_sh)
    if start_step is not None:
      log.info("resumed from %s/%d", ckpt.directory, start_step)
      # A bad step recorded by an earlier nan_policy=skip run must not freeze this one.
      if halt and int(jax.device_get(state.first_bad_step)) >= 0:
        state = state.replace(first_bad_step=jax.device_put(
            jnp.full((), -1, jnp.int32), state_sh.first_bad_step))
    else:
      with clock("init"):  # created with its final shardings: never on one device first
        state = jax.jit(init_fn, out_shardings=state_sh)()
    if is_main:
      workdir_lib.write_config(workdir, config)
  except BaseException:
    ckpt.close()
    if lock is not None:
      lock.release()
    raise

  with clock("data"):
    for name, it in iterators.items():
      if name in data_states:
        it.set_state(data_states[name])
      elif start_step is not None:
        log.warning("task %r has no input state in the checkpoint; its data starts over", name)
    # Batches reach the loop already on the devices with their final sharding: placed by
    # the prefetch thread ahead of the step, or here when prefetching is off.
    place = lambda local: sharding.global_batch(local, mesh)
    if config.prefetch_batches:
      iterators = {n: Prefetcher(it, config.prefetch_batches, place)
                   for n, it in iterators.items()}
      place = lambda batch: batch

  def check_finite() -> None:
    """Under nan_policy=halt, raises naming the first non-finite step (a scalar fetch)."""
    bad = int(jax.device_get(state.first_bad_step)) if halt else -1
    if bad < 0:
      return
    # The bad step's values, if still in memory.
    records = fetched + [r for p in pending for r in p.window.fetch()] + window.fetch()
    row = next((r.metrics for r in records if r.step == bad), None)
    try:
      ckpt.wait()  # saves still in flight hold good states (each was checked before)
    except Exception:  # reported by the save hook's own error path; the NaN is the news
      pass
    raise NonFiniteError(nonfinite_message(bad, schedule.task_at(bad), row, ckpt.latest_step()))

  def save(at_step: int) -> None:
    check_finite()  # never write a checkpoint after a bad step
    write_pending()  # every row up to a checkpoint is in metrics.jsonl before it exists
    with clock("checkpoint"), watchdog.paused():
      try:
        ckpt.save(at_step, state, {n: it.get_state() for n, it in iterators.items()})
      except Exception as e:  # includes the error of an earlier background save
        raise CheckpointError(save_failed(e, ckpt)) from e

  # ------------------------------------------------------------------ Evals
  ctx = evaluators.EvalContext(graphdef=graphdef, mesh=mesh, tasks=config.tasks,
                               objectives=objectives, batch_size=config.eval_batch_size,
                               process_index=jax.process_index(),
                               process_count=jax.process_count())
  evals = evaluators.make_evaluators(config.evals, ctx)

  def run_evals(step: int, which) -> None:
    write_pending()  # rows stay in step order
    results = {}
    for ev in which:
      with clock("eval"), watchdog.paused():
        results.update(ev.run(state.params))
    if results:
      writer.write(step, results)
      logged.update(results)

  # ------------------------------------------------------------------ Loop
  writer = MetricsWriter(workdir, enabled=is_main, resume_step=start_step,
                         last_checkpoint=ckpt.latest_step)
  step = int(start_step or 0)
  last_saved = start_step
  window, fetched, logged = MetricWindow(), [], {}
  pending: collections.deque[ClosedWindow] = collections.deque()
  logged_step = None  # the step of the last row written
  accounting = Accounting(schedule, step)
  step_times = StepTimes()
  with clock("peak"):  # only process 0 writes metrics
    dtype = jnp.dtype(dtype_from_name(spec.dtype)).name
    peak = perf.job_peak(jax.devices(), dtype, jax.process_count()) if is_main else None
  # Throughput windows leave out compiling and evaluating (one-off or not training).
  not_stepping = lambda: clock.totals.get("compile", 0.0) + clock.totals.get("eval", 0.0)
  skipped = int(jax.device_get(state.skipped_steps))  # counted on the host from here on
  learning_rate(max(step - 1, 0))  # its first values, before any step is in flight
  stop, stopping = StopRequested(), False
  watchdog = StepWatchdog(config.watchdog_timeout_s, jax.process_index(),
                          jax.process_count()).start()
  bar = (ProgressBar(config.total_steps, step, list(config.tasks))
         if is_main and config.progress else None)

  def write_window(closed: ClosedWindow) -> None:
    nonlocal fetched, window_end, window_excluded, logged, logged_step, skipped
    step = closed.step
    with clock("step"):  # waiting here for the device is the steps' time
      fetched = closed.window.fetch()
      times = step_times.take(closed.steps_added)
    bad = [r.step for r in fetched if not r.metrics["finite"]]
    if bad and halt:
      check_finite()  # raises, naming the first bad step
    if bad:
      log.warning("non-finite loss or gradient at steps %s: updates skipped (nan_policy=skip)",
                  bad)
    skipped += len(bad)
    dt = times.end - window_end - (closed.excluded_s - window_excluded)
    logged = mean_metrics(fetched)
    logged.update(perf_metrics(closed.window.take_costs(), dt,
                               peak.flops_per_s if peak else 0.0))
    logged.update(task_perf_metrics(times.seconds, times.steps, accounting.cost))
    # Outside compiling and evaluating (their waits are one-off, or not training).
    waited = max(times.waited_s - (closed.excluded_s - window_excluded), 0.0)
    logged["perf/device_wait_fraction"] = waited / dt if dt > 0 else 0.0
    logged.update({f"perf/{t}/flops_per_step": c.flops for t, c in accounting.cost.items()})
    logged.update({f"perf/{t}/compile_s": c.total_s for t, c in steps.times.items()})
    logged["perf/compiles"] = float(steps.count)
    logged.update(closed.totals)
    logged.update({"model/params": float(n_params),
                   "model/active_params": float(flops_lib.active_param_count(spec, n_params)),
                   "train/learning_rate": learning_rate(step - 1),
                   "train/skipped_steps": float(skipped),
                   **clock.report()})
    writer.write(step, logged)
    logged_step = step
    if bar is not None:
      bar.logged(fetched[-1].task, logged)
    window_end, window_excluded = times.end, closed.excluded_s

  def write_pending() -> None:
    """Writes the closed windows, then accounting.json as of the last of them."""
    while pending:
      write_window(pending.popleft())
    # At saves and at the end only: rewriting it at every log step cost ~5 ms of host time
    # (a rename), a few % of a small model's steps.
    if is_main and logged_step is not None:
      workdir_lib.write_json(os.path.join(workdir, "accounting.json"), dict(
          step=logged_step, tasks=accounting.summary(), compile=steps.summary(),
          peak_source=peak.source,
          **{k: logged[k] for k in ("model/params", "train/examples", "train/tokens",
                                    "perf/flops", "perf/peak_flops_per_s")}))

  def write_log(step: int) -> None:
    nonlocal window
    pending.append(ClosedWindow(step, window, step_times.added, not_stepping(),
                                accounting.totals()))
    window = MetricWindow()
    # The window before ended a log period ago (its steps are done, or nearly): written
    # now, with the steps dispatched since in flight. This one waits, unless already done.
    while pending and (len(pending) > 1 or pending[0].window.ready()):
      write_window(pending.popleft())

  def save_hook(step: int) -> None:
    nonlocal last_saved
    save(step)
    last_saved = step

  def agree_on_stop(step: int) -> None:
    # A signal reaches the processes at slightly different steps; all must stop at the
    # same one, or one would wait forever in a collective the others never enter. So the
    # processes agree at fixed steps, every few steps (a collective costs a round trip).
    nonlocal stopping
    stopping = distributed.any_process(bool(stop))

  hooks = Hooks(last_step=config.total_steps)
  hooks.add("watchdog", 1, watchdog.step_done)
  if bar is not None:
    hooks.add("progress", 1, lambda s: bar.step_done(schedule.task_at(s - 1), accounting.steps))
  hooks.add("log", config.log_every_steps, write_log)
  hooks.add("checkpoint", config.checkpoint.every_steps, save_hook)
  for every in sorted({ev.every_steps for ev in evals}):  # one metrics row per period
    due = [ev for ev in evals if ev.every_steps == every]
    # The last step's evals run after the final save (below).
    hooks.add(f"evals/{every}", every, lambda s, due=due: run_evals(s, due), at_last_step=False)
  hooks.add("stop", config.get("stop_check_every_steps", STOP_CHECK_EVERY_STEPS), agree_on_stop)

  log.info("model: %s params; mesh %s; %d tasks; from step %d to %d; peak %.4g FLOP/s (%s)",
           f"{n_params:,}", dict(mesh.shape), len(config.tasks), step, config.total_steps,
           peak.flops_per_s if peak else 0.0, peak.source if peak else "process 0 measures")
  # Where the last written window ended, as the device saw it (step_times' end stamps).
  window_end, window_excluded = time.perf_counter(), not_stepping()
  try:
    with stop:
      while step < config.total_steps and not stopping:
        task = schedule.task_at(step)
        with clock("data"):
          batch = place(next(iterators[task]))
        found = steps.lookup(task, batch)
        if found is None:  # a batch of new shapes: compiled once more (logged)
          with watchdog.paused(), clock("compile"):
            found = steps.get(task, batch)
        compiled, cost = found
        with clock("step"):
          dispatched = step_times.dispatched()
          state, metrics = compiled(state, batch)
        step_times.add(task, dispatched, metrics)
        window.add(step, task, metrics, cost)
        accounting.record(task, cost)
        step += 1
        hooks.after_step(step)
      if stopping:
        log.warning("signal %s: saving step %d and exiting; rerun the same command to resume",
                    stop.signum or "(received by another process)", step)
        if last_saved != step:
          save_hook(step)
    write_pending()
    with clock("checkpoint"):
      try:
        ckpt.wait()  # a failed background save raises here, never silently
      except Exception as e:
        raise CheckpointError(save_failed(e, ckpt)) from e
    if step >= config.total_steps and not stopping:
      run_evals(step, evals)
    if is_main:
      log.info("time: %s", clock.summary())
    writer.write(step, clock.report())
    logged.update(clock.report())
    logged["step"] = step
    return logged
  finally:
    watchdog.stop()
    step_times.close()
    log.info("process %d: last completed step %d", jax.process_index(), step)
    if bar is not None:
      bar.close()
    writer.close()
    for it in iterators.values():
      it.close()
    try:
      ckpt.close()
    except Exception:  # already reported above; do not mask the original error
      pass
    if lock is not None:
      lock.release()
