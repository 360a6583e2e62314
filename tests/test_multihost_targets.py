"""The tokenizer on several hosts: two local JAX processes (4 CPU devices each, gloo collectives), each
holding its own half of the points, against one process holding all of them."""

import json
import subprocess
import sys

import numpy as np
import pytest

import multiprocess
from configs import tokenize_mfcc
from wavlm_jax.data import labels as labels_lib
from wavlm_jax.targets import tokenize

WORKER = str(multiprocess.REPO / "tests" / "kmeans_worker.py")


def _blobs(n=16000, k=12, d=6, seed=0):
  rng = np.random.default_rng(seed)
  centres = 25.0 * rng.standard_normal((k, d))  # well separated: seeding finds every blob
  return (centres[rng.integers(0, k, n)] + rng.standard_normal((n, d))).astype(np.float32), centres


@pytest.mark.slow
def test_kmeans_over_two_hosts_matches_one(tmp_path):
  x, centres = _blobs()
  init = (centres + 0.5).astype(np.float32)  # one per blob: no point near a boundary, no ties to break
  np.save(tmp_path / "x.npy", x)
  np.save(tmp_path / "init.npy", init)
  subprocess.run([sys.executable, WORKER, str(tmp_path / "x.npy"), str(tmp_path / "init.npy"), str(tmp_path / "one")],
                 check=True, cwd=multiprocess.REPO, capture_output=True,
                 env={**multiprocess.os.environ, "PYTHONPATH": str(multiprocess.REPO)})
  multiprocess.run([sys.executable, WORKER, str(tmp_path / "x.npy"), str(tmp_path / "init.npy"),
                    str(tmp_path / "two")])
  one, two, other = (np.load(tmp_path / f) for f in ("one-0.npz", "two-0.npz", "two-1.npz"))
  assert int(two["hosts"]) == 2 and int(two["devices"]) == 8 and int(two["fit_points"]) == len(x)
  # Lloyd from the same centroids: the per-cluster sums are reduced over hosts, so the iterates agree.
  np.testing.assert_allclose(two["lloyd"], one["lloyd"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(two["lloyd_inertia"], one["lloyd_inertia"], rtol=1e-5)
  # The seeding sample differs (each host contributes its share); the solution is as good.
  for key in ("fit", "stream"):
    assert float(two[f"{key}_inertia"]) <= 1.02 * float(one[f"{key}_inertia"]), key
  # Both hosts hold the same model, and each labelled its own points (every other row).
  for key in ("lloyd", "fit", "stream"):
    np.testing.assert_array_equal(two[key], other[key])
  for host, result in enumerate((two, other)):
    brute = np.argmin(((x[host::2, None] - result["fit"][None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(result["labels"], brute)


@pytest.mark.slow
def test_tokenizer_cli_on_two_hosts(espeak_data_dir, tmp_path):
  cfg = tokenize_mfcc.get_config("tiny")
  cfg.data_dir, cfg.workdir, cfg.n_init = espeak_data_dir, str(tmp_path / "one"), 1
  tokenize.run(cfg, ("fit", "assign"))
  cmd = [sys.executable, "-m", "wavlm_jax.targets.tokenize", "--config", str(multiprocess.REPO / "configs" / "tokenize_mfcc.py"),
         f"--config.data_dir={espeak_data_dir}", f"--config.workdir={tmp_path / 'two'}", "--config.n_init=1", "fit", "assign"]
  outs = multiprocess.run(cmd)
  assert "of 2 hosts" in outs[0]
  meta = json.loads((tmp_path / "two" / "kmeans.json").read_text())
  assert meta["provenance"]["hosts"] == 2
  one_meta = json.loads((tmp_path / "one" / "kmeans.json").read_text())
  assert meta["inertia"] <= 1.03 * one_meta["inertia"]
  for split in ("train", "validation"):
    one = labels_lib.LabelStore(tmp_path / "one" / "labels" / split)
    two = labels_lib.LabelStore(tmp_path / "two" / "labels" / split)
    assert sorted(two.ids()) == sorted(one.ids()) and two.num_classes == 100 and two.label_rate == 100
    assert all(len(two[u]) == len(one[u]) for u in one.ids())
    assert not (tmp_path / "two" / "labels" / f".{split}.parts").exists()
