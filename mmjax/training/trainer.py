"""Training: `train(experiment, workdir)` sets the run up (mmjax/training/setup.py), opens the
workdir (its lock, its checkpoints: resumes from the newest good one), and runs the loop.

The loop (`Training.loop`) only takes a batch, runs the compiled step and calls the hooks;
periodic work -- logging (mmjax/training/metric_log.py), checkpointing
(mmjax/training/saver.py), evaluation, the watchdog, the cross-process stop agreement -- is
registered as hooks with a period (mmjax/training/hooks.py). `mmjax.train` is the command
line around `train()`.
"""
from __future__ import annotations

import logging
import sys

import jax
import jax.numpy as jnp

from mmjax import evaluators
from mmjax.checkpoint import workdir as workdir_lib
from mmjax.checkpoint import workdir_lock
from mmjax.checkpoint.checkpointer import Checkpointer
from mmjax.data.prefetch import Prefetcher
from mmjax.experiment import Experiment
from mmjax.models.model import dtype_from_name
from mmjax.perf import memory, peak as peak_lib
from mmjax.perf.step_times import StepTimes
from mmjax.runtime import distributed, sharding
from mmjax.runtime.signals import StopAgreement
from mmjax.runtime.watchdog import StepWatchdog
from mmjax.training import optimizer as optim, predict
from mmjax.training.hooks import Hooks
from mmjax.training.metric_log import MetricLog
from mmjax.training.metric_windows import Accounting
from mmjax.training.metrics_writer import MetricsWriter
from mmjax.training.progress import ProgressBar
from mmjax.training.saver import Saver
from mmjax.training.setup import Run, set_up

log = logging.getLogger("mmjax.train")


def compile_report(run: Run) -> dict:
  """Per task: what its compiled step holds per device, its FLOPs and compile time."""
  out = {}
  try:
    for name in run.experiment.tasks:
      compiled, cost = run.steps.get(name, run.first[name])
      xla_flops = peak_lib.compiled_flops(compiled)  # per device, as XLA counts it
      out[name] = dict(memory.memory_report(run.abstract, compiled), flops=xla_flops,
                       analytic_flops=cost.flops, compile_s=run.steps.times[name].total_s)
      if jax.process_index() == 0:
        print(memory.format_report(name, out[name], xla_flops), file=sys.stderr)
  finally:  # grain workers and threads stop here, as after training
    for it in run.iterators.values():
      it.close()
  return out


def restore_or_init(run: Run, ckpt: Checkpointer):
  """(start step or None, state, {task: input state}): the newest good checkpoint, verified
  (damaged newer steps are named and moved aside), or a fresh state."""
  with run.clock("restore"):
    start_step, state, data_states = ckpt.restore_latest_good(run.abstract)
  if start_step is None:
    with run.clock("init"):  # created with its final shardings: never on one device first
      return None, jax.jit(run.init_fn, out_shardings=run.shardings)(), {}
  log.info("resumed from %s/%d", ckpt.directory, start_step)
  # A bad step recorded by an earlier nan_policy=skip run must not freeze this one.
  if (run.experiment.trainer.nan_policy == "halt"
      and int(jax.device_get(state.first_bad_step)) >= 0):
    state = state.replace(first_bad_step=jax.device_put(
        jnp.full((), -1, jnp.int32), run.shardings.first_bad_step))
  return start_step, state, data_states


def place_input(run: Run, data_states: dict, resumed: bool):
  """The tasks' iterators at their saved positions, and the function that puts a batch on
  the devices: batches reach the loop already placed with their final sharding, by the
  prefetch thread ahead of the step, or in the loop when prefetching is off."""
  iterators, prefetch = run.iterators, run.experiment.trainer.prefetch_batches
  for name, it in iterators.items():
    if name in data_states:
      it.set_state(data_states[name])
    elif resumed:
      log.warning("task %r has no input state in the checkpoint; its data starts over", name)
  place = lambda local: sharding.global_batch(local, run.mesh)
  if prefetch:
    run.iterators = {n: Prefetcher(it, prefetch, place) for n, it in iterators.items()}
    place = lambda batch: batch
  return place


