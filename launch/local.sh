#!/usr/bin/env bash
# N JAX processes on this machine, for testing the multi-host path (CPU) or one process per GPU.
#
#   launch/local.sh [--dry-run] [--processes N] [--cpu-devices D | --gpus] [--module M] [--restarts R] -- ARGS...
#   launch/local.sh --processes 2 --cpu-devices 4 --restarts 3 -- --config configs/tiny.py --workdir runs/local2
#   launch/local.sh --module wavlm_jax.targets.tokenize -- --config configs/tokenize_mfcc.py
# Each process gets JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, which the trainer
# (default --module wavlm_jax.train) and the tokenizer pass to jax.distributed.initialize(). When one
# process fails, the others are stopped. --restarts R: until WORKDIR/summary.json says "finished" (the
# trainer resumes from its checkpoints), start all processes again, at most R times.
set -euo pipefail

dry_run=0
processes=2
cpu_devices=4
gpus=0
port=""
module=wavlm_jax.train
restarts=0
python=${PYTHON:-.venv/bin/python}

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --processes) processes=$2; shift 2 ;;
    --cpu-devices) cpu_devices=$2; shift 2 ;;
    --gpus) gpus=1; shift ;;
    --port) port=$2; shift 2 ;;
    --module) module=$2; shift 2 ;;
    --restarts) restarts=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "local.sh: unknown option $1" >&2; usage 2 ;;
  esac
done
[[ $# -gt 0 ]] || { echo "local.sh: pass the program's arguments after --" >&2; exit 2; }
workdir=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --workdir) workdir=${args[i + 1]:-} ;;
    --workdir=*) workdir=${args[i]#--workdir=} ;;
  esac
done
if [[ $restarts -gt 0 && -z "$workdir" ]]; then
  echo "local.sh: --restarts needs the program's --workdir (its summary.json says when the run is finished)" >&2
  exit 2
fi

commands_for_port() {  # PORT ARGS...: one command line per process
  commands=()
  local i env_vars coordinator="127.0.0.1:$1"
  shift
  for ((i = 0; i < processes; i++)); do
    env_vars="JAX_COORDINATOR_ADDRESS=${coordinator} JAX_NUM_PROCESSES=${processes} JAX_PROCESS_ID=${i}"
    if [[ $gpus -eq 1 ]]; then
      env_vars+=" CUDA_VISIBLE_DEVICES=${i}"
    else
      env_vars+=" JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=${cpu_devices}"
    fi
    commands+=("env ${env_vars} ${python} -m ${module} $(printf '%q ' "$@")")
  done
}

free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo 12355
}

if [[ $dry_run -eq 1 ]]; then
  commands_for_port "${port:-$(free_port)}" "$@"
  printf '%s\n' "${commands[@]}"
  exit 0
fi

stop_all() {  # bash's dynamic scope: the pids of the run_all that is waiting
  local p
  for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
}

# One attempt: every process, each in its own process group; the first failure stops the others (they
# would wait in a collective for the lost host forever).
run_all() {
  local pids=() cmd pid status=0
  for cmd in "${commands[@]}"; do
    setsid bash -c "exec $cmd" &
    pids+=($!)
  done
  trap stop_all TERM INT  # a SIGTERM to the launcher reaches every process (they save and stop)
  while [[ ${#pids[@]} -gt 0 ]]; do
    wait -n "${pids[@]}" || status=$?
    local alive=()
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
    if [[ $status -ne 0 ]]; then
      for pid in "${alive[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
      wait "${alive[@]}" 2>/dev/null || true
      break
    fi
    pids=("${alive[@]}")
  done
  trap - TERM INT
  return "$status"
}

run_status() {  # summary.json's status: finished, preempted, none (yet) or unknown (unreadable); may be gs://
  "$python" -m wavlm_jax.storage status "$workdir" || echo unknown  # the error is on stderr
}

attempt=0
while true; do
  commands_for_port "${port:-$(free_port)}" "$@"
  status=0
  run_all || status=$?
  if [[ $restarts -eq 0 ]]; then
    exit "$status"
  fi
  state=$(run_status)
  if [[ "$state" == finished ]]; then
    echo "local.sh: $workdir finished after $attempt restart(s)"
    exit 0
  fi
  if [[ $attempt -ge $restarts ]]; then
    echo "local.sh: $workdir is '$state' after $attempt restart(s), the most allowed; giving up" >&2
    exit 1
  fi
  attempt=$((attempt + 1))
  echo "local.sh: $workdir is '$state' (exit status $status): restart $attempt of at most $restarts"
done
