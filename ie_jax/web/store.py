"""On-disk store of downloaded images: ArrayRecord shards of JPEG bytes plus manifests.

Layout under `root`:
  images-IIIII-PPP.array_record   candidates of iteration I, part P (one record per image)
  manifest-IIIII-PPP.jsonl        one row per URL attempted in that part, with its status

Each part is written to a temporary name and renamed when complete, so a killed run loses
at most the part in progress, never a committed one, and never leaves a half-written file
under a final name. Images are addressed by (iteration, index) across the parts of an
iteration; the replay buffer is an array of such pairs, not a copy of the images.
"""
import json
import os
import re

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader, ArrayRecordWriter

_PART = re.compile(r'^images-(\d{5})-(\d{3})\.array_record$')


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
    self._writer.write(jpeg)
    self._manifest.write(json.dumps({**row, 'status': 'ok', 'part_index': self.num_images}) + '\n')
    self.num_images += 1

  def add_failure(self, row: dict) -> None:
    """Records a URL that produced no image; `row['status']` holds the reason."""
    if row.get('status', 'ok') == 'ok':
      raise ValueError(f'A failure row needs a failure status, got {row!r}.')
    self._manifest.write(json.dumps({**row, 'part_index': -1}) + '\n')

  def commit(self) -> None:
    """Makes the part visible: both files are synced and renamed to their final names."""
    self._writer.close()
    self._manifest.close()
    _fsync_rename(self._manifest_tmp, self._manifest_final)
    _fsync_rename(self._tmp, self._final)

  def abort(self) -> None:
    self._writer.close()
    self._manifest.close()
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
  """Random access to all committed parts by (iteration, index)."""

  def __init__(self, root: str):
    self.root = os.path.abspath(root)
    os.makedirs(self.root, exist_ok=True)
    self._readers = {}

  def remove_uncommitted(self) -> None:
    """Deletes parts a killed run never committed. Call only from the single writer.

    Their URLs were not recorded as done, so they are fetched again (via the URL cache).
    """
    for name in os.listdir(self.root):
      if name.endswith('.tmp'):
        os.remove(os.path.join(self.root, name))

  def parts(self, iteration: int) -> list[str]:
    names = sorted(n for n in os.listdir(self.root)
                   if (m := _PART.match(n)) and int(m.group(1)) == iteration)
    return [os.path.join(self.root, n) for n in names]

  def iterations(self) -> list[int]:
    return sorted({int(m.group(1)) for n in os.listdir(self.root) if (m := _PART.match(n))})

  def writer(self, iteration: int) -> PartWriter:
    """A writer for the next part of `iteration` (parts already committed are kept)."""
    self._readers.pop(iteration, None)
    return PartWriter(self.root, iteration, len(self.parts(iteration)))

  def _reader(self, iteration: int):
    if iteration not in self._readers:
      readers = [ArrayRecordReader(p) for p in self.parts(iteration)]
      offsets = np.cumsum([0] + [r.num_records() for r in readers])
      self._readers[iteration] = (readers, offsets)
    return self._readers[iteration]

  def num_images(self, iteration: int) -> int:
    return int(self._reader(iteration)[1][-1])

  def read(self, iteration: int, index: int) -> bytes:
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
  """A Grain-compatible random-access source over (iteration, index) pairs."""

  def __init__(self, store: WebStore, refs: np.ndarray):
    self._store = store
    self._refs = np.asarray(refs, np.int64).reshape(-1, 2)

  def __len__(self) -> int:
    return len(self._refs)

  def __getitem__(self, i: int) -> bytes:
    iteration, index = self._refs[i]
    return self._store.read(int(iteration), int(index))

  def __getstate__(self):
    # Worker processes reopen the files: ArrayRecord readers do not pickle.
    return {'root': self._store.root, 'refs': self._refs}

  def __setstate__(self, state):
    self._store = WebStore(state['root'])
    self._refs = state['refs']
