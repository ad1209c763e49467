"""Named fault points for the kill-and-resume and full-disk tests.

`hit('train')` kills the process with SIGKILL (no cleanup, no atexit, like a pre-emption)
when the environment variable IE_JAX_FAILPOINT names that point; `disk_full('store', path)`
raises the OSError(ENOSPC) a full disk would when IE_JAX_DISK_FULL names it. A value
`name@n` fires at the n-th time this process reaches the point (`name` alone is `name@1`),
so a test can stop a run deep inside a phase, not only at its first step. Unset, a point
costs one dict lookup: the points stay in production code so the tests break the real path.
"""
import collections
import errno
import os
import signal

ENV = 'IE_JAX_FAILPOINT'
DISK_FULL_ENV = 'IE_JAX_DISK_FULL'

_reached = collections.Counter()


def _fires(env: str, name: str) -> bool:
  value = os.environ.get(env)
  if not value:
    return False
  point, _, nth = value.partition('@')
  if point != name:
    return False
  _reached[env, name] += 1
  return _reached[env, name] == int(nth or 1)


def hit(name: str) -> None:
  if _fires(ENV, name):
    os.kill(os.getpid(), signal.SIGKILL)


def disk_full(name: str, path: str) -> None:
  """Raises ENOSPC for `path` at this point when IE_JAX_DISK_FULL names it."""
  if _fires(DISK_FULL_ENV, name):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def reset() -> None:
  """Forgets how often each point was reached (for tests that run twice in one process)."""
  _reached.clear()
