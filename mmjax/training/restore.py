"""Model parameters restored from a workdir for reading (evaluate, generate): no optimizer
state, onto one device."""
from __future__ import annotations

import jax

from mmjax import experiment
from mmjax.checkpoint import workdir as workdir_lib
from mmjax.checkpoint.checkpointer import Checkpointer, bytes_read
from mmjax.config import recipe as config_lib
from mmjax.runtime import sharding
from mmjax.training import optimizer as optim, predict
from mmjax.training.step import abstract_train_state, with_shardings


def restore_params(workdir: str, step: int | None = None, overrides=()):
  """(experiment, step, eval context, params, restore metrics): the workdir's model
  parameters (no optimizer state) restored onto one device, whatever mesh or process
  count wrote them, and the eval context of its predict functions: what `mmjax.evaluate`
  and `mmjax.generate` run on."""

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
  metrics = {"step": step, "restore/bytes": float(restored),
             "restore/param_bytes": float(param_bytes),
             "restore/bytes_over_param_bytes": restored / param_bytes}
  return exp, step, ctx, params, metrics
