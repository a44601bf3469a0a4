"""What a sweep would cost on an accelerator, for `sweep --dry-run`: each run's training
FLOPs (the trainer's analytic count, mmjax/perf/flops.py) and its hours on one H100.

No MFU has been measured on an H100 for these model sizes, so the hours use a NOMINAL MFU,
and every line says so. Small models reach far less than large ones; read the hours as a
lower bound for the smallest sizes.
"""
from __future__ import annotations

from typing import Mapping, Sequence

NOMINAL_MFU = 0.35
GPU = "H100"


def run_flops(exp) -> float | None:
  """Training FLOPs of a one-task unpacked run (None otherwise: the step split of several
  tasks is the schedule's, and packed rows' shapes the packer's, known only as it runs)."""
  from mmjax.scaling import accounting
  if not accounting.per_example(exp):
    return None
  return accounting.trainer_flops(exp, exp.total_steps, next(iter(exp.tasks)))


def gpu_hours(flops: float, dtype: str = "bfloat16", mfu: float = NOMINAL_MFU) -> float:
  from mmjax.perf.peak import NOMINAL_PEAK
  return flops / (NOMINAL_PEAK[GPU][dtype] * mfu) / 3600.0


def cost_lines(names: Sequence[str], configs: Mapping) -> list[str]:
  """One line per run and a total: FLOPs and H100 hours at the nominal MFU."""
  lines, total_flops, total_hours = [], 0.0, 0.0
  for name in names:
    flops = run_flops(configs[name])
    if flops is None:
      lines.append(f"{name}: FLOPs unknown (several tasks or packed rows)")
      continue
    hours = gpu_hours(flops)
    total_flops, total_hours = total_flops + flops, total_hours + hours
    lines.append(f"{name}: {flops:.3g} FLOPs, {hours:.3g} {GPU} hours")
  lines.append(f"total: {total_flops:.3g} FLOPs, {total_hours:.3g} {GPU} hours at a NOMINAL "
               f"MFU of {NOMINAL_MFU:.0%} (bf16 dense peak; not measured for these sizes)")
  return lines
