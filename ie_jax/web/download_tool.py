r"""The downloader on its own: a list of image URLs in, checked images and a results table out.

  python -m ie_jax.web.download URLS OUT [--url_column url] [--min_side 64] [--short_side 256]
      [--per_host 8] [--concurrency 64] [--allow_network 192.168.0.0/16] [--file_root DIR]

URLS is a .txt (one URL per line, '#' comments), .csv or .tsv (a header with `url`, or
--url_column), .jsonl (objects with a `url` field) or .parquet (needs pyarrow) file, with
optional caption and key columns (--caption_column, --key_column). Every
URL goes through the same guards as a run's downloads: SSRF checks on every redirect hop,
byte and pixel caps, decoding in a sandboxed worker, exact and near-duplicate removal.

OUT gets `images/ab/<sha256>.jpg` for every kept image (re-encoded JPEG, short side at
most --short_side); `results.jsonl`, one line per URL attempted (its input row and key, url,
status, sha256, phash, width, height, detail; the statuses are
`ie_jax.web.records.REASONS`); and `captions.jsonl` (file, caption) for the kept images, so
that OUT is a corpus the offline engine indexes (`python -m ie_jax.web.local index OUT`).
A stopped run
resumes with the same command: URLs with a final status are not fetched again (transient
failures, such as timeouts or a 503, are retried), and images kept before still count for
duplicate removal. Loopback and LAN addresses are refused unless --allow_network names
them (a mirror on 127.0.0.1 needs `--allow_network 127.0.0.1/32`).
"""
import argparse
import collections
import csv
import dataclasses
import json
import logging
import os
import sys

from ie_jax.web import dedup as dedup_lib
from ie_jax.web import download, fetch, validate
from ie_jax.web.records import OK, Job, Record, is_transient

log = logging.getLogger(__name__)

RESULTS = 'results.jsonl'
CAPTIONS = 'captions.jsonl'


class InputError(ValueError):
  """The URL list cannot be read; the message says what was expected."""


@dataclasses.dataclass(frozen=True)
class Row:
  """One input row with a URL: its 0-based position among the rows, key and caption."""
  row: int
  url: str
  key: str = ''
  caption: str = ''


def _row(i: int, fields: dict, url_column: str, caption_column: str, key_column: str):
  value = fields.get(url_column)
  if not isinstance(value, str) or not value.strip():
    return None
  text = lambda column: '' if fields.get(column) is None else str(fields[column])
  return Row(i, value.strip(), text(key_column) if key_column else str(i),
             text(caption_column) if caption_column else '')


def read_urls(path: str, url_column: str = 'url', caption_column: str = 'caption',
              key_column: str = '') -> tuple[list[Row], int]:
  """(rows with a URL, in file order; rows without a usable URL field). Bad URLs are
  kept: the downloader records each as `invalid_url`, so every row is accounted for. The
  key is `key_column`'s value, else the row's position."""
  ext = os.path.splitext(path)[1].lower()
  records = []  # dicts of fields, one per input row
  if ext == '.txt':
    with open(path, encoding='utf-8', errors='replace') as f:
      records = [{url_column: line.strip()} for line in f
                 if line.strip() and not line.lstrip().startswith('#')]
  elif ext in ('.csv', '.tsv'):
    with open(path, encoding='utf-8', errors='replace', newline='') as f:
      reader = csv.DictReader(f, delimiter='\t' if ext == '.tsv' else ',')
      if url_column not in (reader.fieldnames or []):
        raise InputError(f'{path}: no {url_column!r} column in the header '
                         f'{reader.fieldnames}; pass --url_column.')
      records = list(reader)
  elif ext == '.jsonl':
    with open(path, encoding='utf-8', errors='replace') as f:
      for line in f:
        if line.strip():
          try:
            value = json.loads(line)
          except ValueError:
            value = None
          records.append(value if isinstance(value, dict) else {})
  elif ext == '.parquet':
    try:
      import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise InputError(f'{path}: reading Parquet needs pyarrow (pip install pyarrow).') from e
    names = pq.read_schema(path).names
    columns = [c for c in (url_column, caption_column, key_column) if c and c in names]
    if url_column not in names:
      raise InputError(f'{path}: no {url_column!r} column in {names}; pass --url_column.')
    records = pq.read_table(path, columns=columns).to_pylist()
  else:
    raise InputError(f'{path}: expected a .txt, .csv, .tsv, .jsonl or .parquet URL list.')
  rows = [_row(i, r, url_column, caption_column, key_column) for i, r in enumerate(records)]
  return [r for r in rows if r is not None], sum(r is None for r in rows)


def read_results(out: str) -> dict[str, dict]:
  """url -> its last result row in OUT/results.jsonl (a torn last line is ignored)."""
  rows = {}
  path = os.path.join(out, RESULTS)
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      for line in f:
        try:
          row = json.loads(line)
          rows[row['url']] = row
        except (ValueError, KeyError, TypeError):
          continue  # the line a killed run was writing
  return rows


