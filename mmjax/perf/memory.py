"""Ahead-of-time checks: what a compiled step will hold per device, before running it."""
from __future__ import annotations

import math

import jax
import numpy as np


def per_device_bytes(abstract_tree) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs carrying shardings (the largest
  shard, as XLA allocates it on every device)."""
  total = 0
  for leaf in jax.tree.leaves(abstract_tree):
    shard = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    total += math.prod(shard) * np.dtype(leaf.dtype).itemsize
  return total


def memory_report(abstract_state, compiled) -> dict[str, int]:
  """Per-device bytes: params and optimizer state (from their shardings) and XLA's own
  memory analysis of the compiled step (arguments, outputs, temporaries, code)."""
  mem = compiled.memory_analysis()
  report = {
      "params_bytes": per_device_bytes(abstract_state.params),
      "optimizer_bytes": per_device_bytes(abstract_state.opt_state),
  }
  for key in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
              "alias_size_in_bytes", "generated_code_size_in_bytes"):
    report[key.replace("_size_in", "")] = int(getattr(mem, key, 0) or 0)
  return report


def format_report(name: str, report: dict[str, int], flops: float) -> str:
  gib = lambda b: f"{b / 2**20:10.2f} MiB"
  lines = [f"task {name!r}: per-device memory (XLA memory analysis of the compiled step)"]
  for k, v in report.items():
    if k.endswith("bytes"):
      lines.append(f"  {k:<24}{gib(v)}")
  lines.append(f"  {'flops per step':<24}{flops:14.4g}")
  return "\n".join(lines)
