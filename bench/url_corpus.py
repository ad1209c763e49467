r"""Building and querying a URL-corpus index of a million rows: time, peak memory, disk.

  python bench/url_corpus.py [--rows 1000000] [--format csv|parquet] [--work /tmp/url-bench]

It writes a table of `--rows` (url, caption) rows (captions of 8-16 WordNet noun lemmas,
about DataComp's length), indexes it with the real MiniLM (`url_corpus.build`, as the CLI
`python -m ie_jax.web.url_corpus index` does, in a child process whose peak RSS is its own), and
times `--queries` searches. Side by side, the reference: MiniLM alone embedding a sample of
the same captions, scaled to the table (the floor any caption index pays), and a NumPy
float32 scan of the same matrix per query. Prints a table; JSON to
bench/results/url_corpus_<embedder>.json.

`--embedder hash` replaces MiniLM in the build by hashed words (384-d, as MiniLM's): the
index's own costs (reading, parts, joining, memory, disk) at a size where MiniLM on a
2-core CPU would take hours; the MiniLM rate is still measured on the sample.
"""
import argparse
import asyncio
import csv
import json
import os
import zlib
import random
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# pylint: disable=wrong-import-position
from ie_jax.web import local, local_index, url_corpus
import results_io  # bench/, the script's own directory


def lemmas() -> list[str]:
  words = []
  with open('/usr/share/wordnet/index.noun', encoding='utf-8') as f:
    for line in f:
      if not line.startswith(' '):
        words.append(line.split(' ', 1)[0].replace('_', ' '))
  return words


def captions(rows: int, seed: int = 0):
  """`rows` captions of 8-16 WordNet noun lemmas (about DataComp's length), lazily."""
  rng = random.Random(seed)
  words = lemmas()
  return (' '.join(rng.choice(words) for _ in range(rng.randint(8, 16))) for _ in range(rows))


def write_table(path: str, rows: int, fmt: str, seed: int = 0) -> None:
  texts = captions(rows, seed)
  urls = (f'https://img{i % 97}.example.org/{i:08d}.jpg' for i in range(rows))
  if fmt == 'csv':
    with open(path, 'w', newline='', encoding='utf-8') as f:
      w = csv.writer(f)
      w.writerow(['url', 'caption'])
      w.writerows(zip(urls, texts))
    return
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  with pq.ParquetWriter(path, pa.schema([('url', pa.string()), ('caption', pa.string())])) as w:
    while True:
      chunk = list(zip(*[x for _, x in zip(range(100_000), zip(urls, texts))]))
      if not chunk:
        break
      w.write_table(pa.table({'url': list(chunk[0]), 'caption': list(chunk[1])}))


class HashEmbedder:
  """Hashed words into 384 dimensions: the index's machinery without the model's cost."""
  dim = 384

  def fingerprint(self) -> str:
    return 'bench-word-hash-384'

  def embed(self, texts, *, batch_size=256, progress=True):  # pylint: disable=unused-argument
    out = np.zeros((len(texts), self.dim), np.float32)
    for i, text in enumerate(texts):
      for word in text.split():
        out[i, zlib.crc32(word.encode()) % self.dim] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)


def child_build(table: str, index_dir: str, embedder: str) -> int:
  """The build, in this (child) process: its peak RSS is the build's own."""
  url_corpus.build(table, index_dir, embedder=HashEmbedder() if embedder == 'hash' else None)
  return 0


