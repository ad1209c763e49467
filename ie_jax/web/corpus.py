"""A local corpus of captioned images: what it holds, and how the downloader reads a tar member.

A corpus is a directory holding either or both of:
  (a) image files plus one captions table at its root: `captions.csv` (columns `file` and
      `caption`) or `captions.jsonl` (one object per line with keys `file` and `caption`),
      where `file` is a path relative to the root;
  (b) webdataset-style shards, `*.tar` anywhere below the root (hidden directories, such as
      the default index directory, are skipped): member `KEY.jpg|jpeg|png|webp` pairs with
      the caption in `KEY.txt`, or failing that the `"caption"` of `KEY.json`. Shards must be
      uncompressed, so that a member is a byte range the downloader can read in place.

Validation. A problem with the corpus as a whole raises `CorpusError`: nothing indexable,
two captions tables, a table without the `file`/`caption` columns, an unreadable tar. A
problem with one item is skipped, counted by reason (`SKIP_REASONS`), logged with a few
examples and stored in the index manifest: web-scale corpora always hold some broken items,
and one of them should not stop the indexing of the others. Images are not opened here; the
downloader decodes and checks them.

Image locations become URLs the downloader fetches offline when `file_roots` holds the root:
  plain file:  file:///abs/root/dir/img.jpg
  tar member:  file:///abs/root/shard-0001.tar?member=KEY.jpg   (member percent-encoded)
The member travels in the query, not the fragment, because the downloader's URL cache keys
drop fragments: every member of a shard would look like one URL.
"""
import collections
import csv
import dataclasses
import functools
import json
import logging
import os
import tarfile
import urllib.parse

import tqdm

from ie_jax.web.records import Rejected

log = logging.getLogger(__name__)

TABLES = ('captions.csv', 'captions.jsonl')
IMAGE_EXTENSIONS = ('jpg', 'jpeg', 'png', 'webp')  # preference order within one tar key
SKIP_REASONS = {
    'bad_row': 'a table row with a blank `file` (or one holding a NUL), or a captions.jsonl '
               'line that is not an object with string `file` and `caption`',
    'empty_caption': 'a blank caption (table row, KEY.txt or KEY.json)',
    'outside_corpus': 'a table path that is absolute or leads (maybe by symlink) outside the root',
    'missing_file': 'a table row naming a file that does not exist',
    'duplicate_image': 'a table row naming an image an earlier row already captioned',
    'no_caption': 'a tar image without KEY.txt or a `caption` in KEY.json',
    'no_image': 'a tar caption (KEY.txt) without an image of the same key',
    'extra_image': 'a second image format of one tar key (the first by IMAGE_EXTENSIONS is kept)',
}
_EXAMPLES = 3


class CorpusError(ValueError):
  """The corpus as a whole cannot be indexed."""


@dataclasses.dataclass(frozen=True)
class Entry:
  """One captioned image: a `file` relative to the root, or a `member` of a `tar`."""
  caption: str
  file: str = ''
  tar: str = ''
  member: str = ''

  def location(self) -> dict:
    if self.file:
      return {'file': self.file}
    return {'tar': self.tar, 'member': self.member}

  def url(self, real_root: str) -> str:
    """The URL the downloader reads this image from; `real_root` is `realpath(corpus)`."""
    if self.file:
      return 'file://' + urllib.parse.quote(os.path.join(real_root, self.file))
    return (f'file://{urllib.parse.quote(os.path.join(real_root, self.tar))}'
            f'?member={urllib.parse.quote(self.member, safe="")}')


def urls(root: str, entries: list[Entry]) -> list[str]:
  """The URL of every entry of the corpus at `root` (see the module docstring)."""
  real_root = os.path.realpath(root)
  return [entry.url(real_root) for entry in entries]


@dataclasses.dataclass
class Scan:
  """What `scan` found: entries in index order, skips by reason, and the source files."""
  entries: list[Entry]
  skipped: collections.Counter
  sources: list[str]  # the captions table and the tars, relative to the root, sorted


