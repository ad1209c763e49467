"""The web store: parts commit atomically; (iteration, index) addressing; manifests."""
import io
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from ie_jax.web import store as store_lib


def jpeg(value: int) -> bytes:
  buf = io.BytesIO()
  Image.new('RGB', (8, 8), (value, value, value)).save(buf, 'JPEG')
  return buf.getvalue()


def fill(store, iteration, values, failures=0):
  with store.writer(iteration) as w:
    for v in values:
      w.add(jpeg(v), {'url': f'http://x/{v}', 'query': 'q', 'concept': 'c'})
    for i in range(failures):
      w.add_failure({'url': f'http://bad/{i}', 'status': 'http_404'})


def test_parts_concatenate_and_manifest_indexes_match(tmp_path):
  store = store_lib.WebStore(str(tmp_path))
  fill(store, 0, [10, 20, 30], failures=2)
  fill(store, 0, [40, 50])  # a second part of the same iteration (e.g. after a resume)
  fill(store, 1, [60])
  assert store.iterations() == [0, 1]
  assert store.num_images(0) == 5 and store.num_images(1) == 1
  rows = store.manifest(0)
  assert len(rows) == 7
  ok = [r for r in rows if r['status'] == 'ok']
  assert [r['index'] for r in ok] == [0, 1, 2, 3, 4]
  assert [r['url'] for r in ok] == [f'http://x/{v}' for v in (10, 20, 30, 40, 50)]
  assert sorted(r['status'] for r in rows if r['status'] != 'ok') == ['http_404'] * 2
  for row in ok:  # each manifest row points at its own image
    value = int(row['url'].rsplit('/', 1)[1])
    pixel = np.asarray(Image.open(io.BytesIO(store.read(0, row['index']))))[0, 0, 0]
    assert abs(int(pixel) - value) <= 2
  with pytest.raises(IndexError, match='has 5 images'):
    store.read(0, 5)


def test_an_aborted_part_leaves_nothing_and_orphans_are_removed(tmp_path):
  store = store_lib.WebStore(str(tmp_path))
  with pytest.raises(RuntimeError):
    with store.writer(0) as w:
      w.add(jpeg(1), {'url': 'u'})
      raise RuntimeError('killed')
  assert os.listdir(tmp_path) == []
  # A SIGKILL leaves temporary files behind: they are never read, and cleaned on request.
  w = store.writer(0)
  w.add(jpeg(1), {'url': 'u'})
  assert store.iterations() == []
  store.remove_uncommitted()
  assert os.listdir(tmp_path) == []


def test_failure_rows_need_a_reason(tmp_path):
  with pytest.raises(ValueError, match='failure status'):
    with store_lib.WebStore(str(tmp_path)).writer(0) as w:
      w.add_failure({'url': 'u'})


def test_record_source_reads_refs_and_pickles(tmp_path):
  store = store_lib.WebStore(str(tmp_path))
  fill(store, 0, [10, 20])
  fill(store, 3, [30])
  source = store_lib.RecordSource(store, np.array([[3, 0], [0, 1], [0, 0]]))
  assert len(source) == 3
  assert source[0] == store.read(3, 0) and source[2] == store.read(0, 0)
  clone = pickle.loads(pickle.dumps(source))  # as Grain worker processes receive it
  assert [clone[i] for i in range(3)] == [source[i] for i in range(3)]
