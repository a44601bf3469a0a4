"""How many grain worker processes and read threads an input pipeline uses on this host.

`data.worker_count`: 0 = in the training process; N > 0 = N grain worker processes
(`mp_prefetch`); -1 = auto, from the host's cores. Measured (benchmarks/input.py,
README): on a 2-core host, worker processes were slower than in-process loading (they
compete with each other and with the step for the same two cores), so auto is 0 there;
with more cores the batched preprocessing (numpy FFTs, matmuls, zstd reads: mostly
GIL-free, but with Python between them) scales with processes, not threads.
"""
from __future__ import annotations

import dataclasses
import os

from mmjax.errors import MmjaxError

AUTO = -1
# At and below this many cores, auto means in-process (measured on a 2-core host).
_IN_PROCESS_MAX_CORES = 2
# Beyond this, more workers only add memory: a batch costs ~30-60 ms of one core, so 16
# processes feed ~100k examples/s, more than any single accelerator step here eats.
_MAX_AUTO_WORKERS = 16


class InputConfigError(MmjaxError, ValueError):
  """A data setting that cannot work on this host or with this batch."""


def host_cores() -> int:
  """Cores this process may run on (respects CPU affinity / cgroup cpusets)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class Parallelism:
  workers: int        # grain worker processes (0 = in process)
  read_threads: int   # grain read-ahead threads in whichever process builds batches


def resolve(worker_count, cores: int | None = None) -> Parallelism:
  """`data.worker_count` -> what grain is asked for, or InputConfigError."""
  cores = cores or host_cores()
  if isinstance(worker_count, bool) or not isinstance(worker_count, int) or worker_count < AUTO:
    raise InputConfigError(f"data.worker_count={worker_count!r}: must be an integer: -1 (auto, "
                           f"from the host's {cores} cores), 0 (in process) or 1..{cores}")
  if worker_count > cores:
    raise InputConfigError(f"data.worker_count={worker_count} is more than this host's {cores} "
                           f"cores; use at most {cores}, or -1 to choose from the cores")
  if worker_count == AUTO:
    worker_count = 0 if cores <= _IN_PROCESS_MAX_CORES else min(cores - 1, _MAX_AUTO_WORKERS)
  # One read-ahead thread overlaps a batch's reads and numpy work (which release the GIL)
  # with the consumer; in worker processes the processes are the parallelism.
  return Parallelism(workers=worker_count, read_threads=1 if worker_count == 0 else 0)
