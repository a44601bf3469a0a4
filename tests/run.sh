#!/usr/bin/env bash
# The README's test command runs this: the whole suite (fast tier + end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=8"
export MMJAX_DATA_DIR="${MMJAX_DATA_DIR:-$PWD/.cache/test_data}"
# The end-to-end tests start many short trainer processes that compile the same steps:
# JAX's persistent compilation cache turns the repeats into cache hits (~30s -> ~8s each).
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$PWD/.cache/jax_compilation}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
exec python -m pytest -q tests "$@"
