"""Joining a multi-process JAX job: from explicit flags, or detected from SLURM / TPU pods.

Called once, first thing, by the entry points (before any JAX computation). A single process
(no flags, no cluster environment) needs nothing and stays uninitialised.

How a process learns its place in the job, in order:
  1. explicit `--coordinator_address/--num_processes/--process_id` (launch/local.sh, anything else);
  2. a multi-task SLURM `srun` step (launch/slurm.sbatch): JAX reads SLURM_* itself;
  3. a multi-host TPU slice (launch/tpu_pod.sh sets MMJAX_DISTRIBUTED=auto; TPU_WORKER_HOSTNAMES
     is also recognised): JAX asks the TPU metadata itself.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import sys
import threading

import jax
import numpy as np

from mmjax.errors import MmjaxError

log = logging.getLogger("mmjax.runtime.distributed")

# How long an exiting process waits for the others at JAX's shutdown barrier. JAX's default
# (300 s) turns one process's crash into a 5-minute hang of the whole job, because the others
# are stuck in a collective and never reach the barrier; after this the process exits
# non-zero, so srun --kill-on-bad-exit / launch/local.sh stop the rest. Processes that
# finish normally reach the barrier within seconds of each other.
SHUTDOWN_TIMEOUT_S = 60
# JAX's coordination service aborts every process (a C++ stack naming no process) once one
# stops sending heartbeats for this long. mmjax's own watchdog notices a silent peer sooner
# (watchdog.PEER_SILENT_S) and says which; JAX's deadline stays as the backstop, far enough
# behind that it never wins the race.
HEARTBEAT_TIMEOUT_S = 90
# How long a process waits at `wait_for_all` for the others to finish compiling. Generous:
# compile times differ between hosts (a cache hit on one, a busy CPU on another), and a peer
# that dies meanwhile is caught by the heartbeat deadline above long before this.
READY_TIMEOUT_S = 1800


class DistributedError(MmjaxError, RuntimeError):
  """This process could not join the multi-process job; the message says why and what to check."""


def _slurm_tasks_per_node() -> int:
  # "2(x3)" = 2 tasks on each of 3 nodes; "2,1" = uneven: the first node's count is what
  # matters for deciding how GPUs are split (uneven layouts are unusual and refused by JAX).
  layout = os.environ.get("SLURM_STEP_TASKS_PER_NODE") or os.environ.get("SLURM_TASKS_PER_NODE", "1")
  m = re.match(r"\d+", layout)
  return int(m.group()) if m else 1


def cluster_environment() -> str | None:
  """'slurm' inside a multi-task srun step, 'tpu' on a multi-host TPU slice, else None."""
  # SLURM_STEP_ID alone would also match the batch script itself (one process), so the step's
  # task count decides; SLURM_STEP_NUM_TASKS is the srun step's, SLURM_NTASKS the allocation's.
  tasks = os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS", "1")
  if "SLURM_STEP_NODELIST" in os.environ and int(tasks) > 1:
    return "slurm"
  if os.environ.get("MMJAX_DISTRIBUTED", "").lower() == "auto":
    return "auto"
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if len([h for h in hosts.split(",") if h]) > 1:
    return "tpu"
  return None


def slurm_local_device_ids() -> list[int] | None:
  """Which of this node's GPUs one SLURM task drives.

  JAX's SLURM default is GPU number SLURM_LOCALID, right for one task per GPU when every task
  sees all of the node's GPUs. Two layouts need more: one task per node must drive all of
  them, and a task bound to one GPU by SLURM (--gpus-per-task/--gpu-bind) sees it as GPU 0.
  """
  visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
  if not visible:
    return None  # CPU (or GPUs not given by SLURM): JAX's default is harmless there
  if _slurm_tasks_per_node() == 1:
    return list(range(len(visible)))
  if len(visible) == 1:
    return [0]
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout_s: int = 300) -> None:
  explicit = coordinator_address is not None
  env = cluster_environment()
  if not explicit and env is None:
    return
  if explicit and (num_processes is None or process_id is None):
    raise DistributedError("--coordinator_address needs --num_processes and --process_id too")
  if explicit and not 0 <= process_id < num_processes:
    raise DistributedError(f"--process_id={process_id} must be in "
                           f"[0, --num_processes={num_processes})")
  # CPU collectives across processes need gloo (the CPU backend has none by default);
  # the setting only affects the CPU backend, so it is harmless on GPU/TPU hosts. It must
  # be set before any backend starts, so this never asks which backend is in use.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # JAX's own deadline ends in a C++ abort whose message blames "another task"; a watchdog
  # with our deadline (JAX's comes later, as a backstop) says instead what to check.
  kwargs = dict(shutdown_timeout_seconds=SHUTDOWN_TIMEOUT_S,
                heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
                initialization_timeout=int(timeout_s) + 30)
  if explicit:
    kwargs.update(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
    where = f"coordinator {coordinator_address} as process {process_id} of {num_processes}"
  elif env == "slurm":
    kwargs["local_device_ids"] = slurm_local_device_ids()
    where = f"SLURM job {os.environ.get('SLURM_JOB_ID')} as task {os.environ.get('SLURM_PROCID')}"
  else:
    where = f"the {env} cluster (detected by JAX)"
  watchdog = threading.Timer(timeout_s, _give_up, args=(where, coordinator_address, timeout_s))
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(**kwargs)  # without explicit args JAX reads the environment
  except Exception as e:  # JAX raises its runtime error type, whose name varies by version
    raise DistributedError(f"could not join the multi-process JAX job ({where}): "
                           f"{type(e).__name__}: {e}") from e
  finally:
    watchdog.cancel()
  log.info("process %d of %d joined (%s; %d local / %d global devices)", jax.process_index(),
           jax.process_count(), "explicit flags" if explicit else env, jax.local_device_count(),
           jax.device_count())


def _reachable(address: str | None) -> bool | None:
  if not address or ":" not in address:
    return None
  host, port = address.rsplit(":", 1)
  try:
    socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
    return True
  except OSError:
    return False


def _give_up(where: str, address: str | None, timeout_s: int) -> None:
  """Runs on the watchdog thread: the main thread is stuck inside JAX's connect, so exit here."""
  reachable = _reachable(address)
  why = {None: "",
         False: f" Nothing accepts connections at {address}: process 0 is not running (or not "
                f"yet), the port is wrong, or a firewall is in the way.",
         True: f" {address} accepts connections, so some other process has not joined: check "
               f"that all were started, with the same --num_processes."}[reachable]
  sys.stderr.write(f"error: could not join the multi-process JAX job ({where}) within "
                   f"--distributed_timeout_s={timeout_s}s.{why}\n")
  sys.stderr.flush()
  os._exit(1)


