"""Test setup: four fake CPU devices, set before JAX is imported anywhere."""
import os
import sys

# XLA reads these flags once, when the backend starts: they must be set before any
# test module imports jax (jax-ml/jax#6887).
os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

# The repo root holds `configs/` and `launch.py`, which are not part of the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
