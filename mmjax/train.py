"""python -m mmjax.train --config configs/<recipe>.py[:variant] --workdir DIR [--config.KEY=VALUE ...]

Rerunning the same command on the same workdir resumes from its last checkpoint.
"""
from __future__ import annotations

import json
import logging
import sys

from absl import flags

flags.DEFINE_string("config", None, "recipe as path[:variant], e.g. configs/mm_world.py:tiny")
flags.DEFINE_string("workdir", None, "where checkpoints, metrics and config.json go")
flags.DEFINE_bool("compile_only", False, "compile the step(s) for the configured mesh, print "
                  "FLOPs and per-device memory from XLA, and exit without training")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-process "
                    "jobs outside SLURM/TPU pods (which are detected from the environment)")
flags.DEFINE_integer("num_processes", None, "with --coordinator_address: how many processes")
flags.DEFINE_integer("process_id", None, "with --coordinator_address: this process's index")
flags.DEFINE_integer("distributed_timeout_s", 300, "how long to wait for all processes to join")
flags.DEFINE_integer("print_schedule", None, "print the tasks of the first N steps and each "
                     "task's count, and exit (builds no data, compiles nothing; no --workdir)")
flags.DEFINE_bool("restart_from_scratch", False, "when every checkpoint of the workdir is "
                  "damaged, move them all to checkpoints_damaged/ and train from step 0 "
                  "(without it, such a run stops and names the damaged steps)")
FLAGS = flags.FLAGS


def print_schedule(recipe_name: str | None, overrides: list[str], steps: int) -> int:
  from mmjax import schedules
  from mmjax.config import cli
  from mmjax.config import recipe as config_lib
  from mmjax import experiment
  if not recipe_name or steps < 0:
    cli.fail("--print_schedule N needs --config and N >= 0, e.g. python -m mmjax.train "
             "--config configs/mm_world.py:tiny --print_schedule 20")
  try:
    exp = experiment.parse(config_lib.load(recipe_name, overrides))
    print(schedules.preview(exp.schedule, list(exp.tasks), steps))
  except config_lib.ConfigError as e:
    cli.fail(str(e))
  return 0


def main(argv: list[str]) -> int:
  from mmjax.config import cli
  overrides = cli.parse(argv)
  if FLAGS.print_schedule is not None:
    return print_schedule(FLAGS.config, overrides, FLAGS.print_schedule)
  if not FLAGS.config or not FLAGS.workdir:
    cli.fail("both --config and --workdir are required, e.g. "
             "python -m mmjax.train --config configs/mm_world.py:tiny --workdir /tmp/run")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                      stream=sys.stderr)
  logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax logs every file at INFO
  from mmjax.config import recipe as config_lib
  from mmjax import experiment
  from mmjax.checkpoint import workdir as workdir_lib
  try:
    workdir_lib.check_usable(FLAGS.workdir)
    exp = experiment.parse(config_lib.load(FLAGS.config, overrides))
  except (config_lib.ConfigError, workdir_lib.WorkdirError) as e:
    cli.fail(str(e))
  from mmjax.runtime import distributed, signals
  from mmjax.training import trainer
  from mmjax.errors import MmjaxError
  try:
    with signals.preemptible():  # SIGTERM before or after the loop: unwind, exit cleanly
      distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                             FLAGS.distributed_timeout_s)
      result = trainer.train(exp, FLAGS.workdir, compile_only=FLAGS.compile_only,
                             restart_from_scratch=FLAGS.restart_from_scratch)
  except signals.Preempted as e:
    signals.exit_preempted(e)
  except MmjaxError as e:
    cli.fail(str(e), code=1)
  except Exception as e:  # noqa: BLE001
    import jax
    if jax.process_count() > 1:  # a peer is gone: one line, before JAX's C++ abort
      from mmjax.runtime import watchdog
      cli.fail(distributed.lost_peer_message(e), code=watchdog.EXIT_CODE)
    raise
  if FLAGS.compile_only:
    print(json.dumps(result, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
