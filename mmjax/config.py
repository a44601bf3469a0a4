"""Loading, overriding and validating recipes.

A recipe is `configs/<name>.py` with `get_config(variant)`; it is named on the command line
as `path[:variant]`. Overrides are `key.path=value` strings, parsed with the type of the
value they replace. Everything is validated here, before anything is built or compiled,
with messages that name the key and what would be valid.
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import os
from typing import Any, Sequence

import ml_collections

from mmjax.errors import MmjaxError

# Enumerations users can set, in one place so error messages and code agree.
FUSIONS = ("early",)
POSEMBS = ("learn", "sincos")
DTYPES = ("float32", "bfloat16", "float16")
NAN_POLICIES = ("halt", "skip")
REMATS = ("none", "full", "save_matmuls")
MODALITY_KINDS = ("image", "video", "audio", "text")


class ConfigError(MmjaxError, ValueError):
  """A recipe, override or value is invalid. The message says what would be valid."""


def load_recipe(spec: str) -> ml_collections.ConfigDict:
  """`configs/x.py:variant` -> the locked ConfigDict that recipe's get_config returns."""
  path, _, variant = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"--config {spec!r}: no file {path!r}; recipes live in configs/*.py")
  mod_spec = importlib.util.spec_from_file_location(f"_mmjax_recipe_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"recipe {path!r} has no get_config(variant) function")
  config = module.get_config(variant or None)
  config.lock()
  return config


def _closest(name: str, choices) -> str:
  near = difflib.get_close_matches(name, list(choices), n=1)
  return f" (did you mean {near[0]!r}?)" if near else ""


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
      raise ConfigError(f"unknown config key {key!r}: {where!r} has no {part!r}"
                        f"{_closest(part, node.keys())}; valid: {', '.join(sorted(node.keys()))}")
    if i < len(parts) - 1:
      node = node[part]
  old = node[parts[-1]]
  if isinstance(old, ml_collections.ConfigDict):
    raise ConfigError(f"--config.{key} is a section; set one of its keys: "
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
  """The config a workdir's config.json holds (tuples come back as lists; see to_json)."""
  return ml_collections.ConfigDict(json.loads(text))


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


# Per modality kind: the names of its shape dims and of its patch dims.
_LAYOUTS = {"image": (("H", "W", "C"), ("p",)), "video": (("T", "H", "W", "C"), ("t", "p")),
            "audio": (("T", "F"), ("pt", "pf")), "text": (("max_len",), ())}


def validate_modalities(model) -> None:
  for name, m in model.modalities.items():
    key = f"model.modalities.{name}"
    _one_of(m.kind, MODALITY_KINDS, f"{key}.kind")
    shape, patch = tuple(m.shape), tuple(m.get("patch", ()))
    shape_dims, patch_dims = _LAYOUTS[m.kind]
    _need(len(shape) == len(shape_dims), f"config.{key}.shape={shape}: a {m.kind} shape is "
          f"({', '.join(shape_dims)})")
    _need(len(patch) == len(patch_dims), f"config.{key}.patch={patch}: a {m.kind} patch is "
          f"({', '.join(patch_dims)})")
    _need(all(isinstance(x, int) and x > 0 for x in shape + patch),
          f"config.{key}: shape {shape} and patch {patch} must be positive integers")
    if m.kind == "image":
      for d, n in zip("HW", shape[:2]):
        _need(n % patch[0] == 0, f"config.{key}: image {d}={n} is not divisible by patch "
              f"{patch[0]}; use a size that is a multiple of {patch[0]}")
    elif m.kind == "video":
      _need(shape[0] % patch[0] == 0, f"config.{key}: {shape[0]} frames are not divisible by "
            f"tubelet length {patch[0]}")
      for d, n in zip("HW", shape[1:3]):
        _need(n % patch[1] == 0, f"config.{key}: video {d}={n} is not divisible by patch {patch[1]}")
    elif m.kind == "audio":
      for d, n, p in zip(("time", "mel"), shape, patch):
        _need(n % p == 0, f"config.{key}: audio {d} size {n} is not divisible by patch {p}")
    else:
      _positive_int(m, "vocab_size")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first invalid key. Cheap: builds nothing."""
  for key in ("total_steps", "log_every_steps", "eval_batch_size", "model.width", "model.depth",
              "model.num_heads", "model.mlp_dim", "model.embed_dim", "checkpoint.every_steps",
              "checkpoint.keep"):
    _positive_int(config, key)
  _need(config.get("watchdog_timeout_s", 0) >= 0,
        f"config.watchdog_timeout_s={config.get('watchdog_timeout_s')}: must be >= 0 (0 = off)")
  prefetch = config.get("prefetch_batches", 0)
  _need(isinstance(prefetch, int) and prefetch >= 0,
        f"config.prefetch_batches={prefetch!r}: must be an integer >= 0")
  m = config.model
  _need(m.width % m.num_heads == 0, f"config.model.width={m.width} is not divisible by "
        f"config.model.num_heads={m.num_heads}")
  _one_of(m.fusion, FUSIONS, "model.fusion")
  _one_of(m.posemb, POSEMBS, "model.posemb")
  _one_of(m.get("remat", "none"), REMATS, "model.remat")
  _one_of(m.dtype, DTYPES + ("auto",), "model.dtype")
  _one_of(m.param_dtype, DTYPES, "model.param_dtype")
  _one_of(config.nan_policy, NAN_POLICIES, "nan_policy")
  validate_modalities(m)
  o = config.optim
  _need(o.learning_rate > 0, f"config.optim.learning_rate={o.learning_rate}: must be > 0")
  _need(0 <= o.warmup_steps <= config.total_steps,
        f"config.optim.warmup_steps={o.warmup_steps}: must be in [0, total_steps={config.total_steps}]")
  _need(o.clip_norm > 0, f"config.optim.clip_norm={o.clip_norm}: must be > 0")
  _need(len(config.tasks) > 0, "config.tasks is empty; define at least one task")
  from mmjax import objectives  # local: objectives import jax, keep config import light
  kinds = {n: s.kind for n, s in m.modalities.items()}
  for tname, task in config.tasks.items():
    _positive_int(config, f"tasks.{tname}.batch_size")
    if "microbatches" in task:
      _positive_int(config, f"tasks.{tname}.microbatches")
    _need(task.batch_size % task.get("microbatches", 1) == 0,
          f"config.tasks.{tname}.batch_size={task.batch_size} does not split into "
          f"microbatches={task.get('microbatches', 1)}")
    _need(len(task.objectives) > 0, f"config.tasks.{tname}.objectives is empty")
    try:
      objs = objectives.make_objectives(task.objectives, kinds)
    except ValueError as e:
      raise ConfigError(f"config.tasks.{tname}.objectives: {e}") from None
    pp = task.data.preprocess
    for o_ in objs:
      for k in o_.batch_keys():
        if k == "text_mask":
          continue
        _need(k in pp, f"config.tasks.{tname}: objective {o_.name!r} needs batch key {k!r}, "
              f"but tasks.{tname}.data.preprocess only makes {sorted(pp.keys())}")
    for name, spec in pp.items():
      if name in m.modalities and "size" in spec:
        mod = m.modalities[name]
        patch = mod.patch[-1]
        _need(spec.size % patch == 0, f"config.tasks.{tname}.data.preprocess.{name}.size="
              f"{spec.size} is not divisible by model.modalities.{name}.patch {patch}")
  from mmjax import sharding  # local: imports jax
  try:
    sharding.rules_from_config(config.get("sharding", {}).get("rules", {}))
  except ValueError as e:
    raise ConfigError(str(e)) from None
  unknown = set(config.mesh.keys()) - set(sharding.MESH_AXES) - {f"dcn_{a}" for a in sharding.MESH_AXES}
  _need(not unknown, f"config.mesh has unknown axes {sorted(unknown)}")
  from mmjax import evaluators  # local: imports jax
  for ename, ev in config.evals.items():
    _one_of(ev.type, sorted(evaluators.REGISTRY), f"evals.{ename}.type")
    _need(ev.task in config.tasks, f"config.evals.{ename}.task={ev.task!r}; valid: "
          f"{sorted(config.tasks.keys())}")
    _positive_int(config, f"evals.{ename}.every_steps")
