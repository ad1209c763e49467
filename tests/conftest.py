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
