"""A full disk as one error type, whichever library's write noticed it.

Python's own writes raise OSError(ENOSPC); ArrayRecord's C++ writer raises RuntimeError
and Orbax/TensorStore ValueError, both with the OS message in the text. `as_disk_full`
turns all three into `DiskFullError` (an OSError with errno ENOSPC and the path), so the
explorer can stop with one clear message instead of a library's stack trace.
"""
import errno
import os

# The OS's own wording and TensorStore's code for ENOSPC / EDQUOT, as they appear in the
# text of non-OSError exceptions.
_MARKERS = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT),
            f"os_error_code='{errno.ENOSPC}'", f"os_error_code='{errno.EDQUOT}'")


class DiskFullError(OSError):
  """A write failed because the disk (or the user's quota) is full."""


def is_disk_full(error: BaseException) -> bool:
  if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
    return True
  return isinstance(error, (RuntimeError, ValueError)) and any(
      m in str(error) for m in _MARKERS)


def as_disk_full(error: BaseException, path: str) -> BaseException:
  """`error` as a DiskFullError naming `path` if it is a full disk; else `error` itself."""
  if isinstance(error, DiskFullError) or not is_disk_full(error):
    return error
  filename = getattr(error, 'filename', None) or path
  return DiskFullError(errno.ENOSPC, f'{os.strerror(errno.ENOSPC)} ({str(error)[:300]})',
                       filename)


def stopped(error: BaseException, *, path: str, during: str, checkpoint_dir: str,
            step: int | None) -> DiskFullError:
  """The error a run stops with on a full disk: what failed, what is safe, what to do.

  Args:
    error: the disk-full error (`is_disk_full(error)` holds).
    path: the file or directory to name when `error` does not carry one.
    during: where the run was, e.g. "iteration 3, phase 'search'".
    checkpoint_dir: where the checkpoints are.
    step: the latest complete checkpoint, which a restart resumes from (None: none yet).
  """
  filename = getattr(as_disk_full(error, path), 'filename', None) or path
  start = (f'checkpoint {step} in {checkpoint_dir}' if step is not None
           else 'the start (no checkpoint was completed)')
  return DiskFullError(
      errno.ENOSPC,
      f'The disk is full: writing {filename} failed ({during}). Nothing already saved is '
      f'damaged: the unfinished file was deleted and the run can resume from {start}. Free '
      f'space on the disk holding {os.path.dirname(filename) or "."} (see `df -h`), or '
      'raise its quota, then run the same command again.', filename)
