"""What the processes of one run share, as one object: `current()`.

The explorer, its search, the input pipeline and the steps' output placement call the
same methods whether one process runs or many. `Local` (one process) does nothing or
returns its input; `Processes` talks to the others through JAX's collectives. This module
is the only place that asks how many processes there are, so no caller branches on it.

Small Python values (queries, manifest decisions, iterator states) cross processes as JSON
bytes inside a uint8 array: JAX's collectives move arrays, not objects.
"""
import json
import logging

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger(__name__)


class Local:
  """One process: every collective is an identity, every barrier passes at once."""

  index, count = 0, 1

  @property
  def primary(self) -> bool:
    """Process 0: the one that writes logs, reports and the explorer's side files."""
    return self.index == 0

  def allgather_json(self, value) -> list:
    """Every process's `value` (JSON-serialisable), in process order, on every process."""
    return [json.loads(json.dumps(value))]  # as the others would get it: JSON types

  def broadcast_json(self, value):
    """Process 0's `value` on every process (the others' `value` is ignored)."""
    return value

  def barrier(self, name: str) -> None:
    """Waits until every process reaches the barrier `name`."""
    del name

  def gathered(self, mesh: Mesh) -> NamedSharding:
    """Where a step's per-example outputs (features, rewards) go so the host can read them.

    One process reads a 'data'-sharded result directly; its executables are the ones the
    persistent compilation cache has served reliably (docs/SCALING.md).
    """
    return NamedSharding(mesh, P('data'))

  def own_batches(self, ds, batch_size: int, image_size: int):
    """This process's share of every global batch of the Grain dataset `ds`: all of it."""
    del batch_size, image_size
    return ds

  def alone(self, command: str) -> bool:
    """Whether work that needs the whole run in one process (the final probe) can run now;
    with several processes, logs `command`, which runs it afterwards."""
    del command
    return True


class Processes(Local):
  """Process `jax.process_index()` of a `jax.distributed` run of several."""

  def __init__(self):
    self.index, self.count = jax.process_index(), jax.process_count()

  def allgather_json(self, value) -> list:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    data = np.frombuffer(json.dumps(value, sort_keys=True).encode('utf-8'), np.uint8)
    sizes = multihost_utils.process_allgather(np.asarray([len(data)], np.int64))
    padded = np.zeros((int(np.max(sizes)),), np.uint8)
    padded[:len(data)] = data
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return [json.loads(bytes(row[:int(n)]).decode('utf-8'))
            for row, n in zip(gathered, np.ravel(sizes))]

  def broadcast_json(self, value):
    return self.allgather_json(value if self.primary else None)[0]

  def barrier(self, name: str) -> None:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)

  def gathered(self, mesh: Mesh) -> NamedSharding:
    # Each process holds only its devices' part of a 'data'-sharded output: replicate it
    # (an all-gather inside the step).
    return NamedSharding(mesh, P())

  def own_batches(self, ds, batch_size: int, image_size: int):
    from ie_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    return pipeline.process_blocks(ds, batch_size, image_size, self.index, self.count)

  def alone(self, command: str) -> bool:
    log.warning('This runs in one process, after the run: %s (see docs/SCALING.md).',
                command)
    return False


def current() -> Local:
  """The collectives of this run: `Processes` under `jax.distributed`, else `Local`."""
  return Processes() if jax.process_count() > 1 else Local()
