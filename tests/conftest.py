"""Test setup: four fake CPU devices, set before JAX is imported anywhere."""
import atexit
import os
import shutil
import sys
import tempfile

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

# One persistent XLA compilation cache for the session, inherited by the launcher
# subprocesses the tests start. Most tests build fresh jitted steps of the same tiny models,
# and every kill-and-resume relaunch would recompile them all: with the cache a tiny
# two-iteration launch takes ~40 s instead of ~75 s. Multi-process CPU jobs turn it off
# themselves (docs/SCALING.md). A fresh directory per session, so nothing stale is read.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _XLA_CACHE = tempfile.mkdtemp(prefix='ie-jax-tests-xla-')
  atexit.register(shutil.rmtree, _XLA_CACHE, True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _XLA_CACHE
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '0'
