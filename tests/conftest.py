"""Test setup: four fake CPU devices, set before JAX is imported anywhere."""
import os
import sys

# XLA reads these flags once, when the backend starts: they must be set before any
# test module imports jax (jax-ml/jax#6887).
os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Tests never touch the network or the user's cache: models come from the installed wheel,
# and vocabulary / embedding caches go to a directory of the checkout.
os.environ['HF_HUB_OFFLINE'] = '1'
os.environ.setdefault('IE_JAX_CACHE', os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '.cache'))

# The repo root holds `configs/` and `launch.py`, which are not part of the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


def pytest_configure(config):
  # `-m "not slow"` is the README's fast command for development; CI runs everything.
  config.addinivalue_line(
      'markers', 'slow: whole runs that launch, kill or spawn processes (soak, multi-process, '
      'SIGKILL in every phase, launcher and recipe runs) and the long ResNet-50 and '
      'ImageNet-start parity runs whose smaller siblings stay fast; each over 20 s on 2 cores')

# A persistent XLA compilation cache for the launcher subprocesses that tests start again
# and again (kill-and-resume): a tiny two-iteration launch then takes ~40 s instead of ~75 s.
# Only for those children, through the `launcher_env` fixture: the pytest process itself
# reads no cache, as executables loaded from one aborted long in-process runs twice
# (docs/DECISIONS.md, "Tests and the compilation cache"). A fresh directory per session.
@pytest.fixture(scope='session')
def launcher_env(tmp_path_factory) -> dict[str, str]:
  """The environment for a launcher child: this one's, plus the shared compilation cache."""
  return dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp('xla-cache')),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
