#!/usr/bin/env bash
# launch/local.sh N --config CONFIG --workdir DIR [train args ...]
#
# Runs N processes of `python -m mmjax.train` on this machine as one multi-process JAX job
# (coordinator on 127.0.0.1, a free port). Process i appends to DIR/logs/process_<i>.log
# (its PID is in DIR/logs/process_<i>.pid); each start is marked there by a line
# "==== local.sh start <n> at <time> ...", so the logs of a crash survive the rerun.
# Waits for all; if one fails the others are stopped (they would otherwise wait in a
# collective until JAX's heartbeat timeout) and this script exits non-zero.
# SIGTERM/SIGINT are forwarded, so the processes save a checkpoint and exit; rerunning the
# same command resumes. Devices per process come from the caller's environment, e.g.
#   XLA_FLAGS=--xla_force_host_platform_device_count=2 launch/local.sh 2 --config ... --workdir ...
# Environment: PYTHON (default: python), MMJAX_DISTRIBUTED_TIMEOUT_S (default 120).
set -uo pipefail

usage() { echo "usage: $0 NUM_PROCESSES --config CONFIG --workdir DIR [train args ...]" >&2; exit 2; }
[[ $# -ge 1 && "$1" =~ ^[1-9][0-9]*$ ]] || usage
num="$1"; shift

# The workdir is only read here, to place the logs; the trainer gets the arguments unchanged.
workdir=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --workdir=*) workdir="${args[i]#--workdir=}" ;;
    --workdir) workdir="${args[i+1]:-}" ;;
  esac
done
[[ -n "$workdir" ]] || { echo "error: --workdir is required (logs go to WORKDIR/logs)" >&2; usage; }
logs="$workdir/logs"
mkdir -p "$logs"

python="${PYTHON:-python}"
cd "$(dirname "$0")/.."  # `python -m mmjax.train` from the repository root
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Ask the OS for a free port. (Another program could take it before process 0 binds it;
# then process 0 fails to start and every process exits with the reason in its log.)
port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
echo "local.sh: $num processes, coordinator 127.0.0.1:$port, logs in $logs/process_<i>.log"

pids=()
for ((i = 0; i < num; i++)); do
  starts=$(grep -c '^==== local.sh start ' "$logs/process_$i.log" 2>/dev/null)
  echo "==== local.sh start $((${starts:-0} + 1)) at $(date '+%Y-%m-%d %H:%M:%S'): process $i of $num, coordinator 127.0.0.1:$port ====" >>"$logs/process_$i.log"
  "$python" -u -m mmjax.train "$@" --coordinator_address="127.0.0.1:$port" \
    --num_processes="$num" --process_id="$i" \
    --distributed_timeout_s="${MMJAX_DISTRIBUTED_TIMEOUT_S:-120}" >>"$logs/process_$i.log" 2>&1 &
  pids[i]=$!
  echo "${pids[i]}" >"$logs/process_$i.pid"  # for tools and tests that need to reach one process
done

stop_all() {  # $1: signal
  for pid in "${pids[@]}"; do kill -s "$1" "$pid" 2>/dev/null; done
}
trap 'echo "local.sh: forwarding SIGTERM" >&2; stop_all TERM' TERM
trap 'echo "local.sh: forwarding SIGINT" >&2; stop_all INT' INT

status=0
declare -A live  # pid -> process index, of those not yet reaped
for ((i = 0; i < num; i++)); do live[${pids[i]}]=$i; done
while ((${#live[@]} > 0)); do
  wait -n -p done_pid "${!live[@]}"
  rc=$?
  [[ -z "${done_pid:-}" ]] && continue  # woken by a trapped signal; keep waiting
  proc=${live[$done_pid]}
  unset "live[$done_pid]"
  if ((rc != 0)); then
    echo "local.sh: process $proc exited with status $rc; last lines of $logs/process_$proc.log:" >&2
    tail -n 20 "$logs/process_$proc.log" >&2
    if ((status == 0)); then
      status=$rc
      echo "local.sh: stopping the other processes" >&2
      stop_all TERM
      # A process stuck in a collective may ignore SIGTERM (the signal is only checked
      # between steps): give them a grace period, then kill.
      ( sleep "${MMJAX_KILL_GRACE_S:-20}"; stop_all KILL ) &
      killer=$!
    fi
  fi
  unset done_pid
done
[[ -n "${killer:-}" ]] && kill "$killer" 2>/dev/null
((status == 0)) && echo "local.sh: all $num processes finished"
exit "$status"
