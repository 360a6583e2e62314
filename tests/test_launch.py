"""Launchers: every script parses (bash -n, shellcheck when installed; the GKE launcher compiles) and
--dry-run prints the exact commands (the GKE launcher: the JobSet manifest) a user would otherwise run."""

import importlib.util
import json
import os
import shlex
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ["launch/local.sh", "launch/slurm_gpu.sbatch", "launch/tpu.sh", "launch/gke.py"]


def _run(*args):
  out = subprocess.run(["bash", *args], cwd=REPO, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  return [shlex.split(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script):
  if script.endswith(".py"):  # compiles (no bytecode written into the checkout) and prints its usage
    compile((REPO / script).read_text(), script, "exec")
    usage = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True)
    assert usage.returncode == 0 and "--tpu-topology" in usage.stdout, usage.stderr
    return
  assert subprocess.run(["bash", "-n", script], cwd=REPO).returncode == 0
  shellcheck = shutil.which("shellcheck", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
  if shellcheck:
    result = subprocess.run([shellcheck, "-S", "warning", script], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_local_dry_run():
  lines = _run("launch/local.sh", "--dry-run", "--processes", "3", "--cpu-devices", "2", "--port", "1234", "--",
               "--config", "configs/tiny.py", "--workdir", "runs/a b")
  assert len(lines) == 3
  for i, argv in enumerate(lines):
    assert argv[0] == "env"
    env = dict(a.split("=", 1) for a in argv[1:] if "=" in a and not a.startswith("--"))
    assert env["JAX_COORDINATOR_ADDRESS"] == "127.0.0.1:1234" and env["JAX_NUM_PROCESSES"] == "3"
    assert env["JAX_PROCESS_ID"] == str(i) and env["XLA_FLAGS"].endswith("count=2")
    assert argv[-6:] == ["-m", "wavlm_jax.train", "--config", "configs/tiny.py", "--workdir", "runs/a b"]
  gpu = _run("launch/local.sh", "--dry-run", "--gpus", "--processes", "2", "--", "--config", "c.py")
  assert "CUDA_VISIBLE_DEVICES=1" in gpu[1]
  tok = _run("launch/local.sh", "--dry-run", "--module", "wavlm_jax.targets.tokenize", "--", "--config", "t.py", "fit")
  assert len(tok) == 2 and all(a[-5:] == ["-m", "wavlm_jax.targets.tokenize", "--config", "t.py", "fit"] for a in tok)


def test_slurm_dry_run():
  (argv,) = _run("launch/slurm_gpu.sbatch", "--dry-run", "configs/wavlm_base.py", "/shared/w", "--config.mesh.fsdp=8")
  assert argv[:3] == ["srun", "--kill-on-bad-exit=1", "--gpus-per-task=1"]
  assert argv[4:] == ["-m", "wavlm_jax.train", "--config", "configs/wavlm_base.py", "--workdir", "/shared/w",
                      "--config.distributed.enabled=true", "--config.mesh.fsdp=8"]
  text = (REPO / "launch/slurm_gpu.sbatch").read_text()
  assert "#SBATCH --signal=TERM@300" in text  # time to save a checkpoint before the limit


@pytest.mark.parametrize("queued", [False, True])
def test_tpu_dry_run(queued):
  args = ["launch/tpu.sh", "--dry-run", "--name", "pod", "--zone", "us-west4-a", "--type", "v5litepod-16",
          "--config", "configs/wavlm_base.py", "--workdir", "gs://bucket/run"] + (["--queued"] if queued else [])
  lines = _run(*args, "--", "--config.total_steps=10")
  joined = [" ".join(a) for a in lines]
  assert lines[0][:2] == ["git", "archive"] and lines[0][-1] == "HEAD"  # the committed source, nothing else
  archive = lines[0][lines[0].index("--output") + 1]
  if queued:
    assert lines[1][:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]
    assert "wait" in lines[2] and lines[-1][4] == "delete"
  else:
    assert lines[1][:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"] and "v5litepod-16" in lines[1]
    assert lines[-1][:5] == ["gcloud", "compute", "tpus", "tpu-vm", "delete"]
  (scp,) = [a for a in lines if a[:4] == ["gcloud", "compute", "tpus", "tpu-vm"] and a[4] == "scp"]
  assert archive in scp and "--worker=all" in scp and "--recurse" not in scp
  assert any("tar -xzf ~/wavlm_jax.tar.gz" in j and "pip install -e '.[tpu]'" in j for j in joined)
  train = [j for j in joined if "wavlm_jax.train" in j]
  assert len(train) == 1 and "--workdir gs://bucket/run" in train[0] and "--config.total_steps=10" in train[0]
  assert "--config.distributed.enabled=true" in train[0]
  assert any("until gs://bucket/run/summary.json says finished (at most 5 restarts)" in j for j in joined)
  missing = subprocess.run(["bash", "launch/tpu.sh", "--dry-run", "--name", "x"], cwd=REPO, capture_output=True,
                           text=True)
  assert missing.returncode == 2 and "--zone is required" in missing.stderr


def test_what_the_tpu_launcher_ships_is_the_committed_source_only():
  # `git archive HEAD`, as tpu.sh runs it: tracked files of the commit; never the virtual environment,
  # runs, data or anything else lying in the checkout (CI's clone has its .venv inside it).
  listing = subprocess.run("git archive --format=tar HEAD | tar -t", shell=True, cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
  assert {"setup.py", "README.md", "wavlm_jax/train.py", "configs/tiny.py", "launch/tpu.sh"} <= set(listing)
  assert not [f for f in listing if f.startswith((".venv/", "runs/", "bench/results/", "build/", "dist/"))
              or f.endswith((".array_record", ".npz", ".pt", ".safetensors", ".flac", ".wav"))]


def _fake_bin(tmp_path, name, body):
  path = tmp_path / "bin" / name
  path.parent.mkdir(exist_ok=True)
  path.write_text("#!/usr/bin/env bash\n" + body)
  path.chmod(0o755)


def test_tpu_launcher_recreates_a_reclaimed_slice_and_restarts_until_finished(tmp_path):
  # gcloud stands in: the first training attempt ends preempted and the slice is reclaimed, the second
  # finishes. The launcher must re-create the slice, ship and install again, rerun, then delete it.
  calls, summary = tmp_path / "calls", tmp_path / "summary.json"
  _fake_bin(tmp_path, "gcloud", f'''
echo "$*" >> {calls}
case "$*" in
  *"tpu-vm ssh"*wavlm_jax.train*)
    if [[ $(grep -c wavlm_jax.train {calls}) -eq 1 ]]; then echo '{{"status": "preempted"}}' > {summary}; exit 255
    else echo '{{"status": "finished"}}' > {summary}; fi ;;
  *"storage cat"*) cat {summary} ;;
  *describe*) if [[ $(grep -c wavlm_jax.train {calls}) -eq 1 ]]; then echo PREEMPTED; else echo READY; fi ;;
esac
''')
  env = dict(os.environ, PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", TMPDIR=str(tmp_path))
  out = subprocess.run(["bash", "launch/tpu.sh", "--name", "pod", "--zone", "z", "--type", "v5litepod-16",
                        "--config", "configs/wavlm_base.py", "--workdir", "gs://bucket/run", "--max-restarts", "2"],
                       cwd=REPO, env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  log = calls.read_text().splitlines()

  def kind(line):
    words = line.split()
    if words[:2] == ["storage", "cat"]:
      return "storage cat"
    if words[3] == "ssh":
      return "train" if "wavlm_jax.train" in line else "install" if "pip install" in line else "ssh"
    return words[3]  # compute tpus tpu-vm VERB

  kinds = [kind(line) for line in log]
  assert kinds == ["create", "scp", "install", "train", "storage cat", "describe", "delete", "create", "scp",
                   "install", "train", "storage cat", "delete"], log
  assert "restart 1 of at most 2" in out.stderr
  assert list(tmp_path.glob("wavlm_jax-*.tar.gz"))  # the archive that was shipped


def test_slurm_script_restarts_after_a_host_failure_and_requeues_after_preemption(tmp_path):
  # srun stands in for the training step: it fails once (a host died, no summary), then reports the
  # run preempted by the time limit; the script restarts once, then requeues the job and exits.
  calls, workdir = tmp_path / "calls", tmp_path / "run"
  workdir.mkdir()
  _fake_bin(tmp_path, "srun", f'''
echo srun >> {calls}
if [[ $(grep -c srun {calls}) -eq 1 ]]; then exit 1; fi
echo '{{"status": "preempted"}}' > {workdir}/summary.json
''')
  _fake_bin(tmp_path, "scontrol", f'echo "scontrol $*" >> {calls}\n')
  env = dict(os.environ, PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", SLURM_JOB_ID="42",
             PYTHON=sys.executable)
  out = subprocess.run(["bash", "launch/slurm_gpu.sbatch", "configs/wavlm_base.py", str(workdir)], cwd=REPO,
                       env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr
  assert calls.read_text().splitlines() == ["srun", "srun", "scontrol requeue 42"]
  assert "restart 1 of at most 3" in out.stderr and "requeueing job 42" in out.stderr


GKE_TPU = ["--tpu-type", "v5litepod-16", "--tpu-topology", "4x4"]
GKE_GPU = ["--gpus-per-node", "8", "--gpu-type", "nvidia-h100-80gb", "--nodes", "2"]
GKE_FLAGS = ["--name", "wavlm", "--config", "configs/wavlm_base.py", "--workdir", "gs://bucket/run", "--image",
             "us-docker.pkg.dev/p/r/wavlm:abc"]
GKE_STATUS = 'jsonpath={.status.restarts}/{.status.conditions[?(@.status=="True")].type}'


def _gke(*args, env=None):
  return subprocess.run([sys.executable, "launch/gke.py", *args], cwd=REPO, capture_output=True, text=True, env=env)


def _gke_manifest(*args):
  """The manifest `--dry-run` prints (YAML), and the kubectl commands it prints after it as comments."""
  out = _gke(*GKE_FLAGS, "--dry-run", *args)
  assert out.returncode == 0, out.stderr
  commands = [shlex.split(line[2:]) for line in out.stdout.splitlines() if line.startswith("# kubectl")]
  return yaml.safe_load(out.stdout), commands


@pytest.mark.parametrize("fleet, hosts, resources, selector", [
    (GKE_TPU, 4, {"google.com/tpu": 4},
     {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice", "cloud.google.com/gke-tpu-topology": "4x4"}),
    (GKE_GPU, 2, {"nvidia.com/gpu": 8}, {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}),
], ids=["tpu", "gpu"])
def test_gke_dry_run(fleet, hosts, resources, selector, monkeypatch):
  manifest, commands = _gke_manifest(*fleet, "--max-restarts", "7", "--", "--config.mesh.fsdp=16",
                                     "--config.total_steps=10")
  assert manifest["apiVersion"] == "jobset.x-k8s.io/v1alpha2" and manifest["kind"] == "JobSet"
  spec = manifest["spec"]
  assert spec["failurePolicy"] == {"maxRestarts": 7}  # the whole JobSet restarts when a host fails
  assert spec["successPolicy"] == {"operator": "All", "targetReplicatedJobs": ["workers"]}
  assert spec["network"] == {"enableDNSHostnames": True, "subdomain": "wavlm"}
  (workers,) = spec["replicatedJobs"]
  job = workers["template"]["spec"]
  assert workers["name"] == "workers" and workers["replicas"] == 1
  assert job["parallelism"] == job["completions"] == hosts and job["completionMode"] == "Indexed"
  assert job["backoffLimit"] == 0
  pod = job["template"]["spec"]
  assert pod["restartPolicy"] == "Never" and pod["nodeSelector"] == selector
  (container,) = pod["containers"]
  assert container["image"] == "us-docker.pkg.dev/p/r/wavlm:abc" and container["resources"] == {"limits": resources}
  shell, flag, script = container["command"]
  assert (shell, flag) == ("bash", "-c")
  train = script.split(" & pid=$!")[0]
  assert shlex.split(train) == ["python", "-m", "wavlm_jax.train", "--config", "configs/wavlm_base.py", "--workdir",
                                "gs://bucket/run", "--config.mesh.fsdp=16", "--config.total_steps=10"]
  assert "trap 'kill -TERM $pid' TERM" in script  # bash is PID 1: it must pass SIGTERM on to the trainer
  assert "status=$(python -m wavlm_jax.storage status gs://bucket/run)" in script
  assert script.endswith('[ "$status" = finished ]')  # a preempted host (exit 0, not finished) fails its pod
  env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
  assert env["JAX_COORDINATOR_ADDRESS"] == "wavlm-workers-0-0.wavlm:8476"  # pod 0 in the JobSet's subdomain
  assert env["JAX_NUM_PROCESSES"] == str(hosts)
  index = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
  assert env["JAX_PROCESS_ID"] == {"fieldRef": {"fieldPath": index}}
  assert commands == [["kubectl", "apply", "-f", "-"], ["kubectl", "get", "jobset", "wavlm", "-o", GKE_STATUS]]

  # These are the variables the trainer reads: on the last host, jax.distributed.initialize gets them.
  from configs.common import distributed_config
  from wavlm_jax import cli
  calls = []
  monkeypatch.setattr(cli.jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(cli.jax.distributed, "initialize", lambda **kw: calls.append(kw))
  for key, value in env.items():
    monkeypatch.setenv(key, str(hosts - 1) if key == "JAX_PROCESS_ID" else value)
  d = distributed_config()
  d.cpu_collectives = ""  # leave this process's JAX config alone
  cli.initialize_distributed(d)
  assert calls == [{"coordinator_address": "wavlm-workers-0-0.wavlm:8476", "num_processes": hosts,
                    "process_id": hosts - 1}]


def _validate_jobset(manifest):
  """Raises jsonschema.ValidationError unless the manifest is a valid JobSet: the JobSet against
  launch/schemas/jobset-v1alpha2.json, each replicated job's template (a batch/v1 JobTemplateSpec) as a Job
  against the Kubernetes 1.31 schemas that kubernetes-validate ships (strict: an unknown field is an error)."""
  import jsonschema
  import kubernetes_validate
  schema = json.loads((REPO / "launch/schemas/jobset-v1alpha2.json").read_text())
  jsonschema.Draft202012Validator.check_schema(schema)
  jsonschema.Draft202012Validator(schema).validate(manifest)
  for replicated in manifest["spec"]["replicatedJobs"]:
    template = replicated["template"]
    metadata = {"name": f"{manifest['metadata']['name']}-{replicated['name']}-0", **template.get("metadata", {})}
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": template["spec"]}
    assert kubernetes_validate.validate(job, "1.31", strict=True) == "1.31"


@pytest.mark.parametrize("fleet", [GKE_TPU, GKE_GPU], ids=["tpu", "gpu"])
def test_gke_manifest_is_a_valid_jobset(fleet):
  manifest, _ = _gke_manifest(*fleet, "--", "--config.total_steps=10")
  _validate_jobset(manifest)
  names = {replicated["name"] for replicated in manifest["spec"]["replicatedJobs"]}
  assert set(manifest["spec"]["successPolicy"]["targetReplicatedJobs"]) <= names


def _pod(manifest):
  return manifest["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("break_it, unexpected", [
    (lambda m: m["spec"]["failurePolicy"].update(maxRestart=m["spec"]["failurePolicy"].pop("maxRestarts")),
     "maxRestart"),  # the JobSet schema
    (lambda m: m["spec"]["network"].update(enableDnsHostnames=True), "enableDnsHostnames"),
    (lambda m: m["spec"]["successPolicy"].update(operator="all"), "'all'"),
    (lambda m: m["spec"]["replicatedJobs"][0].update(replicas="1"), "'1'"),
    (lambda m: m["spec"]["replicatedJobs"][0]["template"]["spec"].update(backoffLimits=0),
     "backoffLimits"),  # the Kubernetes schemas
    (lambda m: _pod(m).update(nodeSelectors=_pod(m).pop("nodeSelector")), "nodeSelectors"),
    (lambda m: _pod(m)["containers"][0].update(imagee=_pod(m)["containers"][0].pop("image")), "imagee"),
    (lambda m: _pod(m).update(restartPolicy=["Never"]), "['Never']"),
], ids=["maxRestart", "enableDnsHostnames", "operator", "replicas", "backoffLimits", "nodeSelectors", "imagee",
        "restartPolicy"])
def test_gke_schema_check_fails_on_a_broken_manifest(break_it, unexpected):
  import jsonschema
  manifest, _ = _gke_manifest(*GKE_TPU)
  break_it(manifest)
  with pytest.raises(jsonschema.ValidationError) as error:
    _validate_jobset(manifest)
  assert unexpected in error.value.message


@pytest.mark.parametrize("tpu_type, topology, hosts, chips_per_host", [
    ("v5litepod-16", "4x4", 4, 4),  # v5e: the number counts chips
    ("v5litepod-8", "2x4", 1, 8),  # one host holds a v5e slice of up to 8 chips
    ("v6e-256", "16x16", 64, 4),
    ("v4-32", "2x2x4", 4, 4),  # v4 and v5p: the number counts TensorCores, two per chip
    ("v5p-8", "2x2x1", 1, 4),
    ("v5p-128", "4x4x4", 16, 4),
])
def test_gke_tpu_hosts(tpu_type, topology, hosts, chips_per_host):
  spec = importlib.util.spec_from_file_location("gke_launcher", REPO / "launch/gke.py")
  gke = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(gke)
  selector, n, per_host = gke.tpu_slice(tpu_type, topology)
  assert (n, per_host) == (hosts, chips_per_host) and selector["cloud.google.com/gke-tpu-topology"] == topology


@pytest.mark.parametrize("args, message", [
    (GKE_FLAGS[:6] + GKE_TPU, "--image is required"),
    (GKE_FLAGS[:4] + GKE_FLAGS[6:] + GKE_TPU, "--workdir is required"),
    (GKE_FLAGS[2:] + GKE_TPU, "--name is required"),
    (GKE_FLAGS, "--tpu-type and --tpu-topology (a TPU slice) or --gpus-per-node"),
    (GKE_FLAGS + GKE_TPU[:2], "--tpu-topology is required"),
    (GKE_FLAGS + GKE_GPU[:4], "--nodes is required"),
    (GKE_FLAGS + GKE_TPU + ["--nodes", "2"], "exclude each other"),
    (GKE_FLAGS + ["--tpu-type", "v5litepod-16", "--tpu-topology", "2x4"], "--tpu-topology 2x4 has 8 chips"),
    (GKE_FLAGS + ["--tpu-type", "v4-32", "--tpu-topology", "4x4"], "--tpu-topology '4x4': v4 needs 3 numbers"),
    (GKE_FLAGS + ["--tpu-type", "v5e-16", "--tpu-topology", "4x4"], "--tpu-type 'v5e-16' is not one of"),
    (GKE_FLAGS + GKE_GPU + ["--max-restarts", "-1"], "--max-restarts must be 0 or more"),
    (GKE_FLAGS + GKE_GPU + ["--nodes", "two"], "argument --nodes: invalid int value"),
    (["--name", "Wavlm_1"] + GKE_FLAGS[2:] + GKE_TPU, "--name 'Wavlm_1' must be"),
])
def test_gke_usage_errors(args, message):
  out = _gke(*args, "--dry-run")
  assert out.returncode == 2 and message in out.stderr and not out.stdout, out.stderr


@pytest.mark.parametrize("final, status", [("Completed", 0), ("Failed", 1)])
def test_gke_launcher_applies_the_manifest_and_waits_for_the_jobset(tmp_path, final, status):
  # kubectl stands in: it keeps what is applied; the JobSet runs, restarts once, then ends `final`.
  calls, applied = tmp_path / "calls", tmp_path / "applied.yaml"
  _fake_bin(tmp_path, "kubectl", f'''
echo "$*" >> {calls}
case "$*" in
  *" apply -f -") cat > {applied} ;;
  *" get jobset "*)
    n=$(grep -c "get jobset" {calls})
    if [[ $n -eq 1 ]]; then echo -n "0/StartupPolicyCompleted"
    elif [[ $n -eq 2 ]]; then echo -n "1/StartupPolicyCompleted"
    else echo -n "1/StartupPolicyCompleted {final}"; fi ;;
esac
''')
  env = dict(os.environ, PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
  out = _gke(*GKE_FLAGS, *GKE_GPU, "--namespace", "ml", "--poll-seconds", "0", "--", "--config.total_steps=10", env=env)
  assert out.returncode == status, out.stderr
  dry_run, _ = _gke_manifest(*GKE_GPU, "--namespace", "ml", "--", "--config.total_steps=10")
  assert yaml.safe_load(applied.read_text()) == dry_run  # what --dry-run prints is what is applied
  get = f"--namespace ml get jobset wavlm -o {GKE_STATUS}"
  assert calls.read_text().splitlines() == ["--namespace ml apply -f -", get, get, get]
  assert "jobset wavlm: 1 restart(s), StartupPolicyCompleted " + final in out.stdout
  assert ("jobset wavlm failed" in out.stderr) == (final == "Failed")


@pytest.mark.parametrize("status, code", [("finished", 0), ("preempted", 1), ("none", 1)])
def test_gke_pod_fails_unless_the_run_finished(status, code, tmp_path):
  # The container's command run as a pod would, with `python` standing in: the trainer exits 0 after a
  # SIGTERM (it saved and stopped), and only a summary that says finished lets the pod succeed.
  manifest, _ = _gke_manifest(*GKE_TPU)
  (container,) = manifest["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"]
  fake = tmp_path / "python"
  fake.write_text(f'#!/usr/bin/env bash\n[[ "$*" == *"wavlm_jax.storage status"* ]] && echo {status}\nexit 0\n')
  fake.chmod(0o755)
  out = subprocess.run(container["command"], env=dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}"),
                       capture_output=True, text=True)
  assert out.returncode == code and f"workdir status: {status}" in out.stdout


def test_gke_pod_passes_sigterm_on_to_the_trainer(tmp_path):
  # Kubernetes stops a pod with SIGTERM to its PID 1, the container's bash: the trainer (a stand-in that
  # "saves" for a moment when told) must receive it, finish saving, and the pod then fails (preempted).
  manifest, _ = _gke_manifest(*GKE_TPU)
  (container,) = manifest["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"]
  fake = tmp_path / "python"
  fake.write_text('#!/usr/bin/env bash\nif [[ "$*" == *"wavlm_jax.storage status"* ]]; then echo preempted; exit 0; fi\n'
                  f'trap \'sleep 0.5; echo saved > {tmp_path}/saved; exit 0\' TERM\n'
                  f'touch {tmp_path}/started\nwhile true; do sleep 0.1; done\n')
  fake.chmod(0o755)
  pod = subprocess.Popen(container["command"], env=dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}"),
                         stdout=subprocess.PIPE, text=True)
  deadline = time.time() + 30
  while not (tmp_path / "started").exists() and time.time() < deadline:
    time.sleep(0.05)
  pod.send_signal(signal.SIGTERM)
  out, _ = pod.communicate(timeout=30)
  assert (tmp_path / "saved").read_text() == "saved\n"  # the trainer got the signal and finished saving
  assert pod.returncode == 1 and "workdir status: preempted" in out
