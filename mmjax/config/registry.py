"""Pluggable components: a `type` name in the recipe selects a frozen dataclass config.

Each kind of component (fusion trunk, feed-forward layer, objective, evaluator, task
schedule) has ONE `Registry`: a literal table from type name to config class, written where
that kind lives. A config class is a frozen dataclass; its field defaults are the
component's defaults and its `__post_init__` holds its checks, raising `FieldError` (or
ValueError) with messages relative to the section. `Registry.parse` turns a recipe section
into that dataclass, reading every key exactly once and naming the full key on any error.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Mapping

from mmjax.errors import ConfigError


class FieldError(ValueError):
  """A config field's value is invalid; `field` is its name within the section."""

  def __init__(self, field: str, message: str):
    super().__init__(message)
    self.field = field


def check(cond: bool, field: str, message: str) -> None:
  if not cond:
    raise FieldError(field, message)


def did_you_mean(name: str, choices) -> str:
  near = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
  return f" (did you mean {near[0]!r}?)" if near else ""


def field_names(config_class) -> tuple[str, ...]:
  return tuple(f.name for f in dataclasses.fields(config_class) if f.init)


def _hashable(value: Any) -> Any:
  """ConfigDict / list values as the frozen, hashable forms dataclass configs hold."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, list):
    return tuple(_hashable(v) for v in value)
  if isinstance(value, tuple):
    return tuple(_hashable(v) for v in value)
  return value


def _check_type(field: dataclasses.Field, value: Any, key: str) -> Any:
  """Values must have their default's type (an int is accepted for a float)."""
  default = field.default
  if default is dataclasses.MISSING or default is None:
    return value
  if isinstance(default, bool):
    ok = isinstance(value, bool)
  elif isinstance(default, float):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    value = float(value) if ok else value
  elif isinstance(default, int):
    ok = isinstance(value, int) and not isinstance(value, bool)
  elif isinstance(default, (str, tuple)):
    ok = isinstance(value, type(default))
  else:
    ok = True
  if not ok:
    raise ConfigError(f"config.{key}.{field.name}={value!r}: expected a "
                      f"{type(default).__name__} like {default!r}")
  return value


class Registry:
  """Type name -> frozen dataclass config class, for one kind of component."""

  def __init__(self, kind: str, classes: Mapping[str, type]):
    self.kind = kind
    self.classes = dict(classes)

  def names(self) -> list[str]:
    return sorted(self.classes)

  def owners(self, field: str) -> list[str]:
    """The types whose config has a field of this name."""
    return [t for t, c in sorted(self.classes.items()) if field in field_names(c)]

  def type_name(self, config: Any) -> str:
    """The type name a parsed config was selected by."""
    return next(t for t, c in self.classes.items() if type(config) is c)

  def config_class(self, type_name: Any, key: str) -> type:
    if type_name not in self.classes:
      raise ConfigError(f"config.{key}.type={type_name!r}: unknown {self.kind} type"
                        f"{did_you_mean(type_name, self.classes)}; valid: "
                        f"{', '.join(map(repr, self.names()))}")
    return self.classes[type_name]

  def parse(self, section: Mapping, key: str, **context) -> Any:
    """The validated config of section `key` (e.g. 'model.fusion').

    context: fields the caller supplies rather than the recipe (e.g. an objective's name).
    """
    values = dict(section)
    type_name = values.pop("type", None)
    cls = self.config_class(type_name, key)

    def foreign(k):
      owners = self.owners(k)
      if owners:
        return (f"config.{key}.{k} belongs to {self.kind} type "
                f"{' or '.join(map(repr, owners))}, not {type_name!r}: set "
                f"config.{key}.type to use it, or remove the key")
      return None
    return parse_dataclass(cls, values, key, context=context,
                           what=f"{self.kind} type {type_name!r}", foreign=foreign)


def parse_dataclass(cls, section: Mapping, key: str, *, context: Mapping | None = None,
                    what: str = "", foreign=lambda k: None) -> Any:
  """`cls(**section, **context)` with every key checked: unknown keys name the valid ones
  (or, through `foreign`, the other component that owns them), values must have their
  default's type, and the class's own checks are reported under the full key."""
  context = dict(context or {})
  values = {k: _hashable(v) for k, v in dict(section).items()}
  fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
  settable = set(fields) - set(context)
  for k in values:
    if k in settable:
      continue
    message = foreign(k) if k not in context else None
    raise ConfigError(message or (
        f"unknown config key {key}.{k}: {what or key} has no {k!r}"
        f"{did_you_mean(k, settable)}; valid: {', '.join(sorted(settable)) or '(none)'}"))
  values = {k: _check_type(fields[k], v, key) for k, v in values.items()}
  try:
    return cls(**values, **context)
  except FieldError as e:
    where = f"config.{key}.{e.field}" if e.field else f"config.{key}"
    shown = f"={values[e.field]!r}" if e.field in values else ""
    raise ConfigError(f"{where}{shown}: {e}") from None
  except (TypeError, ValueError) as e:
    raise ConfigError(f"config.{key} ({what or cls.__name__}): {e}") from None
