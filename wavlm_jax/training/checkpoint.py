"""The training checkpointer: train state, data-iterator position and run config in one Orbax
checkpoint per step, asynchronous, preemption-safe."""

from __future__ import annotations

import os

import orbax.checkpoint as ocp

from wavlm_jax import storage


class TrainCheckpointer:
  """Orbax CheckpointManager for training: the train state (params, optimizer, counters), the data
  iterator state and the run config, saved together every `every` steps (asynchronously), keeping the
  last `keep` plus every `keep_period`-th. Orbax writes each step to a temporary directory and renames
  it when complete, so a crash mid-save leaves the previous checkpoint usable."""

  def __init__(self, directory: str | os.PathLike, *, every: int, keep: int, keep_period: int | None,
               asynchronous: bool = True):
    options = ocp.CheckpointManagerOptions(save_interval_steps=max(every, 1), max_to_keep=keep,
                                           keep_period=keep_period or None, enable_async_checkpointing=asynchronous,
                                           create=True)
    self.manager = ocp.CheckpointManager(storage.path(directory), options=options)  # a local path or gs://

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict, config: dict, *, force: bool = False) -> bool:
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
                              config=ocp.args.JsonSave(config))
    return self.manager.save(step, args=args, force=force)

  def restore(self, step: int, abstract_state):
    out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                             data=ocp.args.JsonRestore()))
    return out.state, out.data

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
