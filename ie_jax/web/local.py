"""The offline search engine over a local corpus of captioned images: the embedded default.

  python -m ie_jax.web.local index CORPUS_DIR [--out INDEX_DIR]    # once, with progress bars
  python -m ie_jax.web.local search INDEX_DIR 'coffee cup' -n 5     # to look at an index
  engine = engines.make('local', index_dir=INDEX_DIR)
  results = await engine.search('coffee cup', 100)

It follows the paper's LAION engine, which returned the images of the 100 captions nearest
to the query: the query and every caption are embedded with all-MiniLM-L6-v2 (384-d, unit
norm) and the captions are ranked by exact cosine similarity over the whole matrix. With
faiss installed and a large corpus, the same exact search runs on a faiss `IndexFlatIP`;
both paths rerank their candidates in float64 and break ties by row, so they return the same
results, deterministically. Without the model, or when asked, captions are ranked by
keywords instead (`KeywordIndex`).

Result URLs are `file://` URLs into the corpus (see `corpus.py`); the downloader reads them
when its `FetchOptions.file_roots` holds the corpus directory. Members of tar shards are
`file:///.../shard.tar?member=NAME`, read by `corpus.read_tar_member`.
"""
import argparse
import asyncio
import bisect
import collections
import logging
import math
import re
import sys

import numpy as np

from ie_jax.web import api
from ie_jax.web import corpus
from ie_jax.web import local_index

log = logging.getLogger(__name__)

MODES = ('auto', 'embedding', 'keyword')
# Rows scored per matrix product: bounds the float32 copy of a float16 memory map (~50 MB).
_CHUNK = 32768
# Scores within this of the n-th best may rank above it once recomputed in float64.
_TIE_TOLERANCE = 1e-5
# Extra neighbours asked of faiss, so that near-ties at the n-th place are seen.
_FAISS_MARGIN = 64
_WORD = re.compile(r'[^\W_]+')


def words(text: str) -> list[str]:
  """Lower-cased runs of letters and digits: the keyword tokens of captions and queries."""
  return _WORD.findall(text.lower())


class KeywordIndex:
  """BM25 over caption words (k1 = 1.2, b = 0.75), with prefix matches as a lower tier.

  Captions with an exact query word come first, ranked by BM25; then captions that only
  hold words extending a query word of 3+ letters ('fox' -> 'foxes'), ranked by the BM25 of
  those words; ties go to the lower row. Captions matching no word are not returned.
  """

  def __init__(self, captions: list[str], k1: float = 1.2, b: float = 0.75):
    postings = collections.defaultdict(lambda: ([], []))
    lengths = np.zeros(len(captions), np.float32)
    for row, caption in enumerate(captions):
      tokens = words(caption)
      lengths[row] = len(tokens)
      for word, count in collections.Counter(tokens).items():
        postings[word][0].append(row)
        postings[word][1].append(count)
    self._rows = len(captions)
    self._k1 = k1
    self._length_norm = k1 * (1 - b + b * lengths / max(float(lengths.mean()), 1e-9))
    self._postings = {w: (np.array(r, np.int64), np.array(c, np.float32))
                      for w, (r, c) in postings.items()}
    self._vocabulary = sorted(self._postings)

  def _bm25(self, query_words) -> np.ndarray:
    scores = np.zeros(self._rows, np.float64)
    for word in query_words:
      rows, counts = self._postings[word]
      idf = math.log(1 + (self._rows - len(rows) + 0.5) / (len(rows) + 0.5))
      scores[rows] += idf * counts * (self._k1 + 1) / (counts + self._length_norm[rows])
    return scores

  def _extensions(self, word: str) -> list[str]:
    start = bisect.bisect_right(self._vocabulary, word)
    found = []
    for candidate in self._vocabulary[start:]:
      if not candidate.startswith(word):
        break
      found.append(candidate)
    return found

  def search(self, query: str, n: int) -> np.ndarray:
    """Rows of the n best captions for `query`, best first."""
    query_words = sorted(set(words(query)))
    exact = self._bm25(w for w in query_words if w in self._postings)
    prefix = self._bm25(sorted({e for w in query_words if len(w) >= 3
                                for e in self._extensions(w)}))
    rows = np.flatnonzero((exact > 0) | (prefix > 0))
    order = np.lexsort((rows, -prefix[rows], -exact[rows]))
    return rows[order[:n]]