def any_process(flag: bool) -> bool:
  """True on every process if `flag` is true on any of them (a collective: all must call it).

  Used so that a stop signal that reaches processes at different steps still makes all of
  them stop, and save, at the same step; otherwise one would wait forever in a collective
  the others never enter.
  """
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils
  return bool(np.any(multihost_utils.process_allgather(np.asarray([bool(flag)], np.int32))))


def wait_for_all(name: str, timeout_s: float = READY_TIMEOUT_S) -> None:
  """Blocks until every process has called `wait_for_all(name)`: a barrier on the coordination
  service, not a collective.

  Called before the first collective after compiling. On CPU, the first collective sets up
  gloo's connections, which give up after 30 s (fixed inside XLA); a process whose compile
  took 30 s longer than its peers' would fail the job there. The barrier's own deadline is
  `timeout_s`.
  """
  if jax.process_count() == 1:
    return
  from jax._src import distributed as jax_distributed  # the client has no public accessor
  client = jax_distributed.global_state.client
  try:
    client.wait_at_barrier(f"mmjax/{name}", int(timeout_s * 1000))
  except Exception as e:  # JAX's runtime error type, whose name varies by version
    raise DistributedError(f"process {jax.process_index()} of {jax.process_count()} waited "
                           f"{timeout_s:.0f}s at '{name}' for the other processes: "
                           f"{type(e).__name__}: {e}") from e


def lost_peer_message(error: BaseException, wait_s: float = 12.0) -> str:
  """One line for an error that a multi-process job raised in a collective: which process is
  gone, judged by the watchdog's heartbeats (watched for up to `wait_s` to go silent)."""
  from mmjax.runtime.watchdog import silent_peers
  stale = silent_peers(jax.process_index(), jax.process_count(), wait_s)
  text = str(error).strip().splitlines()
  why = f"{type(error).__name__}: {text[0][:200] if text else ''}"
  who = "; ".join(stale) if stale else "no other process looks stalled (is this host's network up?)"
  return (f"process {jax.process_index()} of {jax.process_count()} lost contact with the job "
          f"({why}); lost: {who}. Ending this process; rerun the same command to resume from "
          f"the last checkpoint.")
