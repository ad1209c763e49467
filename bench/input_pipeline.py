r"""Images/s of the training input pipeline: ArrayRecord read + JPEG decode + two crops + batch.

  python bench/input_pipeline.py --workers=0,2            # on this machine's cores
  python bench/input_pipeline.py --workers=0,8,15         # a 16-core GPU host

Also times the on-device photometric half of the views (jitted, on the default backend), so
the two halves can be set next to `bench/train_step.py`'s images/s: the pipeline must be
faster than the step it feeds. Images are synthetic photographs-sized JPEGs (500x375 and
varied) written to a real store shard first. Prints a table; writes JSON to bench/results/.
"""
import io
import os
import statistics
import sys
import tempfile
import time

from absl import app, flags

import results_io

_NUM = flags.DEFINE_integer('num_images', 2000, 'Images in the shard.')
_SIZE = flags.DEFINE_integer('image_size', 224, 'Training resolution.')
_BATCH = flags.DEFINE_integer('batch', 224, 'Batch size.')
_WORKERS = flags.DEFINE_list('workers', ['0', '2'], 'Grain worker counts to time.')
_RUNS = flags.DEFINE_integer('runs', 5, 'Timed runs (median reported).')
_BATCHES = flags.DEFINE_integer('batches_per_run', 4, 'Batches per timed run.')
_OUT = flags.DEFINE_string('out', '', 'JSON path.')


def make_store(root: str, num: int):
  import numpy as np
  from PIL import Image

  from ie_jax.web import store as store_lib
  store = store_lib.WebStore(root)
  rng = np.random.default_rng(0)
  with store.writer(0) as w:
    for i in range(num):
      h, w_ = [(375, 500), (500, 375), (480, 640), (256, 256)][i % 4]
      # Smooth random fields compress like photographs, unlike white noise.
      small = rng.integers(0, 256, (h // 16, w_ // 16, 3), dtype=np.uint8)
      image = Image.fromarray(small).resize((w_, h), Image.BICUBIC)
      buf = io.BytesIO()
      image.save(buf, 'JPEG', quality=90)
      w.add(buf.getvalue(), {'url': f'bench://{i}'})
  return store


def time_pipeline(store, workers: int):
  import numpy as np

  from ie_jax.data import pipeline
  from ie_jax.web import store as store_lib
  refs = np.stack([np.zeros(_NUM.value, np.int64), np.arange(_NUM.value)], 1)
  source = store_lib.RecordSource(store, refs)
  ds, _ = pipeline.training_dataset(source, epochs=1000, batch_size=_BATCH.value, seed=0,
                                    image_size=_SIZE.value, crop_min=0.2,
                                    num_workers=workers)
  it = iter(ds)
  for _ in range(2):  # workers start, buffers fill
    next(it)
  times = []
  for _ in range(_RUNS.value):
    start = time.perf_counter()
    for _ in range(_BATCHES.value):
      next(it)
    times.append((time.perf_counter() - start) / _BATCHES.value)
  return times


def time_photometric():
  import jax
  import numpy as np

  from ie_jax.data import photometric
  shape = (_BATCH.value, _SIZE.value, _SIZE.value, 3)
  rng = np.random.RandomState(0)
  v1 = jax.device_put(rng.randint(0, 256, shape).astype(np.uint8))
  v2 = jax.device_put(rng.randint(0, 256, shape).astype(np.uint8))
  fn = jax.jit(photometric.moco_v3_views)
  jax.block_until_ready(fn(jax.random.key(0), v1, v2))
  times = []
  for i in range(_RUNS.value):
    start = time.perf_counter()
    jax.block_until_ready(fn(jax.random.key(i), v1, v2))
    times.append(time.perf_counter() - start)
  return times, str(jax.devices()[0].device_kind)


def main(argv):
  del argv
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  rows = []
  with tempfile.TemporaryDirectory() as root:
    store = make_store(root, _NUM.value)
    for workers in map(int, _WORKERS.value):
      times = time_pipeline(store, workers)
      median = statistics.median(times)
      rows.append({'stage': f'host: read+decode+2 crops+batch, {workers} workers',
                   'workers': workers, 'median_s_per_batch': median,
                   'images_per_s': _BATCH.value / median, 'times_s': times})
  times, device = time_photometric()
  median = statistics.median(times)
  rows.append({'stage': f'device: photometric ops, both views ({device})',
               'median_s_per_batch': median, 'images_per_s': _BATCH.value / median,
               'times_s': times})
  print(f'\nInput pipeline, {_SIZE.value}px, batch {_BATCH.value}, {os.cpu_count()} cores, '
        f'median of {_RUNS.value} runs')
  print('| stage | images/s |')
  print('|---|---|')
  for r in rows:
    print(f"| {r['stage']} | {r['images_per_s']:.1f} |")
  results_io.write('input_pipeline', f'input_pipeline_{os.cpu_count()}cores',
                   {'image_size': _SIZE.value, 'batch': _BATCH.value,
                    'num_images': _NUM.value}, rows, _OUT.value)

if __name__ == '__main__':
  app.run(main)
