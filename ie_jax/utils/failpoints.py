"""Named crash points for the kill-and-resume tests.

`hit('train')` kills the process with SIGKILL (no cleanup, no atexit, like a pre-emption)
when the environment variable IE_JAX_FAILPOINT names that point. Unset, it costs one dict
lookup: the points stay in production code so the tests kill the real code path.
"""
import os
import signal

ENV = 'IE_JAX_FAILPOINT'


def hit(name: str) -> None:
  if os.environ.get(ENV) == name:
    os.kill(os.getpid(), signal.SIGKILL)
