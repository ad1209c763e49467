"""The one Orbax CheckpointManager wrapper: save, auto-resume, and read-only restore.

Items: `state` (the TrainState pytree) and `meta` (JSON: whatever the caller needs to
resume, e.g. the config and the explorer's state). Restores always pass target shardings,
so a checkpoint written on N devices restores onto any other device count (orbax #648).

A save writes into a temporary directory that Orbax renames when complete, so a kill or a
full disk mid-save leaves the previous checkpoint as the latest. Such leftovers are deleted
when the next writer opens the directory, or at once when the save failed for lack of space.
A step past `max_to_keep` is first renamed into `deleted/`, then deleted, so a kill while
it goes leaves no numbered directory that is only part of a step.
"""
import glob
import logging
import os
import shutil

import jax
import orbax.checkpoint as ocp

from ie_jax.utils import disk, failpoints

log = logging.getLogger(__name__)

# Orbax deletes an old step file by file (in parallel on a big host). Killed in the middle,
# it left a numbered directory that listed as a step, could not be restored, and drew a
# warning on every listing after. A rename into this directory is atomic; emptying it is
# ours, after each save.
_TRASH = 'deleted'


class CheckpointError(RuntimeError):
  """A checkpoint is missing or does not fit the model being restored into."""


class Checkpointer:
  """Saves and restores `(state, meta)` under `directory`.

  Args:
    directory: where checkpoints live (`<workdir>/checkpoints`).
    max_to_keep: how many recent steps to keep (None keeps all).
    read_only: for probing jobs that must never write next to a running explorer.
  """

  def __init__(self, directory: str, max_to_keep: int | None = 3, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    if read_only and not os.path.isdir(self.directory):
      raise CheckpointError(f'No checkpoint directory at {self.directory}.')
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
        # A save killed half-way leaves `<step>.orbax-checkpoint-tmp*`; never read, but it
        # would pile up with every kill.
        cleanup_tmp_directories=not read_only,
        todelete_subdir=None if read_only else _TRASH,
        # Synchronous saves: a step is on disk when save() returns, so a kill right after
        # can never leave the last completed phase unsaved.
        enable_async_checkpointing=False)
    # Handlers are named up front so that a fresh manager can read item metadata before
    # its first restore (otherwise `item_metadata` returns None for unseen items).
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'meta': ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    self._manager.reload()  # another process (the explorer) may have written since
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    self._manager.reload()
    return list(self._manager.all_steps())

  def save(self, step: int, state, meta: dict) -> None:
    """Writes step `step`; when this returns it is on disk.

    Raises:
      disk.DiskFullError: no space for it; its partial files are deleted, and the previous
        checkpoint stays the latest.
    """
    if all(x.is_fully_addressable for x in jax.tree.leaves(state) if isinstance(x, jax.Array)):
      # One process: hand Orbax host copies. Given device arrays replicated over several
      # devices, it slices each array per replica and compiles those slices: on 4 CPU
      # devices the first save of a process took 5.6 s instead of 0.25 s, later ones 3-4x
      # longer (docs/DECISIONS.md). Restores read the same files into `state`'s shardings.
      state = jax.device_get(state)
    try:
      failpoints.disk_full('checkpoint', os.path.join(self.directory, str(step)))
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
      self._manager.wait_until_finished()
      if jax.process_index() == 0:  # the process that Orbax lets delete
        shutil.rmtree(os.path.join(self.directory, _TRASH), ignore_errors=True)
    except (OSError, RuntimeError, ValueError) as e:
      if not disk.is_disk_full(e):
        raise
      # Synchronous saves and one writer: this step's temporary files are this save's own.
      for partial in glob.glob(os.path.join(self.directory, f'{step}.orbax-checkpoint-tmp*')):
        shutil.rmtree(partial, ignore_errors=True)
      self._manager.reload()
      raise disk.as_disk_full(e, os.path.join(self.directory, str(step))) from e

  def restore(self, state_template, step: int | None = None):
    """Restores `(state, meta)` at `step` (default: latest) into `state_template`'s shardings.

    `state_template` may be a real state or `jax.eval_shape` of one; each leaf's sharding
    (or, for abstract leaves without one, a single-device placement) is the target.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f'No checkpoint found in {self.directory}.')
    if step not in self.all_steps():
      raise CheckpointError(
          f'No checkpoint at step {step} in {self.directory}; found {self.all_steps()}.')
    abstract = jax.tree.map(_abstract, state_template)
    self._check_structure(step, abstract)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(
          f'The checkpoint at step {step} in {self.directory} does not fit the configured '
          f'model: {e}') from e
    log.info('Restored step %d from %s.', step, self.directory)
    return restored.state, restored.meta

  def restore_meta(self, step: int | None = None) -> dict:
    """Only the JSON `meta` item (cheap: no arrays are read)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f'No checkpoint found in {self.directory}.')
    return self._manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore())).meta

  def _check_structure(self, step: int, abstract) -> None:
    # Orbax's own error names neither the parameter nor the cause; a partial or reshaped
    # load must never pass, so compare every leaf against the saved metadata first.
    saved = {_name(path): tuple(leaf.shape) for path, leaf in
             jax.tree_util.tree_leaves_with_path(self._manager.item_metadata(step)['state'])}
    wanted = {_name(path): tuple(leaf.shape) for path, leaf in
              jax.tree_util.tree_leaves_with_path(abstract)}
    where = f'The checkpoint at step {step} in {self.directory}'
    missing = sorted(set(wanted) - set(saved))
    if missing:
      raise CheckpointError(f'{where} lacks {len(missing)} arrays the configured model needs, '
                            f'e.g. {missing[:3]}: is it another architecture?')
    extra = sorted(set(saved) - set(wanted))
    if extra:
      raise CheckpointError(f'{where} holds {len(extra)} arrays the configured model lacks, '
                            f'e.g. {extra[:3]}: is it another architecture?')
    for name, shape in wanted.items():
      if saved[name] != shape:
        raise CheckpointError(f'{where} has {name} of shape {saved[name]}, but the configured '
                              f'model needs {shape}: is it another architecture?')

  def close(self) -> None:
    self._manager.close()


def _abstract(leaf):
  sharding = getattr(leaf, 'sharding', None)
  if sharding is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)


def _name(path) -> str:
  parts = []
  for k in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
  return '.'.join(parts)
