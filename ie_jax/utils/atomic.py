"""Files that are either whole or absent: the one way the package writes a file that a
later run trusts (caches, side files of a checkpoint, reports, results)."""
import glob
import os
import tempfile


def write(path: str, write_fn, *, single_writer: bool = False) -> None:
  """Calls `write_fn(binary_file)` on a temporary file beside `path`, flushes it to disk,
  and renames it onto `path`.

  A run killed mid-write (embedding the vocabulary takes minutes; a checkpoint names its
  side files) must not leave a truncated file behind that the next run would trust. The
  temporary is `.tmp-<name>-<random>`: unique, since processes of one job may write the
  same cache file at once. A write killed before its rename leaves that temporary behind;
  with `single_writer` (a file only one process ever writes, such as a report page), the
  next write of the same file removes it.
  """
  directory, name = os.path.split(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  prefix = f'.tmp-{name}-'
  if single_writer:
    for stale in glob.glob(os.path.join(glob.escape(directory), glob.escape(prefix) + '*')):
      os.remove(stale)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix)
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
