r"""The downloader on its own: a list of image URLs in, checked images and a results table out.

  python -m ie_jax.web.download URLS OUT [--url_column url] [--min_side 64] [--short_side 256]
      [--output_format files|webdataset|array_record] [--shard_size 1000]
      [--per_host 8] [--max_per_host 32] [--concurrency 64]
      [--allow_network 192.168.0.0/16] [--file_root DIR]

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
With --output_format webdataset the kept images go into tar shards instead,
`shards/shard-000000.tar`, ..., --shard_size images each, as `<sha256>.jpg` with its
caption (`.txt`) and its result line (`.json`): the layout the offline engine also indexes.
With --output_format array_record they go into `array_record/`, the explorer's own store
(`ie_jax.web.store.WebStore`, iteration 0): `images-00000-PPP.array_record`, one JPEG per
record, and beside each its `manifest-00000-PPP.jsonl`, the result line and caption of each
record in order; Grain reads the parts directly. Either way a shard is renamed into place
only when whole, and its images' result lines are written only then.
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
import io
import json
import logging
import os
import re
import sys
import tarfile

from ie_jax.web import dedup as dedup_lib
from ie_jax.web import download, fetch, validate
from ie_jax.web import store as store_lib
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


class _ResultsSink:
  """The results table both outputs share: one line per URL, appended and flushed."""

  def __init__(self, out: str, rows: dict[str, Row]):
    self.out = out
    self._rows = rows  # url -> its (first) input row
    self._results = open(os.path.join(out, RESULTS), 'a', encoding='utf-8')
    self.counts = collections.Counter()

  def result(self, record: Record) -> dict:
    row = self._rows[record.url]
    result = {'row': row.row, 'key': row.key, **record.manifest_row()}
    for unused in ('query', 'concept', 'caption'):
      result.pop(unused)
    return result

  def write_results(self, results: list[dict]) -> None:
    for result in results:
      self._results.write(json.dumps(result) + '\n')
      self.counts[result['status']] += 1
    self._results.flush()

  def close(self) -> None:
    self._results.close()


class FileSink(_ResultsSink):
  """Writes each kept image (atomically), then its caption line, then its result line."""

  def __init__(self, out: str, rows: dict[str, Row]):
    super().__init__(out, rows)
    self._captions = open(os.path.join(out, CAPTIONS), 'a', encoding='utf-8')

  def __call__(self, record: Record) -> None:
    if record.status == OK:
      path = image_path(self.out, record.sha256)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path + '.tmp', 'wb') as f:
        f.write(record.jpeg)
      os.replace(path + '.tmp', path)
      self._captions.write(json.dumps({'file': os.path.relpath(path, self.out),
                                       'caption': self._rows[record.url].caption}) + '\n')
      self._captions.flush()
    self.write_results([self.result(record)])

  def close(self) -> None:
    super().close()
    self._captions.close()


_SHARD = re.compile(r'^shard-(\d{6,})\.tar(\.tmp)?$')


def shard_path(out: str, number: int) -> str:
  return os.path.join(out, 'shards', f'shard-{number:06d}.tar')


class _ShardSink(_ResultsSink):
  """Kept images into shards of `shard_size`, each written under a temporary name and
  renamed whole; only then are its images' result lines written. A killed run leaves an
  unfinished shard whose images have no result line, so the resumed run drops it and
  fetches exactly those images again. Failures' result lines are written at once.

  Subclasses open a shard (`_open`), add an image to it (`_add`) and commit it (`_commit`).
  """

  def __init__(self, out: str, rows: dict[str, Row], shard_size: int):
    super().__init__(out, rows)
    if shard_size < 1:
      raise ValueError(f'shard_size must be at least 1, not {shard_size}.')
    self.shard_size = shard_size
    self._shard, self._pending = None, []

  def __call__(self, record: Record) -> None:
    result = self.result(record)
    if record.status != OK:
      self.write_results([result])
      return
    if self._shard is None:
      self._shard = self._open()
    self._add(record, result, self._rows[record.url].caption)
    self._pending.append(result)
    if len(self._pending) >= self.shard_size:
      self._finish()

  def _finish(self) -> None:
    self._commit()
    self.write_results(self._pending)
    self._shard, self._pending = None, []

  def close(self) -> None:
    if self._shard is not None:
      self._finish()
    super().close()


class TarSink(_ShardSink):
  """Webdataset shards `shards/shard-NNNNNN.tar`: each image as `<sha256>.jpg`, `.txt`
  (caption) and `.json` (result line); unfinished shards are `.tar.tmp`."""

  def __init__(self, out: str, rows: dict[str, Row], shard_size: int):
    super().__init__(out, rows, shard_size)
    directory = os.path.dirname(shard_path(out, 0))
    os.makedirs(directory, exist_ok=True)
    numbers = []
    for name in os.listdir(directory):  # inside OUT, a directory the user named
      if (match := _SHARD.match(name)) is None:
        continue  # not ours: never touched
      if match.group(2):  # a killed run's unfinished shard
        os.remove(os.path.join(directory, name))
      else:
        numbers.append(int(match.group(1)))
    self._next = max(numbers, default=-1) + 1

  def _open(self):
    return tarfile.open(shard_path(self.out, self._next) + '.tmp', 'w')

  def _add(self, record: Record, result: dict, caption: str) -> None:
    for suffix, data in (('jpg', record.jpeg), ('txt', caption.encode('utf-8')),
                         ('json', json.dumps(result).encode('utf-8'))):
      info = tarfile.TarInfo(f'{record.sha256}.{suffix}')
      info.size = len(data)
      self._shard.addfile(info, io.BytesIO(data))

  def _commit(self) -> None:
    path = shard_path(self.out, self._next)
    self._shard.close()
    with open(path + '.tmp', 'rb') as f:
      os.fsync(f.fileno())
    os.replace(path + '.tmp', path)
    self._next += 1


class ArrayRecordSink(_ShardSink):
  """The explorer's store format (`store.WebStore`, iteration 0) under `array_record/`:
  parts of JPEG records, each record's manifest row its result line plus its caption.
  The store's own commit renames a part whole; its uncommitted parts are removed here."""

  MAX_PARTS = 1000  # the store's part numbers have three digits

  def __init__(self, out: str, rows: dict[str, Row], shard_size: int):
    super().__init__(out, rows, shard_size)
    self.store = store_lib.WebStore(os.path.join(out, 'array_record'))
    self.store.remove_uncommitted()

  def _open(self):
    if len(self.store.parts(0)) >= self.MAX_PARTS:
      raise ValueError(f'{self.store.root} holds {self.MAX_PARTS} parts, the most it can: '
                       'use a larger --shard_size or another output directory.')
    return self.store.writer(0)

  def _add(self, record: Record, result: dict, caption: str) -> None:
    self._shard.add(record.jpeg, {**result, 'caption': caption})

  def _commit(self) -> None:
    self._shard.commit()

  def close(self) -> None:
    super().close()
    self.store.close()


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
  parser.add_argument('--per_host', type=int, default=fetch.FetchOptions.per_host,
                      help='requests in flight to one host at first')
  parser.add_argument('--max_per_host', type=int, default=fetch.FetchOptions.max_per_host,
                      help='the most a host that answers in time gets (halved on 429, '
                      '503, and when most of its requests time out or are refused); set '
                      'it to --per_host for a fixed limit')
  parser.add_argument('--concurrency', type=int, default=fetch.FetchOptions.concurrency)
  parser.add_argument('--allow_network', action='append', default=[],
                      help='a refused network to allow, e.g. 127.0.0.1/32 (repeatable)')
  parser.add_argument('--file_root', action='append', default=[],
                      help='a directory file:// URLs may read (repeatable)')
  parser.add_argument('--decode_processes', type=int, default=-1,
                      help='-1: one per core; 0: threads in this process')
  parser.add_argument('--output_format', choices=('files', 'webdataset', 'array_record'),
                      default='files', help="'files': images/ab/<sha256>.jpg and "
                      "captions.jsonl; 'webdataset': shards/shard-NNNNNN.tar; "
                      "'array_record': array_record/images-00000-PPP.array_record")
  parser.add_argument('--shard_size', type=int, default=1000,
                      help='images per webdataset shard or ArrayRecord part')
  args = parser.parse_args(argv)
  if args.shard_size < 1:
    parser.error(f'--shard_size must be at least 1, not {args.shard_size}')
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
                               max_per_host=max(args.per_host, args.max_per_host),
                               allow_networks=tuple(args.allow_network),
                               file_roots=tuple(args.file_root)),
      image=validate.ImageLimits(min_side=args.min_side, short_side=args.short_side),
      decode_processes=args.decode_processes)
  print(f'{len(urls)} URLs in {args.urls} ({unusable} rows without one); '
        f'{len(urls) - len(jobs)} already done or repeated; fetching {len(jobs)}.')
  if args.output_format == 'webdataset':
    sink = TarSink(args.out, first, args.shard_size)
    where = os.path.join(args.out, 'shards')
  elif args.output_format == 'array_record':
    sink = ArrayRecordSink(args.out, first, args.shard_size)
    where = sink.store.root
  else:
    sink, where = FileSink(args.out, first), os.path.join(args.out, 'images')
  try:
    download.download(jobs, sink, options, dedup=dedup)
  finally:
    sink.close()
  print_table(sink.counts, len(finished & set(urls)))
  print(f'images: {where}; one line per URL: {os.path.join(args.out, RESULTS)}')
  return 0
