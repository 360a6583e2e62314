#!/usr/bin/env bash
# A TPU VM slice (or a queued resource) end to end: create, copy the code, install the [tpu] extra,
# train on every worker with the workdir on GCS, then delete the slice.
#
#   launch/tpu.sh --name wavlm-v5e --zone us-west4-a --type v5litepod-16 \
#       --config configs/wavlm_base.py --workdir gs://BUCKET/runs/wavlm_base [--queued] [--keep] [--dry-run] \
#       [-- TRAIN_FLAGS...]
#
# --dry-run prints the exact gcloud commands instead of running them.
set -euo pipefail

name=""; zone=""; type=""; config=""; workdir=""; project=""
version=${TPU_RUNTIME_VERSION:-v2-alpha-tpuv5-lite}
queued=0; keep=0; dry_run=0
repo_dir=wavlm_jax

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name=$2; shift 2 ;;
    --zone) zone=$2; shift 2 ;;
    --type) type=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --project) project=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --workdir) workdir=$2; shift 2 ;;
    --queued) queued=1; shift ;;
    --keep) keep=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) echo "tpu.sh: unknown option $1" >&2; usage 2 ;;
  esac
done
for required in name zone type config workdir; do
  if [[ -z "${!required}" ]]; then
    echo "tpu.sh: --${required} is required" >&2
    exit 2
  fi
done
[[ "$workdir" == gs://* ]] || echo "tpu.sh: warning: --workdir is not on GCS; workers will not share it" >&2

project_flag=()
[[ -n "$project" ]] && project_flag=(--project "$project")
extra=$(printf '%q ' "$@")

run() {
  if [[ $dry_run -eq 1 ]]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

if [[ $queued -eq 1 ]]; then
  run gcloud compute tpus queued-resources create "${name}-qr" --node-id "$name" --zone "$zone" \
      --accelerator-type "$type" --runtime-version "$version" "${project_flag[@]}"
  run gcloud compute tpus queued-resources wait "${name}-qr" --zone "$zone" --for-state ACTIVE "${project_flag[@]}"
else
  run gcloud compute tpus tpu-vm create "$name" --zone "$zone" --accelerator-type "$type" \
      --version "$version" "${project_flag[@]}"
fi

ssh_all=(gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all "${project_flag[@]}" --command)
run gcloud compute tpus tpu-vm scp --recurse --zone "$zone" --worker=all "${project_flag[@]}" \
    "$(pwd)" "${name}:~/${repo_dir}"
run "${ssh_all[@]}" "cd ~/${repo_dir} && python3 -m venv .venv && .venv/bin/pip install -e '.[tpu]'"
run "${ssh_all[@]}" "cd ~/${repo_dir} && .venv/bin/python -m wavlm_jax.train --config ${config} --workdir ${workdir} --config.distributed.enabled=true ${extra}"

if [[ $keep -eq 0 ]]; then
  if [[ $queued -eq 1 ]]; then
    run gcloud compute tpus queued-resources delete "${name}-qr" --zone "$zone" --force --quiet "${project_flag[@]}"
  else
    run gcloud compute tpus tpu-vm delete "$name" --zone "$zone" --quiet "${project_flag[@]}"
  fi
fi
