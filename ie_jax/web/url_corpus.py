r"""The URL-corpus engine: text search over a table of (url, caption) rows, whose images
the guarded downloader then fetches live. The offline-first path for real targets: the
paper's LAION engine searched the captions of a static pool, and open caption metadata
with URLs still exists (DataComp, Re-LAION, CC12M).

  python -m ie_jax.web.url_corpus index TABLE --out INDEX_DIR [--url_column URL ...]
  python -m ie_jax.web.url_corpus search INDEX_DIR 'coffee cup' -n 5
  # a run: config.web.engine='url_corpus', config.web.url_index=INDEX_DIR

The table is read by `url_table.py` (Parquet, CSV, TSV or JSONL; bad rows are counted and
skipped). Captions are embedded with all-MiniLM-L6-v2 and ranked as the local engine ranks
them (`local.nearest`: exact cosine, faiss above a size, ties to the lower row).

INDEX_DIR holds, once built:
  records.jsonl   one line per kept row, in index order: {"id": table row, "url", "caption"}
  offsets.npy     (rows,) int64 byte offset of each line, so a result is read by seeking
  embeddings.npy  (rows, 384) unit caption embeddings, float16 by default
  manifest.json   written last: format, rows, skips by reason, the table's path, size and
                  mtime, its columns, the model's fingerprint, and `build`: the seconds
                  (wall and CPU) the parts took to embed and write, summed over every
                  session of a resumed build, and the join's

Building streams: the table is read in parts of `part_rows` rows, each embedded and written
to parts/ (its embeddings last, under a temporary name, so a part that exists is whole);
memory holds one part. A build that is stopped resumes with the first missing part, if
the table, columns, model and part size are the same (`build.json`). The parts are joined
into the files above at the end, and removed.
"""
import argparse
import asyncio
import json
import logging
import os
import re
import sys
import time

import numpy as np
import tqdm

from ie_jax.utils import atomic
from ie_jax.web import api, local, local_index, url_table

log = logging.getLogger(__name__)

FORMAT = 'ie_jax.url_corpus'
VERSION = 1
MANIFEST = 'manifest.json'
PLAN = 'build.json'
RECORDS = 'records.jsonl'
OFFSETS = 'offsets.npy'
EMBEDDINGS = 'embeddings.npy'
PARTS = 'parts'
_PART = re.compile(r'^part-(\d{6})\.(jsonl|json|npy)$')  # the only names parts/ may hold
_EMBED_CHUNK = 1024  # captions per model call: bounds memory, moves the progress bar


class UrlCorpusError(RuntimeError):
  """The index is missing, incomplete, unreadable, or out of date with its table."""


