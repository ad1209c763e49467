"""Where derived files (vocabulary, embeddings, the WordNet reader copy) are kept."""
import hashlib
import os


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
