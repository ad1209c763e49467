"""On-disk store of downloaded images: ArrayRecord shards of JPEG bytes plus manifests.

Layout under `root`:
  images-IIIII-PPP.array_record   candidates of iteration I, part P (one record per image)
  manifest-IIIII-PPP.jsonl        one row per URL attempted in that part, with its status

Each part is written to a temporary name and renamed when complete, so a killed run loses
at most the part in progress, never a committed one, and never leaves a half-written file
under a final name. A full disk is the same: the part in progress is deleted and a
`disk.DiskFullError` names the file (ArrayRecord's writer buffers, so it only reports a
failed write when the part is closed, and then as a RuntimeError). Images are addressed by
(iteration, index) across the parts of an iteration; the replay buffer is an array of such
pairs, not a copy of the images.
"""
import collections
import json
import os
import re
import threading

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

from ie_jax.utils import disk, failpoints

_PART = re.compile(r'^images-(\d{5})-(\d{3})\.array_record$')
# The temporary names `PartWriter` writes; nothing else in the root is ever deleted (the
# downloader CLI's root is inside a directory the user named).
_UNCOMMITTED = re.compile(r'^(images-\d{5}-\d{3}\.array_record|manifest-\d{5}-\d{3}\.jsonl)\.tmp$')


def _fsync_rename(tmp: str, final: str) -> None:
  with open(tmp, 'rb') as f:
    os.fsync(f.fileno())
  os.replace(tmp, final)


class PartWriter:
  """Writes one part of an iteration: images with their manifest rows, plus failures."""

  def __init__(self, root: str, iteration: int, part: int):
    self._final = os.path.join(root, f'images-{iteration:05d}-{part:03d}.array_record')
    self._manifest_final = os.path.join(root, f'manifest-{iteration:05d}-{part:03d}.jsonl')
    self._tmp = self._final + '.tmp'
    self._manifest_tmp = self._manifest_final + '.tmp'
    self._writer = ArrayRecordWriter(self._tmp, 'group_size:1')
    self._manifest = open(self._manifest_tmp, 'w', encoding='utf-8')
    self.num_images = 0

  def add(self, jpeg: bytes, row: dict) -> None:
    """Stores an image; its manifest row gets `status='ok'` and its record `part_index`."""
    failpoints.disk_full('store', self._tmp)
    self._writer.write(jpeg)
    self._write_row({**row, 'status': 'ok', 'part_index': self.num_images})
    self.num_images += 1

  def add_failure(self, row: dict) -> None:
    """Records a URL that produced no image; `row['status']` holds the reason."""
    if row.get('status', 'ok') == 'ok':
      raise ValueError(f'A failure row needs a failure status, got {row!r}.')
    self._write_row({**row, 'part_index': -1})

  def _write_row(self, row: dict) -> None:
    try:
      self._manifest.write(json.dumps(row) + '\n')
    except OSError as e:  # a flush of the buffer found the disk full: say which file
      raise disk.as_disk_full(e, self._manifest_tmp) from e

  def commit(self) -> None:
    """Makes the part visible: both files are synced and renamed to their final names.

    Raises:
      disk.DiskFullError: the disk filled up; the part is deleted, nothing is renamed.
    """
    path = self._tmp
    try:
      self._writer.close()
      path = self._manifest_tmp
      self._manifest.close()
      _fsync_rename(self._manifest_tmp, self._manifest_final)
      path = self._tmp
      _fsync_rename(self._tmp, self._final)
    except (OSError, RuntimeError, ValueError) as e:
      self.abort()
      raise disk.as_disk_full(e, path) from e

  def abort(self) -> None:
    """Deletes the part; safe after a failed commit, and on a full disk."""
    for close in (self._writer.close, self._manifest.close):
      try:
        close()
      except (OSError, RuntimeError, ValueError):
        pass  # e.g. a full disk fails the final flush again; the files go anyway
    for path in (self._tmp, self._manifest_tmp):
      if os.path.exists(path):
        os.remove(path)

  def __enter__(self):
    return self

  def __exit__(self, exc_type, *unused):
    if exc_type is None:
      self.commit()
    else:
      self.abort()


