"""The Grain pipeline on the embedded corpus, both batchings ("duration": length buckets without padding,
"fixed": crop or pad): host shards disjoint and covering, crops consistent with labels, label-length
checks, mixing changes inputs but not targets, exact resume, multi-host rows, global arrays."""

from pathlib import Path

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from wavlm_jax import data
from wavlm_jax.data import labels as labels_lib


def _cfg(data_dir, **kw):
  return data.data_config(**{"data_dir": data_dir, "batch_size": 4, "num_threads": 2, "batching": "fixed", **kw})


def _source(data_dir, split="train"):
  return tfds.data_source("espeak_speech/tiny", split=split, data_dir=data_dir)


@pytest.fixture(scope="module")
def time_labels(espeak_data_dir, tmp_path_factory):
  """Label stores whose label at frame f is f (50 Hz and 100 Hz): crops can be checked exactly."""
  stores = {}
  for rate in (50, 100):
    path = tmp_path_factory.mktemp("labels") / f"time{rate}"
    with labels_lib.LabelStoreWriter(path, label_rate=rate, num_classes=100_000) as writer:
      src = _source(espeak_data_dir)
      for i in range(len(src)):
        ex = src[i]
        writer.add(ex["id"].decode(), np.arange(int(round(len(ex["audio"]) * rate / 16000))))
    stores[rate] = str(path)
  return stores


def test_host_shards_are_disjoint_and_cover_the_split(espeak_data_dir):
  src = _source(espeak_data_dir)
  all_ids = {src[i]["id"].decode() for i in range(len(src))}
  cfg = _cfg(espeak_data_dir, min_seconds=0.0, batch_size=3)
  seen = []
  for host in range(3):
    it = data.create_iterator(cfg, process_index=host, process_count=3)
    shard_size = len(range(host, len(src), 3))
    ids = []
    while len(ids) < shard_size:
      ids.extend(next(it)["id"].tolist())
    seen.append(set(ids[:shard_size]))
    assert len(seen[-1]) == shard_size  # one epoch of the shard, no repeats
  assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
  assert seen[0] | seen[1] | seen[2] == all_ids