class _Skips:
  """Counts skips by reason and keeps a few examples of each for the log."""

  def __init__(self):
    self.counts = collections.Counter()
    self._examples = collections.defaultdict(list)

  def add(self, reason: str, where: str) -> None:
    self.counts[reason] += 1
    if len(self._examples[reason]) < _EXAMPLES:
      self._examples[reason].append(where)

  def log(self) -> None:
    for reason, count in sorted(self.counts.items()):
      log.warning('corpus: skipped %d item(s), %s (%s), e.g. %s', count, reason,
                  SKIP_REASONS[reason], '; '.join(self._examples[reason]))


def find_sources(root: str) -> tuple[str | None, list[str]]:
  """The captions table (or None) and the tar shards of `root`, relative to it, sorted."""
  tables = [t for t in TABLES if os.path.isfile(os.path.join(root, t))]
  if len(tables) > 1:
    raise CorpusError(f'{root} has both {" and ".join(tables)}; keep one captions table.')
  tars = []
  for directory, subdirs, files in os.walk(root):
    subdirs[:] = sorted(d for d in subdirs if not d.startswith('.'))
    tars += [os.path.relpath(os.path.join(directory, f), root)
             for f in files if f.endswith('.tar')]
  return (tables[0] if tables else None), sorted(tars)


def scan(root: str, *, progress: bool = True) -> Scan:
  """Every indexable image of the corpus at `root`, validated (module docstring).

  Raises:
    CorpusError: for problems with the corpus as a whole, including having no entries.
  """
  if not os.path.isdir(root):
    raise CorpusError(f'The corpus directory {root} does not exist.')
  table, tars = find_sources(root)
  if table is None and not tars:
    raise CorpusError(f'{root} holds neither a captions table ({" or ".join(TABLES)}) nor '
                      '*.tar shards: nothing to index.')
  skips, entries = _Skips(), []
  if table is not None:
    entries += _scan_table(root, table, skips, progress)
  for name in tqdm.tqdm(tars, desc='Scanning shards', unit='tar', disable=not progress):
    entries += _scan_tar(root, name, skips)
  skips.log()
  if not entries:
    raise CorpusError(f'{root} has no indexable images; skipped: {dict(skips.counts)}.')
  sources = sorted(tars + ([table] if table else []))
  return Scan(entries, skips.counts, sources)


def _table_rows(path: str):
  """(line number, file, caption) per row; `file` is None for a malformed jsonl line."""
  with open(path, newline='' if path.endswith('.csv') else None, encoding='utf-8') as f:
    if path.endswith('.csv'):
      reader = csv.DictReader(f)
      missing = {'file', 'caption'} - set(reader.fieldnames or ())
      if missing:
        raise CorpusError(f'{path} lacks the column(s) {sorted(missing)}; its header is '
                          f'{reader.fieldnames}.')
      for row in reader:
        yield reader.line_num, row['file'] or '', row['caption'] or ''
      return
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except (ValueError, RecursionError):  # bad JSON, 4,300+ digit ints, deep nesting
        row = None
      if (isinstance(row, dict) and isinstance(row.get('file'), str)
          and isinstance(row.get('caption'), str)):
        yield number, row['file'], row['caption']
      else:
        yield number, None, ''


def _scan_table(root: str, table: str, skips: _Skips, progress: bool) -> list[Entry]:
  real_root = os.path.realpath(root)
  entries, seen = [], set()
  rows = tqdm.tqdm(_table_rows(os.path.join(root, table)), desc='Reading captions',
                   unit='row', disable=not progress)
  try:
    for number, file, caption in rows:
      _add_row(real_root, f'{table} line {number}', file, caption, entries, seen, skips)
  except (UnicodeDecodeError, csv.Error) as e:
    raise CorpusError(f'{os.path.join(root, table)} is not a readable UTF-8 table: {e}') from e
  return entries


def _add_row(real_root: str, where: str, file: str | None, caption: str, entries: list,
             seen: set, skips: _Skips) -> None:
  if file is None or not file.strip() or '\x00' in file:  # no path holds a NUL
    skips.add('bad_row', where)
    return
  caption = ' '.join(caption.split())
  file = os.path.normpath(file.strip())
  if not caption:
    skips.add('empty_caption', where)
    return
  path = os.path.realpath(os.path.join(real_root, file))
  # Results become file:// URLs: none may point out of the corpus, even by symlink.
  if os.path.commonpath([path, real_root]) != real_root:
    skips.add('outside_corpus', f'{where}: {file!r}')
  elif not os.path.isfile(path):
    skips.add('missing_file', f'{where}: {file!r}')
  elif file in seen:
    skips.add('duplicate_image', f'{where}: {file!r}')
  else:
    seen.add(file)
    entries.append(Entry(caption, file=file))


