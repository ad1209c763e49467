"""Grain pipelines: mixture proportions, epoch coverage, resume, corrupt records."""
import collections
import io

import numpy as np
import pytest
from PIL import Image

from ie_jax.data import pipeline


def test_iteration_refs_follow_the_paper_mixture():
  refs = pipeline.iteration_refs(1000, 3000, 1000, pcr=2, replay_fraction=-1, seed=0)
  sources = collections.Counter(refs[:, 0].tolist())
  assert sources[pipeline.CANDIDATES] == 1000          # all new candidates
  assert sources[pipeline.REPLAY] + sources[pipeline.TARGET] == 2000  # PCR * |C|
  # Uniform over the union B ∪ D (3000 : 1000), without replacement here.
  assert abs(sources[pipeline.REPLAY] / 2000 - 0.75) < 0.04
  old = refs[1000:]
  assert len({tuple(r) for r in old}) == 2000
  np.testing.assert_array_equal(refs[:1000, 1], np.arange(1000))


def test_fixed_replay_fraction_and_replacement_when_the_pool_is_small():
  refs = pipeline.iteration_refs(500, 0, 100, pcr=2, replay_fraction=0.5, seed=1)
  counts = collections.Counter(refs[:, 0].tolist())
  assert counts[pipeline.REPLAY] == 0 and counts[pipeline.TARGET] == 1000  # no buffer yet
  refs = pipeline.iteration_refs(500, 400, 100, pcr=2, replay_fraction=0.25, seed=1)
  counts = collections.Counter(refs[:, 0].tolist())
  assert counts[pipeline.REPLAY] == 250 and counts[pipeline.TARGET] == 750
  with pytest.raises(ValueError, match='empty pool'):
    pipeline.iteration_refs(10, 0, 0, pcr=2, replay_fraction=-1, seed=0)


def labelled_images(n, size=12):
  # The pixel value encodes the element id, so a view tells which element it came from.
  return np.stack([np.full((size, size, 3), i, np.uint8) for i in range(n)])


def element_ids(batch):
  return batch['view1'][:, 0, 0, 0].astype(int).tolist()


def test_epochs_cover_every_element_exactly_epochs_times():
  ds, _ = pipeline.training_dataset(labelled_images(40), epochs=3,
                                    batch_size=8, seed=0, image_size=8, crop_min=0.5)
  seen = [i for batch in ds for i in element_ids(batch)]
  assert len(seen) == pipeline.steps_per_pass(40, 3, 8) * 8 == 120
  assert collections.Counter(seen) == {i: 3 for i in range(40)}
  assert seen[:40] != seen[40:80]  # reshuffled each epoch


def test_iterator_resumes_at_the_same_element():
  make = lambda: pipeline.training_dataset(
      labelled_images(30), epochs=2, batch_size=6, seed=5,
      image_size=8, crop_min=0.2)[0]
  it = iter(make())
  for _ in range(4):
    next(it)
  state = it.get_state()
  rest = [next(it) for _ in range(3)]
  resumed = iter(make())
  resumed.set_state(state)
  for want in rest:
    got = next(resumed)
    for k in want:  # same elements and the same random crops
      np.testing.assert_array_equal(got[k], want[k])


def test_corrupt_records_are_skipped_and_counted():
  good = []
  for i in range(10):
    buf = io.BytesIO()
    Image.new('RGB', (16, 16), (i, i, i)).save(buf, 'PNG')
    good.append(buf.getvalue())
  records = good[:5] + [b'not an image', good[5][:20]] + good[5:]
  ds, counter = pipeline.training_dataset(records, epochs=1, batch_size=4, seed=0,
                                          image_size=8, crop_min=0.5)
  seen = [i for batch in ds for i in element_ids(batch)]
  assert counter.skipped == 2
  assert len(seen) == 8 and set(seen) <= set(range(10))


def test_worker_processes_give_the_same_stream():
  images = labelled_images(24)
  kwargs = dict(epochs=1, batch_size=6, seed=2, image_size=8, crop_min=0.3)
  serial = list(pipeline.training_dataset(images, **kwargs)[0])
  parallel = list(pipeline.training_dataset(images, num_workers=2,
                                            **kwargs)[0])
  assert len(serial) == len(parallel) == 4
  for a, b in zip(serial, parallel):
    np.testing.assert_array_equal(a['view1'], b['view1'])


def test_mixture_over_store_replay_and_target_feeds_the_pipeline(tmp_path):
  from ie_jax.web import store as store_lib

  store = store_lib.WebStore(str(tmp_path))
  for iteration, base in ((0, 100), (1, 150)):
    with store.writer(iteration) as w:
      for i in range(20):
        buf = io.BytesIO()
        Image.new('RGB', (12, 12), (base + i, 0, 0)).save(buf, 'PNG')
        w.add(buf.getvalue(), {'url': f'u{base + i}'})
  candidates = store_lib.RecordSource(store, [(1, i) for i in range(20)])
  replay = store_lib.RecordSource(store, [(0, i) for i in range(0, 20, 2)])  # 10 kept
  target_images = labelled_images(30)  # values 0..29
  refs = pipeline.iteration_refs(len(candidates), len(replay), len(target_images), pcr=2,
                                 replay_fraction=-1, seed=0)
  source = pipeline.MixtureSource({pipeline.CANDIDATES: candidates, pipeline.REPLAY: replay,
                                   pipeline.TARGET: target_images}, refs)
  assert len(source) == 60
  ds, _ = pipeline.training_dataset(source, epochs=2, batch_size=10, seed=0, image_size=8,
                                    crop_min=0.5)
  seen = collections.Counter(i for batch in ds for i in element_ids(batch))
  # Every candidate (values 150..169) is trained on once per epoch.
  assert all(seen[150 + i] == 2 for i in range(20))
  old = sum(n for v, n in seen.items() if v < 150)
  assert old == 2 * 40  # PCR * |C| old images per epoch
  assert not any(100 <= v < 150 and (v - 100) % 2 for v in seen)  # only kept replay images
  with pytest.raises(ValueError, match='Refs name sources'):
    pipeline.MixtureSource({pipeline.CANDIDATES: candidates}, refs)
