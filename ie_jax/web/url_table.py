"""Reading a table of (url, caption) rows, such as the DataComp or Re-LAION metadata.

Formats, by extension: `.parquet` (needs pyarrow), `.csv`, `.tsv`, `.jsonl` / `.json`
(one object per line). Tables of millions of rows are read in slices, never whole.

Columns: `url_column` / `caption_column` when given, else the first present of
`URL_COLUMNS` / `CAPTION_COLUMNS` (LAION's parquet files say `URL` and `TEXT`, DataComp's
`url` and `text`).

One bad row never stops a read: it is yielded with a reason (`SKIP_REASONS`) instead of
its url, so the index counts it and moves on. Only a table that cannot be read at all, or
lacks a column, raises `TableError`.
"""
import csv
import dataclasses
import io
import json
import os
import urllib.parse

URL_COLUMNS = ('url', 'URL', 'image_url', 'Url')
CAPTION_COLUMNS = ('caption', 'text', 'TEXT', 'CAPTION', 'title', 'alt')
FORMATS = {'.parquet': 'parquet', '.csv': 'csv', '.tsv': 'tsv', '.jsonl': 'jsonl',
           '.json': 'jsonl'}
MAX_URL = 2048        # longer URLs are refused by most servers and CDNs
MAX_CAPTION = 2000    # characters kept; MiniLM reads 256 tokens (~1,000 characters) anyway
SKIP_REASONS = {
    'bad_row': 'a line that is not a JSON object, or a row without the url or caption',
    'bad_url': 'not an http(s) URL with a host, longer than MAX_URL, or holding spaces or '
               'control characters',
    'empty_caption': 'a blank caption',
}
_SLICE = 8192  # parquet rows per read


class TableError(ValueError):
  """The table as a whole cannot be read."""


@dataclasses.dataclass(frozen=True)
class Row:
  """Table row `number` (0-based): its url and caption, or why it was skipped."""
  number: int
  url: str = ''
  caption: str = ''
  skip: str = ''


def table_format(path: str) -> str:
  ext = os.path.splitext(path)[1].lower()
  if ext not in FORMATS:
    raise TableError(f'{path}: unknown table format {ext!r}; use one of {sorted(FORMATS)}.')
  return FORMATS[ext]


def check_url(url) -> str:
  """'' if `url` is one the downloader may fetch, else the skip reason."""
  if not isinstance(url, str) or not url or len(url) > MAX_URL:
    return 'bad_url'
  if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
    return 'bad_url'
  try:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    parts.port  # pylint: disable=pointless-statement  # raises on a bad port
  except ValueError:  # e.g. an unbalanced IPv6 bracket or a bad port
    return 'bad_url'
  if parts.scheme.lower() not in ('http', 'https') or not host:
    return 'bad_url'
  return ''


def _row(number: int, url, caption) -> Row:
  if url is None or caption is None:
    return Row(number, skip='bad_row')
  if (reason := check_url(url)):
    return Row(number, skip=reason)
  if not isinstance(caption, str):
    caption = str(caption)
  caption = ' '.join(caption.split())[:MAX_CAPTION]
  if not caption:
    return Row(number, skip='empty_caption')
  return Row(number, url, caption)


def _pick(names, wanted: str | None, candidates: tuple, kind: str, path: str) -> str:
  if wanted:
    if wanted not in names:
      raise TableError(f'{path} has no {kind} column {wanted!r}; its columns: {list(names)}.')
    return wanted
  for name in candidates:
    if name in names:
      return name
  raise TableError(f'{path}: no {kind} column among {list(candidates)} (its columns: '
                   f'{list(names)[:20]}); name it with --{kind}_column.')


def columns(path: str, url_column: str | None = None,
            caption_column: str | None = None) -> tuple[str, str]:
  """The (url, caption) column names the table will be read with."""
  names = _column_names(path)
  return (_pick(names, url_column, URL_COLUMNS, 'url', path),
          _pick(names, caption_column, CAPTION_COLUMNS, 'caption', path))


def _column_names(path: str) -> list[str]:
  kind = table_format(path)
  try:
    if kind == 'parquet':
      return list(_parquet(path).schema_arrow.names)
    with open(path, encoding='utf-8', errors='replace', newline='') as f:
      if kind == 'jsonl':
        for line in f:
          if line.strip():
            try:
              first = json.loads(line)
            except ValueError as e:
              raise TableError(f'{path}: the first line is not JSON ({e}).') from e
            if not isinstance(first, dict):
              raise TableError(f'{path}: the first line is not a JSON object.')
            return list(first)
        return []
      return next(csv.reader(f, delimiter='\t' if kind == 'tsv' else ','), [])
  except OSError as e:
    raise TableError(f'Cannot read {path}: {e}') from e


def _parquet(path: str):
  try:
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise TableError(f'{path}: reading Parquet needs pyarrow (pip install pyarrow), or '
                     'convert the table to CSV or JSONL.') from e
  try:
    return pq.ParquetFile(path)
  except (OSError, ValueError) as e:  # pyarrow: ArrowIOError, ArrowInvalid
    raise TableError(f'{path} is not a readable Parquet file: {e}') from e


def rows(path: str, url_column: str, caption_column: str, *, progress=None):
  """Yields every row of the table as a `Row`, in order. `progress(done_fraction)` is
  called now and then (for a progress bar)."""
  kind = table_format(path)
  if kind == 'parquet':
    yield from _parquet_rows(path, url_column, caption_column, progress)
    return
  size = max(1, os.path.getsize(path))
  try:
    with open(path, 'rb') as raw:
      text = io.TextIOWrapper(raw, encoding='utf-8', errors='replace', newline='')
      if kind == 'jsonl':
        lines = (line for line in text if line.strip())
        for number, line in enumerate(lines):
          try:
            obj = json.loads(line)
          except (ValueError, RecursionError):
            obj = None
          if not isinstance(obj, dict):
            yield Row(number, skip='bad_row')
          else:
            yield _row(number, obj.get(url_column), obj.get(caption_column))
          if progress and number % 4096 == 0:
            progress(raw.tell() / size)
      else:
        reader = csv.DictReader(text, delimiter='\t' if kind == 'tsv' else ',')
        number = 0
        while True:
          try:
            record = next(reader)
          except StopIteration:
            break
          except csv.Error:  # e.g. a field over csv's size limit: this row only
            record = None
          yield (_row(number, record.get(url_column), record.get(caption_column))
                 if record is not None else Row(number, skip='bad_row'))
          if progress and number % 4096 == 0:
            progress(raw.tell() / size)
          number += 1
  except OSError as e:
    raise TableError(f'Reading {path} failed: {e}') from e
  if progress:
    progress(1.0)


def _parquet_rows(path: str, url_column: str, caption_column: str, progress):
  table = _parquet(path)
  total = max(1, table.metadata.num_rows)
  number = 0
  try:
    for batch in table.iter_batches(batch_size=_SLICE, columns=[url_column, caption_column]):
      urls = batch.column(0).to_pylist()
      captions = batch.column(1).to_pylist()
      for url, caption in zip(urls, captions):
        yield _row(number, url, caption)
        number += 1
      if progress:
        progress(number / total)
  except TableError:
    raise
  except (OSError, ValueError) as e:  # a damaged row group mid-file
    raise TableError(f'Reading {path} failed after {number} rows: {e}') from e
