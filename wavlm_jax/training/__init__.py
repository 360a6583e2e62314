"""What the programs that train (pretraining, fine-tuning, probing) share: the device mesh and its rule
presets, the training checkpointer, the optimiser, metrics writers and compute accounting."""