class Training:
  """One run in its workdir: the loop, the objects its hooks call, and their clean-up."""

  def __init__(self, run: Run, workdir: str, ckpt: Checkpointer):
    exp, is_main = run.experiment, jax.process_index() == 0
    self.run, self.ckpt, self.exp = run, ckpt, exp
    self.start_step, self.state, data_states = restore_or_init(run, ckpt)
    if is_main:
      workdir_lib.write_config(workdir, exp.config)
    self.step = int(self.start_step or 0)
    with run.clock("data"):
      self.place = place_input(run, data_states, self.start_step is not None)
    self.writer = MetricsWriter(workdir, enabled=is_main, resume_step=self.start_step,
                                last_checkpoint=ckpt.latest_step)
    self.step_times = StepTimes()
    with run.clock("peak"):  # only process 0 writes metrics
      dtype = jnp.dtype(dtype_from_name(exp.model.dtype)).name
      self.peak = (peak_lib.job_peak(jax.devices(), dtype, jax.process_count()) if is_main
                   else peak_lib.Peak(0.0, "process 0 measures"))
    learning_rate = optim.HostLearningRate(optim.learning_rate_fn(exp.optim,
                                                                        exp.total_steps))
    learning_rate(max(self.step - 1, 0))  # its first values, before any step is in flight
    self.bar = (ProgressBar(exp.total_steps, self.step, list(exp.tasks))
                if is_main and exp.trainer.progress else None)
    self.accounting = Accounting(exp.schedule, self.step)
    self.metric_log = MetricLog(run, workdir, self.writer, self.step_times, self.accounting,
                                self.peak, self.bar, learning_rate,
                                int(jax.device_get(self.state.skipped_steps)),
                                on_nonfinite=lambda: self.saver.check_finite(self.state))
    self.watchdog = StepWatchdog(exp.trainer.watchdog_timeout_s, jax.process_index(),
                                 jax.process_count())
    self.saver = Saver(ckpt, self.metric_log, run.iterators, self.watchdog, run.clock,
                       exp.schedule, exp.trainer.nan_policy == "halt", self.start_step)
    self.stop = StopAgreement(distributed.any_process)
    self.evals = evaluators.make_evaluators(exp.evals, predict.make_eval_context(
        run.graphdef, run.mesh, exp, process_index=jax.process_index(),
        process_count=jax.process_count()))
    self.hooks = self._hooks()

  def _hooks(self) -> Hooks:
    trainer, schedule = self.exp.trainer, self.exp.schedule
    hooks = Hooks(last_step=trainer.total_steps)
    hooks.add("watchdog", 1, self.watchdog.step_done)
    if self.bar is not None:
      steps, bar = self.accounting.steps, self.bar
      hooks.add("progress", 1, lambda s: bar.step_done(schedule.task_at(s - 1), steps))
    hooks.add("log", trainer.log_every_steps, self.metric_log.close_window)
    hooks.add("checkpoint", self.exp.checkpoint.every_steps,
              lambda s: self.saver.save(s, self.state))
    for every in sorted({ev.every_steps for ev in self.evals}):  # one metrics row per period
      due = [ev for ev in self.evals if ev.every_steps == every]
      # The last step's evals run after the final save (in `finish`).
      hooks.add(f"evals/{every}", every, lambda s, due=due: self.evaluate(s, due),
                at_last_step=False)
    hooks.add("stop", trainer.stop_check_every_steps, self.stop.check)
    return hooks

  def evaluate(self, step: int, which) -> None:
    results = {}
    for ev in which:
      with self.run.clock("eval"), self.watchdog.paused():
        results.update(ev.run(self.state.params))
    self.metric_log.write_evals(step, results)

  def loop(self) -> None:
    """Takes a batch, runs its task's compiled step, calls the hooks; until the last step or
    an agreed stop."""
    run, hooks, stop, place = self.run, self.hooks, self.stop, self.place
    clock, steps, iterators = run.clock, run.steps, run.iterators
    task_at, total = self.exp.schedule.task_at, self.exp.total_steps
    add, dispatched_at = self.metric_log.add, self.step_times.dispatched
    step, state = self.step, self.state
    while step < total and not stop.stopping:
      task = task_at(step)
      with clock("data"):
        batch = place(next(iterators[task]))
      found = steps.lookup(task, batch)
      if found is None:  # a batch of new shapes: compiled once more (logged)
        with self.watchdog.paused(), clock("compile"):
          found = steps.get(task, batch)
      compiled, cost = found
      with clock("step"):
        dispatched = dispatched_at()
        state, metrics = compiled(state, batch)
      add(step, task, dispatched, metrics, cost)
      step += 1
      self.step, self.state = step, state  # what the hooks read
      hooks.after_step(step)

  def train(self) -> dict:
    """The loop, a save on an agreed stop, the final evals; the last metrics."""
    log.info("model: %s params; mesh %s; %d tasks; from step %d to %d; peak %.4g FLOP/s (%s)",
             f"{self.run.n_params:,}", dict(self.run.mesh.shape), len(self.exp.tasks),
             self.step, self.exp.total_steps, self.peak.flops_per_s, self.peak.source)
    self.watchdog.start()
    with self.stop.requested:
      self.loop()
      if self.stop.stopping:
        log.warning("signal %s: saving step %d and exiting; rerun the same command to resume",
                    self.stop.requested.signum or "(received by another process)", self.step)
        if self.saver.last_saved != self.step:
          self.saver.save(self.step, self.state)
    self.metric_log.write_pending()
    self.saver.finish()
    if self.step >= self.exp.total_steps and not self.stop.stopping:
      self.evaluate(self.step, self.evals)
    clock = self.run.clock
    if jax.process_index() == 0:
      log.info("time: %s", clock.summary())
    self.writer.write(self.step, clock.report())
    return dict(self.metric_log.logged, **clock.report(), step=self.step)

  def close(self) -> None:
    self.step_times.close()
    log.info("process %d: last completed step %d", jax.process_index(), self.step)
    if self.bar is not None:
      self.bar.close()
    self.writer.close()


