"""From a sweep's output folder to results.csv (finished runs) and failed.csv (the rest).

results.csv columns: run, family, fusion, params, params_encoder, params_decoder,
active_params, tokens, flops, flops_nmm, flops_6nd, examples, steps, loss, the run's design
tags (e.g. budget), then every final evaluator metric by its name. `flops` is the trainer's
count of what ran; `flops_nmm` NMM's 6(N_enc D_enc + N_dec D_dec) and `flops_6nd` 6ND
(mmjax/scaling/accounting.py). A `family` tag of the sweep overrides the derived family.

`loss` is the final validation loss of ONE per-example objective, `caption_mlm` by
default: whole-word masked caption modelling with the audio in context
(configs/mm_world.py:scaling). It is a per-token cross-entropy, so it does not depend on the
batch size the way a contrastive loss does, and 20-way classification saturates near zero
where it does not; it has a computed floor of 0.25 nats (mmjax/scaling/caption_floor.py)
for the law's E to meet, and it needs the audio (the shape word), so it measures fusion.
"""
from __future__ import annotations

import csv
import math
import os
import sys
from typing import Sequence

from mmjax import experiment
from mmjax.config import recipe as config_lib
from mmjax.checkpoint import workdir as workdir_lib
from mmjax.errors import MmjaxError
from mmjax.scaling import accounting, counts, runner
from mmjax.scaling.sweep import fusion_of

DEFAULT_OBJECTIVE = "caption_mlm"
FIXED = ("run", "family", "fusion", "params", "params_encoder", "params_decoder",
         "active_params", "tokens", "flops", "flops_nmm", "flops_6nd", "examples", "steps",
         "loss")
MOE_ACTIVE_KEY = "model/active_params"  # the MoE accounting (issue 8) is to write it


class CollectError(MmjaxError, ValueError):
  """The output folder or a metric name is not what collect needs."""


def loss_key(row: dict, objective: str) -> str:
  """The eval metric that is the run's `loss`: an exact name, or `<obj>/loss` of a loss eval."""
  if "/" in objective and objective in row:
    return objective
  matches = sorted(k for k in row if k.endswith(f"/{objective}/loss"))
  if len(matches) == 1:
    return matches[0]
  losses = sorted(k for k in row if k.endswith("/loss"))
  what = "several" if matches else "no"
  raise CollectError(f"{what} final eval metric(s) for objective {objective!r} "
                     f"{matches or ''}; pass --objective as one of {losses}")


def collect_run(workdir: str, name: str, objective: str) -> dict:
  """One results row; raises ValueError with the reason the run has no result."""
  if not os.path.isdir(workdir):
    raise ValueError("missing: never started")
  try:
    exp = experiment.parse(workdir_lib.read_config(workdir))
  except FileNotFoundError:
    raise ValueError("unfinished: no config.json (failed before training started)") from None
  rows = runner.read_rows(workdir)
  state = runner.status(workdir, exp)
  if state != "finished":
    ckpts = runner.checkpoint_steps(workdir)
    last = ckpts[-1] if ckpts else "none"
    raise ValueError(f"unfinished: last checkpoint {last} of {exp.total_steps} steps, "
                     f"final eval row {'present' if runner.final_eval_row(rows, exp) else 'missing'}"
                     f"{_last_error(workdir)}")
  final = runner.final_eval_row(rows, exp)
  at_end = {}
  for r in rows:  # trainer figures (params/tokens/flops) of the last training row
    if r.get("step") == exp.total_steps:
      at_end.update(r)
  n = counts.run_counts(exp, at_end, exp.total_steps)
  loss = float(final[loss_key(final, objective)])
  if not math.isfinite(loss):
    raise ValueError(f"failed: final loss is {loss}")
  evals = {k: v for k, v in final.items() if k.startswith(runner.eval_prefixes(exp))}
  # Per-family accounting needs one task's examples; other runs have the common columns.
  family = accounting.family_counts(exp, n["examples"], next(iter(exp.tasks))) \
      if accounting.per_example(exp) else {}
  # The trainer's active_params where it recorded one, else the accounting's (or N).
  active = float(at_end.get(MOE_ACTIVE_KEY, family.pop("active_params", n["params"])))
  return dict(run=name, fusion=fusion_of(exp), params=n["params"], active_params=active,
              tokens=n["tokens"], flops=n["flops"], examples=n["examples"],
              steps=exp.total_steps, loss=loss, **family, **evals)


def _last_error(workdir: str) -> str:
  path = os.path.join(workdir, runner.LOG)
  if not os.path.isfile(path):
    return ""
  with open(path, errors="replace") as f:
    errors = [l.strip() for l in f if l.startswith("error:") or "Error:" in l]
  return f"; last error: {errors[-1][:300]}" if errors else ""


def run_names(out: str) -> list[str]:
  """The planned runs (sweep.json), then any other workdir found in `out`."""
  planned = [r.name for r in runner.read_plan(out)]
  found = sorted(d for d in os.listdir(out)
                 if os.path.isfile(workdir_lib.config_path(os.path.join(out, d))))
  return planned + [d for d in found if d not in planned]


def write_csv(path: str, rows: Sequence[dict], first: Sequence[str]) -> None:
  cols = list(first) + sorted({k for r in rows for k in r} - set(first))
  tmp = path + ".tmp"
  with open(tmp, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=cols, restval="")
    w.writeheader()
    w.writerows(rows)
  os.replace(tmp, path)


def collect(out: str, objective: str = DEFAULT_OBJECTIVE) -> tuple[list[dict], list[dict]]:
  """Writes out/results.csv and out/failed.csv; returns (results, failed)."""
  if not os.path.isdir(out):
    raise CollectError(f"--out {out!r} is not a folder; pass the --out of the sweep command")
  tags = {r.name: dict(r.tags) for r in runner.read_plan(out)}
  results, failed = [], []
  for name in run_names(out):
    wd = os.path.join(out, name)
    try:
      row = collect_run(wd, name, objective)
    except (ValueError, config_lib.ConfigError) as e:
      if isinstance(e, CollectError):
        raise
      failed.append(dict(run=name, status=str(e).split(":")[0], reason=str(e), workdir=wd))
      continue
    row.update(tags.get(name, {}))
    results.append(row)
  if not results and not failed:
    raise CollectError(f"{out!r} holds no runs (no sweep.json, no workdir with config.json)")
  write_csv(os.path.join(out, "results.csv"), results, FIXED)
  write_csv(os.path.join(out, "failed.csv"), failed, ("run", "status", "reason", "workdir"))
  for f in failed:
    print(f"not collected: {f['run']}: {f['reason']}", file=sys.stderr)
  return results, failed
