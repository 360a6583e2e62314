#!/usr/bin/env bash
# N JAX processes on this machine, for testing the multi-host path (CPU) or one process per GPU.
#
#   launch/local.sh [--dry-run] [--processes N] [--cpu-devices D | --gpus] [--module M] -- ARGS...
#   launch/local.sh --processes 2 --cpu-devices 4 -- --config configs/tiny.py --workdir runs/local2
#   launch/local.sh --module wavlm_jax.targets.tokenize -- --config configs/tokenize_mfcc.py
# Each process gets JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, which the trainer
# (default --module wavlm_jax.train) and the tokenizer pass to jax.distributed.initialize().
set -euo pipefail

dry_run=0
processes=2
cpu_devices=4
gpus=0
port=""
module=wavlm_jax.train
python=${PYTHON:-.venv/bin/python}

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --processes) processes=$2; shift 2 ;;
    --cpu-devices) cpu_devices=$2; shift 2 ;;
    --gpus) gpus=1; shift ;;
    --port) port=$2; shift 2 ;;
    --module) module=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "local.sh: unknown option $1" >&2; usage 2 ;;
  esac
done
[[ $# -gt 0 ]] || { echo "local.sh: pass the program's arguments after --" >&2; exit 2; }
if [[ -z "$port" ]]; then
  port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 12355)
fi

commands=()
for ((i = 0; i < processes; i++)); do
  env_vars="JAX_COORDINATOR_ADDRESS=127.0.0.1:${port} JAX_NUM_PROCESSES=${processes} JAX_PROCESS_ID=${i}"
  if [[ $gpus -eq 1 ]]; then
    env_vars+=" CUDA_VISIBLE_DEVICES=${i}"
  else
    env_vars+=" JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=${cpu_devices}"
  fi
  commands+=("env ${env_vars} ${python} -m ${module} $(printf '%q ' "$@")")
done

if [[ $dry_run -eq 1 ]]; then
  printf '%s\n' "${commands[@]}"
  exit 0
fi

pids=()
for cmd in "${commands[@]}"; do
  bash -c "$cmd" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit "$status"