class LocalEngine:
  """The `SearchEngine` over a local index (module docstring).

  Args:
    index_dir: built by `python -m ie_jax.web.local index`.
    mode: 'embedding' (nearest captions; fails without the model or the embeddings),
      'keyword' (`KeywordIndex`), or 'auto': embedding when possible, else keyword with a
      warning.
    corpus_dir: where the corpus is now, if it moved away from the index.
    model_dir: the MiniLM directory; default found as `text_embed.resolve_model_dir` does.
    embedder: a `TextEmbedder` to share (it must be the model the index was built with).
    use_faiss: search with faiss; None: when it is importable and the index has at least
      `faiss_min_rows` rows (below that, NumPy is as fast and needs no float32 copy).
    faiss_min_rows: see `use_faiss`.

  Raises:
    local_index.LocalIndexError: missing or inconsistent index.
    local_index.StaleIndexError: the corpus, or the model, changed since the build.
  """
  name = 'local'

  def __init__(self, index_dir: str, *, mode: str = 'auto', corpus_dir: str | None = None,
               model_dir: str | None = None, embedder=None, use_faiss: bool | None = None,
               faiss_min_rows: int = 200_000):
    if mode not in MODES:
      raise ValueError(f'Unknown mode {mode!r}; valid modes: {list(MODES)}.')
    self.index = local_index.load(index_dir, corpus_dir=corpus_dir)
    self._embedder = None
    spec = self.index.manifest['embeddings']
    if mode != 'keyword':
      if spec is None:
        if mode == 'embedding':
          raise local_index.LocalIndexError(f'{index_dir} is a keyword-only index.')
        log.warning('local: %s has no embeddings; searching by keyword.', index_dir)
      else:
        self._embedder = embedder or self._load_embedder(model_dir, mode)
    if self._embedder is not None and self._embedder.fingerprint() != spec['model_fingerprint']:
      raise local_index.StaleIndexError(
          f'{index_dir} was embedded with another model than {self._embedder.model_dir}; '
          f'rebuild it with: python -m ie_jax.web.local index {self.index.corpus_dir} '
          f'--out {index_dir}')
    self.mode = 'embedding' if self._embedder is not None else 'keyword'
    self._keywords = KeywordIndex(self.index.captions) if self.mode == 'keyword' else None
    self._faiss = None
    if self.mode == 'embedding':
      rows = len(self.index.captions)
      if use_faiss or (use_faiss is None and rows >= faiss_min_rows and has_faiss()):
        self._faiss = faiss_index(self.index.embeddings)
    self.uses_faiss = self._faiss is not None

  @staticmethod
  def _load_embedder(model_dir: str | None, mode: str):
    from ie_jax.concepts import text_embed  # pylint: disable=g-import-not-at-top
    try:
      return local_index.load_embedder(model_dir)
    except text_embed.ModelNotFoundError as e:
      if mode == 'embedding':
        raise
      log.warning('local: no embedding model (%s); searching by keyword.', e)
      return None

  async def search(self, query: str, n: int) -> list[api.Result]:
    """The images of the n captions nearest to `query`, best first, ranked from 0."""
    if n <= 0 or not words(query):
      log.info('local: nothing to search for in %r.', query)
      return []
    # Embedding and the matrix product take milliseconds to seconds: off the event loop.
    rows = await asyncio.to_thread(self.rows, query, n)
    found = [(self.index.urls[r], self.index.captions[r]) for r in rows]
    return api.finish(self.name, query, found, n)

  def rows(self, query: str, n: int) -> np.ndarray:
    """Index rows of the n best captions for `query`, best first (synchronous)."""
    if self.mode == 'keyword':
      return self._keywords.search(query, n)
    q = self._embedder.embed([query], progress=False)[0]
    return nearest(self.index.embeddings, q, n, self._faiss)


