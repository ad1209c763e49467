"""One web store per process, read as one: `ShardedStore`.

In a multi-process run each process downloads its share of an iteration into its own
shard, `workdir/web/shard-KKK-of-NNN/` (a `WebStore`; one writer per directory keeps the
store's atomic-commit rules). Every process reads all shards through this facade, which
numbers an iteration's images shard by shard: index i of the iteration is image
i - offset[k] of shard k. A single process uses `workdir/web` itself, as before.

Past iterations never change, so their offsets are fixed; the current iteration's are read
after the search phase's barrier, when every shard has committed its parts.
"""
import os
import re

import numpy as np

from ie_jax.web import store as store_lib

_SHARD = re.compile(r'^shard-(\d{3})-of-(\d{3})$')


def shard_dir(workdir: str, index: int, count: int) -> str:
  root = os.path.join(workdir, 'web')
  return root if count == 1 else os.path.join(root, f'shard-{index:03d}-of-{count:03d}')


def shard_count(workdir: str) -> int:
  """Processes that wrote `workdir/web` (1 if it has no shard directories).

  Raises:
    ValueError: shards of different process counts are mixed.
  """
  root = os.path.join(workdir, 'web')
  counts = {int(m.group(2)) for n in (os.listdir(root) if os.path.isdir(root) else ())
            if (m := _SHARD.match(n))}
  if len(counts) > 1:
    raise ValueError(f'{root} holds shards of runs with {sorted(counts)} processes.')
  return counts.pop() if counts else 1


class ShardedStore:
  """The shards of `count` processes as one store; writes go to shard `index` only."""

  def __init__(self, workdir: str, index: int, count: int):
    self.workdir, self.index, self.count = workdir, index, count
    self.shards = [store_lib.WebStore(shard_dir(workdir, k, count)) for k in range(count)]
    self.own = self.shards[index]
    self.root = self.own.root
    self._offsets_cache = {}

  def __getstate__(self):
    return {'workdir': self.workdir, 'index': self.index, 'count': self.count}

  def __setstate__(self, state):
    self.__init__(state['workdir'], state['index'], state['count'])

  # Writing: this process's shard only.

  def remove_uncommitted(self) -> None:
    self.own.remove_uncommitted()

  def writer(self, iteration: int):
    self.refresh()
    return self.own.writer(iteration)

  def refresh(self) -> None:
    """Forgets cached image counts: call once other processes have committed new parts."""
    self._offsets_cache.clear()
    for shard in self.shards:
      shard.close()

  # Reading: all shards.

  def iterations(self) -> list[int]:
    return sorted({it for shard in self.shards for it in shard.iterations()})

  def _offsets(self, iteration: int) -> np.ndarray:
    if iteration not in self._offsets_cache:
      counts = [s.num_images(iteration) if iteration in s.iterations() else 0
                for s in self.shards]
      self._offsets_cache[iteration] = np.cumsum([0] + counts)
    return self._offsets_cache[iteration]

  def num_images(self, iteration: int) -> int:
    if self.count == 1:
      return self.own.num_images(iteration)
    return int(self._offsets(iteration)[-1])

  def read(self, iteration: int, index: int) -> bytes:
    if self.count == 1:
      return self.own.read(iteration, index)
    offsets = self._offsets(iteration)
    if not 0 <= index < offsets[-1]:
      raise IndexError(f'Iteration {iteration} has {offsets[-1]} images; asked for {index}.')
    k = int(np.searchsorted(offsets, index, side='right') - 1)
    return self.shards[k].read(iteration, int(index - offsets[k]))

  def manifest(self, iteration: int) -> list[dict]:
    """All shards' rows, shard by shard; ok rows carry their iteration-wide index."""
    if self.count == 1:
      return self.own.manifest(iteration)
    rows = []
    offsets = self._offsets(iteration)
    for k, shard in enumerate(self.shards):
      if iteration not in shard.iterations():
        continue
      for row in shard.manifest(iteration):
        if 'index' in row:
          row['index'] += int(offsets[k])
        row['shard'] = k
        rows.append(row)
    return rows

  def open_parts(self) -> int:
    return sum(s.open_parts() for s in self.shards)

  def close(self) -> None:
    for shard in self.shards:
      shard.close()


def open_run_store(workdir: str):
  """A finished run's web for reading, whatever process count wrote it."""
  count = shard_count(workdir)
  if count == 1:
    return store_lib.WebStore(os.path.join(workdir, 'web'))
  return ShardedStore(workdir, 0, count)
