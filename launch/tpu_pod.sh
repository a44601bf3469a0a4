#!/usr/bin/env bash
# launch/tpu_pod.sh --name NAME --zone ZONE [options] -- --config CONFIG --workdir DIR [train args ...]
#
# Runs `python -m mmjax.train` on every worker of a Cloud TPU VM slice (one process per host;
# JAX finds the others through the TPU environment, see mmjax/runtime/distributed.py). Steps, in order:
#   --create            create the TPU VM (--accelerator-type, --version, --spot), unless it exists
#   (always)            check the workers' Python (>= 3.11; python3.11 is installed from the
#                       deadsnakes PPA where missing, --no-install-python refuses instead), copy
#                       this repository to every worker, install requirements-tpu.lock (hashes)
#                       (skip all three with --no-install when the workers already have this code)
#   (always)            start training on all workers, detached from the ssh session; each
#                       worker's log and exit status go to DIR/logs/tpu_pod/<run>/worker_<i>.*
#   --tail              follow worker 0's log until every worker has exited (default; --no-tail)
#   --delete            delete the TPU VM after training succeeded (--delete-always: whatever
#                       the outcome); needs --tail
# Exit status: training's (worker 0's, or a failed worker's when worker 0 succeeded).
# --dry-run prints the exact commands without running any of them.
# DIR must be storage every worker shares (a gcsfuse-mounted bucket, NFS, Filestore): all hosts
# write one checkpoint together, and rerunning the same command (e.g. after a spot preemption
# deleted the VM, with --create) resumes from it. A relative DIR or one under /tmp, /home,
# /root, /var/tmp or /dev/shm is refused as local to each worker, unless --allow-local-workdir.
set -euo pipefail

usage() {
  sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2
  echo "other options: --project P, --remote-dir DIR (default: mmjax, under the worker's home)," >&2
  echo "  --python PY (the workers' interpreter for the venv; default python3.11)" >&2
  exit 2
}
die() { echo "error: $*" >&2; exit 2; }

name="" zone="" project="" accelerator="" version="tpu-ubuntu2204-base" spot=0
create=0 install=1 install_python=1 python="python3.11" tail_log=1 delete=0 delete_always=0
dry_run=0 remote_dir="mmjax" allow_local=0
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
    --no-install-python) install_python=0; shift ;;
    --python) python="$2"; shift 2 ;;
    --tail) tail_log=1; shift ;;
    --no-tail) tail_log=0; shift ;;
    --delete) delete=1; shift ;;
    --delete-always) delete=1; delete_always=1; shift ;;
    --allow-local-workdir) allow_local=1; shift ;;
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
((create)) && [[ -z "$accelerator" ]] && die "--create needs --accelerator-type (e.g. v4-32)"
((delete)) && ! ((tail_log)) && die "--delete needs --tail: deleting right after the start would kill the run"