def nearest(matrix: np.ndarray, q: np.ndarray, n: int, faiss_index=None) -> np.ndarray:
  """Rows of the n largest `matrix @ q`, best first, ties to the lower row."""
  rows = len(matrix)
  n = min(n, rows)
  candidates = None
  if faiss_index is not None:
    wanted = min(rows, n + _FAISS_MARGIN)
    scores, found = faiss_index.search(q[None].astype(np.float32), wanted)
    scores, found = scores[0], found[0]
    # Unless near-ties of the n-th score may lie beyond what faiss returned.
    if wanted == rows or scores[-1] < scores[n - 1] - _TIE_TOLERANCE:
      candidates = found[scores >= scores[n - 1] - _TIE_TOLERANCE]
  if candidates is None:
    scores = np.empty(rows, np.float32)
    for start in range(0, rows, _CHUNK):
      scores[start:start + _CHUNK] = matrix[start:start + _CHUNK].astype(np.float32) @ q
    nth = np.partition(scores, rows - n)[rows - n]
    candidates = np.flatnonzero(scores >= nth - _TIE_TOLERANCE)
  # float32 sums depend on the BLAS and the chunking; float64 on the few candidates makes
  # both paths agree, and exact ties (repeated captions) go to the lower row.
  candidates = np.sort(candidates)
  exact = matrix[candidates].astype(np.float64) @ q.astype(np.float64)
  return candidates[np.lexsort((candidates, -exact))][:n]


def has_faiss() -> bool:
  try:
    import faiss  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


def faiss_index(matrix: np.ndarray):
  import faiss  # pylint: disable=g-import-not-at-top
  index = faiss.IndexFlatIP(matrix.shape[1])
  for start in range(0, len(matrix), _CHUNK):  # float32 copies one chunk at a time
    index.add(np.ascontiguousarray(matrix[start:start + _CHUNK], np.float32))
  return index


def print_search(engine, query: str, n: int) -> None:
  """The CLIs' `search`: one tab-separated line per result (rank, caption, URL)."""
  for result in asyncio.run(engine.search(query, n)):
    print(f'{result.rank}\t{result.title}\t{result.url}')


def main(argv: list[str] | None = None) -> int:
  """The command line (module docstring). Returns the exit status."""
  parser = argparse.ArgumentParser(prog='python -m ie_jax.web.local', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', required=True)
  index = commands.add_parser('index', help='build the index of a corpus')
  index.add_argument('corpus_dir')
  index.add_argument('--out', help='index directory (default CORPUS_DIR/.ie_index)')
  index.add_argument('--dtype', choices=('float16', 'float32'), default='float16')
  index.add_argument('--keyword-only', action='store_true',
                     help='store no embeddings (no model needed); search by keyword')
  index.add_argument('--model-dir', help='all-MiniLM-L6-v2 directory (default: found)')
  index.add_argument('--batch-size', type=int, default=256)
  search = commands.add_parser('search', help='print the results of a query')
  search.add_argument('index_dir')
  search.add_argument('query')
  search.add_argument('-n', type=int, default=10)
  search.add_argument('--mode', choices=MODES, default='auto')
  search.add_argument('--model-dir')
  args = parser.parse_args(argv)
  from ie_jax.concepts import text_embed  # pylint: disable=g-import-not-at-top
  try:
    if args.command == 'index':
      manifest = local_index.build(
          args.corpus_dir, args.out, model_dir=args.model_dir, dtype=args.dtype,
          keyword_only=args.keyword_only, batch_size=args.batch_size)
      print(f'Indexed {manifest["rows"]} images into '
            f'{args.out or local_index.default_index_dir(args.corpus_dir)}; skipped: '
            f'{manifest["skipped"] or "none"}.')
    else:
      print_search(LocalEngine(args.index_dir, mode=args.mode, model_dir=args.model_dir),
                   args.query, args.n)
  except (corpus.CorpusError, local_index.LocalIndexError, text_embed.ModelNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
  sys.exit(main())
