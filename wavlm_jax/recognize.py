"""Speech recognition with a CTC model: emissions batch by batch over a device mesh, decoded greedily or
by beam search, scored with jiwer. Shared by fine-tuning's validation and `python -m wavlm_jax.evaluate`.

    forward = recognize.make_forward(binder, mesh, rules, params_sharding)
    result = recognize.transcribe(forward, params, pipeline.eval_batches(cfg, vocab, ...), vocab, mesh)
    result.scores  -> {"wer": ..., "cer": ...} or {"per": ...}; result.records -> per-utterance hypotheses
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from wavlm_jax.data.vocab import Vocabulary
from wavlm_jax.decoding import greedy, score
from wavlm_jax.models import partitioning
from wavlm_jax.training import mesh as mesh_lib


def make_forward(binder, mesh, rules, params_sharding=None):
  """jit(params, audio, padding_mask) -> (CTC log-probs (B, T, V) fp32, valid frames (B,)); no masking,
  no dropout. The reference models' padding rule (GroupNorm statistics include padding), as training."""
  batch = NamedSharding(mesh, P(mesh_lib.BATCH))

  def forward(params, audio, padding_mask):
    model = binder.model(params)
    with partitioning.use(mesh, rules):
      out = model(audio, padding_mask, collect=False)
      logits = model.ctc_logits(out)
    lengths = jnp.sum(out.frame_valid, axis=1) if out.frame_valid is not None else jnp.full(
        logits.shape[:1], logits.shape[1])
    return jax.nn.log_softmax(logits, axis=-1), lengths

  return jax.jit(forward, in_shardings=(params_sharding, batch, batch))


@dataclasses.dataclass
class Result:
  records: list[dict]  # id, reference, hypothesis (and the greedy hypothesis when beam-searched)
  scores: dict  # error rates and counts (decoding/score.py), plus the utterances that cannot align

  def headline(self, kind: str) -> float:
    return self.scores.get(score.headline(kind), float("nan"))


def _global(value: np.ndarray, sharding) -> jax.Array:
  """A global array from a batch every process holds whole: each device gets its own rows, wherever the
  mesh puts it (rows stay attached to their ids and transcripts)."""
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def _fetch(x) -> np.ndarray:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def transcribe(forward, params, batches: Iterable[dict], vocab: Vocabulary, mesh, *, decoder=None,
               keep_emissions: bool = False) -> Result:
  """Every utterance of `batches` (pipeline.eval_batches) decoded and scored. `decoder`: a
  decoding.beam.BeamDecoder (default greedy)."""
  sharding = NamedSharding(mesh, P(mesh_lib.BATCH))
  records, infeasible = [], 0
  emissions = []
  for batch in batches:
    arrays = [_global(batch[k], sharding) for k in ("audio", "padding_mask")]
    log_probs, lengths = forward(params, *arrays)
    log_probs, lengths = _fetch(log_probs), _fetch(lengths)
    n = int(np.sum(batch["rows"]))
    log_probs, lengths = log_probs[:n], lengths[:n]
    paths = greedy.decode(log_probs, lengths, vocab.blank)
    greedy_text = [vocab.decode(p) for p in paths]
    text = decoder.decode(log_probs, lengths) if decoder is not None else greedy_text
    # confidence: the mean over valid frames of the top posterior's log-probability, as a probability
    best = np.max(log_probs, axis=-1)
    for i in range(n):
      label_length = int(batch["label_length"][i])
      infeasible += int(label_length > int(lengths[i]))
      frames = int(lengths[i])
      rec = {"id": batch["id"][i], "reference": vocab.reference(batch["transcript"][i]), "hypothesis": text[i],
             "frames": frames, "confidence": float(np.exp(np.mean(best[i, :frames]))) if frames else 0.0}
      if decoder is not None:
        rec["greedy"] = greedy_text[i]
      records.append(rec)
      if keep_emissions:
        emissions.append(log_probs[i, :int(lengths[i])])
  scores = score.error_rates([r["reference"] for r in records], [r["hypothesis"] for r in records], vocab.kind)
  scores["longer_than_frames"] = infeasible
  result = Result(records, scores)
  if keep_emissions:
    result.emissions = emissions
  return result
