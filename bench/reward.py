r"""The kNN reward (mean cosine similarity to the 15 nearest targets): ours vs references.

  python bench/reward.py                                   # paper scale: 25k x 2,040 x 2048-d
  python bench/reward.py --candidates=25000 --targets=75750 # Food-101 scale

References, on the same features and machine: scikit-learn's brute-force NearestNeighbors
(cosine) and faiss's exact inner-product search (`faiss-cpu` / `faiss-gpu`, if installed).
All answers are checked against each other. Prints a table; writes JSON to bench/results/.
"""
import os
import statistics
import sys
import time

from absl import app, flags

import results_io

_CANDS = flags.DEFINE_integer('candidates', 25_000, 'Candidate images (|C|).')
_TARGETS = flags.DEFINE_integer('targets', 2_040, 'Target images (|D|).')
_DIM = flags.DEFINE_integer('dim', 2048, 'Feature dimension.')
_K = flags.DEFINE_integer('k', 15, 'Neighbours.')
_RUNS = flags.DEFINE_integer('runs', 5, 'Timed runs (median reported).')
_OUT = flags.DEFINE_string('out', '', 'JSON path.')


def timed(fn):
  fn()  # warm-up / compile
  times = []
  for _ in range(_RUNS.value):
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
  return out, times


def main(argv):
  del argv
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import jax
  import numpy as np

  from ie_jax import reward
  from ie_jax.utils import sharding

  rng = np.random.default_rng(0)

  def unit(n):
    x = rng.standard_normal((n, _DIM.value)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
  cands, targets = unit(_CANDS.value), unit(_TARGETS.value)
  rows = []

  ours_fn = reward.make_knn_reward(sharding.make_mesh(), k=_K.value)
  ours, times = timed(lambda: ours_fn(cands, targets))
  rows.append(('ie_jax (jit, chunked top-k)', str(jax.devices()[0].device_kind), times))

  from sklearn.neighbors import NearestNeighbors
  nn = NearestNeighbors(n_neighbors=_K.value, algorithm='brute', metric='cosine').fit(targets)
  sk, times = timed(lambda: 1 - nn.kneighbors(cands)[0].mean(axis=1))
  rows.append(('sklearn NearestNeighbors (brute, cosine)', 'cpu', times))
  np.testing.assert_allclose(ours, sk, rtol=1e-4, atol=1e-5)

  try:
    import faiss  # pylint: disable=g-import-not-at-top
  except ImportError:
    faiss = None
  if faiss is not None:
    index = faiss.IndexFlatIP(_DIM.value)
    index.add(targets)
    fa, times = timed(lambda: index.search(cands, _K.value)[0].mean(axis=1))
    rows.append(('faiss IndexFlatIP (exact)', 'cpu', times))
    np.testing.assert_allclose(ours, fa, rtol=1e-4, atol=1e-5)

  base = statistics.median(rows[0][2])
  print(f'\nkNN reward, {_CANDS.value} candidates x {_TARGETS.value} targets x {_DIM.value}-d, '
        f'k={_K.value}, median of {_RUNS.value} runs')
  print('| implementation | device | median s | candidates/s | time vs ours |')
  print('|---|---|---|---|---|')
  results = []
  for name, device, times in rows:
    median = statistics.median(times)
    results.append({'impl': name, 'device': device, 'median_s': median, 'times_s': times,
                    'candidates_per_s': _CANDS.value / median})
    print(f'| {name} | {device} | {median:.3f} | {_CANDS.value / median:.0f} | '
          f'{median / base:.2f}x |')
  device = rows[0][1].replace(' ', '_').lower()
  results_io.write('reward', f'reward_{device}_{_CANDS.value}x{_TARGETS.value}',
                   {'candidates': _CANDS.value, 'targets': _TARGETS.value, 'dim': _DIM.value,
                    'k': _K.value}, results, _OUT.value)

if __name__ == '__main__':
  app.run(main)