@pytest.mark.parametrize("rate,batching", [(50, "fixed"), (100, "fixed"), (50, "duration"), (100, "duration")])
def test_crops_and_labels_are_consistent(espeak_data_dir, time_labels, rate, batching):
  src = _source(espeak_data_dir)
  audio_by_id = {src[i]["id"].decode(): src[i]["audio"].astype(np.float32) / 32768.0 for i in range(len(src))}
  cfg = _cfg(espeak_data_dir, labels=time_labels[rate], crop_seconds=4.0, min_seconds=1.0, batching=batching)
  it = data.create_iterator(cfg)
  for _ in range(5):
    batch = next(it)
    rows, samples = batch["audio"].shape
    assert (rows, samples) in it.shapes() and batch["labels"].shape == (rows, samples * rate // 16000)
    if batching == "duration":
      assert not batch["padding_mask"].any()
    for row, uid in enumerate(batch["id"]):
      full = audio_by_id[uid]
      crop = batch["audio"][row][~batch["padding_mask"][row]]
      # Locate the crop in the utterance: its first sample index must match the label start.
      starts = [s for s in range(len(full) - len(crop) + 1)
                if np.array_equal(full[s:s + 64], crop[:64]) and np.array_equal(full[s:s + len(crop)], crop)]
      assert starts, uid
      start = starts[0]
      labels = batch["labels"][row]
      assert labels[0] == round(start * rate / 16000)
      valid = labels[labels >= 0]
      np.testing.assert_array_equal(valid, np.arange(labels[0], labels[0] + len(valid)))


def test_label_length_mismatch_names_the_utterance(espeak_data_dir, tmp_path):
  src = _source(espeak_data_dir)
  with labels_lib.LabelStoreWriter(tmp_path / "bad", label_rate=50, num_classes=10) as writer:
    for i in range(len(src)):
      ex = src[i]
      n = len(ex["audio"]) * 50 // 16000
      writer.add(ex["id"].decode(), np.zeros(n // 2 if i == 0 else n, np.int32))  # first one is half length
  bad = src[0]["id"].decode()
  it = data.create_iterator(_cfg(espeak_data_dir, labels=str(tmp_path / "bad"), batch_size=70, min_seconds=0.0))
  with pytest.raises(labels_lib.LabelLengthError, match=f"utterance '{bad}'.*labels at 50.0 Hz.*samples"):
    next(it)


def test_mixing_changes_inputs_but_not_targets(espeak_data_dir, time_labels):
  plain = data.create_iterator(_cfg(espeak_data_dir, labels=time_labels[50]))
  mixed = data.create_iterator(_cfg(espeak_data_dir, labels=time_labels[50], mix_prob=1.0, noise_prob=0.5))
  changed = 0
  for _ in range(4):
    a, b = next(plain), next(mixed)
    np.testing.assert_array_equal(a["id"], b["id"])
    np.testing.assert_array_equal(a["labels"], b["labels"])
    np.testing.assert_array_equal(a["padding_mask"], b["padding_mask"])
    assert b["mixed"].all() and not a["mixed"].any()
    changed += int(np.sum(np.any(a["audio"] != b["audio"], axis=1)))
  assert changed >= 12


@pytest.mark.parametrize("batching", ["fixed", "duration"])
def test_exact_resume(espeak_data_dir, time_labels, batching):
  cfg = _cfg(espeak_data_dir, labels=time_labels[50], mix_prob=0.5, noise_prob=0.5, normalize=True,
             min_seconds=0.0 if batching == "fixed" else 1.5, crop_seconds=4.0, batching=batching)
  it = data.create_iterator(cfg)
  batches, states = [], []
  for _ in range(30):  # more than an epoch (70 utterances / 4)
    states.append(it.get_state())
    batches.append(next(it))
  for k in (0, 11, 25):
    resumed = data.create_iterator(cfg)
    resumed.set_state(states[k])
    for j in range(k, min(k + 4, 30)):
      got = next(resumed)
      for key in ("audio", "padding_mask", "labels", "id", "mixed"):
        np.testing.assert_array_equal(got[key], batches[j][key], err_msg=f"{key} at batch {j} after resume at {k}")
  fresh = data.create_iterator(cfg)  # same config, same stream
  np.testing.assert_array_equal(next(fresh)["audio"], batches[0]["audio"])
  if batching == "fixed":
    first_epoch = {u for b in batches[:17] for u in b["id"]}
    assert len(first_epoch) == 68  # 17 batches of 4 distinct utterances: no repeats within an epoch
  else:
    epoch = it.plan.batches_per_epoch
    first_epoch = [u for b in batches[:epoch] for u in b["id"]]
    assert len(first_epoch) == len(set(first_epoch))  # no repeats within an epoch
    assert len(first_epoch) >= 0.6 * 70


def test_short_utterances_are_padded(espeak_data_dir):
  it = data.create_iterator(_cfg(espeak_data_dir, crop_seconds=15.0, min_seconds=1.0))
  batch = next(it)
  assert batch["padding_mask"].any(axis=1).all()  # every tiny utterance is shorter than 15 s
  assert not batch["audio"][batch["padding_mask"]].any()
  valid = (~batch["padding_mask"]).sum(1)
  assert (valid >= 16000).all()


def test_global_arrays_on_a_mesh(espeak_data_dir):
  cfg = _cfg(espeak_data_dir, batch_size=8)
  batch = next(data.create_iterator(cfg))
  mesh = Mesh(np.array(jax.devices()).reshape(8), ("data",))
  arrays = data.to_global(batch, NamedSharding(mesh, P("data")))
  assert set(arrays) == {"audio", "padding_mask", "mixed"}
  assert arrays["audio"].shape == (8, 64000) and len(arrays["audio"].addressable_shards) == 8
  np.testing.assert_array_equal(np.asarray(arrays["audio"]), batch["audio"])


def test_unknown_dataset_is_a_clear_error(tmp_path):
  cfg = data.data_config(dataset="nope_dataset/x", data_dir=str(tmp_path), prepare=False)
  with pytest.raises(FileNotFoundError, match="nope_dataset/x.*not prepared"):
    data.create_iterator(cfg)
  with pytest.raises(KeyError, match="unknown data config field 'crop_secs'"):
    data.data_config(crop_secs=3)


@pytest.mark.parametrize("batching", ["fixed", "duration"])
def test_multi_host_batches_are_rows_of_the_single_host_batch(espeak_data_dir, time_labels, batching):
  # min_seconds drops utterances (the tiny corpus has 1.4-11 s): every host must drop the same ones.
  cfg = _cfg(espeak_data_dir, labels=time_labels[50], min_seconds=3.0, crop_seconds=4.0, batch_size=6,
             batching=batching)
  # The same global devices (3) on one host or on three: the batch rows are a multiple of them.
  single = data.create_iterator(cfg, process_index=0, process_count=1, batch_multiple=3)
  hosts = [data.create_iterator(cfg, process_index=p, process_count=3, batch_multiple=3) for p in range(3)]
  for _ in range(15):  # past the first epoch
    whole = next(single)
    parts = [next(h) for h in hosts]
    for key in ("audio", "labels", "id", "padding_mask"):
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
    assert (~whole["padding_mask"]).sum(axis=1).min() >= 3 * 16000 or batching == "duration"


def test_duration_batches_have_no_padding_and_few_shapes(espeak_data_dir, time_labels):
  cfg = _cfg(espeak_data_dir, labels=time_labels[100], batching="duration", crop_seconds=6.0, min_seconds=1.5,
             batch_size=4, num_buckets=4)
  it = data.create_iterator(cfg, batch_multiple=2)
  stats = it.plan.stats()
  assert len(stats["buckets_seconds"]) == 4 and stats["buckets_seconds"][-1] == 6.0
  assert all(r % 2 == 0 for r in stats["rows"])
  seen = set()
  for _ in range(2 * it.plan.batches_per_epoch):
    batch = next(it)
    rows, samples = batch["audio"].shape
    seen.add((rows, samples))
    assert not batch["padding_mask"].any() and (rows, samples) in it.shapes()
    assert rows * samples <= 4 * 6.0 * 16000  # audio per step near, never above, batch_size x crop_seconds
  assert len(seen) >= 2  # several buckets in use, each a static shape


def test_resume_under_another_plan_is_refused(espeak_data_dir, time_labels):
  cfg = _cfg(espeak_data_dir, labels=time_labels[50], batching="duration", crop_seconds=4.0, min_seconds=1.5)
  it = data.create_iterator(cfg, batch_multiple=1)
  next(it)
  state = it.get_state()
  assert state["batching"]["batching"] == "duration" and state["batching"]["buckets"]
  other = data.create_iterator(cfg, batch_multiple=2)  # another data-parallel size: other rows per bucket
  with pytest.raises(ValueError, match="saved under other batching.*same data config, data-parallel size"):
    other.set_state(state)
  with pytest.raises(ValueError, match="saved by an earlier version"):  # a bare Grain state: unverifiable
    data.create_iterator(cfg).set_state(state["grain"])
  same = data.create_iterator(cfg, batch_multiple=1)
  same.set_state(state)
  np.testing.assert_array_equal(next(same)["audio"], next(it)["audio"])


def test_transcripts_file_selects_utterances_and_replaces_their_transcripts(espeak_data_dir, tmp_path):
  """data.transcripts (noisy student's labelled + pseudo-labelled set): only the listed utterances of the
  split, in split order, each with the file's transcript; a bad file is an error naming it."""
  import json

  from wavlm_jax.data import pipeline
  from wavlm_jax.data.config import data_config
  from wavlm_jax.data.vocab import Vocabulary

  full = tfds.data_source("espeak_speech/tiny", split="train", data_dir=espeak_data_dir)
  chosen = [7, 2, 30]
  rows = [{"id": full[i]["id"].decode(), "phonemes": f"a b {i}"} for i in chosen]
  path = tmp_path / "transcripts.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  cfg = data_config(dataset="espeak_speech/tiny", data_dir=espeak_data_dir, transcripts=str(path),
                    batching="padded", crop_seconds=12.0, min_seconds=0.0, batch_size=2, num_buckets=1)
  source = pipeline.open_source(cfg)
  assert len(source) == 3
  assert [source[i]["id"].decode() for i in range(3)] == [full[i]["id"].decode() for i in sorted(chosen)]
  assert [source[i]["phonemes"] for i in range(3)] == [f"a b {i}" for i in sorted(chosen)]
  np.testing.assert_array_equal(source[0]["audio"], full[2]["audio"])
  np.testing.assert_array_equal(pipeline.length_index(source, cfg),
                                pipeline.length_index(full, cfg)[sorted(chosen)])
  # the split's ids were read once with its lengths and are cached beside the dataset
  cached = np.load(Path(full.dataset_info.data_dir) / "ids-train-id.npy")
  assert list(cached) == [full[i]["id"].decode() for i in range(len(full))]
  vocab = Vocabulary.build(["a b 2 7 30"], "phonemes")
  batches = list(pipeline.eval_batches(cfg, vocab))
  assert sorted(t for b in batches for t in b["transcript"]) == sorted(r["phonemes"] for r in rows)
  for text, error in [(json.dumps({"id": "nope", "phonemes": "a"}), "not in espeak_speech/tiny split 'train'"),
                      ("{not json", "line 1: not a JSON object"),
                      (json.dumps(rows[0]) + "\n" + json.dumps(rows[0]), "listed twice")]:
    path.write_text(text + "\n")
    with pytest.raises(ValueError, match=error) as e:
      pipeline.open_source(cfg)
    assert str(path) in str(e.value)


class _AudioOnly:
  """A data source whose examples have nothing but audio and id (no transcript to read)."""

  def __init__(self, source):
    self.source = source

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    return {k: self.source[i][k] for k in ("audio", "id")}

  def __getitems__(self, indices):
    return [self[i] for i in indices]


def test_eval_batches_without_references_never_read_transcripts(espeak_data_dir, monkeypatch):
  from wavlm_jax.data import pipeline
  from wavlm_jax.data.config import data_config
  from wavlm_jax.data.vocab import Vocabulary

  cfg = data_config(dataset="espeak_speech/tiny", split="validation", data_dir=espeak_data_dir, batching="padded",
                    crop_seconds=12.0, min_seconds=0.0, batch_size=4, num_buckets=2)
  vocab = Vocabulary.build(["a b"], "phonemes")
  with_refs = list(pipeline.eval_batches(cfg, vocab))
  real = pipeline.open_source
  monkeypatch.setattr(pipeline, "open_source", lambda c: _AudioOnly(real(c)))
  with pytest.raises(KeyError):
    list(pipeline.eval_batches(cfg, vocab))
  blind = list(pipeline.eval_batches(cfg, vocab, references=False))
  assert [b["id"] for b in blind] == [b["id"] for b in with_refs]
  assert all(t == "" for b in blind for t in b["transcript"]) and all(np.all(b["label_length"] == 0) for b in blind)
  for a, b in zip(blind, with_refs):
    np.testing.assert_array_equal(a["audio"], b["audio"])