def _split_key(name: str) -> tuple[str, str]:
  """webdataset's convention: the key runs to the first dot of the base name."""
  directory, base = os.path.split(name)
  stem, _, extension = base.partition('.')
  return os.path.join(directory, stem), extension.lower()


def _scan_tar(root: str, name: str, skips: _Skips) -> list[Entry]:
  samples = collections.defaultdict(dict)  # key -> extension -> TarInfo, in member order
  try:
    with tarfile.open(os.path.join(root, name), 'r:') as tar:
      for info in tar:
        if info.isfile():
          key, extension = _split_key(info.name)
          samples[key][extension] = info  # a re-added member replaces the earlier one
      entries = []
      for key, fields in samples.items():
        images = [fields[e] for e in IMAGE_EXTENSIONS if e in fields]
        where = f'{name}: {key}'
        if not images:
          if 'txt' in fields:
            skips.add('no_image', where)
          continue
        for extra in images[1:]:
          skips.add('extra_image', f'{name}: {extra.name}')
        caption = _tar_caption(tar, fields)
        if caption is None:
          skips.add('no_caption', where)
        elif not caption:
          skips.add('empty_caption', where)
        else:
          entries.append(Entry(caption, tar=name, member=images[0].name))
      return entries
  except (tarfile.TarError, OSError) as e:
    raise CorpusError(f'Cannot read the shard {os.path.join(root, name)} as an uncompressed '
                      f'tar: {e}') from e


def _tar_caption(tar: tarfile.TarFile, fields: dict) -> str | None:
  """The normalised caption of one sample: '' when blank, None when it has none."""
  if 'txt' in fields:
    text = tar.extractfile(fields['txt']).read().decode('utf-8', 'replace')
    if text.strip():
      return ' '.join(text.split())
  if 'json' in fields:
    try:
      meta = json.loads(tar.extractfile(fields['json']).read())
    except (ValueError, RecursionError):  # as in _table_rows; UnicodeDecodeError too
      meta = None
    if isinstance(meta, dict) and isinstance(meta.get('caption'), str):
      return ' '.join(meta['caption'].split())
  return '' if 'txt' in fields else None


@functools.lru_cache(maxsize=64)
def _member_ranges(path: str, size: int, mtime_ns: int) -> dict[str, tuple[int, int]]:
  """member name -> (data offset, size) of one tar; keyed by size and mtime to notice edits."""
  del size, mtime_ns  # cache key only
  with tarfile.open(path, 'r:') as tar:
    return {info.name: (info.offset_data, info.size) for info in tar if info.isfile()}


def read_tar_member(path: str, member: str, max_bytes: int) -> bytes:
  """The bytes of `member` of the uncompressed tar at `path`, for the downloader.

  The shard's member table is read once (and cached); each read is then a seek and a
  read of exactly the member, so a shard is never extracted.

  Raises:
    Rejected: 'file_error' (not a tar, no such member), 'too_large', 'empty_body' or
      'truncated'.
    OSError: the file cannot be opened or read.
  """
  stat = os.stat(path)
  try:
    ranges = _member_ranges(path, stat.st_size, stat.st_mtime_ns)
  except tarfile.TarError as e:
    raise Rejected('file_error', f'not an uncompressed tar: {e}') from e
  if member not in ranges:
    raise Rejected('file_error', f'no member {member[:200]!r} in the tar')
  offset, size = ranges[member]
  if size > max_bytes:
    raise Rejected('too_large', f'member of {size} bytes > {max_bytes}')
  if not size:
    raise Rejected('empty_body')
  with open(path, 'rb') as f:
    f.seek(offset)
    data = f.read(size)
  if len(data) < size:
    raise Rejected('truncated', 'the tar ends inside the member')
  return data
