"""The local engine's index: build it from a corpus, load it, and notice when it is stale.

  python -m ie_jax.web.local index CORPUS_DIR [--out INDEX_DIR]

INDEX_DIR (default CORPUS_DIR/.ie_index, which the corpus scan skips) holds:
  records.jsonl   one row per image, in index order: {"id", "caption", "file"} or
                  {"id", "caption", "tar", "member"}, paths relative to the corpus;
  embeddings.npy  (rows, 384) unit all-MiniLM-L6-v2 embeddings of the captions, row i for
                  record i; float16 by default (half the disk and page cache, cosine error
                  ~1e-3, far below the gaps between neighbours); absent when keyword-only;
  manifest.json   written last, and removed first on a rebuild, so an interrupted build
                  never looks complete: format version, row count, dtype, the model's
                  fingerprint, skips by reason, the corpus (relative to INDEX_DIR), the size
                  and mtime of each source (captions table, shards), and `content_sha256`,
                  the hash of every (caption, location) in index order.

Staleness: loading compares the sources' sizes and mtimes with the manifest, which costs a
stat per source. If they differ, the corpus is scanned again (nothing is embedded) and its
content hash compared: a copied or touched corpus is still fresh, while a changed caption,
an added or removed row, image or shard raises `StaleIndexError` with the rebuild command.
Image files themselves are not hashed (that would read the whole corpus); a missing one
shows up as a 'file_error' record in the downloader.
"""
import dataclasses
import functools
import hashlib
import json
import logging
import os
import time

import numpy as np
import tqdm

from ie_jax.utils import atomic
from ie_jax.web import corpus

log = logging.getLogger(__name__)

FORMAT = 'ie_jax.local_index'
VERSION = 1
MANIFEST = 'manifest.json'
RECORDS = 'records.jsonl'
EMBEDDINGS = 'embeddings.npy'
# Captions embedded per call: bounds host memory for corpora of millions of captions.
_EMBED_CHUNK = 4096


class LocalIndexError(RuntimeError):
  """The index is missing, incomplete or unreadable."""


class StaleIndexError(LocalIndexError):
  """The corpus (or the embedding model) changed since the index was built."""


def default_index_dir(corpus_dir: str) -> str:
  return os.path.join(corpus_dir, '.ie_index')


@functools.lru_cache(maxsize=2)
def load_embedder(model_dir: str | None = None):
  """A `text_embed.TextEmbedder`, one per model directory per process.

  Loading the weights and compiling the model costs seconds; the CLI, the engine and tests
  that build several indexes share one.

  Raises:
    text_embed.ModelNotFoundError: naming every place searched.
  """
  # Imported here so that keyword-only use, and importers of `engines`, skip flax.
  from ie_jax.concepts import text_embed  # pylint: disable=g-import-not-at-top
  return text_embed.TextEmbedder(text_embed.resolve_model_dir(model_dir))


def content_sha256(entries: list[corpus.Entry]) -> str:
  digest = hashlib.sha256()
  for entry in entries:
    digest.update(json.dumps([entry.caption, entry.location()], sort_keys=True).encode())
    digest.update(b'\n')
  return digest.hexdigest()


def _stat(corpus_dir: str, paths: list[str]) -> list[dict]:
  stats = []
  for path in paths:
    st = os.stat(os.path.join(corpus_dir, path))
    stats.append({'path': path, 'size': st.st_size, 'mtime_ns': st.st_mtime_ns})
  return stats


def _source_paths(corpus_dir: str) -> list[str]:
  table, tars = corpus.find_sources(corpus_dir)
  return sorted(tars + ([table] if table else []))