def du(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python bench/url_corpus.py')
  parser.add_argument('--rows', type=int, default=1_000_000)
  parser.add_argument('--format', choices=('csv', 'parquet'), default='csv')
  parser.add_argument('--work', default='/tmp/url-bench')
  parser.add_argument('--queries', type=int, default=50)
  parser.add_argument('--sample', type=int, default=20_000, help='captions the reference embeds')
  parser.add_argument('--embedder', choices=('minilm', 'hash'), default='minilm')
  parser.add_argument('--out', default='')
  parser.add_argument('--child_build', nargs=2, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child_build:
    return child_build(*args.child_build, args.embedder)
  os.makedirs(args.work, exist_ok=True)
  table = os.path.join(args.work, f'table-{args.rows}.{args.format}')
  index_dir = os.path.join(args.work, f'index-{args.rows}-{args.format}-{args.embedder}')
  if not os.path.exists(table):
    start = time.perf_counter()
    write_table(table, args.rows, args.format)
    print(f'wrote {table} in {time.perf_counter() - start:.0f} s')

  start = time.perf_counter()
  done = subprocess.run([sys.executable, os.path.abspath(__file__), '--embedder',
                         args.embedder, '--child_build', table, index_dir], cwd=ROOT,
                        check=False)
  build_s = time.perf_counter() - start
  if done.returncode:
    print(f'error: the index build failed ({done.returncode})', file=sys.stderr)
    return 1
  peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
  # The index's own account: every part's time, whichever session embedded it (a build
  # stopped and resumed is timed whole here, and only its last session above).
  with open(os.path.join(index_dir, url_corpus.MANIFEST), encoding='utf-8') as f:
    own = json.load(f)['build']
  own_s = own['parts_seconds'] + own['join_seconds']

  embedder = local_index.load_embedder()
  engine = url_corpus.UrlCorpusEngine(
      index_dir, embedder=HashEmbedder() if args.embedder == 'hash' else embedder,
      use_faiss=False)
  words = lemmas()
  rng = random.Random(1)
  queries = [rng.choice(words) for _ in range(args.queries)]
  asyncio.run(engine.search(queries[0], 100))  # warm: page cache and the model
  times = []
  for q in queries:
    start = time.perf_counter()
    asyncio.run(engine.search(q, 100))
    times.append(time.perf_counter() - start)

  faiss_ms = None
  if local.has_faiss():  # the engine's path above 200k rows when faiss is installed
    with_faiss = url_corpus.UrlCorpusEngine(index_dir, embedder=engine._embedder,  # pylint: disable=protected-access
                                            use_faiss=True)
    asyncio.run(with_faiss.search(queries[0], 100))
    faiss_times = []
    for q in queries:
      start = time.perf_counter()
      asyncio.run(with_faiss.search(q, 100))
      faiss_times.append(time.perf_counter() - start)
    faiss_ms = round(1000 * float(np.median(faiss_times)), 1)
    del with_faiss

  # The reference: MiniLM alone on a sample of the same captions, and a plain scan.
  sample = [r['caption'] for r in engine.index.records(
      np.linspace(0, len(engine.index) - 1, min(args.sample, len(engine.index))).astype(int))]
  start = time.perf_counter()
  embedder.embed(sample, progress=False)
  per_caption = (time.perf_counter() - start) / len(sample)
  embed_floor_s = per_caption * len(engine.index)
  matrix = engine.index.embeddings
  scan = []
  for q in queries[:10]:
    v = engine._embedder.embed([q], progress=False)[0]  # pylint: disable=protected-access
    start = time.perf_counter()
    scores = np.concatenate([np.asarray(matrix[i:i + 65536], np.float32) @ v
                             for i in range(0, len(matrix), 65536)])
    np.argpartition(-scores, 100)[:100]
    scan.append(time.perf_counter() - start)

  rows = [
      {'what': f'index build ({args.embedder}), this session', 'seconds': round(build_s, 1),
       'peak_rss_mib': round(peak_mib)},
      {'what': 'index build, all sessions (parts + join)', 'seconds': round(own_s, 1),
       'cpu_seconds': round(own['parts_cpu_seconds'] + own['join_cpu_seconds'], 1),
       'rows_per_s': round(args.rows / own_s)},
      {'what': 'reference: MiniLM embedding alone, scaled', 'seconds': round(embed_floor_s, 1),
       'rows_per_s': round(1 / per_caption)},
      {'what': 'query, top 100 (median)', 'ms': round(1000 * float(np.median(times)), 1)},
      {'what': 'query with faiss-cpu, top 100 (median)',
       'ms': faiss_ms if faiss_ms is not None else 'no faiss'},
      {'what': 'reference: float32 scan of the matrix (median)',
       'ms': round(1000 * float(np.median(scan)), 1)},
  ]
  disk = {'table_mib': round(os.path.getsize(table) / 2**20, 1),
          'index_mib': round(du(index_dir) / 2**20, 1)}
  print(f'{args.rows} rows, {args.format}: table {disk["table_mib"]} MiB, index '
        f'{disk["index_mib"]} MiB; kept {engine.index.manifest["rows"]}')
  print(f'{"":<46} | {"seconds":>8} | {"CPU s":>8} | {"ms":>7} | {"rows/s":>7} | '
        f'{"peak RSS MiB":>12}')
  for r in rows:
    print(f'{r["what"]:<46} | {r.get("seconds", ""):>8} | {r.get("cpu_seconds", ""):>8} | '
          f'{r.get("ms", ""):>7} | {r.get("rows_per_s", ""):>7} | '
          f'{r.get("peak_rss_mib", ""):>12}')
  print(f'build (all sessions) / MiniLM embedding floor: {own_s / embed_floor_s:.2f}x')
  results_io.write('url_corpus', f'url_corpus_{args.embedder}',
                   {'rows': args.rows, 'format': args.format, 'disk': disk,
                    'embedder': args.embedder,
                    'build_over_floor': round(own_s / embed_floor_s, 3), 'build': own},
                   rows, args.out)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
