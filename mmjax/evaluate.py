"""python -m mmjax.evaluate --workdir DIR [--step N] [--config.KEY=VALUE ...]

Restores a checkpoint onto one device (whatever mesh or process count wrote it), runs
the config's evaluators (jitted) and prints one JSON object of metrics on stdout; the
same object is written to DIR/eval/step_<N>.json.
"""
from __future__ import annotations

import json
import logging
import os
import sys

from absl import flags

flags.DEFINE_string("workdir", None, "a workdir written by python -m mmjax.train")
flags.DEFINE_integer("step", None, "checkpoint step to evaluate (default: the latest)")
FLAGS = flags.FLAGS


def evaluate(workdir: str, step: int | None = None, overrides=()) -> dict:
  import jax
  from mmjax import evaluators, experiment
  from mmjax.checkpoint import workdir as workdir_lib
  from mmjax.checkpoint.checkpointer import Checkpointer, bytes_read
  from mmjax.config import recipe as config_lib
  from mmjax.runtime import sharding
  from mmjax.training import optimizer as optim, predict
  from mmjax.training.step import abstract_train_state, with_shardings

  config = workdir_lib.read_config(workdir)
  for o in overrides:
    config_lib.apply_override(config, o)
  exp = experiment.parse(config)
  # Read-only: a trainer may be writing this workdir right now (no cleanup, no deletion).
  ckpt = Checkpointer(workdir_lib.checkpoint_dir(workdir), read_only=True)
  try:
    mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
    optimizer = optim.make_optimizer(exp.optim, exp.total_steps)
    graphdef, _, abstract = abstract_train_state(exp.model, exp.trainer.seed, optimizer)
    abstract_sh = with_shardings(abstract, sharding.state_shardings(abstract, mesh))
    read_before = bytes_read()
    step, params, _ = ckpt.restore_for_reading(step, abstract_sh, params_only=True)
    read = bytes_read()
  finally:
    ckpt.close()
  ctx = predict.make_eval_context(graphdef, mesh, exp)
  # Bytes read from disk (files, with Orbax's metadata), else the bytes restored.
  param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract.params))
  restored = (read - read_before if read is not None and read_before is not None
              else sum(x.nbytes for x in jax.tree.leaves(params)))
  results = {"step": step, "restore/bytes": float(restored),
             "restore/param_bytes": float(param_bytes),
             "restore/bytes_over_param_bytes": restored / param_bytes}
  for ev in evaluators.make_evaluators(exp.evals, ctx):
    results.update(ev.run(params))
  workdir_lib.write_json(os.path.join(workdir_lib.eval_dir(workdir), f"step_{step}.json"), results)
  return results


def main(argv: list[str]) -> int:
  from mmjax.config import cli
  overrides = cli.parse(argv)
  if not FLAGS.workdir:
    cli.fail("--workdir is required, e.g. python -m mmjax.evaluate --workdir workdirs/mm_world")
  logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
  from mmjax.errors import MmjaxError
  try:
    results = evaluate(FLAGS.workdir, FLAGS.step, overrides)
  except (MmjaxError, FileNotFoundError) as e:
    cli.fail(str(e), code=1)
  print(json.dumps(results, sort_keys=True))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
