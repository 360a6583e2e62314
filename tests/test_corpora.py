"""The pretraining corpora's builders (Libri-Light, GigaSpeech, VoxPopuli) on miniature copies in their
real layouts with the damage real downloads have, and LibriSpeech folders with bad entries: every file
left out is listed with its reason, and fine-tuning leaves out utterances without a transcript."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

import corpora
from wavlm_jax.audio import to_int16
from wavlm_jax.data import builders, data_config, espeak
from wavlm_jax.data.corpora import DEFAULT_MAX_SECONDS, vad_groups


def test_vad_groups_join_spans_up_to_the_limit_and_split_long_ones():
  spans = [(0.5, 4.5), (5.5, 11.5), (12.2, 19.2), (20.2, 40.2), (41.0, 41.0), (42.0, 45.0)]
  groups = [[(round(a, 6), round(b, 6)) for a, b in g] for g in vad_groups(spans, 15.625, duration=44.0)]
  assert groups == [[(0.5, 4.5), (5.5, 11.5)], [(12.2, 19.2)], [(20.2, 30.2)], [(30.2, 40.2)], [(42.0, 44.0)]]
  # Libri-Light's rule: a span is added while the piece stays within the limit, so 2 + 2 + 2 = 6 s fit in 6.
  assert vad_groups([(0, 2), (3, 5), (6, 8), (9, 10)], 6.0) == [[(0, 2), (3, 5), (6, 8)], [(9, 10)]]
  assert vad_groups([], 10.0) == []


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """The three corpora written in their layouts and built in-process (one data dir)."""
  root = tmp_path_factory.mktemp("corpora")
  engine = espeak.Espeak()
  data_dir = str(root / "tfds")
  made = {
      "librilight": builders.prepare_folder("librilight_dir", corpora.write_librilight(root / "librilight", engine),
                                            data_dir, name="mini"),
      "gigaspeech": builders.prepare_folder("gigaspeech_dir", corpora.write_gigaspeech(root / "GigaSpeech", engine),
                                            data_dir, name="mini", subset="S"),
      "voxpopuli": builders.prepare_folder("voxpopuli_dir", corpora.write_voxpopuli(root / "voxpopuli", engine),
                                           data_dir, name="mini", languages=("en",)),
  }
  return root, data_dir, made


def _rows(name, split, data_dir):
  src = tfds.data_source(name, split=split, data_dir=data_dir)
  return {src[i]["id"].decode(): src[i] for i in range(len(src))}


def _report(builder):
  report = json.loads((Path(builder.data_dir) / "skipped.json").read_text())
  return {Path(s["file"].split(" [")[0]).name + (" [" + s["file"].split(" [")[1] if " [" in s["file"] else ""):
          s["reason"] for s in report["skipped"]}


def test_librilight_is_cut_at_voice_activity(built):
  root, data_dir, made = built
  rows = _rows("librilight_dir/mini", "train", data_dir)
  first = "small/100/sea_fairies_0812_librivox/sea_fairies_01_baum"
  # 4 + 6 s joined, 7 s alone (4 + 6 + 7 > 15.6), the 20 s span in two halves; silences left out.
  assert [round(float(rows[f"{first}_{i:04d}"]["duration"]), 3) for i in range(4)] == [10.0, 7.0, 10.0, 10.0]
  assert f"{first}_0004" not in rows
  assert all(float(r["duration"]) <= DEFAULT_MAX_SECONDS for r in rows.values())
  ex = rows[f"{first}_0000"]
  assert ex["speaker"] == b"100" and ex["book"] == b"300" and ex["source"] == first.encode()
  assert float(ex["snr"]) == 10.0 and ex["audio"].dtype == np.int16 and len(ex["audio"]) == 160000
  # 44.1 kHz stereo: resampled and down-mixed, 8 + 3 s of speech in one piece.
  holland = rows["small/2019/history_of_holland_0907_librivox/history_01_blok_0000"]
  assert len(holland["audio"]) == 11 * 16000 and holland["book"] == b"302"
  # An already-cut piece (a .wav, no json beside it) is taken whole; medium is read too, duplicate is not.
  cut = rows["small/2019/history_of_holland_0907_librivox/history_02_blok_0000_0000"]
  assert float(cut["duration"]) == 3.0 and np.isnan(float(cut["snr"]))
  assert float(rows["medium/7/poems_1203_librivox/poems_03_frost_0000"]["duration"]) == 5.0
  assert not any(k.startswith("duplicate/") for k in rows)
  # The pieces are the speech spans, read by seeking: exactly the recording's samples at 0.5-4.5 s and
  # 5.5-11.5 s, joined.
  whole, rate = sf.read(root / "librilight" / "small" / "100" / "sea_fairies_0812_librivox" / "sea_fairies_01_baum.flac",
                        dtype="float32")
  np.testing.assert_array_equal(ex["audio"], to_int16(np.concatenate([whole[8000:72000], whole[88000:184000]])))
  reasons = _report(made["librilight"])
  assert reasons["sea_fairies_03_baum.flac"].startswith("unreadable")
  assert reasons["sea_fairies_04_baum.json"].startswith("unreadable voice-activity json")
  assert reasons["sea_fairies_05_baum.flac"].startswith("no voice activity")
  assert reasons["sea_fairies_06_baum.flac [piece 0: 0.00-5.00 s]"].startswith("silent")  # 2 + 2 s in one piece
  assert len(reasons) == 4


def test_librilight_subsets_and_options(built, tmp_path):
  root, _, _ = built
  small = builders.prepare_folder("librilight_dir", root / "librilight", str(tmp_path), name="small", subset="small",
                                  max_seconds=8.0)
  rows = _rows("librilight_dir/small", "train", str(tmp_path))
  assert not any(k.startswith("medium/") for k in rows) and small.info.splits["train"].num_examples == len(rows)
  assert max(float(r["duration"]) for r in rows.values()) <= 8.0
  with pytest.raises(ValueError, match="unknown subset"):
    builders.prepare_folder("librilight_dir", root / "librilight", str(tmp_path), name="x", subset="huge")
  with pytest.raises(ValueError, match="does not read languages"):
    builders.prepare_folder("librilight_dir", root / "librilight", str(tmp_path), name="x", languages=("en",))
  with pytest.raises(ValueError, match="its own validation"):
    builders.prepare_folder("gigaspeech_dir", root / "GigaSpeech", str(tmp_path), name="x", validation_fraction=0.1)
  builders.prepare_folder("librilight_dir", root / "librilight", str(tmp_path), name="dup", subset="duplicate")
  assert list(_rows("librilight_dir/dup", "train", str(tmp_path))) == [
      "duplicate/100/sea_fairies_0812_librivox/sea_fairies_01_baum_0000"]


def test_gigaspeech_segments_text_and_splits(built):
  root, data_dir, made = built
  assert set(made["gigaspeech"].info.splits) == {"train", "validation"}  # no {TEST} segment in this copy
  train = _rows("gigaspeech_dir/mini", "train", data_dir)
  # Subset S: segments tagged {S} (nested: XS is in S); the {XL}/{L}-only one is not.
  assert sorted(train) == ["POD0000000001_S0000000", "POD0000000001_S0000001", "POD0000000001_S0000003",
                           "YOU0000000002_S0000000"]
  ex = train["POD0000000001_S0000000"]
  assert ex["text"] == b"THE QUICK BROWN FOX JUMPS" and ex["source"] == b"POD0000000001" and ex["domain"] == b"podcast"
  assert len(ex["audio"]) == 56000 and float(ex["duration"]) == 3.5  # 0.5-4.0 s of the Opus file, seeked:
  whole, _ = sf.read(root / "GigaSpeech" / "audio" / "podcast" / "P0000" / "POD0000000001.opus", dtype="float32")
  np.testing.assert_array_equal(ex["audio"], to_int16(whole[8000:64000]))
  assert train["YOU0000000002_S0000000"]["domain"] == b"youtube"
  dev = _rows("gigaspeech_dir/mini", "validation", data_dir)
  assert sorted(dev) == ["POD1000000003_S0000000"] and dev["POD1000000003_S0000000"]["text"] == b"BIRDS OF A FEATHER"
  reasons = _report(made["gigaspeech"])
  assert reasons["YOU0000000002.opus [YOU0000000002_S0000001]"] == "garbage utterance tag <NOISE>"
  assert reasons["POD1000000003.opus [POD1000000003_S0000001]"] == "garbage utterance tag <SIL>"
  assert reasons["POD0000000009.opus"].startswith("missing")
  assert reasons["YOU0000000010.opus"].startswith("unreadable")


def test_voxpopuli_language_filter_and_long_segments(built):
  _, data_dir, made = built
  rows = _rows("voxpopuli_dir/mini", "train", data_dir)
  assert sorted(rows) == ["en/2019/20190114-0900-PLENARY-3_en_0", "en/2019/20190114-0900-PLENARY-3_en_1_part0",
                          "en/2019/20190114-0900-PLENARY-3_en_1_part1", "en/2020/20200210-0900-PLENARY-7_en_4"]
  ex = rows["en/2019/20190114-0900-PLENARY-3_en_0"]
  assert ex["source"] == b"en/2019/20190114-0900-PLENARY-3_en" and ex["year"] == b"2019" and ex["language"] == b"en"
  assert len(ex["audio"]) == 5 * 16000
  assert [float(rows[f"en/2019/20190114-0900-PLENARY-3_en_1_part{i}"]["duration"]) for i in (0, 1)] == [10.0, 10.0]
  reasons = _report(made["voxpopuli"])
  assert reasons == {"20200210-0900-PLENARY-7_en_5.ogg": "empty (0 bytes)",
                     "stray.ogg": "not in VoxPopuli's LANG/YEAR/EVENT_SEGMENT.ogg layout"}


def test_validation_fraction_holds_out_whole_recordings(built, tmp_path):
  root, _, _ = built
  builders.prepare_folder("librilight_dir", root / "librilight", str(tmp_path), name="held", validation_fraction=0.5)
  sources = {split: {r["source"] for r in _rows("librilight_dir/held", split, str(tmp_path)).values()}
             for split in ("train", "validation")}
  assert sources["train"] and sources["validation"] and not sources["train"] & sources["validation"]


def test_prepare_command_names_the_subset(built, tmp_path, capsys):
  from wavlm_jax.data import prepare

  root, _, _ = built
  assert prepare.main(["gigaspeech_dir", str(root / "GigaSpeech"), "--subset", "XS", "--data-dir", str(tmp_path)]) == 0
  assert "gigaspeech_dir/xs" in capsys.readouterr().out
  assert len(_rows("gigaspeech_dir/xs", "train", str(tmp_path))) == 3  # the {XS} segments
  with pytest.raises(SystemExit):
    prepare.main(["voxpopuli_dir", str(root / "voxpopuli"), "--subset", "S", "--data-dir", str(tmp_path)])
  assert "voxpopuli_dir does not read subset" in capsys.readouterr().err
  with pytest.raises(SystemExit):  # a subset the corpus lacks: a usage error before anything is read
    prepare.main(["gigaspeech_dir", str(root / "GigaSpeech"), "--subset", "XXL", "--data-dir", str(tmp_path)])
  assert "training subsets are" in capsys.readouterr().err
  assert prepare.main(["gigaspeech_dir", str(root / "voxpopuli"), "--data-dir", str(tmp_path)]) == 2  # no metadata
  assert "no GigaSpeech.json" in capsys.readouterr().err
  # without --name or --subset the dataset is named after its folder (TFDS refuses a custom "default")
  assert prepare.main(["voxpopuli_dir", str(root / "voxpopuli" / "unlabelled_data"), "--data-dir", str(tmp_path)]) == 0
  assert "voxpopuli_dir/unlabelled_data in" in capsys.readouterr().out


def test_librispeech_bad_entries_are_listed_and_fine_tuning_skips_empty_transcripts(tmp_path):
  from wavlm_jax.data import pipeline
  from wavlm_jax.data.vocab import Vocabulary

  engine = espeak.Espeak()
  root = corpora.write_librispeech(tmp_path / "LibriSpeech" / "train-clean-5", [
      ("19-198-0000", 2.0, 16000, 1), ("19-198-0001", 3.0, 16000, 1), ("19-198-0002", 2.5, 44100, 2),
      ("19-198-0003", 2.2, 16000, 1), ("26-495-0000", 3.5, 8000, 1)], engine, corrupt=("26-495-0001",))
  chapter = root / "19" / "198"
  lines = (chapter / "19-198.trans.txt").read_text().splitlines()
  lines = [line for line in lines if not line.startswith("19-198-0003")]  # audio without a transcript line
  lines = ["19-198-0002" if line.startswith("19-198-0002") else line for line in lines]  # an empty transcript
  lines.append("19-198-0009 LISTED BUT NO AUDIO")
  (chapter / "19-198.trans.txt").write_text("\n".join(lines) + "\n")
  data_dir = str(tmp_path / "tfds")
  made = builders.prepare_folder("librispeech_dir", root, data_dir, name="bad")
  rows = _rows("librispeech_dir/bad", "train", data_dir)
  assert sorted(rows) == ["19-198-0000", "19-198-0001", "19-198-0002", "26-495-0000"]
  assert rows["19-198-0002"]["text"] == b"" and len(rows["19-198-0002"]["audio"]) == 40000
  report = json.loads((Path(made.data_dir) / "skipped.json").read_text())
  reasons = {Path(s["file"]).name: s["reason"] for s in report["skipped"]}
  assert reasons["19-198-0003.flac"].startswith("no transcript line")
  assert reasons["19-198-0009.flac"].startswith("missing (listed at")
  assert reasons["26-495-0001.flac"].startswith("unreadable") and len(reasons) == 3
  assert [(Path(f["file"]).name, f["note"].split(" (")[0]) for f in report["flagged"]] == [
      ("19-198-0002.flac", "empty transcript")]

  # Fine-tuning's padded batches leave the empty transcript out, and say so.
  vocab = Vocabulary.build([r["text"].decode() for r in rows.values()], "letters")
  cfg = data_config(dataset="librispeech_dir/bad", data_dir=data_dir, prepare=False, batching="padded",
                    crop_seconds=4.0, min_seconds=1.0, batch_size=1, num_buckets=1, num_threads=1)
  iterator = pipeline.HostIterator(cfg, process_index=0, process_count=1, vocab=vocab)
  assert iterator.plan.stats()["dropped_no_transcript"] == 1
  seen = {uid for _ in range(2 * iterator.plan.batches_per_epoch) for uid in next(iterator)["id"]}
  assert seen == {"19-198-0000", "19-198-0001", "26-495-0000"}
  # Pretraining keeps its audio.
  cfg = data_config(dataset="librispeech_dir/bad", data_dir=data_dir, prepare=False, crop_seconds=2.0,
                    min_seconds=1.0, batch_size=1, num_buckets=1, num_threads=1)
  plan = pipeline.HostIterator(cfg, process_index=0, process_count=1).plan
  assert plan.batches_per_epoch == 4


# Worker processes (readers pickled, as on a cluster) for Libri-Light; one process for the others, whose
# readers pickle the same way, to keep the suite's time.
@pytest.mark.parametrize("corpus, kind, folder, options, mode", [
    ("librilight", "librilight_dir", "librilight", {}, "direct_num_workers=2,direct_running_mode=multi_processing"),
    ("gigaspeech", "gigaspeech_dir", "GigaSpeech", {"subset": "S"}, "direct_running_mode=in_memory"),
    ("voxpopuli", "voxpopuli_dir", "voxpopuli/unlabelled_data", {"languages": ("en",)}, "direct_running_mode=in_memory"),
])
def test_beam_build_is_the_in_process_dataset(built, tmp_path, corpus, kind, folder, options, mode):
  root, data_dir, made = built
  beam = builders.prepare_folder(kind, root / folder, str(tmp_path), name="mini", **options,
                                 beam_options=f"runner=DirectRunner,{mode}")
  assert {k: v.num_examples for k, v in beam.info.splits.items()} == {
      k: v.num_examples for k, v in made[corpus].info.splits.items()}
  for split in beam.info.splits:
    ours, theirs = _rows(f"{kind}/mini", split, str(tmp_path)), _rows(f"{kind}/mini", split, data_dir)
    assert sorted(ours) == sorted(theirs)
    for key, ex in theirs.items():
      assert set(ours[key]) == set(ex)
      for field, value in ex.items():
        np.testing.assert_array_equal(ours[key][field], value, err_msg=f"{key}: {field}")
  assert _report(beam) == _report(made[corpus])
  assert not list(Path(tmp_path).glob(".wavlm_jax-skipped-*"))  # the workers' lists are merged, then removed


def test_beam_runner_off_this_machine_needs_a_shared_data_dir(built):
  root, _, _ = built
  with pytest.raises(ValueError, match="file system they all mount"):
    builders.prepare_folder("voxpopuli_dir", root / "voxpopuli", "gs://bucket/data", name="x",
                            beam_options="runner=DataflowRunner,project=p,region=r")
  with pytest.raises(ValueError, match="built in-process only"):
    builders.prepare_folder("audio_dir", root / "voxpopuli", "/tmp/unused", name="x", beam_options="runner=DirectRunner")
