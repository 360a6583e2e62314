#!/usr/bin/env python3
"""A training run on GKE as one JobSet (jobset.x-k8s.io/v1alpha2), the way MaxText runs TPU and GPU fleets.

  python launch/gke.py --name wavlm-v5e --config configs/wavlm_base.py --workdir gs://BUCKET/runs/wavlm_base \\
      --image IMAGE (--tpu-type v5litepod-16 --tpu-topology 4x4 | --gpus-per-node 8 --gpu-type nvidia-h100-80gb \\
      --nodes 2) [--max-restarts 5] [--port 8476] [--namespace NS] [--poll-seconds 60] [--dry-run] [-- TRAIN_FLAGS...]

One indexed Job of one pod per host runs `python -m wavlm_jax.train --config CONFIG --workdir WORKDIR
TRAIN_FLAGS...` and succeeds only when WORKDIR/summary.json then says finished; each pod gets JAX_COORDINATOR_ADDRESS (pod 0's DNS name in the JobSet's headless
service), JAX_NUM_PROCESSES and JAX_PROCESS_ID (its completion index), which the trainer passes to
jax.distributed.initialize(). When a host fails or is preempted its Job fails (backoffLimit 0) and the
JobSet recreates every pod, at most --max-restarts times; the trainer resumes from its checkpoints in
the workdir. The launcher applies the manifest (kubectl apply -f -) and polls the JobSet until it is
Completed or Failed. --dry-run prints the manifest, then the kubectl commands as comments (the output
is still YAML: `... --dry-run | kubectl apply -f -` works).

The cluster needs the JobSet controller and a node pool of the slice's TPU type and topology (or of the
GPU type). The image holds the committed source (git archive: never .venv, runs/ or data), installed as
the README says:

  rm -rf build/image && mkdir -p build/image && git archive HEAD | tar -x -C build/image
  cat > build/image/Dockerfile <<'EOF'
  FROM python:3.11-slim
  WORKDIR /app
  COPY . .
  RUN pip install --no-cache-dir -e '.[tpu]'    # '.[gpu]' for GPU nodes
  EOF
  docker build -t IMAGE build/image && docker push IMAGE
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import subprocess
import sys
import time

PROG = "gke.py"
JOB = "workers"  # the replicated job's name: pod 0 is NAME-workers-0-0
# GKE's TPU node label per accelerator-type prefix (gcloud's names), and how the type's number counts:
# v4 and v5p count TensorCores, two per chip (v4-32 and v5p-32 are 16 chips); v5e (v5litepod) and v6e
# count chips (v5litepod-16 is 16 chips). Multi-host slices have 4 chips per host; v5e and v6e slices
# of up to 8 chips (v4 and v5p of up to 4) are one host with all of them.
# prefix: (cloud.google.com/gke-tpu-accelerator, TensorCores per chip, chips of a one-host slice, topology dims)
TPUS = {
    "v4": ("tpu-v4-podslice", 2, 4, 3),
    "v5p": ("tpu-v5p-slice", 2, 4, 3),
    "v5litepod": ("tpu-v5-lite-podslice", 1, 8, 2),
    "v6e": ("tpu-v6e-slice", 1, 8, 2),
}
CHIPS_PER_HOST = 4
# The JobSet's restarts and the types of its true conditions, e.g. "1/StartupPolicyCompleted Completed".
STATUS_JSONPATH = 'jsonpath={.status.restarts}/{.status.conditions[?(@.status=="True")].type}'
DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")  # DNS-1035: the JobSet's headless Service takes its name


class UsageError(ValueError):
  """A bad command line; the message names the flag."""


def tpu_slice(tpu_type: str, topology: str) -> tuple[dict, int, int]:
  """(nodeSelector, hosts, chips per host) of a TPU slice such as ("v5litepod-16", "4x4")."""
  prefix, _, count = tpu_type.rpartition("-")
  if prefix not in TPUS or not count.isdigit() or int(count) == 0:
    raise UsageError(f"--tpu-type {tpu_type!r} is not one of {', '.join(p + '-N' for p in TPUS)}")
  accelerator, cores_per_chip, one_host, ndims = TPUS[prefix]
  if int(count) % cores_per_chip:
    raise UsageError(f"--tpu-type {tpu_type}: {prefix} counts TensorCores, {cores_per_chip} per chip")
  chips = int(count) // cores_per_chip
  dims = topology.split("x")
  if len(dims) != ndims or not all(d.isdigit() and int(d) > 0 for d in dims):
    raise UsageError(f"--tpu-topology {topology!r}: {prefix} needs {ndims} numbers joined by x, like "
                     f"{'2x2x4' if ndims == 3 else '4x4'}")
  if math.prod(map(int, dims)) != chips:
    raise UsageError(f"--tpu-topology {topology} has {math.prod(map(int, dims))} chips; {tpu_type} has {chips}")
  selector = {"cloud.google.com/gke-tpu-accelerator": accelerator, "cloud.google.com/gke-tpu-topology": topology}
  if chips <= one_host:
    return selector, 1, chips
  if chips % CHIPS_PER_HOST:
    raise UsageError(f"--tpu-type {tpu_type}: {chips} chips do not fill hosts of {CHIPS_PER_HOST}")
  return selector, chips // CHIPS_PER_HOST, CHIPS_PER_HOST


def container_command(config: str, workdir: str, train_flags: list[str]) -> list[str]:
  """The training command, then a check of the workdir's summary.json: a host whose trainer saved and
  stopped on SIGTERM (status "preempted", exit status 0) must still fail its pod, or Kubernetes would count
  the Job as complete and the JobSet would never restart the unfinished run. The trainer writes the
  summary before any host exits (a barrier), so every host of a finished run sees "finished". bash runs
  as the container's PID 1, which the kernel gives no default signal handling: it traps SIGTERM and passes
  it on to the trainer (which then saves), and waits again for the trainer to finish saving."""
  train = shlex.join(["python", "-m", "wavlm_jax.train", "--config", config, "--workdir", workdir, *train_flags])
  check = shlex.join(["python", "-m", "wavlm_jax.storage", "status", workdir])
  script = (f"{train} & pid=$!; trap 'kill -TERM $pid' TERM; wait $pid; rc=$?; "
            "if kill -0 $pid 2>/dev/null; then wait $pid; rc=$?; fi; "
            f'[ $rc -eq 0 ] && status=$({check}) && echo "workdir status: $status" && [ "$status" = finished ]')
  return ["bash", "-c", script]


def jobset(name: str, image: str, command: list[str], port: int, max_restarts: int, *, hosts: int,
           node_selector: dict, resources: dict, env: dict, annotations: dict) -> dict:
  """The JobSet manifest: one replicated job of `hosts` pods, each running `command` on `resources`."""
  coordinator = f"{name}-{JOB}-0-0.{name}:{port}"  # <jobset>-<job>-<job index>-<pod index>.<subdomain>
  completion_index = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
  container_env = [
      {"name": "JAX_COORDINATOR_ADDRESS", "value": coordinator},
      {"name": "JAX_NUM_PROCESSES", "value": str(hosts)},
      {"name": "JAX_PROCESS_ID", "valueFrom": {"fieldRef": {"fieldPath": completion_index}}},
  ] + [{"name": k, "value": v} for k, v in env.items()]
  pod = {
      "restartPolicy": "Never",  # a failed host fails its Job; the JobSet restarts every host together
      "terminationGracePeriodSeconds": 300,  # time for the trainer to save a checkpoint on SIGTERM
      "nodeSelector": node_selector,
      "containers": [{
          "name": "train",
          "image": image,
          "command": command,
          "env": container_env,
          "resources": {"limits": resources},
          "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
      }],
      "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],  # the input workers' shared memory
  }
  metadata = {"name": name, "labels": {"app.kubernetes.io/name": "wavlm-jax"}}
  if annotations:
    metadata["annotations"] = annotations
  return {
      "apiVersion": "jobset.x-k8s.io/v1alpha2",
      "kind": "JobSet",
      "metadata": metadata,
      "spec": {
          "failurePolicy": {"maxRestarts": max_restarts},
          "successPolicy": {"operator": "All", "targetReplicatedJobs": [JOB]},
          "network": {"enableDNSHostnames": True, "subdomain": name},
          "replicatedJobs": [{
              "name": JOB,
              "replicas": 1,
              "template": {"spec": {
                  "parallelism": hosts,
                  "completions": hosts,
                  "completionMode": "Indexed",  # the completion index is the JAX process id
                  "backoffLimit": 0,
                  "template": {"spec": pod},
              }},
          }],
      },
  }


def to_yaml(manifest: dict) -> str:
  """YAML when PyYAML is installed (ml-collections needs it); otherwise JSON, which is YAML too."""
  try:
    import yaml
  except ImportError:
    return json.dumps(manifest, indent=2) + "\n"
  return yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False)


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              allow_abbrev=False)
  p.add_argument("--name", help="the JobSet's name (a DNS label), also its pods' subdomain")
  p.add_argument("--config", help="the training config, a path inside the image (e.g. configs/wavlm_base.py)")
  p.add_argument("--workdir", help="the run's directory, shared by every host (gs://BUCKET/runs/NAME)")
  p.add_argument("--image", help="the container image holding the installed project")
  p.add_argument("--tpu-type", help="a TPU slice: v5litepod-16, v6e-16, v4-32, v5p-32, ...")
  p.add_argument("--tpu-topology", help="the slice's topology: 4x4 (v5e, v6e), 2x2x4 (v4, v5p)")
  p.add_argument("--gpus-per-node", type=int, help="GPU nodes: GPUs per node (one process per node)")
  p.add_argument("--gpu-type", help="GPU nodes: the cloud.google.com/gke-accelerator label, e.g. nvidia-h100-80gb")
  p.add_argument("--nodes", type=int, help="GPU nodes: how many")
  p.add_argument("--max-restarts", type=int, default=5, help="JobSet restarts after a failed or preempted host")
  p.add_argument("--port", type=int, default=8476, help="the JAX coordinator's port on pod 0")
  p.add_argument("--namespace", help="the Kubernetes namespace (default: kubectl's current one)")
  p.add_argument("--poll-seconds", type=float, default=60.0, help="seconds between status checks")
  p.add_argument("--dry-run", action="store_true", help="print the manifest and the commands instead")
  return p


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str], dict]:
  """The launcher's flags, the training flags after `--`, and the hosts: jobset()'s hosts, node_selector,
  resources, env and annotations. A usage error (exit status 2) names the flag."""
  train_flags = []
  if "--" in argv:
    i = argv.index("--")
    argv, train_flags = argv[:i], argv[i + 1:]
  p = parser()
  args = p.parse_args(argv)
  try:
    return args, train_flags, hosts(args)
  except UsageError as e:
    p.error(str(e))


def hosts(args: argparse.Namespace) -> dict:
  """Checks the flags; what the TPU slice or the GPU nodes need: hosts, nodeSelector, resources, env."""
  for flag in ("name", "config", "workdir", "image"):
    if not getattr(args, flag):
      raise UsageError(f"--{flag} is required")
  if not DNS_LABEL.fullmatch(args.name):
    raise UsageError(f"--name {args.name!r} must be a lower-case letter, then lower-case letters, digits and '-' (a DNS-1035 label)")
  tpu_flags, gpu_flags = ("tpu_type", "tpu_topology"), ("gpus_per_node", "gpu_type", "nodes")
  tpu = any(getattr(args, f) is not None for f in tpu_flags)
  gpu = any(getattr(args, f) is not None for f in gpu_flags)
  if tpu and gpu:
    raise UsageError("--tpu-type/--tpu-topology and --gpus-per-node/--gpu-type/--nodes exclude each other")
  if not tpu and not gpu:
    raise UsageError("--tpu-type and --tpu-topology (a TPU slice) or --gpus-per-node, --gpu-type and --nodes "
                     "(GPU nodes) are required")
  for flag in tpu_flags if tpu else gpu_flags:
    if getattr(args, flag) is None:
      raise UsageError(f"--{flag.replace('_', '-')} is required")
  for flag in ("gpus_per_node", "nodes", "port"):
    if getattr(args, flag) is not None and getattr(args, flag) < 1:
      raise UsageError(f"--{flag.replace('_', '-')} must be positive")
  if args.max_restarts < 0:
    raise UsageError("--max-restarts must be 0 or more")
  if tpu:
    node_selector, n, per_host = tpu_slice(args.tpu_type, args.tpu_topology)
    # One slice is one node pool: the job's pods must never be spread over two pools of the same shape.
    fleet = dict(hosts=n, node_selector=node_selector, resources={"google.com/tpu": per_host}, env={},
                 annotations={"alpha.jobset.sigs.k8s.io/exclusive-topology": "cloud.google.com/gke-nodepool"})
  else:
    fleet = dict(hosts=args.nodes, node_selector={"cloud.google.com/gke-accelerator": args.gpu_type},
                 resources={"nvidia.com/gpu": args.gpus_per_node},
                 env={"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.92"}, annotations={})  # as slurm_gpu.sbatch
  longest_pod = f"{args.name}-{JOB}-0-{fleet['hosts'] - 1}"
  if len(longest_pod) > 63:  # a pod's hostname is a DNS label
    raise UsageError(f"--name {args.name!r} is too long: the pod hostname {longest_pod} exceeds 63 characters")
  return fleet


def kubectl(namespace: str | None, *args: str) -> list[str]:
  """A kubectl command line, in the namespace when one is given (otherwise kubectl's current one)."""
  return ["kubectl", *(["--namespace", namespace] if namespace else []), *args]


def watch(command: list[str], name: str, poll_seconds: float) -> int:
  """Polls the JobSet's status until it is Completed (0) or Failed (1); prints each change."""
  last, errors = None, 0
  while True:
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
      errors += 1
      print(f"{PROG}: {shlex.join(command)} failed ({errors} in a row): {out.stderr.strip()}", file=sys.stderr,
            flush=True)
      if errors >= 5:
        return 1
    else:
      errors = 0
      restarts, _, conditions = out.stdout.strip().partition("/")
      states = conditions.split()
      if out.stdout != last:
        print(f"{PROG}: jobset {name}: {restarts or 0} restart(s), {' '.join(states) or 'running'}", flush=True)
        last = out.stdout
      if "Completed" in states:
        return 0
      if "Failed" in states:
        print(f"{PROG}: jobset {name} failed; see kubectl describe jobset {name} and the pods' logs", file=sys.stderr)
        return 1
    time.sleep(poll_seconds)


def main(argv: list[str] | None = None) -> int:
  args, train_flags, fleet = parse(sys.argv[1:] if argv is None else argv)
  if not args.workdir.startswith("gs://"):
    print(f"{PROG}: warning: --workdir is not on GCS; the hosts will not share it", file=sys.stderr)
  command = container_command(args.config, args.workdir, train_flags)
  manifest = jobset(args.name, args.image, command, args.port, args.max_restarts, **fleet)
  text = to_yaml(manifest)
  apply = kubectl(args.namespace, "apply", "-f", "-")
  status = kubectl(args.namespace, "get", "jobset", args.name, "-o", STATUS_JSONPATH)
  if args.dry_run:
    print(text, end="")
    print(f"# {shlex.join(apply)}")
    print(f"# then every {args.poll_seconds:g} s, until the JobSet is Completed or Failed (at most "
          f"{args.max_restarts} restarts of all {fleet['hosts']} hosts, each resuming from {args.workdir}):")
    print(f"# {shlex.join(status)}")
    return 0
  try:
    applied = subprocess.run(apply, input=text, text=True)
    if applied.returncode:
      return applied.returncode
    return watch(status, args.name, args.poll_seconds)
  except FileNotFoundError:
    print(f"{PROG}: kubectl is not on PATH (gcloud components install kubectl)", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print(f"{PROG}: stopped watching; the JobSet keeps running (kubectl delete jobset {args.name} stops it)",
          file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
