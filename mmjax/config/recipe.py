"""Loading and overriding recipes (their validation is mmjax/experiment: the parse).

A recipe is `configs/<name>.py` with `get_config(variant)`; it is named on the command line
as `path[:variant]`. Overrides are `key.path=value` strings, parsed with the type of the
value they replace. Errors name the key and what would be valid.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
from typing import Any, Sequence

import ml_collections

from mmjax.config import layout as config_layout
from mmjax.config.registry import did_you_mean
from mmjax.errors import ConfigError, MmjaxError

def import_file(path: str, kind: str):
  """The Python module at `path` (a recipe or a sweep file), imported under its own name."""
  mod_spec = importlib.util.spec_from_file_location(f"_mmjax_{kind}_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  return module


def load_recipe(recipe_name: str) -> ml_collections.ConfigDict:
  """`configs/x.py:variant` -> the locked ConfigDict that recipe's get_config returns."""
  path, _, variant = recipe_name.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"--config {recipe_name!r}: no file {path!r}; recipes live in configs/*.py")
  try:
    module = import_file(path, "recipe")
  except SyntaxError as e:
    raise ConfigError(f"recipe {path!r} is not valid Python: {e.msg} (line {e.lineno}"
                      f"{f': {e.text.strip()}' if e.text else ''})") from None
  if not hasattr(module, "get_config"):
    raise ConfigError(f"recipe {path!r} has no get_config(variant) function")
  try:
    config = module.get_config(variant or None)
  except (ValueError, KeyError) as e:  # recipes refuse unknown variants this way
    raise ConfigError(f"--config {recipe_name!r}: {e}") from None
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


def load(recipe_name: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The recipe with its overrides applied; mmjax.experiment.parse checks it as a whole."""
  config = load_recipe(recipe_name)
  for o in overrides:
    apply_override(config, o)
  return config


def from_json(text: str) -> ml_collections.ConfigDict:
  """The config a workdir's config.json holds (tuples come back as lists; see to_json),
  upgraded to today's layout if an older version of mmjax wrote it."""
  config = ml_collections.ConfigDict(json.loads(text))
  config_layout.upgrade(config, source="config.json")
  return config


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)
