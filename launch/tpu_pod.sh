#!/usr/bin/env bash
# launch/tpu_pod.sh --name NAME --zone ZONE [options] -- --config CONFIG --workdir DIR [train args ...]
#
# Runs `python -m mmjax.train` on every worker of a Cloud TPU VM slice (one process per host;
# JAX finds the others through the TPU metadata, see mmjax/runtime/distributed.py). Steps, in order:
#   --create            create the TPU VM (--accelerator-type, --version, --spot)
#   (always)            copy this repository to every worker, install requirements + jax[tpu]
#                       (skip with --no-install when the workers already have this code)
#   (always)            start training on all workers, detached from the ssh session
#   --tail              follow worker 0's log until training exits (default; --no-tail)
#   --delete            delete the TPU VM at the end (only after --tail, so it never kills a run)
# --dry-run prints the exact commands without running any of them.
# DIR must be storage every worker shares (e.g. a gcsfuse-mounted bucket or NFS): all
# hosts write one checkpoint together, and a rerun of the same command resumes from it.
set -euo pipefail

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
  echo "other options: --project P, --remote-dir DIR (default: mmjax, under the worker's home)" >&2
  exit 2
}

name="" zone="" project="" accelerator="" version="tpu-ubuntu2204-base" spot=0
create=0 install=1 tail_log=1 delete=0 dry_run=0 remote_dir="mmjax"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --accelerator-type) accelerator="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --spot) spot=1; shift ;;
    --create) create=1; shift ;;
    --no-install) install=0; shift ;;
    --tail) tail_log=1; shift ;;
    --no-tail) tail_log=0; shift ;;
    --delete) delete=1; shift ;;
    --remote-dir) remote_dir="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage ;;
    --) shift; break ;;
    *) echo "error: unknown option $1 (train arguments go after --)" >&2; usage ;;
  esac
done
train_args=("$@")
[[ -n "$name" && -n "$zone" ]] || { echo "error: --name and --zone are required" >&2; usage; }
[[ ${#train_args[@]} -gt 0 ]] || { echo "error: no train arguments after --" >&2; usage; }
if ((create)) && [[ -z "$accelerator" ]]; then
  echo "error: --create needs --accelerator-type (e.g. v4-32)" >&2; exit 2
fi
if ((delete)) && ! ((tail_log)); then
  echo "error: --delete needs --tail: deleting right after the start would kill the run" >&2; exit 2
fi
if ! ((dry_run)) && ! command -v gcloud >/dev/null; then
  echo "error: gcloud not found; install the Google Cloud CLI (or use --dry-run)" >&2; exit 2
fi

run() {  # prints the command exactly (shell-quoted); runs it unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  ((dry_run)) || "$@"
}

root="$(cd "$(dirname "$0")/.." && pwd)"
tpu=(gcloud compute tpus tpu-vm)
where=(--zone "$zone")
[[ -n "$project" ]] && where+=(--project "$project")
log="$remote_dir/train.log"

if ((create)); then
  extra=(); ((spot)) && extra+=(--spot)
  run "${tpu[@]}" create "$name" "${where[@]}" --accelerator-type "$accelerator" \
    --version "$version" "${extra[@]}"
fi

if ((install)); then
  # The working tree as it is (uncommitted changes included), without local-only folders.
  archive="${TMPDIR:-/tmp}/mmjax-src-$$.tar.gz"
  ((dry_run)) || trap 'rm -f "$archive"' EXIT  # also when a later step fails
  run tar -czf "$archive" -C "$root" --exclude=./.venv --exclude=./.git --exclude=./.cache \
    --exclude=./workdirs .
  run "${tpu[@]}" scp "$archive" "$name:mmjax-src.tar.gz" "${where[@]}" --worker=all
  run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command \
    "set -e; mkdir -p $remote_dir && tar -xzf mmjax-src.tar.gz -C $remote_dir && cd $remote_dir && python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt 'jax[tpu]'"
fi

# Detached (setsid nohup): a dropped ssh connection must not stop training.
quoted="$(printf ' %q' "${train_args[@]}")"
run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command \
  "cd $remote_dir || exit 1; MMJAX_DISTRIBUTED=auto PYTHONUNBUFFERED=1 setsid nohup .venv/bin/python -m mmjax.train$quoted > train.log 2>&1 < /dev/null & echo \$! > train.pid"

if ((tail_log)); then
  # Worker 0 logs the progress; `tail --pid` ends when its training process does.
  run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=0 --command \
    "tail --pid=\$(cat $remote_dir/train.pid) -n +1 -F $log"
fi

if ((delete)); then
  run "${tpu[@]}" delete "$name" "${where[@]}" --quiet
fi