def image_path(out: str, sha256: str) -> str:
  return os.path.join(out, 'images', sha256[:2], sha256 + '.jpg')


class FileSink:
  """Writes each kept image (atomically), then its caption line, then its result line."""

  def __init__(self, out: str, rows: dict[str, Row]):
    self.out = out
    self._rows = rows  # url -> its (first) input row
    self._results = open(os.path.join(out, RESULTS), 'a', encoding='utf-8')
    self._captions = open(os.path.join(out, CAPTIONS), 'a', encoding='utf-8')
    self.counts = collections.Counter()

  def __call__(self, record: Record) -> None:
    row = self._rows[record.url]
    if record.status == OK:
      path = image_path(self.out, record.sha256)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path + '.tmp', 'wb') as f:
        f.write(record.jpeg)
      os.replace(path + '.tmp', path)
      self._captions.write(json.dumps({'file': os.path.relpath(path, self.out),
                                       'caption': row.caption}) + '\n')
      self._captions.flush()
    result = {'row': row.row, 'key': row.key, **record.manifest_row()}
    for unused in ('query', 'concept'):
      result.pop(unused)
    self._results.write(json.dumps(result) + '\n')
    self._results.flush()
    self.counts[record.status] += 1

  def close(self) -> None:
    self._results.close()
    self._captions.close()


def print_table(counts: collections.Counter, already: int, file=None) -> None:
  file = file or sys.stdout
  total = sum(counts.values())
  print(f'{"status":<20} {"URLs":>8} {"share":>7}', file=file)
  for status, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
    print(f'{status:<20} {n:>8} {100 * n / max(total, 1):>6.1f}%', file=file)
  print(f'{"total":<20} {total:>8}' + (f'   ({already} done in earlier runs, not refetched)'
                                       if already else ''), file=file)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m ie_jax.web.download', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('urls', help='the URL list (.txt, .csv, .tsv, .jsonl, .parquet)')
  parser.add_argument('out', help='the output directory (created; resumable)')
  parser.add_argument('--url_column', default='url')
  parser.add_argument('--caption_column', default='caption',
                      help='captions for captions.jsonl (absent: empty captions)')
  parser.add_argument('--key_column', default='', help='a key copied into results.jsonl '
                      '(default: the row number)')
  parser.add_argument('--min_side', type=int, default=64, help='drop smaller images')
  parser.add_argument('--short_side', type=int, default=256,
                      help='resize the short side down to at most this')
  parser.add_argument('--per_host', type=int, default=fetch.FetchOptions.per_host)
  parser.add_argument('--concurrency', type=int, default=fetch.FetchOptions.concurrency)
  parser.add_argument('--allow_network', action='append', default=[],
                      help='a refused network to allow, e.g. 127.0.0.1/32 (repeatable)')
  parser.add_argument('--file_root', action='append', default=[],
                      help='a directory file:// URLs may read (repeatable)')
  parser.add_argument('--decode_processes', type=int, default=-1,
                      help='-1: one per core; 0: threads in this process')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')
  try:
    rows, unusable = read_urls(args.urls, args.url_column, args.caption_column,
                               args.key_column)
  except (OSError, InputError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  os.makedirs(args.out, exist_ok=True)
  done = read_results(args.out)
  finished = {u for u, row in done.items() if not is_transient(row.get('status', ''))}
  dedup = dedup_lib.DedupIndex()
  for row in done.values():
    if row.get('status') == OK and row.get('sha256'):
      dedup.add(row['sha256'], int(row.get('phash') or '0', 16))
  first, jobs = {}, []
  for row in rows:
    if row.url not in first:
      first[row.url] = row
      if row.url not in finished:
        jobs.append(Job(row.url))
  urls = [row.url for row in rows]
  options = download.DownloadOptions(
      fetch=fetch.FetchOptions(concurrency=args.concurrency, per_host=args.per_host,
                               allow_networks=tuple(args.allow_network),
                               file_roots=tuple(args.file_root)),
      image=validate.ImageLimits(min_side=args.min_side, short_side=args.short_side),
      decode_processes=args.decode_processes)
  print(f'{len(urls)} URLs in {args.urls} ({unusable} rows without one); '
        f'{len(urls) - len(jobs)} already done or repeated; fetching {len(jobs)}.')
  sink = FileSink(args.out, first)
  try:
    download.download(jobs, sink, options, dedup=dedup)
  finally:
    sink.close()
  print_table(sink.counts, len(finished & set(urls)))
  print(f'images: {os.path.join(args.out, "images")}; one line per URL: '
        f'{os.path.join(args.out, RESULTS)}')
  return 0