workdir=""
for ((i = 0; i < ${#train_args[@]}; i++)); do
  case "${train_args[i]}" in
    --workdir=*) workdir="${train_args[i]#--workdir=}" ;;
    --workdir) workdir="${train_args[i+1]:-}" ;;
  esac
done
[[ -n "$workdir" ]] || die "the train arguments need --workdir DIR (shared storage: logs and checkpoints go there)"
if ! ((allow_local)); then
  case "$workdir" in
    /tmp|/tmp/*|/var/tmp|/var/tmp/*|/home|/home/*|/root|/root/*|/dev/shm|/dev/shm/*|"~"*)
      die "--workdir $workdir is local to each worker, not storage all workers share (mount a bucket or NFS; --allow-local-workdir to run anyway)" ;;
    /*) ;;
    *) die "--workdir $workdir is relative: each worker would write its own copy (give a path on shared storage; --allow-local-workdir to run anyway)" ;;
  esac
fi
if ! ((dry_run)) && ! command -v gcloud >/dev/null; then
  die "gcloud not found; install the Google Cloud CLI (or use --dry-run)"
fi

run() {  # prints the command exactly (shell-quoted); runs it unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  ((dry_run)) || "$@"
}

root="$(cd "$(dirname "$0")/.." && pwd)"
tpu=(gcloud compute tpus tpu-vm)
where=(--zone "$zone")
[[ -n "$project" ]] && where+=(--project "$project")
q() { printf '%q' "$1"; }

if ((create)); then
  # A rerun after a preemption finds the VM gone and creates it again; one that still
  # exists is reused, so the same command both starts and resumes a run.
  exists=0
  if ! ((dry_run)); then
    "${tpu[@]}" describe "$name" "${where[@]}" >/dev/null 2>&1 && exists=1
  fi
  if ((exists)); then
    echo "tpu_pod: TPU VM $name exists; not creating it"
  else
    extra=(); ((spot)) && extra+=(--spot)
    run "${tpu[@]}" create "$name" "${where[@]}" --accelerator-type "$accelerator" \
      --version "$version" ${extra[@]+"${extra[@]}"}
  fi
fi

if ((install)); then
  # The pins need Python >= 3.11; the default image (Ubuntu 22.04) has 3.10. Checked on
  # every worker before anything is copied or installed.
  py="$(q "$python")"
  get_py=""
  if ((install_python)) && [[ "$python" == python3.11 ]]; then
    get_py="command -v python3.11 >/dev/null 2>&1 || { sudo add-apt-repository -y ppa:deadsnakes/ppa && sudo apt-get install -y -q python3.11 python3.11-venv; } >/tmp/mmjax-python-install.log 2>&1 || true; "
  fi
  check="${get_py}$py -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { echo \"mmjax: worker python: \$($py --version 2>&1 || echo 'not found')\"; exit 3; }"
  set +e
  run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command "$check"
  rc=$?
  set -e
  if ((rc == 3)); then
    echo "error: the workers' $python is below Python 3.11 or missing (the pins need >= 3.11): pass --python with a 3.11+ interpreter, or drop --no-install-python; nothing was installed" >&2
    exit 3
  elif ((rc != 0)); then
    echo "error: checking the workers' Python failed (ssh status $rc)" >&2; exit "$rc"
  fi
  # The working tree as it is (uncommitted changes included), without local-only folders.
  archive="${TMPDIR:-/tmp}/mmjax-src-$$.tar.gz"
  ((dry_run)) || trap 'rm -f "$archive"' EXIT  # also when a later step fails
  run tar -czf "$archive" -C "$root" --exclude=./.venv --exclude=./.git --exclude=./.cache \
    --exclude=./workdirs .
  run "${tpu[@]}" scp "$archive" "$name:mmjax-src.tar.gz" "${where[@]}" --worker=all
  rd="$(q "$remote_dir")"
  run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command \
    "set -e; mkdir -p $rd && tar -xzf mmjax-src.tar.gz -C $rd"
  run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command \
    "set -e; cd $rd && $py -m venv .venv && .venv/bin/pip install -q --require-hashes -r requirements-tpu.lock"
fi

# One folder per launch in the shared workdir: each worker's log and exit status, so they
# outlive the VM, and a rerun's logs never overwrite those of the crash before it.
run_id="$(date -u +%Y%m%dT%H%M%SZ)-$$"
logs="$(q "$workdir/logs/tpu_pod/$run_id")"
rd="$(q "$remote_dir")"
quoted="$(printf ' %q' "${train_args[@]}")"
# The worker's index: TPU_WORKER_ID where set, else the TPU metadata server.
worker_id='id=${TPU_WORKER_ID:-$(curl -sf -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number)} || exit 1'
# Detached (setsid nohup): a dropped ssh connection must not stop training.
run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command \
  "cd $rd || exit 1; $worker_id; mkdir -p $logs && : > $logs/worker_\$id.started && MMJAX_DISTRIBUTED=auto PYTHONUNBUFFERED=1 setsid nohup bash -c '.venv/bin/python -m mmjax.train \"\$@\" >> \"\$0.log\" 2>&1; echo \$? > \"\$0.status\"' $logs/worker_\$id$quoted > /dev/null 2>&1 < /dev/null &"
echo "tpu_pod: logs and exit statuses in $workdir/logs/tpu_pod/$run_id/"

status=0
if ((tail_log)); then
  # Follows worker 0's log; when it has exited, waits (up to 120 s) for the others' statuses,
  # writes the job's status to exit_status and exits with it.
  follow="cd $rd || exit 1; d=$logs; tail -n +1 -F \$d/worker_0.log 2>/dev/null & t=\$!; \
while [ ! -e \$d/worker_0.status ]; do sleep 2; done; \
rc=\$(cat \$d/worker_0.status); for f in \$d/worker_*.started; do s=\${f%.started}.status; w=0; \
while [ ! -e \$s ] && [ \$w -lt 120 ]; do sleep 2; w=\$((w + 2)); done; sleep 1; \
if [ ! -e \$s ]; then echo \"tpu_pod: \$s missing: that worker was lost\"; [ \"\$rc\" = 0 ] && rc=1; \
elif [ \"\$(cat \$s)\" != 0 ]; then echo \"tpu_pod: \$(basename \$s .status) exited \$(cat \$s)\"; [ \"\$rc\" = 0 ] && rc=\$(cat \$s); fi; done; \
kill \$t 2>/dev/null; echo \$rc > \$d/exit_status; echo \"tpu_pod: training exited with status \$rc\"; exit \$rc"
  set +e
  run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=0 --command "$follow"
  status=$?
  set -e
fi

if ((delete)); then
  if ((status == 0 || delete_always)); then
    run "${tpu[@]}" delete "$name" "${where[@]}" --quiet
  else
    echo "tpu_pod: training failed (status $status); keeping TPU VM $name (--delete-always deletes it anyway)" >&2
  fi
fi
exit "$status"
