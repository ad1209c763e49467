"""Files that are either whole or absent: the one way the package writes a file that a
later run trusts (caches, side files of a checkpoint, reports, results)."""
import os
import tempfile


def write(path: str, write_fn) -> None:
  """Calls `write_fn(binary_file)` on a temporary file beside `path`, flushes it to disk,
  and renames it onto `path`.

  A run killed mid-write (embedding the vocabulary takes minutes; a checkpoint names its
  side files) must not leave a truncated file behind that the next run would trust. The
  temporary name starts with '.tmp-', which the directories' own clean-ups remove.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp-')
  try:
    with os.fdopen(fd, 'wb') as f:
      write_fn(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
