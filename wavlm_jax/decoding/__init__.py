"""From CTC emissions to text and scores: greedy decoding, beam search with a lexicon and an n-gram
language model (flashlight-text's decoder with its bundled KenLM), n-gram estimation to ARPA, and
WER/CER/PER scoring with jiwer. Needs neither the trainer nor the data pipeline."""
