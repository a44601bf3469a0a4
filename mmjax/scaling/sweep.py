"""Sweep files and the designs they are built from.

A sweep file (`configs/sweeps/<name>.py`) defines `get_sweep() -> list[Run]`; it has no
`get_config`, so it can never be mistaken for a recipe (nor a recipe for a sweep). Each run
is a stable name (its workdir under the sweep's output folder), a base recipe
`path[:variant]` and `--config` overrides. `grid` and `iso_flop` build runs over model
sizes, training lengths, fusion types and MoE. `validate` checks the whole sweep -- unique
names, every run's overrides through `mmjax.config.recipe.load` -- before anything runs.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Iterable, Sequence

from mmjax.errors import MmjaxError

# Where each swept quantity lives in a recipe: the ONE place to edit when the config layout
# moves (e.g. fusion becoming `model.fusion.type`).
KEYS = dict(
    width="model.width", depth="model.depth", num_heads="model.num_heads",
    mlp_dim="model.mlp_dim", fusion="model.fusion.type", moe="model.ffn.type",
    moe_experts="model.ffn.num_experts",
    total_steps="total_steps", warmup_steps="optim.warmup_steps",
    checkpoint_every="checkpoint.every_steps", batch_size="tasks.{task}.batch_size",
    eval_every="evals.{eval}.every_steps",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class SweepError(MmjaxError, ValueError):
  """A sweep file or one of its runs is invalid; the message names the run."""


@dataclasses.dataclass(frozen=True)
class Run:
  name: str                       # stable: the run's workdir is <out>/<name>
  config: str                     # base recipe, path[:variant]
  overrides: tuple[str, ...] = ()  # "key.path=value", as after --config.
  tags: tuple[tuple[str, Any], ...] = ()  # design coordinates (e.g. budget) copied into results

  def to_dict(self) -> dict:
    return dict(name=self.name, config=self.config, overrides=list(self.overrides),
                tags=dict(self.tags))

  @classmethod
  def from_dict(cls, d: dict) -> "Run":
    return cls(d["name"], d["config"], tuple(d.get("overrides", ())),
               tuple(sorted(d.get("tags", {}).items())))


def fusion_of(exp) -> str:
  """The fusion type of a parsed experiment."""
  from mmjax.models.trunks import TRUNKS
  return TRUNKS.type_name(exp.model.fusion)


def _set(key: str, value, **fmt) -> str:
  return f"{KEYS[key].format(**fmt)}={value}"


@dataclasses.dataclass(frozen=True)
class ModelSize:
  """Width x depth; heads and the MLP follow the width (fixed head size and MLP ratio)."""
  width: int
  depth: int
  head_dim: int = 16
  mlp_ratio: int = 4

  @property
  def name(self) -> str:
    return f"w{self.width}d{self.depth}"

  def overrides(self) -> tuple[str, ...]:
    heads = max(1, self.width // self.head_dim)
    return (_set("width", self.width), _set("depth", self.depth), _set("num_heads", heads),
            _set("mlp_dim", self.mlp_ratio * self.width))


@dataclasses.dataclass(frozen=True)
class Length:
  """Training length: tokens = total_steps x batch x tokens per example.

  Warmup is a fraction of the steps; checkpoint and evals run at the end only (the
  sweep's result is the final eval), so short and long runs cost the same overhead.
  """
  steps: int
  batch_size: int
  task: str = "default"
  evals: tuple[str, ...] = ("loss",)
  warmup_fraction: float = 0.1

  @property
  def name(self) -> str:
    return f"s{self.steps}b{self.batch_size}"

  def overrides(self) -> tuple[str, ...]:
    warmup = min(self.steps, max(1, round(self.warmup_fraction * self.steps)))
    return (_set("total_steps", self.steps), _set("batch_size", self.batch_size, task=self.task),
            _set("warmup_steps", warmup), _set("checkpoint_every", self.steps),
            *(_set("eval_every", self.steps, eval=e) for e in self.evals))


def _variants(fusions: Sequence[str | None], moe: Sequence[int | None]):
  """(overrides, name part) per fusion type x MoE expert count (None = the recipe's own)."""
  for fusion in fusions:
    for experts in moe:
      overrides, parts = [], []
      if fusion is not None:
        overrides.append(_set("fusion", fusion))
        parts.append(fusion)
      if experts is not None:  # the MoE layer's layout is issue 8's: names in KEYS
        overrides += [_set("moe", "moe"), _set("moe_experts", experts)]
        parts.append(f"moe{experts}")
      yield tuple(overrides), "-".join(parts)


def _join(*parts: str) -> str:
  return "-".join(p for p in parts if p)


def grid(config: str, sizes: Sequence[ModelSize], lengths: Sequence[Length], *,
         fusions: Sequence[str | None] = (None,), moe: Sequence[int | None] = (None,),
         extra: Sequence[str] = (), prefix: str = "") -> list[Run]:
  """Every fusion x MoE x size x length combination."""
  return [Run(_join(prefix, tag, s.name, n.name), config,
              (*extra, *variant, *s.overrides(), *n.overrides()), tags=(("design", "grid"),))
          for variant, tag in _variants(fusions, moe) for s in sizes for n in lengths]


def family_grid(bases: dict, sizes: Sequence[ModelSize], lengths: Sequence[Length], *,
                extra: dict | None = None) -> list[Run]:
  """A grid per model family ({family: base recipe}), named and tagged by family, so that
  collect writes the family column and `fit --group-by family` fits each apart.
  `extra` ({family: overrides}) holds a family's own settings (e.g. its encoder depth)."""
  extra = extra or {}
  return [dataclasses.replace(r, tags=r.tags + (("family", family),))
          for family, base in bases.items()
          for r in grid(base, sizes, lengths, extra=tuple(extra.get(family, ())),
                        prefix=family)]


def target_of(exp) -> tuple:
  """What a run's loss measures: its data, objectives and evaluators (not their periods)."""
  evals = sorted((n, type(ev).__name__, getattr(ev, "split", None))
                 for n, ev in exp.evals.items())
  return tuple((t.data.name, repr(t.objectives)) for t in exp.tasks.values()) + tuple(evals)


def comparability_problems(runs: Sequence[Run], configs: dict) -> list[str]:
  """Families whose runs score a different target than the first family's: their losses,
  and so their laws, could not be compared."""
  first, problems = {}, []
  for r in runs:
    family = dict(r.tags).get("family")
    if family is None or r.name not in configs:
      continue
    target = target_of(configs[r.name])
    if not first:
      first.update(family=family, run=r.name, target=target)
    elif target != first["target"] and family != first["family"]:
      problems.append(f"run {r.name!r} (family {family!r}) scores {target}, but family "
                      f"{first['family']!r} (run {first['run']!r}) scores {first['target']}: "
                      f"families must share the data, objectives and evaluators of their "
                      f"base recipes to be compared")
  return problems


def iso_flop(config: str, budgets: Sequence[float], sizes: Sequence[ModelSize], *,
             batch_size: int, params_fn, tokens_per_example_fn, task: str = "default",
             evals: Sequence[str] = ("loss",), fusions: Sequence[str | None] = (None,),
             moe: Sequence[int | None] = (None,), extra: Sequence[str] = (),
             min_steps: int = 20, max_steps: int | None = None,
             prefix: str = "") -> list[Run]:
  """For each compute budget C, each size N trained on D = C / (6 N) tokens.

  params_fn(config, overrides) -> N and tokens_per_example_fn(config, overrides) -> tokens
  (mmjax.scaling.counts has both). Steps are rounded; sizes that would train for fewer than
  `min_steps` steps at a budget, or more than `max_steps` (a bound on a small model's cost
  at a large budget), are left out of it. Each run is tagged with its budget.
  """
  runs = []
  for variant, tag in _variants(fusions, moe):
    for c in budgets:
      for s in sizes:
        base = (*extra, *variant, *s.overrides())
        n = params_fn(config, base)
        per_step = batch_size * tokens_per_example_fn(config, base)
        steps = round(c / (6.0 * n * per_step))
        if steps < min_steps or (max_steps is not None and steps > max_steps):
          continue
        length = Length(steps, batch_size, task, tuple(evals))
        runs.append(Run(_join(prefix, tag, f"c{c:.2g}".replace("+", ""), s.name), config,
                        (*base, *length.overrides()),
                        tags=(("budget", float(c)), ("design", "isoflop"))))
  return runs


# ------------------------------------------------------------------ loading and checks

def load_sweep(path: str) -> list[Run]:
  """Imports a sweep file and returns its runs (not yet validated)."""
  if not os.path.isfile(path):
    raise SweepError(f"--sweep {path!r}: no such file; sweep files live in configs/sweeps/*.py")
  from mmjax.config import recipe as config_lib  # local: config validation imports jax
  from mmjax import experiment
  module = config_lib.import_file(path, "sweep")
  if not hasattr(module, "get_sweep"):
    hint = " (it defines get_config: that is a recipe, not a sweep)" \
        if hasattr(module, "get_config") else ""
    raise SweepError(f"sweep file {path!r} has no get_sweep() function{hint}")
  runs = list(module.get_sweep())
  for i, r in enumerate(runs):
    if not isinstance(r, Run):
      raise SweepError(f"{path}: get_sweep() item {i} is a {type(r).__name__}, not a "
                       f"mmjax.scaling.sweep.Run")
  return runs


def validate(runs: Iterable[Run]) -> dict:
  """{run name: its parsed Experiment}; raises SweepError listing EVERY problem of the sweep."""
  from mmjax.config import recipe as config_lib
  from mmjax import experiment
  runs = list(runs)
  if not runs:
    raise SweepError("the sweep has no runs; get_sweep() returned an empty list")
  problems, seen = [], {}
  for i, r in enumerate(runs):
    if not _NAME.match(r.name):
      problems.append(f"run {i} name {r.name!r}: use letters, digits and . _ + - only "
                      f"(it becomes a folder name)")
    if r.name in seen:
      problems.append(f"duplicate run name {r.name!r} (runs {seen[r.name]} and {i})")
    seen.setdefault(r.name, i)
  configs = {}
  for r in runs:
    try:
      configs[r.name] = experiment.parse(config_lib.load(r.config, r.overrides))
    except config_lib.ConfigError as e:
      problems.append(f"run {r.name!r}: {e}")
  problems += comparability_problems(runs, configs)
  if problems:
    raise SweepError(f"{len(problems)} problem(s) in the sweep, nothing was run:\n  " +
                     "\n  ".join(problems))
  return configs

