#!/usr/bin/env bash
# A TPU VM slice (or a queued resource) end to end: create, ship the code of the current commit (git
# archive: never .venv, runs/ or data), install the [tpu] extra, train on every worker with the workdir on
# GCS until its summary.json says "finished" -- after a preemption or a host failure the slice is
# re-created if it was reclaimed and training restarts (it resumes from its checkpoints), at most
# --max-restarts times -- then delete the slice.
#
#   launch/tpu.sh --name wavlm-v5e --zone us-west4-a --type v5litepod-16 \
#       --config configs/wavlm_base.py --workdir gs://BUCKET/runs/wavlm_base [--queued] [--keep] \
#       [--max-restarts 5] [--dry-run] [-- TRAIN_FLAGS...]
#
# --dry-run prints the exact commands of the first attempt instead of running them.
set -euo pipefail

name=""; zone=""; type=""; config=""; workdir=""; project=""
version=${TPU_RUNTIME_VERSION:-v2-alpha-tpuv5-lite}
queued=0; keep=0; dry_run=0; max_restarts=5
repo_dir=wavlm_jax

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

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
    --max-restarts) max_restarts=$2; shift 2 ;;
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

commit=$(git rev-parse --short HEAD)
archive="${TMPDIR:-/tmp}/wavlm_jax-${commit}.tar.gz"
if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
  echo "tpu.sh: warning: uncommitted changes are not shipped; the workers get commit ${commit}" >&2
fi

create_slice() {
  if [[ $queued -eq 1 ]]; then
    run gcloud compute tpus queued-resources create "${name}-qr" --node-id "$name" --zone "$zone" \
        --accelerator-type "$type" --runtime-version "$version" "${project_flag[@]}"
    run gcloud compute tpus queued-resources wait "${name}-qr" --zone "$zone" --for-state ACTIVE "${project_flag[@]}"
  else
    run gcloud compute tpus tpu-vm create "$name" --zone "$zone" --accelerator-type "$type" \
        --version "$version" "${project_flag[@]}"
  fi
}

delete_slice() {
  if [[ $queued -eq 1 ]]; then
    run gcloud compute tpus queued-resources delete "${name}-qr" --zone "$zone" --force --quiet "${project_flag[@]}"
  else
    run gcloud compute tpus tpu-vm delete "$name" --zone "$zone" --quiet "${project_flag[@]}"
  fi
}

ssh_all=(gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all "${project_flag[@]}" --command)
setup_workers() {  # the committed source only, then the README's install
  run gcloud compute tpus tpu-vm scp "$archive" "${name}:~/wavlm_jax.tar.gz" --zone "$zone" --worker=all \
      "${project_flag[@]}"
  run "${ssh_all[@]}" "rm -rf ~/${repo_dir} && mkdir ~/${repo_dir} && tar -xzf ~/wavlm_jax.tar.gz -C ~/${repo_dir} && cd ~/${repo_dir} && python3 -m venv .venv && .venv/bin/pip install -e '.[tpu]'"
}

slice_state() {  # READY while the slice lives; PREEMPTED, or nothing once it is reclaimed
  gcloud compute tpus tpu-vm describe "$name" --zone "$zone" --format='value(state)' "${project_flag[@]}" \
    2>/dev/null || true
}

run_status() {  # the trainer's summary.json in the workdir (a bucket, or a path mounted on the workers)
  if [[ "$workdir" == gs://* ]]; then
    gcloud storage cat "${workdir}/summary.json" 2>/dev/null
  else
    gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=0 "${project_flag[@]}" \
      --command "cat ${workdir}/summary.json" 2>/dev/null
  fi | python3 -c 'import json, sys; print(json.load(sys.stdin).get("status", "none"))' 2>/dev/null || echo none
}

run git archive --format=tar.gz --output "$archive" HEAD
create_slice
setup_workers
attempt=0
while true; do
  status=0
  run "${ssh_all[@]}" "cd ~/${repo_dir} && .venv/bin/python -m wavlm_jax.train --config ${config} --workdir ${workdir} --config.distributed.enabled=true ${extra}" || status=$?
  if [[ $dry_run -eq 1 ]]; then
    echo "# then, until ${workdir}/summary.json says finished (at most ${max_restarts} restarts): re-create the" \
         "slice if it was reclaimed, ship and install again, and rerun the training command"
    break
  fi
  state=$(run_status)
  [[ "$state" == finished ]] && break
  if [[ $attempt -ge $max_restarts ]]; then
    echo "tpu.sh: ${workdir} is '${state}' after ${attempt} restarts, the most allowed; keeping the slice" >&2
    exit 1
  fi
  attempt=$((attempt + 1))
  echo "tpu.sh: ${workdir} is '${state}' (exit status ${status}): restart ${attempt} of at most ${max_restarts}" >&2
  if [[ "$(slice_state)" != READY ]]; then  # preempted or reclaimed: a new slice, the same workdir
    delete_slice || true
    create_slice
    setup_workers
  fi
done

if [[ $keep -eq 0 ]]; then
  delete_slice
fi
