"""Validation of a loaded recipe: each component parses its own section, and what spans
sections is cross-checked here, before anything is built or compiled."""
from __future__ import annotations

import ml_collections

from mmjax.errors import ConfigError, MmjaxError

NAN_POLICIES = ("halt", "skip")


def _need(cond: bool, msg: str) -> None:
  if not cond:
    raise ConfigError(msg)


def _positive_int(config, key: str) -> None:
  node = config
  for p in key.split("."):
    node = node[p]
  _need(isinstance(node, int) and not isinstance(node, bool) and node > 0,
        f"config.{key}={node!r}: must be a positive integer")


def _one_of(value, choices, key: str) -> None:
  _need(value in choices, f"config.{key}={value!r}; valid: {', '.join(map(repr, choices))}")


def _check_vocab(tname: str, data_cfg, spec, pipeline) -> None:
  """Each text modality a tokenize op feeds has an embedding row for every id it can get."""
  kinds = {name: args.get("op") for name, args in data_cfg.preprocess.items()}
  texts = [m for m, s in spec.modalities.items() if s.kind == "text" and kinds.get(m) == "tokenize"]
  if not texts:
    return
  try:
    n = pipeline.tokenizer_vocab_size(data_cfg)
  except (ImportError, ValueError) as e:
    raise ConfigError(f"config.tasks.{tname}.data.tokenizer: {e}") from None
  for m in texts:
    v = spec.modalities[m].vocab_size
    _need(v >= n, f"config.model.modalities.{m}.vocab_size={v} is smaller than the {n} ids "
          f"of config.tasks.{tname}.data.tokenizer (kind "
          f"{data_cfg.get('tokenizer', {}).get('kind', 'byte')!r}): ids >= {v} would have no "
          f"embedding; use vocab_size >= {n}")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first invalid key. Cheap: builds nothing.

  Each component parses (and so checks) its own section; what is checked here is only what
  spans sections: objectives against the model's modalities and the task's data, evaluators
  against the tasks.
  """
  from mmjax import evaluators, schedules  # local: these import jax
  from mmjax.runtime import sharding
  from mmjax.experiment import build
  from mmjax.config import task_checks
  from mmjax.data import pipeline  # local: the data stack imports grain and TFDS
  from mmjax.config.task_settings import task_settings
  from mmjax.config.value_checks import check_finite_floats
  check_finite_floats(config, ConfigError)
  for key in ("total_steps", "log_every_steps", "eval_batch_size", "checkpoint.every_steps",
              "checkpoint.keep"):
    _positive_int(config, key)
  _need(config.get("watchdog_timeout_s", 0) >= 0,
        f"config.watchdog_timeout_s={config.get('watchdog_timeout_s')}: must be >= 0 (0 = off)")
  stop_every = config.get("stop_check_every_steps", 10)  # absent from older configs
  _need(isinstance(stop_every, int) and not isinstance(stop_every, bool) and stop_every > 0,
        f"config.stop_check_every_steps={stop_every!r}: must be a positive integer")
  prefetch = config.get("prefetch_batches", 0)
  _need(isinstance(prefetch, int) and prefetch >= 0,
        f"config.prefetch_batches={prefetch!r}: must be an integer >= 0")
  threads = config.get("compile_threads", 0)
  _need(isinstance(threads, int) and not isinstance(threads, bool) and threads >= 0,
        f"config.compile_threads={threads!r}: must be an integer >= 0 (0 = a thread per task, "
        f"1 = one task after another)")
  _one_of(config.nan_policy, NAN_POLICIES, "nan_policy")
  o = config.optim
  _need(o.learning_rate > 0, f"config.optim.learning_rate={o.learning_rate}: must be > 0")
  _need(0 <= o.warmup_steps <= config.total_steps,
        f"config.optim.warmup_steps={o.warmup_steps}: must be in [0, total_steps={config.total_steps}]")
  _need(o.clip_norm > 0, f"config.optim.clip_norm={o.clip_norm}: must be > 0")
  _need(len(config.tasks) > 0, "config.tasks is empty; define at least one task")
  objectives = build.task_objectives(config)  # parses every objective section
  spec = build.model_spec(config, objectives)  # parses model, fusion, ffn, modalities
  for tname, task in config.tasks.items():
    settings = task_settings(task, tname)  # batch size, weight, seed offset, lr, token drop
    _need(len(task.objectives) > 0, f"config.tasks.{tname}.objectives is empty")
    pp = task.data.preprocess
    made = pipeline.output_keys(task.data)
    for o_ in objectives[tname]:
      for k in o_.batch_keys():
        if k == "text_mask":
          continue
        _need(k in made, f"config.tasks.{tname}: objective {o_.name!r} needs batch key {k!r}, "
              f"but tasks.{tname}.data.preprocess only makes {sorted(made)}")
    try:  # names a dataset (a built-in world, a TFDS name or a prepared folder)?
      pipeline.check_dataset_name(task.data.name, task.data.get("data_dir", ""))
    except MmjaxError as e:
      raise ConfigError(f"config.tasks.{tname}.data.name: {e}") from None
    try:  # worker_count for this host, preprocess ops and their arguments; reads no data
      pipeline.validate(task.data, batch_size=settings.batch_size)
    except (MmjaxError, ValueError) as e:
      raise ConfigError(f"config.tasks.{tname}.data: {e}") from None
    for name, shape in pipeline.input_shapes(task.data).items():
      if name in spec.modalities:
        task_checks.check_resolution(f"tasks.{tname}.data.preprocess.{name}", pp[name], shape,
                                     spec.modalities[name], f"model.modalities.{name}",
                                     spec.posemb)
    _check_vocab(tname, task.data, spec, pipeline)
    task_checks.check_token_drop(tname, settings.token_drop, objectives[tname], set(pp.keys()))
  schedules.make_schedule(config)
  try:
    sharding.rules_from_config(config.get("sharding", {}).get("rules", {}))
  except ValueError as e:
    raise ConfigError(str(e)) from None
  unknown = set(config.mesh.keys()) - set(sharding.MESH_AXES) - {f"dcn_{a}" for a in sharding.MESH_AXES}
  _need(not unknown, f"config.mesh has unknown axes {sorted(unknown)}")
  for ename, ev in config.evals.items():
    evaluators.parse_eval(ename, ev, objectives)
