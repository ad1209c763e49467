"""`utils.atomic.write`: a file is whole or absent, and a failed write leaves nothing."""
import os

import pytest

from ie_jax.utils import atomic


def test_a_write_replaces_the_file_whole(tmp_path):
  path = str(tmp_path / 'sub' / 'x.json')
  atomic.write(path, lambda f: f.write(b'old'))
  atomic.write(path, lambda f: f.write(b'new'))
  assert open(path, 'rb').read() == b'new'
  assert os.listdir(tmp_path / 'sub') == ['x.json']


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
  path = str(tmp_path / 'x.json')
  atomic.write(path, lambda f: f.write(b'old'))

  def half(f):
    f.write(b'ne')
    raise KeyboardInterrupt  # killed mid-write

  with pytest.raises(KeyboardInterrupt):
    atomic.write(path, half)
  assert open(path, 'rb').read() == b'old'
  assert os.listdir(tmp_path) == ['x.json']


def test_a_single_writer_clears_what_a_killed_write_left(tmp_path):
  path = str(tmp_path / 'page.html')
  (tmp_path / '.tmp-page.html-abc123').write_bytes(b'<ht')  # what a SIGKILL mid-write leaves
  (tmp_path / '.tmp-other.html-def456').write_bytes(b'x')  # another file's: not ours
  atomic.write(path, lambda f: f.write(b'<html/>'))
  assert len(os.listdir(tmp_path)) == 3  # shared files: another process may be writing
  atomic.write(path, lambda f: f.write(b'<html/>'), single_writer=True)
  assert sorted(os.listdir(tmp_path)) == ['.tmp-other.html-def456', 'page.html']
