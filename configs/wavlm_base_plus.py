"""WavLM Base+ (docs/objectives.md#wavlm-pretraining): the Base architecture trained on 94k hours
(Libri-Light, GigaSpeech, VoxPopuli) for 1M steps [UNVERIFIED step count], with utterance and noise
mixing.

  python -m wavlm_jax.train --config configs/wavlm_base_plus.py --workdir $W/wavlm_base_plus \
      --config.data.dataset=audio_dir/mix94k --config.data.labels=... --config.data.noise=noise_dir/dns

Data: prepare the unlabelled audio with `python -m wavlm_jax.data.prepare audio_dir FOLDER --name mix94k`
and DNS noise with `python -m wavlm_jax.data.prepare noise_dir FOLDER --name dns`. We have not run this recipe at scale.
"""

from configs import common, wavlm_base


def get_config(arg: str = ""):
  words = common.parse_arg(arg, {"runlocal"})
  c = wavlm_base.get_config()
  c.data.dataset = "audio_dir/mix94k"
  c.data.noise, c.data.noise_prob = "noise_dir/dns", 0.5
  c.total_steps = 1_000_000
  c.mesh.fsdp = 4
  c.sharding = "fsdp"
  return common.runlocal(c) if "runlocal" in words else c