def build(corpus_dir: str, index_dir: str | None = None, *, embedder=None,
          model_dir: str | None = None, dtype: str = 'float16', keyword_only: bool = False,
          batch_size: int = 256, progress: bool = True) -> dict:
  """Scans `corpus_dir`, embeds its captions and writes the index (module docstring).

  Args:
    corpus_dir: the corpus (see `corpus.py` for its layouts).
    index_dir: where to write; default `default_index_dir(corpus_dir)`.
    embedder: a `TextEmbedder`; default `load_embedder(model_dir)`.
    model_dir: the MiniLM directory; default: found as `text_embed.resolve_model_dir` does.
    dtype: 'float16' or 'float32', for the stored embeddings.
    keyword_only: store no embeddings (no model needed); the engine then matches keywords.
    batch_size: captions per model call.
    progress: show progress bars.

  Returns:
    The manifest written.

  Raises:
    corpus.CorpusError: the corpus cannot be indexed.
    text_embed.ModelNotFoundError: no model, and not `keyword_only`.
  """
  if dtype not in ('float16', 'float32'):
    raise ValueError(f'dtype must be float16 or float32, not {dtype!r}.')
  index_dir = index_dir or default_index_dir(corpus_dir)
  # Stat before reading: an edit during the scan then leaves a newer mtime than the one
  # stored, and the next load rescans instead of trusting the index.
  before = {s['path']: s for s in _stat(corpus_dir, _source_paths(corpus_dir))}
  found = corpus.scan(corpus_dir, progress=progress)
  sources = [before.get(path) or _stat(corpus_dir, [path])[0] for path in found.sources]
  if not keyword_only and embedder is None:
    embedder = load_embedder(model_dir)
  os.makedirs(index_dir, exist_ok=True)
  for name in (MANIFEST, EMBEDDINGS):
    if os.path.exists(os.path.join(index_dir, name)):
      os.remove(os.path.join(index_dir, name))

  def write_records(f):
    for i, entry in enumerate(found.entries):
      row = {'id': i, 'caption': entry.caption, **entry.location()}
      f.write((json.dumps(row, ensure_ascii=False) + '\n').encode())

  atomic.write(os.path.join(index_dir, RECORDS), write_records)
  if not keyword_only:
    _write_embeddings(os.path.join(index_dir, EMBEDDINGS), found.entries, embedder, dtype,
                      batch_size, progress)
  manifest = {
      'format': FORMAT, 'version': VERSION, 'rows': len(found.entries),
      'embeddings': None if keyword_only else {
          'file': EMBEDDINGS, 'dim': embedder.dim, 'dtype': dtype,
          'model_fingerprint': embedder.fingerprint()},
      'corpus_dir': os.path.relpath(os.path.abspath(corpus_dir), os.path.abspath(index_dir)),
      'sources': sources, 'content_sha256': content_sha256(found.entries),
      'skipped': dict(sorted(found.skipped.items())), 'created_unix': int(time.time()),
  }
  atomic.write(os.path.join(index_dir, MANIFEST),
                     lambda f: f.write(json.dumps(manifest, indent=1).encode()))
  log.info('Indexed %d captioned images of %s into %s (skipped: %s).', len(found.entries),
           corpus_dir, index_dir, manifest['skipped'] or 'none')
  return manifest


def _write_embeddings(path: str, entries, embedder, dtype: str, batch_size: int,
                      progress: bool) -> None:
  tmp = os.path.join(os.path.dirname(path), '.tmp-' + EMBEDDINGS)
  out = np.lib.format.open_memmap(tmp, mode='w+', dtype=dtype,
                                  shape=(len(entries), embedder.dim))
  try:
    with tqdm.tqdm(total=len(entries), desc='Embedding captions', unit='caption',
                   disable=not progress) as bar:
      for start in range(0, len(entries), _EMBED_CHUNK):
        captions = [e.caption for e in entries[start:start + _EMBED_CHUNK]]
        out[start:start + len(captions)] = embedder.embed(
            captions, batch_size=batch_size, progress=False)
        bar.update(len(captions))
    out.flush()
    del out
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


@dataclasses.dataclass
class Index:
  """A loaded index: row i is `captions[i]` at `urls[i]`, embedded as `embeddings[i]`."""
  index_dir: str
  corpus_dir: str
  manifest: dict
  captions: list[str]
  urls: list[str]
  embeddings: np.ndarray | None  # memory-mapped (rows, dim); None when keyword-only


def read_manifest(index_dir: str) -> dict:
  """The index's manifest, checked for the fields and types `load` relies on.

  Raises:
    LocalIndexError: missing, unreadable, of another format or version, or malformed.
  """
  path = os.path.join(index_dir, MANIFEST)
  if not os.path.exists(path):
    raise LocalIndexError(
        f'No local index at {index_dir} ({MANIFEST} is missing, or a build was interrupted). '
        'Build one with: python -m ie_jax.web.local index CORPUS_DIR --out INDEX_DIR')
  try:
    with open(path, encoding='utf-8') as f:
      manifest = json.load(f)
  # ValueError: bad JSON or UTF-8, or huge integers; RecursionError: deep nesting.
  except (OSError, ValueError, RecursionError) as e:
    raise LocalIndexError(f'Unreadable {path}: {str(e)[:200]}') from e
  if (not isinstance(manifest, dict) or manifest.get('format') != FORMAT
      or manifest.get('version') != VERSION):
    raise LocalIndexError(f'{path} is not a version-{VERSION} {FORMAT} manifest; rebuild it.')
  problem = _manifest_problem(manifest)
  if problem:
    raise LocalIndexError(f'{path} is damaged ({problem}); rebuild the index.')
  return manifest


def _manifest_problem(manifest: dict) -> str:
  """What is wrong with the fields of a manifest `build` wrote, or ''."""
  def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)
  if not is_int(manifest.get('rows')) or manifest['rows'] < 0:
    return '"rows" is not a count'
  for key in ('corpus_dir', 'content_sha256'):
    if not isinstance(manifest.get(key), str):
      return f'"{key}" is not a string'
  sources = manifest.get('sources')
  if not isinstance(sources, list) or not all(
      isinstance(s, dict) and isinstance(s.get('path'), str) for s in sources):
    return '"sources" is not a list of {"path", ...} objects'
  spec = manifest.get('embeddings', 'missing')
  if spec is not None and not (
      isinstance(spec, dict) and isinstance(spec.get('file'), str) and is_int(spec.get('dim'))
      and spec.get('dtype') in ('float16', 'float32')
      and isinstance(spec.get('model_fingerprint'), str)):
    return '"embeddings" is neither null nor {file, dim, dtype, model_fingerprint}'
  return ''


