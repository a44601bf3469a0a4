#!/usr/bin/env bash
# The README's test command runs this: the whole suite (fast tier + end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=8"
export MMJAX_DATA_DIR="${MMJAX_DATA_DIR:-$PWD/.cache/test_data}"
exec python -m pytest -q tests "$@"
