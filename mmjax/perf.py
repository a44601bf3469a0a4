"""The machine's own matmul throughput, measured in-process (the MFU denominator)."""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp


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


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled XLA computation (XLA's own count), or 0 if unknown."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # some backends do not implement it
    return 0.0
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))
