"""Joining a multi-process JAX job: from explicit flags, or detected from SLURM / TPU pods.

Called once, first thing, by the entry points. A single process (no flags, no cluster
environment) needs nothing and stays uninitialised.
"""
from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger("mmjax.distributed")


def cluster_environment() -> str | None:
  """'slurm' inside a multi-task srun step, 'tpu' on a multi-host TPU slice, else None."""
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_ID" in os.environ:
    return "slurm"
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if len([h for h in hosts.split(",") if h]) > 1:
    return "tpu"
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout_s: int = 300) -> None:
  explicit = coordinator_address is not None
  env = cluster_environment()
  if not explicit and env is None:
    return
  # CPU collectives across processes need gloo (the CPU backend has none by default);
  # the setting only affects the CPU backend, so it is harmless on GPU/TPU hosts. It must
  # be set before any backend starts, so this never asks which backend is in use.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    if num_processes is None or process_id is None:
      raise ValueError("--coordinator_address needs --num_processes and --process_id too")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=timeout_s)
  else:
    jax.distributed.initialize(initialization_timeout=timeout_s)  # JAX reads the environment
  log.info("process %d of %d joined (%s)", jax.process_index(), jax.process_count(),
           "explicit flags" if explicit else env)
