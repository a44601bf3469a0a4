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
  from mmjax import evaluators
  from mmjax.checkpoint import workdir as workdir_lib
  from mmjax.training.restore import restore_params

  exp, step, ctx, params, results = restore_params(workdir, step, overrides)
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
