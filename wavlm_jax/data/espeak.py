"""eSpeak NG through ctypes (the library and data bundled by `espeakng-loader`): offline speech with
phone timings, the embedded corpus of this project (docs/data.md#embedded-espeak-corpus).

The audio is formant-synthesised: absolute metrics on it mean little, trends and invariants do.
"""

from __future__ import annotations

import ctypes
import dataclasses
import threading
from typing import Sequence

import numpy as np

from wavlm_jax.audio import SAMPLE_RATE, to_float, to_int16
SILENCE = "sil"
_PHONEME_EVENT, _LIST_TERMINATED = 7, 0
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS, _INIT_PHONEME_IPA = 1, 2
_RATE, _PITCH = 1, 3
_STRESS = str.maketrans("", "", "ˈˌ")
_PHONE_SEPARATOR = "_"

# Human-sounding voice variants; the last ones are held out as unseen speakers.
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "adam", "benjamin", "linda",
            "m8", "f5", "david")
UNSEEN_VARIANTS = ("m8", "f5", "david")


class _Id(ctypes.Union):
  _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
  _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
              ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
              ("user_data", ctypes.c_void_p), ("id", _Id)]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclasses.dataclass
class Utterance:
  audio: np.ndarray  # int16 at 16 kHz
  phones: list[tuple[float, str]]  # (start time in seconds, IPA phone without stress marks)


class Espeak:
  """The eSpeak NG engine.

  eSpeak keeps state in C statics across utterances (pitch "flutter" and timing carry over), so the same
  text comes out a few samples different depending on what was spoken before, and even
  `espeak_Initialize` does not reset it. For reproducible corpora every call loads a fresh copy of the
  library (dlopen, initialise, speak, dlclose: ~8 ms), so an utterance depends only on its arguments.
  """

  _lock = threading.Lock()

  def __init__(self):
    import espeakng_loader

    self._path = espeakng_loader.get_library_path()
    self._data = espeakng_loader.get_data_path().encode()
    self.native_rate = 22050

  def _session(self, fn):
    """Runs fn(lib) on a freshly loaded and initialised library, then unloads it."""
    import _ctypes

    with self._lock:
      lib = ctypes.CDLL(self._path)
      try:
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._data,
                                     _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA)
        if rate <= 0:
          raise RuntimeError(f"eSpeak NG failed to initialise with data at {self._data.decode()}")
        self.native_rate = rate
        return fn(lib)
      finally:
        lib.espeak_Terminate()
        _ctypes.dlclose(lib._handle)

  def synthesize(self, text: str, voice: str, *, rate: int = 175, pitch: int = 50) -> Utterance:
    """Speaks `text` with `voice` (e.g. "en-us+m3") at `rate` words/min and `pitch` (0-99)."""
    import soxr

    chunks: list[np.ndarray] = []
    events: list[tuple[int, str]] = []

    def on_audio(wav, num_samples, ev):
      if num_samples > 0:
        chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
      i = 0
      while ev[i].type != _LIST_TERMINATED:
        if ev[i].type == _PHONEME_EVENT:
          events.append((ev[i].sample, ev[i].id.string.decode("utf-8", "replace")))
        i += 1
      return 0

    callback = _Callback(on_audio)

    def speak(lib):
      lib.espeak_ng_SetRandSeed(0)  # noise sources (aspiration, frication) use eSpeak's own generator
      lib.espeak_SetSynthCallback(callback)
      if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise ValueError(f"eSpeak NG has no voice {voice!r}")
      lib.espeak_SetParameter(_RATE, int(rate), 0)
      lib.espeak_SetParameter(_PITCH, int(pitch), 0)
      data = text.encode("utf-8")
      lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, 0, None, None)
      lib.espeak_Synchronize()

    self._session(speak)
    native = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    audio = to_int16(soxr.resample(to_float(native), self.native_rate, SAMPLE_RATE))
    phones = [(sample / self.native_rate, name.translate(_STRESS) or SILENCE) for sample, name in events]
    return Utterance(audio, phones)

  def phonemes(self, text: str, voice: str) -> str:
    """The IPA phoneme string of `text` (eSpeak's own transcription, no audio)."""

    def transcribe(lib):
      lib.espeak_SetVoiceByName(voice.encode())
      lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
      pointer = ctypes.c_char_p(text.encode("utf-8"))
      out = []
      while pointer.value:
        piece = lib.espeak_TextToPhonemes(ctypes.byref(pointer), 1, _INIT_PHONEME_IPA)
        if piece:
          out.append(piece.decode("utf-8", "replace"))
      return " ".join(out)

    return self._session(transcribe)

  def phone_sequences(self, texts: Sequence[str], voice: str) -> list[str]:
    """Each text's phones, space-separated, by eSpeak's text-to-phoneme rules (no audio): the phone names
    the corpus' synthesis gives (`synthesize(...).phones`, silence aside), stress marks removed. Text is
    lower-cased first (eSpeak spells out some upper-case words as letters). One library session."""
    mode = _INIT_PHONEME_IPA | (ord(_PHONE_SEPARATOR) << 8)  # bits 8-23: the separator between phones

    def transcribe(lib):
      if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise ValueError(f"eSpeak NG has no voice {voice!r}")
      lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
      out = []
      for text in texts:
        data = text.lower().encode("utf-8")
        pointer = ctypes.c_char_p(data)
        pieces = []
        while pointer.value:
          piece = lib.espeak_TextToPhonemes(ctypes.byref(pointer), 1, mode)
          if piece:
            pieces.append(piece.decode("utf-8", "replace"))
        words = " ".join(pieces).translate(_STRESS)
        out.append(" ".join(p for p in words.replace(_PHONE_SEPARATOR, " ").split() if p))
      return out

    return self._session(transcribe)


def frame_phones(phones: list[tuple[float, str]], num_samples: int, hop: int = 160) -> list[str]:
  """The phone at the centre of every `hop`-sample frame (10 ms at 16 kHz); silence outside phones."""
  num_frames = num_samples // hop
  starts = np.array([t for t, _ in phones]) * SAMPLE_RATE
  names = [p for _, p in phones]
  centres = np.arange(num_frames) * hop + hop / 2
  index = np.searchsorted(starts, centres, side="right") - 1
  return [SILENCE if i < 0 else names[i] for i in index]