def load(index_dir: str, *, corpus_dir: str | None = None) -> Index:
  """Reads the index at `index_dir` after checking it against its corpus.

  Args:
    index_dir: written by `build`.
    corpus_dir: where the corpus is now; default where the manifest says (relative to
      `index_dir`, so an index inside its corpus moves with it).

  Raises:
    LocalIndexError: missing, incomplete, damaged or inconsistent index files.
    StaleIndexError: the corpus changed since the build.
  """
  manifest = read_manifest(index_dir)
  if corpus_dir is None:
    corpus_dir = os.path.normpath(os.path.join(index_dir, manifest['corpus_dir']))
  check_fresh(index_dir, manifest, corpus_dir)
  entries = _read_records(os.path.join(index_dir, RECORDS))
  if len(entries) != manifest['rows'] or content_sha256(entries) != manifest['content_sha256']:
    raise LocalIndexError(f'{RECORDS} in {index_dir} does not match its manifest; rebuild.')
  embeddings = None
  if manifest['embeddings'] is not None:
    spec = manifest['embeddings']
    try:
      embeddings = np.load(os.path.join(index_dir, spec['file']), mmap_mode='r')
    except (OSError, ValueError) as e:  # missing, truncated, or not a .npy array
      raise LocalIndexError(f'Unreadable {spec["file"]} in {index_dir}: {e}. Rebuild.') from e
    if embeddings.shape != (len(entries), spec['dim']) or embeddings.dtype != spec['dtype']:
      raise LocalIndexError(
          f'{spec["file"]} in {index_dir} has shape {embeddings.shape} {embeddings.dtype}; '
          f'the manifest says ({len(entries)}, {spec["dim"]}) {spec["dtype"]}. Rebuild.')
  return Index(index_dir, corpus_dir, manifest, [e.caption for e in entries],
               corpus.urls(corpus_dir, entries), embeddings)


def _read_records(path: str) -> list[corpus.Entry]:
  """The entries of records.jsonl. Raises `LocalIndexError` on a damaged file."""
  entries = []
  try:
    with open(path, encoding='utf-8') as f:
      for number, line in enumerate(f, 1):
        try:
          row = json.loads(line)
        except (ValueError, RecursionError) as e:
          raise LocalIndexError(f'{path}:{number} is not JSON ({str(e)[:100]}); rebuild.') from e
        fields = ('caption', 'file', 'tar', 'member')
        if not (isinstance(row, dict) and isinstance(row.get('caption'), str)
                and all(isinstance(row.get(k, ''), str) for k in fields)):
          raise LocalIndexError(f'{path}:{number} is not a record of {fields}; rebuild.')
        entries.append(corpus.Entry(row['caption'], file=row.get('file', ''),
                                    tar=row.get('tar', ''), member=row.get('member', '')))
  except (OSError, UnicodeDecodeError) as e:
    raise LocalIndexError(f'Unreadable {path}: {e}; rebuild the index.') from e
  return entries


def check_fresh(index_dir: str, manifest: dict, corpus_dir: str) -> None:
  """Raises `StaleIndexError` if the corpus no longer gives the indexed content."""
  rebuild = f'Rebuild it: python -m ie_jax.web.local index {corpus_dir} --out {index_dir}'
  try:
    now = _stat(corpus_dir, _source_paths(corpus_dir))
  except (OSError, corpus.CorpusError) as e:
    raise StaleIndexError(f'The corpus of the index {index_dir} is unusable: {e}. '
                          f'{rebuild}') from e
  if now == manifest['sources']:
    return
  try:
    rescan = corpus.scan(corpus_dir, progress=False)
  except corpus.CorpusError as e:
    raise StaleIndexError(f'The corpus of the index {index_dir} changed: {e} {rebuild}') from e
  if content_sha256(rescan.entries) == manifest['content_sha256']:
    log.info('The sources of %s were touched but its captions are unchanged; the index '
             'is fresh (rebuild it to skip this rescan).', corpus_dir)
    return
  old = {s['path']: s for s in manifest['sources']}
  new = {s['path']: s for s in now}
  changes = ([f'added {p}' for p in sorted(new.keys() - old.keys())]
             + [f'removed {p}' for p in sorted(old.keys() - new.keys())]
             + [f'modified {p}' for p in sorted(new.keys() & old.keys()) if new[p] != old[p]])
  raise StaleIndexError(
      f'The index {index_dir} is stale: the captions of {corpus_dir} changed since it was '
      f'built ({", ".join(changes) or "captioned images added or removed"}). {rebuild}')
