"""Loading, overriding and validating recipes.

A recipe is `configs/<name>.py` with `get_config(variant)`; it is named on the command line
as `path[:variant]`. Overrides are `key.path=value` strings, parsed with the type of the
value they replace. Everything is validated here, before anything is built or compiled,
with messages that name the key and what would be valid.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
from typing import Any, Sequence

import ml_collections

from mmjax import config_layout
from mmjax.components import did_you_mean
from mmjax.errors import ConfigError, MmjaxError

NAN_POLICIES = ("halt", "skip")


def import_file(path: str, kind: str):
  """The Python module at `path` (a recipe or a sweep file), imported under its own name."""
  mod_spec = importlib.util.spec_from_file_location(f"_mmjax_{kind}_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  return module


def load_recipe(spec: str) -> ml_collections.ConfigDict:
  """`configs/x.py:variant` -> the locked ConfigDict that recipe's get_config returns."""
  path, _, variant = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"--config {spec!r}: no file {path!r}; recipes live in configs/*.py")
  module = import_file(path, "recipe")
  if not hasattr(module, "get_config"):
    raise ConfigError(f"recipe {path!r} has no get_config(variant) function")
  try:
    config = module.get_config(variant or None)
  except (ValueError, KeyError) as e:  # recipes refuse unknown variants this way
    raise ConfigError(f"--config {spec!r}: {e}") from None
  config_layout.upgrade(config, source=path)
  config.lock()
  return config


def _parse_like(old: Any, text: str, key: str) -> Any:
  """Parses `text` as a value of the same type as `old`."""
  if isinstance(old, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if old is None:
      return text
    raise ConfigError(f"--config.{key}={text!r}: not a valid {type(old).__name__}") from None
  if old is None:
    return value
  if isinstance(old, bool):
    if not isinstance(value, bool):
      raise ConfigError(f"--config.{key}={text!r}: expected True or False")
    return value
  if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if isinstance(old, (tuple, list)) and isinstance(value, (tuple, list)):
    return type(old)(value)
  if isinstance(old, (tuple, list)) and not isinstance(value, (tuple, list)):
    return type(old)([value])
  if type(value) is not type(old):
    raise ConfigError(f"--config.{key}={text!r}: expected a {type(old).__name__} "
                      f"like {old!r}, got a {type(value).__name__}")
  return value


def apply_override(config: ml_collections.ConfigDict, assignment: str) -> None:
  """Applies one `a.b.c=value` override; unknown keys fail naming the valid ones."""
  key, eq, text = assignment.partition("=")
  if not eq:
    raise ConfigError(f"--config.{assignment}: expected --config.KEY=VALUE")
  parts = key.split(".")
  node = config
  for i, part in enumerate(parts):
    where = ".".join(parts[:i]) or "<top level>"
    if not isinstance(node, ml_collections.ConfigDict):
      raise ConfigError(f"--config.{key}: {where!r} is a value, not a section")
    if part not in node:
      if i == len(parts) - 1 and config_layout.component_field(parts[:-1], part):
        # A field of this component section's config that the recipe left at its default.
        with node.unlocked():
          node[part] = _parse_like(None, text, key)
        return
      moved = config_layout.moved_key(key)
      valid = sorted(set(node.keys()) | set(config_layout.dataclass_fields(parts[:i])))
      raise ConfigError(moved or (
          f"unknown config key {key!r}: {where!r} has no {part!r}"
          f"{did_you_mean(part, valid)}; valid: {', '.join(valid)}"))
    if i < len(parts) - 1:
      node = node[part]
  old = node[parts[-1]]
  if isinstance(old, ml_collections.ConfigDict):
    hint = f" (e.g. --config.{key}.type={text})" if "type" in old else ""
    raise ConfigError(f"--config.{key} is a section; set one of its keys{hint}: "
                      f"{', '.join(sorted(old.keys()))}")
  with node.ignore_type():
    node[parts[-1]] = _parse_like(old, text, key)


def load(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Recipe + overrides, validated."""
  config = load_recipe(spec)
  for o in overrides:
    apply_override(config, o)
  validate(config)
  return config


def from_json(text: str) -> ml_collections.ConfigDict:
  """The config a workdir's config.json holds (tuples come back as lists; see to_json),
  upgraded to today's layout if an older version of mmjax wrote it."""
  config = ml_collections.ConfigDict(json.loads(text))
  config_layout.upgrade(config, source="config.json")
  return config


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


# ------------------------------------------------------------------ validation

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


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first invalid key. Cheap: builds nothing.

  Each component parses (and so checks) its own section; what is checked here is only what
  spans sections: objectives against the model's modalities and the task's data, evaluators
  against the tasks.
  """
  from mmjax import build, evaluators, schedules, sharding  # local: these import jax
  from mmjax import task_checks
  from mmjax.data import pipeline  # local: the data stack imports grain and TFDS
  from mmjax.task_settings import task_settings
  from mmjax.config_checks import check_finite_floats
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
    for o_ in objectives[tname]:
      for k in o_.batch_keys():
        if k == "text_mask":
          continue
        _need(k in pp, f"config.tasks.{tname}: objective {o_.name!r} needs batch key {k!r}, "
              f"but tasks.{tname}.data.preprocess only makes {sorted(pp.keys())}")
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
