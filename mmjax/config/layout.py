"""Where the component sections of a config are, and how older layouts map onto today's.

Component sections (`model.fusion`, `model.ffn`, `tasks.<t>.objectives.<o>`, `evals.<e>`,
`schedule`) are parsed by their kind's registry. A recipe only sets the fields it changes,
so `--config.<section>.<field>=...` may name any field of any registered type of that
section; the registry then says if the field belongs to another type than the chosen one.
"""
from __future__ import annotations

import logging
from typing import Sequence

import ml_collections

from mmjax.config.registry import field_names

log = logging.getLogger("mmjax.config.recipe")

# Section path pattern ('*' matches any one name) -> (module, registry attribute).
_SECTIONS = {
    ("model", "fusion"): ("mmjax.models.trunks", "TRUNKS"),
    ("model", "ffn"): ("mmjax.models.ffn", "FFNS"),
    ("tasks", "*", "objectives", "*"): ("mmjax.objectives", "OBJECTIVES"),
    ("evals", "*"): ("mmjax.evaluators", "EVALUATORS"),
    ("schedule",): ("mmjax.schedules", "SCHEDULES"),
}
# Sections read by one dataclass (no `type`): their fields too may be left to defaults.
_DATACLASS_SECTIONS = {("model",): ("mmjax.models.spec", "ModelSpec"),
                       ("tasks", "*"): ("mmjax.config.task_settings", "TaskSettings")}
# Fields the code fills in rather than the recipe.
_CONTEXT_FIELDS = {"name", "modalities", "heads", "fusion", "ffn"}


def _lookup(table, path: Sequence[str]):
  import importlib  # registries import jax: only when a section is actually looked up
  for pattern, (module, attr) in table.items():
    if len(pattern) == len(path) and all(p in ("*", q) for p, q in zip(pattern, path)):
      return getattr(importlib.import_module(module), attr)
  return None


def component_field(path: Sequence[str], field: str) -> bool:
  """Whether `field` is a settable field of the section at `path` (of some registered type,
  for a component section)."""
  if field in _CONTEXT_FIELDS:
    return False
  registry = _lookup(_SECTIONS, path)
  if registry is not None:
    return bool(registry.owners(field))
  config_class = _lookup(_DATACLASS_SECTIONS, path)
  return config_class is not None and field in field_names(config_class)


def dataclass_fields(path: Sequence[str]) -> tuple[str, ...]:
  """The fields of the section at `path` when one dataclass reads it (e.g. a task's
  settings), which the recipe may leave out; () for other sections."""
  config_class = _lookup(_DATACLASS_SECTIONS, path)
  if config_class is None:
    return ()
  return tuple(f for f in field_names(config_class) if f not in _CONTEXT_FIELDS)


def moved_key(key: str) -> str | None:
  """For an unknown key that is a field of a component section below its parent, say where
  it lives now (e.g. model.fusion_layer -> model.fusion.fusion_layer)."""
  parts = key.split(".")
  parent, field = parts[:-1], parts[-1]
  for pattern in _SECTIONS:
    if len(pattern) == len(parent) + 1 and all(p in ("*", q) for p, q in zip(pattern, parent)):
      if "*" not in pattern[-1:] and component_field(pattern, field):
        new = ".".join(parent + [pattern[-1], field])
        return f"unknown config key {key!r}: it is a field of the component section " \
               f"{'.'.join(parent + [pattern[-1]])!r} now; use --config.{new}=..."
  return None


def upgrade(config: ml_collections.ConfigDict, source: str) -> None:
  """Rewrites a config written for the layout before component sections, in place.

  That layout had `model.fusion` as a string, no `model.ffn` and no `schedule` (tasks were
  drawn at random by weight), and named heads after their objectives. The upgrade keeps
  all of that, so old recipes and old workdirs (their config.json and checkpoints) work.
  """
  model = config.get("model")
  if model is None or not isinstance(model.get("fusion"), str):
    return
  changes = [f"model.fusion={model.fusion!r} -> model.fusion.type={model.fusion!r}"]
  with model.ignore_type():
    model.fusion = ml_collections.ConfigDict({"type": model.fusion})
  if "schedule" not in config:
    config.schedule = ml_collections.ConfigDict({"type": "sampled"})
    changes.append("schedule.type='sampled' (the random draw by weight of that version)")
  for tname, task in config.get("tasks", {}).items():
    for oname, o in task.get("objectives", {}).items():
      if o.get("type") in ("classification", "contrastive") and "head" not in o:
        o.head = oname
        changes.append(f"tasks.{tname}.objectives.{oname}.head={oname!r} (its parameter names)")
  log.warning("%s uses the config layout of mmjax before component sections; read it as: %s",
              source, "; ".join(changes))
