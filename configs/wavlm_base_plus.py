"""WavLM Base+ (docs/objectives.md#wavlm-pretraining): the Base architecture trained on 94k hours
(Libri-Light 60k, GigaSpeech 10k, VoxPopuli English 24k: a mixture by hours) for 1M steps [UNVERIFIED
step count], with utterance and noise mixing.

  python -m wavlm_jax.train --config configs/wavlm_base_plus.py --workdir $W/wavlm_base_plus \
      --config.tokenizer.checkpoint=$W/hubert_base_it1/model --config.tokenizer.layer=9
  python -m wavlm_jax.train --config configs/wavlm_base_plus.py:runlocal --workdir runs/wavlm_base_plus_local

The chain, from downloaded corpora to a launched pod (docs/data.md#the-pretraining-corpora has the
layouts, sizes and the Beam commands for a cluster):
  1. Prepare the three corpora as datasets named as MIX94K below, e.g. `python -m wavlm_jax.data.prepare
     librilight_dir /data/librilight --subset small,medium,large` (Libri-Light: ~58k h, 3.4 TB of FLAC),
     `gigaspeech_dir /data/GigaSpeech --subset XL` (10k h, decrypted first), `voxpopuli_dir
     /data/voxpopuli/unlabelled_data --languages en --name en` (24k h), and DNS noise with `noise_dir
     FOLDER --name dns`; add `--beam-options ...` to spread each over a cluster's workers.
  2. The first run labels every component (k-means, k=500, of a Base teacher's layer 9, fitted on 0.1 %
     of the audio, ~90 h, each corpus giving its weight's share) into
     runs/tokenizer/mix94k_hidden_km500/labels/<component>/, then pre-trains.
  3. Check the pod first: `python -m wavlm_jax.aot --config configs/wavlm_base_plus.py --topology v5e:4x4`.
Healthy: `data/share/*` in metrics.jsonl near the weights the log prints (by hours of the prepared audio;
the corpora's published sizes, 57.7k / 10k / 24k h, give about 0.63 / 0.11 / 0.26). We have not run this
recipe at scale.
"""

from configs import common, wavlm_base

# The 94k hours as prepared datasets, weighted by hours (weight 0: data/mixture.py).
MIX94K = (("librilight_dir/small_medium_large", "train", 0.0), ("gigaspeech_dir/xl", "train", 0.0),
          ("voxpopuli_dir/en", "train", 0.0))


def get_config(arg: str = ""):
  words = common.parse_arg(arg, {"runlocal"})
  c = wavlm_base.get_config()
  c.data.noise, c.data.noise_prob = "noise_dir/dns", 0.5
  c.total_steps = 1_000_000
  c.mesh.fsdp = 4
  c.sharding = "fsdp"
  c = common.mixture_tokenizer(c, MIX94K, "runs/tokenizer/mix94k_hidden_km500", fit_fraction=0.001)
  return common.runlocal(c) if "runlocal" in words else c