class WebStore:
  """Random access to all committed parts by (iteration, index).

  Each open part holds a file descriptor, and the replay buffer reads from every past
  iteration, so open readers are kept per iteration, least recently used first, and closed
  beyond `max_open_parts`: a long run would otherwise exhaust the process's descriptors.
  Reads are serialised by a lock, so a reader is never closed under another thread's read.
  """

  def __init__(self, root: str, max_open_parts: int = 64):
    self.root = os.path.abspath(root)
    os.makedirs(self.root, exist_ok=True)
    self._readers = collections.OrderedDict()  # iteration -> (readers, offsets)
    self._max_open_parts = max_open_parts
    self._lock = threading.Lock()

  def __getstate__(self):
    # Grain worker processes reopen the files: ArrayRecord readers do not pickle.
    return {'root': self.root, 'max_open_parts': self._max_open_parts}

  def __setstate__(self, state):
    self.__init__(state['root'], state['max_open_parts'])

  def remove_uncommitted(self) -> None:
    """Deletes parts a killed run never committed. Call only from the single writer.

    Their URLs were not recorded as done, so they are fetched again (via the URL cache).
    """
    for name in os.listdir(self.root):
      if _UNCOMMITTED.match(name):
        os.remove(os.path.join(self.root, name))

  def parts(self, iteration: int) -> list[str]:
    names = sorted(n for n in os.listdir(self.root)
                   if (m := _PART.match(n)) and int(m.group(1)) == iteration)
    return [os.path.join(self.root, n) for n in names]

  def iterations(self) -> list[int]:
    return sorted({int(m.group(1)) for n in os.listdir(self.root) if (m := _PART.match(n))})

  def writer(self, iteration: int) -> PartWriter:
    """A writer for the next part of `iteration` (parts already committed are kept)."""
    with self._lock:
      self._close(iteration)  # its part list is about to change
    return PartWriter(self.root, iteration, len(self.parts(iteration)))

  def open_parts(self) -> int:
    return sum(len(readers) for readers, _ in self._readers.values())

  def close(self) -> None:
    with self._lock:
      for iteration in list(self._readers):
        self._close(iteration)

  def _close(self, iteration: int) -> None:
    for reader in self._readers.pop(iteration, ([], None))[0]:
      reader.close()

  def _reader(self, iteration: int):
    """(readers, offsets) of an iteration's parts; call with the lock held."""
    if iteration in self._readers:
      self._readers.move_to_end(iteration)
    else:
      readers = [ArrayRecordReader(p) for p in self.parts(iteration)]
      offsets = np.cumsum([0] + [r.num_records() for r in readers])
      self._readers[iteration] = (readers, offsets)
      while len(self._readers) > 1 and self.open_parts() > self._max_open_parts:
        self._close(next(iter(self._readers)))
    return self._readers[iteration]

  def num_images(self, iteration: int) -> int:
    with self._lock:
      return int(self._reader(iteration)[1][-1])

  def read(self, iteration: int, index: int) -> bytes:
    with self._lock:
      readers, offsets = self._reader(iteration)
      if not 0 <= index < offsets[-1]:
        raise IndexError(f'Iteration {iteration} has {offsets[-1]} images; asked for {index}.')
      part = int(np.searchsorted(offsets, index, side='right') - 1)
      return readers[part].read([int(index - offsets[part])])[0]

  def manifest(self, iteration: int) -> list[dict]:
    """All rows of an iteration, in part order; ok rows carry their (iteration, index).

    Raises:
      ValueError: a line is not a JSON object (bad JSON or UTF-8, deep nesting), or an ok
        row has no integer `part_index`; the message names the file and line.
    """
    rows, base = [], 0
    for part in self.parts(iteration):
      path = part.replace('images-', 'manifest-').replace('.array_record', '.jsonl')
      count = 0
      with open(path, 'rb') as f:  # bytes: bad UTF-8 is then reported with its line
        for line_no, line in enumerate(f, 1):
          try:
            row = json.loads(line)
          except (ValueError, RecursionError) as e:
            raise ValueError(f'{path}:{line_no} is not valid JSON: {str(e)[:200]}') from e
          if not isinstance(row, dict):
            raise ValueError(f'{path}:{line_no} is not a JSON object.')
          if row.get('status') == 'ok':
            if type(row.get('part_index')) is not int:  # pylint: disable=unidiomatic-typecheck
              raise ValueError(f'{path}:{line_no} is an ok row without an integer part_index.')
            row['index'] = base + row['part_index']
            count += 1
          row['iteration'] = iteration
          rows.append(row)
      base += count
    return rows


class RecordSource:
  """A Grain-compatible random-access source over (iteration, index) pairs.

  `store` is a WebStore or anything with its `read` (a `shards.ShardedStore`); it pickles
  by reopening its files.
  """

  def __init__(self, store: WebStore, refs: np.ndarray):
    self._store = store
    self._refs = np.asarray(refs, np.int64).reshape(-1, 2)

  def __len__(self) -> int:
    return len(self._refs)

  def __getitem__(self, i: int) -> bytes:
    iteration, index = self._refs[i]
    return self._store.read(int(iteration), int(index))

