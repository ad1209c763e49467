r"""Wall time and peak memory of one concept-policy update, ours against scikit-learn.

  python bench/policy.py                                   # 10,000 observations, 146,347 concepts
  python bench/policy.py --observations=2000 --concepts=20000   # a quick check
  python bench/policy.py --runs=3 --sklearn=false             # median of three, ours only

One update is what the explorer runs each iteration: fit the GP on the observed concepts,
predict mu and sigma for every concept, score, softmax, tier. The embeddings are random
unit 384-d vectors (the cost does not depend on their values). scikit-learn's
GaussianProcessRegressor (same kernel and alpha, optimizer=None) does the GP part only;
its prediction holds the full concepts x observations kernel in float64, so it runs under a
memory cap (--sklearn_mem_gib) and, if it fails, is retried on halved concept counts to
find the size that fits. Each measurement runs in its own process so that peak RSS is
its own. Prints a table and writes JSON to bench/results/policy.json.
"""
import json
import os
import platform
import resource
import subprocess
import sys
import time

from absl import app, flags

_OBS = flags.DEFINE_integer('observations', 10_000, 'Observed concepts.')
_CONCEPTS = flags.DEFINE_integer('concepts', 146_347, 'Vocabulary size.')
_DIM = flags.DEFINE_integer('dim', 384, 'Embedding size.')
_ALPHA = flags.DEFINE_float('alpha', 1e-2, 'GP noise variance (PolicyConfig default).')
_CHUNK = flags.DEFINE_integer('chunk_size', 8192, 'Concepts per GP prediction step.')
_RUNS = flags.DEFINE_integer('runs', 1, 'Measurements of ours; the median is reported.')
_SKLEARN = flags.DEFINE_bool('sklearn', True, 'Also time scikit-learn.')
_SKLEARN_MEM = flags.DEFINE_float('sklearn_mem_gib', 20.0, 'Address-space cap for sklearn.')
_TIMEOUT = flags.DEFINE_integer('timeout_s', 1800, 'Wall limit per measurement.')
_WORKER = flags.DEFINE_enum('worker', '', ['', 'jax', 'sklearn'], 'Internal: run one side.')
_OUT = flags.DEFINE_string('out', 'bench/results/policy.json', 'JSON path.')


def problem(n_obs, n_concepts, dim):
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(n_concepts, dim)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  observed = rng.choice(n_concepts, size=n_obs, replace=False)
  return emb, observed, rng.uniform(0.3, 0.8, size=n_obs)


def worker(kind):
  """Runs one update in this process and prints a JSON line."""
  emb, observed, scores = problem(_OBS.value, _CONCEPTS.value, _DIM.value)
  start = time.perf_counter()
  if kind == 'jax':
    from ie_jax.concepts import policy  # pylint: disable=g-import-not-at-top
    obs = policy.Observations(emb.shape[0]).add(observed, scores)
    config = policy.PolicyConfig(alpha=_ALPHA.value, chunk_size=_CHUNK.value)
    probs = policy.distribution(emb, obs, config)
    assert abs(probs.sum() - 1) < 1e-9
  else:
    resource.setrlimit(resource.RLIMIT_AS, (int(_SKLEARN_MEM.value * 2**30),) * 2)
    # pylint: disable=g-import-not-at-top
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF
    gp = GaussianProcessRegressor(RBF(1.0), alpha=_ALPHA.value, optimizer=None)
    gp.fit(emb[observed].astype('float64'), scores)
    gp.predict(emb, return_std=True)
  wall = time.perf_counter() - start
  usage = resource.getrusage(resource.RUSAGE_SELF)
  # CPU seconds (all threads, imports included) are far less sensitive than wall time to
  # other jobs sharing the cores.
  print(json.dumps({'wall_s': wall, 'cpu_s': usage.ru_utime + usage.ru_stime,
                    'peak_rss_gib': usage.ru_maxrss / 2**20}))  # KiB on Linux


def measure(kind, n_concepts):
  cmd = [sys.executable, __file__, f'--worker={kind}', f'--observations={_OBS.value}',
         f'--concepts={n_concepts}', f'--dim={_DIM.value}', f'--alpha={_ALPHA.value}',
         f'--chunk_size={_CHUNK.value}', f'--sklearn_mem_gib={_SKLEARN_MEM.value}']
  row = {'impl': kind, 'observations': _OBS.value, 'concepts': n_concepts}
  try:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT.value,
                          check=False)
  except subprocess.TimeoutExpired:
    return {**row, 'error': f'timeout after {_TIMEOUT.value} s'}
  if done.returncode != 0:
    last = (done.stderr.strip().splitlines() or ['?'])[-1]
    return {**row, 'error': f'exit {done.returncode}: {last[:200]}'}
  return {**row, **json.loads(done.stdout.strip().splitlines()[-1])}


def median_of(runs):
  """One row: the median wall time's run, with every run's numbers kept."""
  ok = sorted((r for r in runs if 'error' not in r), key=lambda r: r['wall_s'])
  if not ok:
    return runs[0]
  row = dict(ok[(len(ok) - 1) // 2])
  if len(runs) > 1:
    row['runs'] = [{k: r[k] for k in ('wall_s', 'cpu_s', 'peak_rss_gib', 'error') if k in r}
                   for r in runs]
  return row


def main(argv):
  del argv
  if _WORKER.value:
    worker(_WORKER.value)
    return
  rows = [median_of([measure('jax', _CONCEPTS.value) for _ in range(_RUNS.value)])]
  if _SKLEARN.value:
    n = _CONCEPTS.value
    while n >= _OBS.value:
      rows.append(measure('sklearn', n))
      if 'error' not in rows[-1]:
        break
      n //= 2
  print(f'{"impl":8} {"obs":>7} {"concepts":>9} {"wall s":>8} {"cpu s":>8} {"peak GiB":>9}'
        '  note')
  for r in rows:
    wall = f'{r["wall_s"]:.1f}' if 'wall_s' in r else '-'
    cpu = f'{r["cpu_s"]:.1f}' if 'cpu_s' in r else '-'
    peak = f'{r["peak_rss_gib"]:.2f}' if 'peak_rss_gib' in r else '-'
    print(f'{r["impl"]:8} {r["observations"]:>7} {r["concepts"]:>9} {wall:>8} {cpu:>8} '
          f'{peak:>9}  {r.get("error", "")}')
  os.makedirs(os.path.dirname(_OUT.value) or '.', exist_ok=True)
  with open(_OUT.value, 'w', encoding='utf-8') as f:
    json.dump({'machine': {'platform': platform.platform(), 'cpus': os.cpu_count(),
                           'load_average_at_end': os.getloadavg()},
               'command': ' '.join(['python', 'bench/policy.py'] + sys.argv[1:]),
               'rows': rows}, f, indent=2)


if __name__ == '__main__':
  app.run(main)
