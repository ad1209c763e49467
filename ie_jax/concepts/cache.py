"""Where derived files (vocabulary, embeddings, the WordNet reader copy) are kept."""
import hashlib
import os
import tempfile


def default_cache_dir() -> str:
  """`$IE_JAX_CACHE`, else `$XDG_CACHE_HOME/ie_jax`, else `~/.cache/ie_jax`."""
  if os.environ.get('IE_JAX_CACHE'):
    return os.environ['IE_JAX_CACHE']
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'ie_jax')


def file_sha256(path: str, chunk_bytes: int = 1 << 22) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(chunk_bytes):
      digest.update(chunk)
  return digest.hexdigest()


def atomic_write(path: str, write_fn) -> None:
  """Calls `write_fn(file_object)` on a temporary file and renames it onto `path`.

  A run killed mid-write (embedding the vocabulary takes minutes) must not leave a
  truncated cache behind that the next run would trust.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp-')
  try:
    with os.fdopen(fd, 'wb') as f:
      write_fn(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
