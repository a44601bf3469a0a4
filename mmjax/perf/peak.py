"""The MFU denominator: the peak FLOP/s of the devices a step runs on, and where it came from.

MFU = analytic model FLOPs of the steps (mmjax/perf/flops.py) / time / peak, with

  peak = number of devices x the vendor's nominal dense peak per device, for the compute
         dtype, where the device kind is known (NOMINAL_PEAK);
       = the matmul rate measured in this process, for the whole host, elsewhere (CPU):
         fake CPU devices (--xla_force_host_platform_device_count) share one host's cores,
         so their count does not multiply it. Each process measures its own host.

XLA's cost analysis (`compiled_flops`) stays a CPU cross-check only: on GPU it misses the
work inside library GEMM calls (3-6x too low, measured).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

# Dense peak FLOP/s per device (no sparsity), by device_kind substring and dtype. float32
# runs as TF32 on tensor cores of A100/H100 (XLA's default matmul precision there), so the
# TF32 dense figure is its peak; TPUs compute float32 matmuls in bf16 passes: bf16 peak.
NOMINAL_PEAK: dict[str, dict[str, float]] = {
    "H100": {"bfloat16": 989e12, "float16": 989e12, "float32": 494e12},
    "H200": {"bfloat16": 989e12, "float16": 989e12, "float32": 494e12},
    "A100": {"bfloat16": 312e12, "float16": 312e12, "float32": 156e12},
    "TPU v4": {"bfloat16": 275e12, "float32": 275e12},
    "TPU v5 lite": {"bfloat16": 197e12, "float32": 197e12},
    "TPU v5e": {"bfloat16": 197e12, "float32": 197e12},
    "TPU v5p": {"bfloat16": 459e12, "float32": 459e12},
    "TPU v5": {"bfloat16": 459e12, "float32": 459e12},  # v5p reports itself as "TPU v5"
}


@dataclasses.dataclass(frozen=True)
class Peak:
  flops_per_s: float   # of all devices of the job together
  source: str          # e.g. "nominal NVIDIA H100 80GB HBM3 bfloat16 x 8" or "measured ..."

  @property
  def nominal(self) -> bool:
    return self.source.startswith("nominal")


def nominal_peak(device_kind: str, dtype: str) -> float | None:
  """The vendor's dense peak of one device of this kind in `dtype`, or None if unknown."""
  for kind, by_dtype in NOMINAL_PEAK.items():  # most specific names first within a family
    if kind.lower() in device_kind.lower():
      return by_dtype.get(dtype)
  return None


def job_peak(devices: Sequence, dtype: str, process_count: int = 1,
             measure: Callable[[], float] | None = None) -> Peak:
  """Peak FLOP/s of `devices` (all of the job's) computing in `dtype`.

  measure: the host's matmul rate (default: measured now); used only for unknown kinds.
  """
  kind = devices[0].device_kind
  per_device = nominal_peak(kind, dtype)
  if per_device is not None:
    return Peak(per_device * len(devices), f"nominal {kind} {dtype} x {len(devices)}")
  rate = (measure or (lambda: measured_peak(dtype)))()
  return Peak(rate * process_count, f"measured {dtype} matmul of the host ({kind}) x "
                                    f"{process_count} process(es)")


def matmul_flops_per_s(n: int = 1024, dtype=jnp.float32, seconds: float = 1.0) -> float:
  """Best achieved FLOP/s of an n x n x n matmul on the default device over ~`seconds`."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  best = float("inf")
  deadline = time.perf_counter() + seconds
  reps = 0
  while reps < 3 or time.perf_counter() < deadline:
    t0 = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t0)
    reps += 1
  return 2.0 * n ** 3 / best


def measured_peak(dtype: str = "float32", sizes: Sequence[int] = (1024,),
                  seconds: float = 0.5) -> float:
  """The best matmul FLOP/s over square sizes (the host's speed drifts; the best observed
  is the honest reference). benchmarks/mfu.py and the trainer both use it, so their MFUs
  share a denominator."""
  dt = jnp.dtype(dtype)
  return max(matmul_flops_per_s(n=n, dtype=dt, seconds=seconds) for n in sizes)


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled XLA computation (XLA's own count), or 0 if unknown."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # some backends do not implement it
    return 0.0
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))