def _source(table: str) -> dict:
  stat = os.stat(table)
  return {'path': os.path.abspath(table), 'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns}


def _part_path(index_dir: str, number: int, ext: str) -> str:
  return os.path.join(index_dir, PARTS, f'part-{number:06d}.{ext}')


def _check_ours(index_dir: str) -> None:
  """Raises `UrlCorpusError` unless `index_dir` is missing, empty, or an index (complete
  or stopped midway) that this module wrote: a build replaces and deletes files there."""
  if not os.path.isdir(index_dir) or not os.listdir(index_dir):
    return
  for name in (MANIFEST, PLAN):
    found = _read_json(os.path.join(index_dir, name))
    if isinstance(found, dict) and found.get('format') == FORMAT:
      return
  raise UrlCorpusError(
      f'{index_dir} holds files that are not a URL-corpus index; ie-jax does not write into '
      'or delete from a directory it did not make. Give --out a new or empty directory.')


def _remove_parts(index_dir: str) -> None:
  """Removes the part files a build writes (by their names), and nothing else."""
  directory = os.path.join(index_dir, PARTS)
  if not os.path.isdir(directory):
    return
  for name in os.listdir(directory):
    if _PART.match(name):
      os.remove(os.path.join(directory, name))
  if not os.listdir(directory):
    os.rmdir(directory)


def build(table: str, index_dir: str, *, embedder=None, model_dir: str | None = None,
          url_column: str | None = None, caption_column: str | None = None,
          dtype: str = 'float16', part_rows: int = 65_536, batch_size: int = 256,
          progress: bool = True) -> dict:
  """Indexes `table` into `index_dir` (module docstring); returns the manifest.

  Raises:
    url_table.TableError: the table cannot be read, or lacks a column.
    UrlCorpusError: `index_dir` holds files that are not an index this module wrote.
    text_embed.ModelNotFoundError: no MiniLM model, and no `embedder`.
  """
  if dtype not in ('float16', 'float32'):
    raise ValueError(f'dtype must be float16 or float32, not {dtype!r}.')
  if part_rows < 1:
    raise ValueError(f'part_rows must be positive, not {part_rows}.')
  if not os.path.isfile(table):
    raise url_table.TableError(f'No table at {table}.')
  _check_ours(index_dir)
  source = _source(table)
  url_column, caption_column = url_table.columns(table, url_column, caption_column)
  embedder = embedder or local_index.load_embedder(model_dir)
  plan = {'format': FORMAT, 'version': VERSION, 'table': source,
          'columns': {'url': url_column, 'caption': caption_column},
          'part_rows': part_rows, 'dtype': dtype, 'dim': embedder.dim,
          'model_fingerprint': embedder.fingerprint()}
  os.makedirs(index_dir, exist_ok=True)
  if os.path.exists(os.path.join(index_dir, MANIFEST)):
    os.remove(os.path.join(index_dir, MANIFEST))  # a rebuild: never looks complete midway
  if _read_json(os.path.join(index_dir, PLAN)) != plan:
    _remove_parts(index_dir)  # another table, model or layout: start over
    _write_json(os.path.join(index_dir, PLAN), plan)
  os.makedirs(os.path.join(index_dir, PARTS), exist_ok=True)

  parts, pending, read = 0, [], {'fraction': 0.0}

  def show(fraction):  # the share of the table read so far
    read['fraction'] = fraction

  # Counts rows embedded; the total is estimated from the share of the table read (a CSV's
  # row count is unknown until its end), so the ETA holds from the first part on.
  with tqdm.tqdm(desc=f'Indexing {os.path.basename(table)}', unit='row',
                 disable=not progress) as bar:
    def flush(rows):
      nonlocal parts
      if read['fraction'] > 0:
        bar.total = max(bar.n + len(rows), round((parts * part_rows + len(rows)) /
                                                 read['fraction']))
        bar.refresh()
      _write_part(index_dir, parts, rows, embedder, dtype, batch_size, bar.update)
      parts += 1

    for row in url_table.rows(table, url_column, caption_column, progress=show):
      pending.append(row)
      if len(pending) == part_rows:
        flush(pending)
        pending = []
    if pending:
      flush(pending)
  if _source(table) != source:
    raise url_table.TableError(f'{table} changed while it was indexed; index it again.')
  manifest = _join(index_dir, parts, plan)
  _remove_parts(index_dir)
  log.info('Indexed %d rows of %s into %s (skipped: %s).', manifest['rows'], table,
           index_dir, manifest['skipped'] or 'none')
  return manifest


def _write_part(index_dir, number, rows, embedder, dtype, batch_size, advance) -> None:
  done = _part_path(index_dir, number, 'npy')
  if os.path.exists(done):
    advance(len(rows))
    return  # a resumed build: this part is whole
  started, cpu_started = time.perf_counter(), time.process_time()
  kept = [r for r in rows if not r.skip]
  skipped = {}
  for r in rows:
    if r.skip:
      skipped[r.skip] = skipped.get(r.skip, 0) + 1
  # One build writes an index (`_check_ours`): a write killed midway is cleared when the
  # resumed build writes the same file again.
  atomic.write(_part_path(index_dir, number, 'jsonl'), lambda f: f.write(b''.join(
      (json.dumps({'id': r.number, 'url': r.url, 'caption': r.caption},
                  ensure_ascii=False) + '\n').encode() for r in kept)), single_writer=True)
  advance(len(rows) - len(kept))
  vectors = np.zeros((len(kept), embedder.dim), dtype)
  for start in range(0, len(kept), _EMBED_CHUNK):
    captions = [r.caption for r in kept[start:start + _EMBED_CHUNK]]
    vectors[start:start + len(captions)] = embedder.embed(captions, batch_size=batch_size,
                                                          progress=False)
    advance(len(captions))
  # The part's own time, kept with it: a build resumed in another session still adds up.
  _write_json(_part_path(index_dir, number, 'json'),
              {'rows': len(rows), 'kept': len(kept), 'skipped': skipped,
               'seconds': round(time.perf_counter() - started, 3),
               'cpu_seconds': round(time.process_time() - cpu_started, 3)})
  atomic.write(done, lambda f: np.save(f, vectors),  # last: marks the part whole
               single_writer=True)


def _join(index_dir: str, parts: int, plan: dict) -> dict:
  """Joins the parts into records, offsets and embeddings; writes the manifest last."""
  started, cpu_started = time.perf_counter(), time.process_time()
  stats = [_read_json(_part_path(index_dir, k, 'json')) for k in range(parts)]
  if any(s is None for s in stats):
    raise UrlCorpusError(f'A part of {index_dir} is missing; index the table again.')
  rows = sum(s['kept'] for s in stats)
  offsets = np.zeros(rows, np.int64)
  tmp_embeddings = os.path.join(index_dir, '.tmp-' + EMBEDDINGS)
  tmp_records = os.path.join(index_dir, '.tmp-' + RECORDS)
  at, row = 0, 0
  # Plain appends, part by part (a memory map would keep every written page resident).
  with open(tmp_records, 'wb') as out, open(tmp_embeddings, 'wb') as matrix:
    np.lib.format.write_array_header_1_0(matrix, {
        'descr': np.lib.format.dtype_to_descr(np.dtype(plan['dtype'])),
        'fortran_order': False, 'shape': (rows, plan['dim'])})
    for k in range(parts):
      with open(_part_path(index_dir, k, 'jsonl'), 'rb') as f:
        for line in f:
          offsets[row] = at
          out.write(line)
          at, row = at + len(line), row + 1
      vectors = np.load(_part_path(index_dir, k, 'npy'))
      if vectors.shape != (stats[k]['kept'], plan['dim']) or vectors.dtype != plan['dtype']:
        raise UrlCorpusError(f'Part {k} of {index_dir} is damaged; index the table again.')
      matrix.write(np.ascontiguousarray(vectors).tobytes())
  if row != rows:
    raise UrlCorpusError(f'The parts of {index_dir} disagree with their counts; index again.')
  os.replace(tmp_embeddings, os.path.join(index_dir, EMBEDDINGS))
  os.replace(tmp_records, os.path.join(index_dir, RECORDS))
  atomic.write(os.path.join(index_dir, OFFSETS), lambda f: np.save(f, offsets),
               single_writer=True)
  skipped = {}
  for s in stats:
    for reason, count in s['skipped'].items():
      skipped[reason] = skipped.get(reason, 0) + count
  manifest = {**plan, 'rows': rows, 'table_rows': sum(s['rows'] for s in stats),
              'skipped': dict(sorted(skipped.items())),
              'build': {'parts_seconds': round(sum(s.get('seconds', 0) for s in stats), 1),
                        'parts_cpu_seconds': round(sum(s.get('cpu_seconds', 0)
                                                       for s in stats), 1),
                        'join_seconds': round(time.perf_counter() - started, 1),
                        'join_cpu_seconds': round(time.process_time() - cpu_started, 1)}}
  _write_json(os.path.join(index_dir, MANIFEST), manifest)
  os.remove(os.path.join(index_dir, PLAN))
  return manifest


def _read_json(path: str):
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _write_json(path: str, data) -> None:
  atomic.write(path, lambda f: f.write(json.dumps(data, indent=1).encode()),
               single_writer=True)


class UrlIndex:
  """A built index: `embeddings` memory-mapped, and each row's url and caption read from
  records.jsonl on demand (a million rows' strings never sit in memory)."""

  def __init__(self, index_dir: str):
    self.index_dir = index_dir
    manifest = _read_json(os.path.join(index_dir, MANIFEST))
    if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
      raise UrlCorpusError(
          f'No complete URL-corpus index at {index_dir} (no readable {MANIFEST}: a build '
          'was stopped, or it is another kind of directory). Build it with: python -m '
          'ie_jax.web.url_corpus index TABLE --out ' + index_dir)
    if manifest.get('version') != VERSION:
      raise UrlCorpusError(f'{index_dir} is a version-{manifest.get("version")} index; '
                           f'this code reads version {VERSION}. Index the table again.')
    self.manifest = manifest
    table = manifest['table']
    if os.path.exists(table['path']) and _source(table['path']) != table:
      raise UrlCorpusError(f'{table["path"]} changed since it was indexed into {index_dir}; '
                           f'index it again: python -m ie_jax.web.url_corpus index '
                           f'{table["path"]} --out {index_dir}')
    try:
      self.embeddings = np.load(os.path.join(index_dir, EMBEDDINGS), mmap_mode='r')
      self.offsets = np.load(os.path.join(index_dir, OFFSETS))
    except (OSError, ValueError) as e:
      raise UrlCorpusError(f'Unreadable index files in {index_dir}: {e}. Index again.') from e
    rows = manifest['rows']
    if self.embeddings.shape != (rows, manifest['dim']) or self.offsets.shape != (rows,):
      raise UrlCorpusError(f'The files of {index_dir} do not match its manifest ({rows} '
                           'rows); index the table again.')
    self._records = os.path.join(index_dir, RECORDS)

  def __len__(self) -> int:
    return len(self.offsets)

  def records(self, rows) -> list[dict]:
    """The {"id", "url", "caption"} records of index rows `rows`, in that order."""
    out = []
    with open(self._records, 'rb') as f:
      for row in rows:
        f.seek(int(self.offsets[row]))
        try:
          out.append(json.loads(f.readline()))
        except ValueError as e:
          raise UrlCorpusError(f'{self._records} is damaged at row {row}; index again.') from e
    return out


class UrlCorpusEngine:
  """The `SearchEngine` over a URL-corpus index: the nearest captions' URLs, live.

  Args:
    index_dir: built by `python -m ie_jax.web.url_corpus index`.
    model_dir: the MiniLM directory (default: found as the local engine finds it).
    embedder: a `TextEmbedder` to share; it must be the model the index was built with.
    use_faiss, faiss_min_rows: as `local.LocalEngine`'s.
  """
  name = 'url_corpus'

  def __init__(self, index_dir: str, *, model_dir: str | None = None, embedder=None,
               use_faiss: bool | None = None, faiss_min_rows: int = 200_000):
    self.index = UrlIndex(index_dir)
    self._embedder = embedder or local_index.load_embedder(model_dir)
    if self._embedder.fingerprint() != self.index.manifest['model_fingerprint']:
      raise UrlCorpusError(f'{index_dir} was embedded with another model than '
                           f'{getattr(self._embedder, "model_dir", "this one")}; index the '
                           'table again with this one.')
    rows = len(self.index)
    self._faiss = None
    if use_faiss or (use_faiss is None and rows >= faiss_min_rows and local.has_faiss()):
      self._faiss = local.faiss_index(self.index.embeddings)

  async def search(self, query: str, n: int) -> list[api.Result]:
    if n <= 0 or not local.words(query):
      return []
    found = await asyncio.to_thread(self.lookup, query, n)
    return api.finish(self.name, query, [(r['url'], r['caption']) for r in found], n)

  def lookup(self, query: str, n: int) -> list[dict]:
    """The records of the n captions nearest to `query`, best first (synchronous)."""
    q = self._embedder.embed([query], progress=False)[0]
    return self.index.records(local.nearest(self.index.embeddings, q, n, self._faiss))


def main(argv: list[str] | None = None) -> int:
  """The command line (module docstring). Returns the exit status."""
  parser = argparse.ArgumentParser(prog='python -m ie_jax.web.url_corpus', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', required=True)
  index = commands.add_parser('index', help='index a (url, caption) table')
  index.add_argument('table')
  index.add_argument('--out', required=True, help='index directory')
  index.add_argument('--url_column', default=None)
  index.add_argument('--caption_column', default=None)
  index.add_argument('--dtype', choices=('float16', 'float32'), default='float16')
  index.add_argument('--part_rows', type=int, default=65_536)
  index.add_argument('--model_dir', default=None)
  search = commands.add_parser('search', help='print the results of a query')
  search.add_argument('index_dir')
  search.add_argument('query')
  search.add_argument('-n', type=int, default=10)
  search.add_argument('--model_dir', default=None)
  args = parser.parse_args(argv)
  from ie_jax.concepts import text_embed  # pylint: disable=g-import-not-at-top
  try:
    if args.command == 'index':
      manifest = build(args.table, args.out, model_dir=args.model_dir,
                       url_column=args.url_column, caption_column=args.caption_column,
                       dtype=args.dtype, part_rows=args.part_rows)
      print(f'Indexed {manifest["rows"]} of {manifest["table_rows"]} rows into {args.out}; '
            f'skipped: {manifest["skipped"] or "none"}.')
    else:
      local.print_search(UrlCorpusEngine(args.index_dir, model_dir=args.model_dir),
                         args.query, args.n)
  except (url_table.TableError, UrlCorpusError, text_embed.ModelNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
  sys.exit(main())
