"""One web store per process, read as one: `ShardedStore`.

In a multi-process run each process downloads its share of an iteration into its own
shard, `workdir/web/shard-KKK-of-NNN/` (a `WebStore`; one writer per directory keeps the
store's atomic-commit rules). Every process reads all shards through this facade, which
numbers an iteration's images shard by shard: index i of the iteration is image
i - offset[k] of shard k. A single process uses `workdir/web` itself, as before.

Past iterations never change, so their offsets are fixed; the current iteration's are read
after the search phase's barrier, when every shard has committed its parts.

The search phase decides duplicates within an iteration after its downloads, over all
shards in job order; the images it drops stay stored and are recorded in
`workdir/web/excluded-IIIII.json` (`exclude`). `manifest` reports them with the verdict as
their status, so every reader (the explorer, the world's scoring) sees one decision.
"""
import json
import os
import re

import numpy as np

from ie_jax.utils import atomic
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
    self._excluded = {}  # iteration -> {index: [status, detail]}

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

  def exclude(self, iteration: int, decisions: dict, write: bool) -> None:
    """Records `decisions` {index: [status, detail]} for the iteration's stored images
    that are not to be used (every process holds them; the one that `write`s saves them)."""
    self._excluded[iteration] = {int(k): list(v) for k, v in decisions.items()}
    if write and decisions:  # most iterations drop nothing: no file
      atomic.write(self._excluded_path(iteration), lambda f: f.write(
          json.dumps({str(k): v for k, v in sorted(self._excluded[iteration].items())})
          .encode('utf-8')))

  def _excluded_path(self, iteration: int) -> str:
    return os.path.join(self.workdir, 'web', f'excluded-{iteration:05d}.json')

  def excluded(self, iteration: int) -> dict:
    """{index: [status, detail]} of the iteration's stored images that `exclude` dropped."""
    if iteration not in self._excluded:
      try:
        with open(self._excluded_path(iteration), encoding='utf-8') as f:
          self._excluded[iteration] = {int(k): v for k, v in json.load(f).items()}
      except FileNotFoundError:
        return {}  # not decided yet, or nothing dropped
    return self._excluded[iteration]

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
    return int(self._offsets(iteration)[-1])

  def read(self, iteration: int, index: int) -> bytes:
    offsets = self._offsets(iteration)
    if not 0 <= index < offsets[-1]:
      raise IndexError(f'Iteration {iteration} has {offsets[-1]} images; asked for {index}.')
    k = int(np.searchsorted(offsets, index, side='right') - 1)
    return self.shards[k].read(iteration, int(index - offsets[k]))

  def manifest(self, iteration: int, decided: bool = True) -> list[dict]:
    """All shards' rows, shard by shard; ok rows carry their iteration-wide index.

    With `decided`, an image `exclude` dropped has the verdict as its status (and keeps
    its index, which names its stored bytes); without, every stored image is 'ok'.
    """
    rows = []
    offsets = self._offsets(iteration)
    excluded = self.excluded(iteration) if decided else {}
    for k, shard in enumerate(self.shards):
      if iteration not in shard.iterations():
        continue
      for row in shard.manifest(iteration):
        if 'index' in row:
          row['index'] += int(offsets[k])
          if row['index'] in excluded:
            row['status'], row['detail'] = excluded[row['index']]
        row['shard'] = k
        rows.append(row)
    return rows

  def kept(self, iteration: int) -> list[dict]:
    """The iteration's images that count: its ok rows, less the excluded duplicates."""
    if iteration not in self.iterations():
      return []
    return [r for r in self.manifest(iteration) if r['status'] == 'ok']

  def kept_indices(self, iteration: int) -> np.ndarray:
    """`kept`'s indices in a canonical (sha256) order: downloads finish in another order
    every run, and content order makes training, ties and the replay buffer independent
    of it."""
    rows = sorted(self.kept(iteration), key=lambda r: r['sha256'])
    return np.asarray([r['index'] for r in rows], np.int64)

  def open_parts(self) -> int:
    return sum(s.open_parts() for s in self.shards)

  def close(self) -> None:
    for shard in self.shards:
      shard.close()


def open_run_store(workdir: str) -> ShardedStore:
  """A finished run's web for reading, whatever process count wrote it."""
  return ShardedStore(workdir, 0, shard_count(workdir))
