#!/usr/bin/env bash
# The README's test command runs this: the whole suite (fast tier + end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
# 8 fake CPU devices for every sharded test. Backend optimisation off: the tests run tiny
# models many times, and compile time dominates (a tiny train run: 25 s -> 18 s); every
# comparison in the suite is between runs compiled the same way.
# XLA ends a process whose device threads do not all reach a collective within 40 s; on a
# loaded 2-core machine 8 threads can fall that far behind, so the tests allow 600 s.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 --xla_cpu_collective_call_terminate_timeout_seconds=600"
export MMJAX_DATA_DIR="${MMJAX_DATA_DIR:-$PWD/.cache/test_data}"
# The end-to-end tests start many short trainer processes that compile the same steps:
# JAX's persistent compilation cache turns the repeats into cache hits (~30s -> ~8s each).
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$PWD/.cache/jax_compilation}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
# Two workers, whole files per worker: much of the end-to-end time is waiting (SLURM's
# requeue, watchdog and heartbeat timeouts, process start-up), which the other worker fills.
# The slowest tests are listed at the end, to keep the tiers within their time budgets.
exec python -m pytest -q -n 2 --dist loadfile --durations=25 tests "$@"