def train(exp: Experiment, workdir: str, *, compile_only: bool = False,
          iterators: dict | None = None, restart_from_scratch: bool = False) -> dict:
  """Trains (or resumes) into `workdir`; returns the last logged and eval metrics.

  iterators: optional {task: iterator of host-local numpy batches} to train on instead of
  the tasks' data pipelines (benchmarks, tests); each needs get_state()/set_state() for
  checkpoints (mmjax.data.memory.InMemoryIterator has them).
  """
  run = set_up(exp, iterators)
  if compile_only:
    return compile_report(run)
  run.first = {}  # no device memory held for the run's length
  # The peers' compiles end at different times; the workdir lock's agreement is the first
  # collective after them.
  with run.clock("compile"):
    distributed.wait_for_all("compiled")
  # Nothing is written into the workdir before this point, so a bad config leaves none.
  lock = workdir_lock.acquire_for_job(workdir, jax.process_index(), jax.process_count())
  ckpt = Checkpointer(workdir_lib.checkpoint_dir(workdir), keep=exp.checkpoint.keep,
                      async_save=exp.checkpoint.async_save,
                      restart_from_scratch=restart_from_scratch)
  training = None
  try:
    training = Training(run, workdir, ckpt)
    return training.train()
  finally:
    if training is not None:
      training.close()
    for it in run.iterators.values():
      it.close()
    try:
      ckpt.close()
    except Exception:  # already reported above; do not mask the original error
      pass
    if training is not None:  # after ckpt.close: a peer lost in the last save is named
      training.watchdog.stop()
    if lock is not None:
      lock.release()
